"""Departments' and platform services' credentials: passwords generated once and kept owner-only in
``<state_dir>/access/credentials.json``, and the client settings a department needs to connect (a service reads
its own password from there through its settings, ``Settings.service_password``)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from citybrain.access.grants import AccessError, AccessModel
from citybrain.settings import CREDENTIAL_STORE, SASL_MECHANISM, Settings, write_private

__all__ = ["CredentialStore", "client_config"]


class CredentialStore:
    """Department and service passwords, generated once; the file is readable by its owner only."""

    def __init__(self, access_dir: Path) -> None:
        self.path = access_dir / CREDENTIAL_STORE
        self.passwords: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def password(self, principal: str) -> str:
        """The principal's password, generated on first use."""
        if principal not in self.passwords:
            self.set(principal, secrets.token_urlsafe(24))
        return self.passwords[principal]

    def set(self, principal: str, password: str) -> None:
        self.passwords[principal] = password
        self._save()

    def forget(self, principal: str) -> None:
        self.passwords.pop(principal, None)
        self._save()

    def _save(self) -> None:
        write_private(self.path, json.dumps(self.passwords, indent=1, sort_keys=True))


def client_config(settings: Settings, model: AccessModel, department: str) -> dict[str, Any]:
    """What a department's Kafka client needs to connect as its own principal."""
    principal = model.principal_of(department)
    if principal not in model.departments:
        raise AccessError(f"{principal} is the platform's {model.holder(principal)}, which reads its password from the "
                          "credential store itself; client settings are handed to departments. Fix: name a department.")
    store = CredentialStore(settings.access_dir)
    if principal not in store.passwords:
        raise AccessError(f"{principal} has no credential yet. Fix: `citybrain access apply` creates it.")
    protocol = "SASL_PLAINTEXT" if settings.embedded else settings.security_protocol
    return {"principal": principal, "department": model.departments[principal],
            "bootstrap_servers": settings.bootstrap, "security_protocol": protocol,
            "sasl_mechanism": SASL_MECHANISM, "sasl_username": principal, "sasl_password": store.passwords[principal],
            "group_prefix": f"{principal}."}
