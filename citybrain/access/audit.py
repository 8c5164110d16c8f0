"""The access audit: every change to a grant or credential, appended to ``<state_dir>/access/audit.jsonl``
with who made it, when, and from which version of the access file."""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from citybrain.access.grants import AccessModel, Acl

__all__ = ["AuditLog", "audit_path", "read_audit"]


class AuditLog:
    """Append-only JSON lines: who changed which grant or credential, when, from which file version."""

    def __init__(self, access_dir: Path, actor: str | None, model: AccessModel) -> None:
        self.path = audit_path(access_dir)
        self.actor = actor or _actor()
        self.model = model
        self.failures: list[str] = []

    def record(self, action: str, principal: str, acl: Acl | None = None, error: str | None = None) -> None:
        entry: dict[str, Any] = {"at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                                 "actor": self.actor, "action": action, "principal": principal.removeprefix("User:"),
                                 "source": self.model.source.name, "source_digest": self.model.digest,
                                 "result": "ok" if error is None else f"failed: {error}"}
        if acl is not None:
            entry.update(resource_type=acl[1].lower(), resource=acl[2], pattern=acl[3].lower(), operation=acl[4].lower())
        if error is not None:
            self.failures.append(f"{action} {principal}: {error}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def audit_path(access_dir: Path) -> Path:
    """Where the audit log of ``access_dir`` lives."""
    return access_dir / "audit.jsonl"


def read_audit(access_dir: Path, last: int = 50) -> list[dict[str, Any]]:
    """The ``last`` entries of the audit log, oldest first; none when nothing was changed yet."""
    path = audit_path(access_dir)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()[-last:] if line.strip()]


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"
