"""The outbound edge: NGSI-LD notifications to departments' endpoints.

- :mod:`citybrain.notify.subscriptions`: who gets which topic where (``infra/subscriptions.yaml``), checked
  against the grants;
- :mod:`citybrain.notify.ngsi`: a record as an NGSI-LD entity and notification, and the notification's id;
- :mod:`citybrain.notify.notifier`: the delivery loop (retries, pause and resume, dead letters, status);
- :mod:`citybrain.notify.replay`: dead letters sent again (``citybrain notify replay``).
"""
