"""The demo's people: an operations-view account for the data office and one duty officer per department, with
their passwords and one-time code secrets in ``<access_dir>/demo-accounts.json`` (owner-only), which `citybrain
demo` and `citybrain up` fill and the browser tests, `make bench` and a developer log in with."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from citybrain.access.accounts import DATA_OFFICE, DATA_OFFICE_DEPARTMENT, DEPARTMENT, AccountStore
from citybrain.access.totp import STEP_S, otpauth_uri, secret_bytes, totp
from citybrain.settings import Settings, write_private
from citybrain.ui.sessions import SessionStore, sessions_path

__all__ = ["OFFICE", "DemoAccount", "demo_account", "demo_accounts_path", "duty_officer", "ensure_demo_accounts"]

#: The data office's demo person; each department's is :func:`duty_officer`.
OFFICE = "office.data"


def duty_officer(department: str) -> str:
    return f"duty.{department}"


def demo_accounts_path(settings: Settings) -> Path:
    return settings.access_dir / "demo-accounts.json"


@dataclass(frozen=True)
class DemoAccount:
    """A demo person's login: name, password and code secret (and where the view records the codes used)."""

    name: str
    role: str
    department: str
    password: str
    totp_secret: str
    otpauth_uri: str
    access_dir: Path

    def code(self) -> str:
        """The current one-time code; when the view took this step's code already (an earlier login), the next
        step's, once it comes (at most 30 s): each code is good once."""
        used = SessionStore(sessions_path(self.access_dir)).last_step(self.name)
        now = time.time()
        if used is not None and int(now // STEP_S) <= used:
            time.sleep((used + 1) * STEP_S - now + 0.2)
            now = time.time()
        return totp(secret_bytes(self.totp_secret), now)


def ensure_demo_accounts(settings: Settings, departments: Iterable[str]) -> tuple[Path, int]:
    """The data office's person and a duty officer for each of ``departments``, opened where missing (those there
    keep their passwords, so a logged-in page stays logged in); (the file with their credentials, how many opened)."""
    store, path = AccountStore(settings.access_dir), demo_accounts_path(settings)
    known = json.loads(path.read_text()) if path.exists() else {}
    declared = set(departments)
    wanted = [(OFFICE, DATA_OFFICE, DATA_OFFICE_DEPARTMENT)] if DATA_OFFICE_DEPARTMENT in declared else []
    wanted += [(duty_officer(d), DEPARTMENT, d) for d in sorted(declared)]
    opened = 0
    for name, role, department in wanted:
        if store.get(name) is not None:   # kept as it is (one opened by hand keeps its password, and is not listed)
            continue
        password = secrets.token_urlsafe(15)
        account = store.add(name, role, department, password, declared)
        opened += 1
        known[name] = {"role": role, "department": department, "password": password,
                       "totp_secret": account.totp_secret, "otpauth_uri": otpauth_uri(account.totp_secret, name)}
    write_private(path, json.dumps(known, indent=1, sort_keys=True))
    return path, opened


def demo_account(settings: Settings, department: str | None = None) -> DemoAccount:
    """The demo's data-office person, or ``department``'s duty officer."""
    path = demo_accounts_path(settings)
    name = duty_officer(department) if department else OFFICE
    if not path.exists():
        raise FileNotFoundError(f"{path.name} does not exist in the access folder: no demo accounts were opened. "
                                "Fix: `citybrain demo` (or `citybrain up`) opens them.")
    known = json.loads(path.read_text())
    if name not in known:
        raise LookupError(f"no demo account {name!r} in {path.name} (it has {', '.join(sorted(known))}). "
                       "Fix: `citybrain demo` opens one for every department of the access model.")
    fields = known[name]
    return DemoAccount(name, fields["role"], fields["department"], fields["password"], fields["totp_secret"],
                       fields["otpauth_uri"], settings.access_dir)
