"""Who may do what: departments' and services' grants as broker ACLs, their credentials, the access
audit, and the personal-data protections of :mod:`citybrain.access.privacy`.

``from citybrain import access`` gives the public API of the grants (:mod:`citybrain.access.grants`),
loaded on first use, so the stream workers' ``citybrain.access.privacy`` does not pull in the broker's admin client.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ACCESS_FILE",
    "AccessError",
    "AccessModel",
    "ApplyResult",
    "AuditLog",
    "CATALOG_TOPIC",
    "CredentialStore",
    "Grant",
    "OPERATIONS",
    "PRINCIPAL_RE",
    "acl_covers",
    "apply",
    "audit_path",
    "broker_acl_set",
    "broker_acl_set_if_up",
    "client_config",
    "declared_acl_set",
    "load",
    "read_audit",
    "rotate",
    "topic_access",
    "topics_of",
    "try_read",
    "who_can",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("citybrain.access.grants"), name)
    raise AttributeError(f"module 'citybrain.access' has no attribute {name!r}")
