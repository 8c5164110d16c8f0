"""Who is looking: people's logins (password and one-time code), stored sessions that end when what they were
granted changes, a login rate limit.

Each person logs in with their own account (:mod:`citybrain.access.accounts`, managed with `citybrain
accounts`): name, password and the current code of their authenticator app (TOTP). What they may read is what
the access model grants their department's broker principal (``dept-<department>`` in ``infra/access.yaml``,
read again when the file changes), so the view never becomes a way around the broker's ACLs; the data
office's people also see the data office's pages. The broker's super user and the departments' shared
principals cannot log in here. A session ends on logout, on expiry, and as soon as the account's password, code
secret, role or department, or its department's grants, differ from what they were at login.
Passwords and codes are never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from citybrain.access import AccessError, AccessModel, topics_of
from citybrain.access.accounts import DATA_OFFICE, DEPARTMENT, Account, AccountStore, hash_password, verify_password
from citybrain.access.grants import CITY_ACCESS_FILE
from citybrain.access.totp import matching_step
from citybrain.gateway.hardening import ExpiringLru
from citybrain.settings import ADMIN_USER, Settings
from citybrain.times import now_iso
from citybrain.ui.sessions import SessionStore, sessions_path

log = logging.getLogger(__name__)

#: Failed logins per user and address allowed in WINDOW_S before further tries are refused.
MAX_FAILURES, WINDOW_S = 5, 300.0
#: Failed logins one address may make in WINDOW_S whatever user names it tries (made-up names each start afresh).
MAX_ADDRESS_FAILURES = 50
#: The most (user, address) and address failure records kept: the least recently failed are forgotten first.
MAX_TRACKED = 10_000


@dataclass(frozen=True)
class Viewer:
    """A logged-in person: their account name, department, whether they are the data office's, the topics their
    department may read."""

    principal: str
    department: str | None
    admin: bool
    topics: frozenset[str]
    role: str = DEPARTMENT

    def may_read(self, topic: str) -> bool:
        return self.admin or topic in self.topics

    def as_json(self) -> dict[str, object]:
        return {"principal": self.principal, "role": self.role, "department": self.department, "admin": self.admin,
                "topics": sorted(self.topics)}


class RateLimited(Exception):
    """Too many failed logins for one user from one address; ``retry_after`` seconds to wait."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after:.0f} s")
        self.retry_after = retry_after


def _signature(*paths: Path) -> tuple[tuple[int, int, int] | None, ...]:
    """What changes when any of ``paths`` is written, replaced or removed."""
    found: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
            found.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            found.append(None)
    return tuple(found)


