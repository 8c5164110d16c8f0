"""Who may do what: departments' and services' grants as broker ACLs, their credentials, the access
audit, and the personal-data protections of :mod:`citybrain.access.privacy`.

``from citybrain import access`` gives the public API below, each name loaded from its module on first
use, so the stream workers' ``citybrain.access.privacy`` does not pull in the broker's admin client:

- :mod:`~citybrain.access.grants`: the access model from ``infra/access.yaml`` (the departments' and the platform
  services' principals) and the city's own departments' grants (``load``, ``who_can``, the templates
  ``department_grants``, ...);
- :mod:`~citybrain.access.acls`: the ACLs the broker should hold and holds, ``apply`` and ``rotate``;
- :mod:`~citybrain.access.credentials`: departments' passwords and client settings;
- :mod:`~citybrain.access.accounts`: the people who log in to the operations view (scrypt-hashed passwords) and
  :mod:`~citybrain.access.totp`, their one-time codes;
- :mod:`~citybrain.access.probe`: reading a topic as a department would;
- :mod:`~citybrain.access.audit`: the log of every change to a grant or credential.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module of citybrain.access that holds it.
_MODULE_OF = {
    **dict.fromkeys(("ACCESS_FILE", "AccessError", "AccessModel", "CATALOG_TOPIC", "CITY_ACCESS_FILE", "Grant",
                     "GUARDED_WRITE_ZONES", "OPERATIONS", "PRINCIPAL_RE", "SERVICE_PREFIX", "acl_covers",
                     "city_access_text", "department_grants", "department_principal", "load", "topics_of",
                     "who_can"), "grants"),
    **dict.fromkeys(("ApplyResult", "apply", "broker_acl_set", "broker_acl_set_if_up", "declared_acl_set", "rotate",
                     "topic_access"), "acls"),
    **dict.fromkeys(("CredentialStore", "client_config"), "credentials"),
    **dict.fromkeys(("Account", "AccountError", "AccountStore"), "accounts"),
    **dict.fromkeys(("try_read",), "probe"),
    **dict.fromkeys(("AuditLog", "audit_path", "read_audit"), "audit"),
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"citybrain.access.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'citybrain.access' has no attribute {name!r}")
