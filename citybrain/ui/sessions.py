"""The operations view's sessions and used one-time codes, in SQLite under the access folder
(``<access_dir>/ui-sessions.sqlite``, owner-only), so a restart of the view logs no one out.

A session row keeps the SHA-256 of its token (the file gives no one a live cookie), the account, the
fingerprint of what the account was granted at login (:meth:`citybrain.access.accounts.Account.fingerprint`)
and its expiry in Unix seconds. The last TOTP step each account logged in with is kept beside them: a code of
that step or an earlier one is refused (RFC 6238 §5.2).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["SessionRow", "SessionStore", "sessions_path"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (token_sha256 TEXT PRIMARY KEY, account TEXT NOT NULL, fingerprint TEXT NOT NULL,
                                     expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_account ON sessions (account);
CREATE TABLE IF NOT EXISTS totp_used (account TEXT PRIMARY KEY, step INTEGER NOT NULL);
"""


def sessions_path(access_dir: Path) -> Path:
    return access_dir / "ui-sessions.sqlite"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionRow:
    account: str
    fingerprint: str
    expires: float


class SessionStore:
    """Sessions by token and the last TOTP step per account; each call opens its own connection (the view calls
    from its event loop and from worker threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:   # one transaction, committed unless the block raised
                yield db
        finally:
            db.close()

    def add(self, token: str, account: str, fingerprint: str, expires: float) -> None:
        with self._db() as db:
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (_digest(token), account, fingerprint, expires))

    def get(self, token: str) -> SessionRow | None:
        with self._db() as db:
            row = db.execute("SELECT account, fingerprint, expires FROM sessions WHERE token_sha256 = ?",
                             (_digest(token),)).fetchone()
        return SessionRow(*row) if row else None

    def drop(self, token: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_digest(token),))

    def drop_expired(self, now: float) -> int:
        with self._db() as db:
            return db.execute("DELETE FROM sessions WHERE expires < ?", (now,)).rowcount

    def count(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT count(*) FROM sessions").fetchone()[0])

    def last_step(self, account: str) -> int | None:
        """The step of the code ``account`` last logged in with (a client waits for a later one)."""
        with self._db() as db:
            row = db.execute("SELECT step FROM totp_used WHERE account = ?", (account,)).fetchone()
        return int(row[0]) if row else None

    def use_step(self, account: str, step: int) -> bool:
        """Record that ``account`` logged in with the code of ``step``; False (nothing recorded) when a code of that
        step or a later one was used already."""
        with self._db() as db:
            changed = db.execute("INSERT INTO totp_used VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET step = "
                                 "excluded.step WHERE excluded.step > totp_used.step", (account, step)).rowcount
        return changed == 1