@dataclass
class Authenticator:
    """Checks people's passwords and codes against the account store and keeps their sessions in the session store.

    ``reload`` reads the access model again (the view passes ``citybrain.access.load``); it is called when the access
    file or the city's changed on disk. Without it the model stays as given."""

    settings: Settings
    model: AccessModel
    topics: tuple[str, ...]
    session_s: float = 8 * 3600.0
    reload: Callable[[], AccessModel] | None = None
    #: Unix seconds now: the sessions' expiry and the one-time codes' steps.
    clock: Callable[[], float] = time.time
    accounts: AccountStore = field(init=False)
    sessions: SessionStore = field(init=False)
    #: Recent failure times per (user, address) and per address, bounded and forgotten WINDOW_S after the last.
    _failures: ExpiringLru[tuple[str, str], deque[float]] = field(
        default_factory=lambda: ExpiringLru(MAX_TRACKED, WINDOW_S))
    _address_failures: ExpiringLru[str, deque[float]] = field(
        default_factory=lambda: ExpiringLru(MAX_TRACKED, WINDOW_S))
    #: (user, address) pairs held back: a table of their own, so a flood of single failures cannot push one out.
    _locked: ExpiringLru[tuple[str, str], deque[float]] = field(
        default_factory=lambda: ExpiringLru(MAX_TRACKED, WINDOW_S))
    #: The view's own refused logins (who, from where, when, whether rate-limited), for the Security page.
    refused: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=500))

    def __post_init__(self) -> None:
        self.accounts = AccountStore(self.settings.access_dir)
        self.sessions = SessionStore(sessions_path(self.settings.access_dir))
        self._model_files = (self.model.source, self.settings.city_dir / CITY_ACCESS_FILE)
        self._model_seen = _signature(*self._model_files)
        self._decoy: str | None = None
        self._login_lock = threading.Lock()   # the view checks logins in worker threads: one at a time

    def _decoy_hash(self) -> str:
        """A hash no password matches, checked for unknown names so that the time taken does not tell names apart."""
        if self._decoy is None:
            self._decoy = hash_password(secrets.token_urlsafe(16))
        return self._decoy

    def current_model(self) -> AccessModel:
        """The access model as its files hold it now; a file that no longer loads leaves the last good model in
        force, as `citybrain access apply` leaves the broker's ACLs (the error is logged)."""
        seen = _signature(*self._model_files)
        if self.reload is not None and seen != self._model_seen:
            self._model_seen = seen
            try:
                self.model = self.reload()
                log.info("ui: access model reloaded from %s (digest %s)", self.model.source.name, self.model.digest)
            except AccessError as exc:
                log.error("ui: the changed access model does not load; the last good one stays in force: %s", exc)
        return self.model

    def viewer_of(self, department: str, role: str = DEPARTMENT, name: str | None = None) -> Viewer | None:
        """The remit of a person of ``department`` in ``role``: the grants of the department's principal
        (``dept-<department>``); None when the access model has none for the department (no one of it may log in)."""
        model = self.current_model()
        principal = next((p for p, d in model.departments.items() if d == department), None)
        if principal is None:
            return None
        return Viewer(name or principal, department, role == DATA_OFFICE,
                      frozenset(topics_of(model, principal, self.topics)), role)

    def _account_viewer(self, account: Account) -> Viewer | None:
        return self.viewer_of(account.department, account.role, account.name)

    def login(self, name: str, password: str, code: str, address: str) -> str | None:
        """A new session token, or None for a wrong name, password or code (or a code used already); raises
        RateLimited."""
        with self._login_lock:
            return self._login(name, password, code, address)

    def _login(self, name: str, password: str, code: str, address: str) -> str | None:
        now = time.monotonic()
        key = (name, address)
        tries = _recent(self._locked.get(key) or self._failures.get(key), now)
        from_address = _recent(self._address_failures.get(address), now)
        for held, limit in ((tries, MAX_FAILURES), (from_address, MAX_ADDRESS_FAILURES)):
            if len(held) >= limit:
                self.refused.append({"principal": name, "address": address, "at": now_iso(), "rate_limited": True})
                raise RateLimited(WINDOW_S - (now - held[0]))
        account = self.accounts.get(name) if name != ADMIN_USER else None   # the super user is never a person
        why, viewer = self._refusal(account, password, code)
        if viewer is None or account is None:
            tries.append(now)
            from_address.append(now)
            if len(tries) >= MAX_FAILURES:
                self._locked.put(key, tries)
                self._failures.pop(key)
            else:
                self._failures.put(key, tries)
            self._address_failures.put(address, from_address)
            self.refused.append({"principal": name, "address": address, "at": now_iso(), "rate_limited": False})
            log.warning("ui login refused for %r from %s: %s (%d recent failure(s))", name, address, why, len(tries))
            return None
        self._failures.pop(key)
        self._locked.pop(key)
        token = secrets.token_urlsafe(32)
        self.sessions.drop_expired(self.clock())
        self.sessions.add(token, account.name, account.fingerprint(viewer.topics), self.clock() + self.session_s)
        log.info("ui login: %s (%s, %s) from %s", account.name, account.role, account.department, address)
        return token

    def _refusal(self, account: Account | None, password: str, code: str) -> tuple[str, Viewer | None]:
        """(why the login is refused, None) or ('', the person's viewer): the password first (an unknown name costs
        the same time), the department's place in the access model, then the code, which must not have been used."""
        if not verify_password(account.password_hash if account else self._decoy_hash(), password) or account is None:
            return "unknown account or wrong password", None
        viewer = self._account_viewer(account)
        if viewer is None:
            return f"department {account.department!r} has no principal in the access model", None
        step = matching_step(account.totp_secret, code, self.clock())
        if step is None:
            return "wrong or expired one-time code", None
        if not self.sessions.use_step(account.name, step):
            return "one-time code used already", None
        return "", viewer

    def session(self, token: str | None) -> Viewer | None:
        """The viewer of a live session; one expired, or whose account or grants changed since login, is ended."""
        found = self.sessions.get(token) if token else None
        if found is None:
            return None
        account = self.accounts.get(found.account)
        viewer = self._account_viewer(account) if account else None
        if self.clock() > found.expires:
            why = "expired"
        elif account is None or viewer is None:
            why = "the account or its department's principal is gone"
        elif account.fingerprint(viewer.topics) != found.fingerprint:
            why = "the account's password, code secret, role, department or grants changed"
        else:
            return viewer
        self.sessions.drop(token or "")
        log.info("ui session of %s ended: %s", found.account, why)
        return None

    def logout(self, token: str | None) -> None:
        if token:
            self.sessions.drop(token)

    def tracked(self) -> int:
        """How many failure records the limiter holds (each of its three tables bounded by MAX_TRACKED)."""
        return len(self._failures) + len(self._address_failures) + len(self._locked)


def _recent(times: deque[float] | None, now: float) -> deque[float]:
    """``times`` without those older than WINDOW_S (a new deque when there were none)."""
    times = times if times is not None else deque()
    while times and now - times[0] > WINDOW_S:
        times.popleft()
    return times
