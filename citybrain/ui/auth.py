"""Who is looking: logins with the platform's own credentials, sessions that expire, a login rate limit.

A department logs in as its broker principal (``dept-police``) with the password the platform
generated for it (``citybrain access client-config police``); the data office logs in as the broker's
admin principal or as ``dept-data_bureau``. What a viewer may read is what the access model
grants its principal on the broker (``infra/access.yaml``), so the view never becomes a way
around the broker's ACLs. Passwords are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from citybrain.access import AccessModel, CredentialStore, topics_of
from citybrain.gateway.hardening import ExpiringLru
from citybrain.settings import ADMIN_USER, Settings, credentials_path
from citybrain.times import now_iso

log = logging.getLogger(__name__)

#: The data office's principals: they see the whole platform.
DATA_OFFICE = (ADMIN_USER, "dept-data_bureau")
#: Failed logins per user and address allowed in WINDOW_S before further tries are refused.
MAX_FAILURES, WINDOW_S = 5, 300.0
#: Failed logins one address may make in WINDOW_S whatever user names it tries (made-up names each start afresh).
MAX_ADDRESS_FAILURES = 50
#: The most (user, address) and address failure records kept: the least recently failed are forgotten first.
MAX_TRACKED = 10_000


@dataclass(frozen=True)
class Viewer:
    """A logged-in principal: its department (None for the broker's admin) and the topics it may read."""

    principal: str
    department: str | None
    admin: bool
    topics: frozenset[str]

    def may_read(self, topic: str) -> bool:
        return self.admin or topic in self.topics

    def as_json(self) -> dict[str, object]:
        return {"principal": self.principal, "department": self.department, "admin": self.admin,
                "topics": sorted(self.topics)}


@dataclass
class Session:
    viewer: Viewer
    expires: float


class RateLimited(Exception):
    """Too many failed logins for one user from one address; ``retry_after`` seconds to wait."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass
class Authenticator:
    """Checks passwords against the platform's credential stores and keeps the sessions."""

    settings: Settings
    model: AccessModel
    topics: tuple[str, ...]
    session_s: float = 8 * 3600.0
    _sessions: dict[str, Session] = field(default_factory=dict)
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

    def _password_of(self, principal: str) -> str | None:
        if principal == ADMIN_USER:
            path = credentials_path(self.settings.kafka_dir)
            return json.loads(path.read_text())["admin_password"] if path.exists() else None
        return CredentialStore(self.settings.access_dir).passwords.get(principal)

    def viewer(self, principal: str) -> Viewer:
        department = self.model.departments.get(principal)
        grants = topics_of(self.model, principal, self.topics) if principal != ADMIN_USER else {}
        return Viewer(principal, department, principal in DATA_OFFICE, frozenset(grants))

    def login(self, principal: str, password: str, address: str) -> str | None:
        """A new session token, or None for a wrong user or password; raises RateLimited."""
        now = time.monotonic()
        key = (principal, address)
        tries = _recent(self._locked.get(key) or self._failures.get(key), now)
        from_address = _recent(self._address_failures.get(address), now)
        for held, limit in ((tries, MAX_FAILURES), (from_address, MAX_ADDRESS_FAILURES)):
            if len(held) >= limit:
                self.refused.append({"principal": principal, "address": address, "at": now_iso(), "rate_limited": True})
                raise RateLimited(WINDOW_S - (now - held[0]))
        known = self._password_of(principal) if (principal == ADMIN_USER or principal in self.model.departments) else None
        if known is None or not hmac.compare_digest(known.encode(), password.encode()):
            tries.append(now)
            from_address.append(now)
            if len(tries) >= MAX_FAILURES:
                self._locked.put(key, tries)
                self._failures.pop(key)
            else:
                self._failures.put(key, tries)
            self._address_failures.put(address, from_address)
            self.refused.append({"principal": principal, "address": address, "at": now_iso(), "rate_limited": False})
            log.warning("ui login refused for %r from %s (%d recent failure(s))", principal, address, len(tries))
            return None
        self._failures.pop(key)
        self._locked.pop(key)
        token = secrets.token_urlsafe(32)
        self._sessions[token] = Session(self.viewer(principal), now + self.session_s)
        log.info("ui login: %s from %s", principal, address)
        return token

    def session(self, token: str | None) -> Viewer | None:
        """The viewer of a live session; an expired one is forgotten."""
        found = self._sessions.get(token or "")
        if found is None:
            return None
        if time.monotonic() > found.expires:
            self._sessions.pop(token or "", None)
            return None
        return found.viewer

    def logout(self, token: str | None) -> None:
        self._sessions.pop(token or "", None)

    def tracked(self) -> int:
        """How many failure records the limiter holds (each of its three tables bounded by MAX_TRACKED)."""
        return len(self._failures) + len(self._address_failures) + len(self._locked)


def _recent(times: deque[float] | None, now: float) -> deque[float]:
    """``times`` without those older than WINDOW_S (a new deque when there were none)."""
    times = times if times is not None else deque()
    while times and now - times[0] > WINDOW_S:
        times.popleft()
    return times
