"""Records as NGSI-LD notifications (ETSI GS CIM 009 §5.3.1): the entity, its notification, its id.

Each record goes out as an NGSI-LD Notification (``id``, ``type: Notification``, ``subscriptionId``,
``notifiedAt``, ``data``) holding the record as one entity, normalized (Property, GeoProperty for the
position) or concise as the subscription asks; ``application/ld+json`` carries the ``@context`` in the
body, ``application/json`` in a ``Link`` header. The notification id is derived from the subscription and
the record's event id, so a receiver can drop a repeat.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from citybrain.times import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from citybrain.notify.subscriptions import Subscription

__all__ = ["ACCEPT", "CORE_CONTEXT", "ENTITY_TYPES", "FORMATS", "NOTIFICATION_NS", "entity_of", "notification",
           "notification_id", "with_context"]

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
ACCEPT = ("application/ld+json", "application/json")
FORMATS = ("normalized", "concise")
NOTIFICATION_NS = uuid.UUID("2b1f6c0e-6f3a-5d7c-8e9a-1b2c3d4e5f60")
#: The NGSI-LD entity type of each notifiable topic family; the first prefix that matches wins (an urge
#: raised in the operations view is not a work order).
ENTITY_TYPES = {"dispatch.command.urge.": "Urge", "dispatch.command.whistle.": "Whistle", "dispatch.": "WorkOrder", "city.event.incident.": "CityEvent", "alert.early_warning.": "EarlyWarning",
                "alert.sla.": "SlaAlert"}


def entity_of(topic: str, value: dict[str, Any], event_id: str, form: str) -> dict[str, Any]:
    """A record as an NGSI-LD entity: its fields as Properties (or plain values, concise), its position as
    a GeoProperty ``location``, its id a URN of its entity type and event id."""
    kind = next(t for prefix, t in ENTITY_TYPES.items() if topic.startswith(prefix))
    entity: dict[str, Any] = {"id": f"urn:ngsi-ld:{kind}:{event_id}", "type": kind}
    lon, lat = value.get("long"), value.get("lat")
    for name, v in value.items():
        if name in ("long", "lat") or v is None:
            continue
        entity[name] = v if form == "concise" else {"type": "Property", "value": v}
    if isinstance(lon, (int, float)) and isinstance(lat, (int, float)):
        point = {"type": "Point", "coordinates": [lon, lat]}
        entity["location"] = point if form == "concise" else {"type": "GeoProperty", "value": point}
    return entity


def notification_id(sub: Subscription, event_id: str) -> str:
    """The id of every notification of one record to one subscription: the same each time it is sent (the
    retries, a redelivery after a restart, a replay), so the endpoint can drop a repeat."""
    return f"urn:ngsi-ld:Notification:{uuid.uuid5(NOTIFICATION_NS, sub.id + chr(0) + event_id)}"


def with_context(sub: Subscription, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the ``@context`` in it for ``application/ld+json``, without for ``application/json`` (whose
    context goes in the ``Link`` header)."""
    body.pop("@context", None)
    if sub.accept == "application/ld+json":
        body["@context"] = CORE_CONTEXT
    return body


def notification(sub: Subscription, topic: str, value: dict[str, Any], event_id: str) -> dict[str, Any]:
    return with_context(sub, {"id": notification_id(sub, event_id), "type": "Notification",
                              "subscriptionId": sub.urn, "notifiedAt": now_iso(),
                              "data": [entity_of(topic, value, event_id, sub.format)]})
