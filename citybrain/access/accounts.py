"""People who log in to the operations view: one account per person, with a role, a department, a password
kept as a scrypt hash and a TOTP secret (the second factor), in ``<access_dir>/accounts.json`` (owner-only).

Roles: ``data_office`` (the data office's pages: data, security, broker; its department is the data office's,
``data_bureau``) and ``department`` (a department's duty officer: its own remit). What a person may read is the
grants ``infra/access.yaml`` gives their department's broker principal (``dept-<department>``): the view never
reads more than the broker would let that department read. No account is the broker's super user, nor a
department's shared principal: people log in as themselves.

Passwords: scrypt (RFC 7914) with N=2^15, r=8, p=1 (32 MiB and about 0.1 s per try, OWASP's recommended floor),
a 16-byte random salt per account and a 32-byte key, stored as ``scrypt$N$r$p$<salt>$<key>`` (base64), so
raising the cost later leaves older hashes verifiable. TOTP secrets must be read back to check a code, so they
are kept as they are, in this owner-only file (``citybrain.access.totp``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Collection, Iterable, Iterator

from citybrain.access.totp import new_secret
from citybrain.errors import InputError
from citybrain.settings import ADMIN_USER, write_private
from citybrain.times import now_iso

__all__ = ["DATA_OFFICE", "DATA_OFFICE_DEPARTMENT", "ROLES", "Account", "AccountError", "AccountStore", "accounts_path",
           "hash_password", "verify_password"]

DATA_OFFICE, DEPARTMENT = "data_office", "department"
ROLES = (DATA_OFFICE, DEPARTMENT)
#: The department every data-office account belongs to (its broker principal is ``dept-data_bureau``).
DATA_OFFICE_DEPARTMENT = "data_bureau"
#: scrypt's cost: N (CPU and memory), r (block size), p (parallelism); memory is 128 * N * r bytes.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
MIN_PASSWORD = 12
NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{2,60}$")


class AccountError(InputError):
    """An account, role, department or password breaks a rule; the message names it and the fix."""


def accounts_path(access_dir: Path) -> Path:
    """The account store of a deployment: beside the departments' broker credentials, owner-only."""
    return access_dir / "accounts.json"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES, maxmem=256 * n * r + 2 ** 20)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$<salt>$<key>`` of ``password`` with a new random salt at today's cost."""
    salt = os.urandom(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(key).decode()}"


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` (a :func:`hash_password` string) was made from; constant time."""
    scheme, n, r, p, salt, key = stored.split("$")
    if scheme != "scrypt":
        raise AccountError(f"unknown password hash scheme {scheme!r} (only scrypt is known). "
                           "Fix: set the password again with `citybrain accounts passwd`.")
    return hmac.compare_digest(_scrypt(password, base64.b64decode(salt), int(n), int(r), int(p)), base64.b64decode(key))


@dataclass(frozen=True)
class Account:
    """One person: what they may do (role, department) and how they prove who they are (password hash, TOTP secret)."""

    name: str
    role: str
    department: str
    password_hash: str
    totp_secret: str
    created_at: str
    changed_at: str

    def fingerprint(self, topics: Iterable[str]) -> str:
        """What a session was granted on: the account's role, department and secrets, and the topics its department
        may read. A session whose fingerprint no longer matches (a new password, role, department or grant) is over."""
        material = json.dumps([self.name, self.role, self.department, self.password_hash, self.totp_secret,
                               sorted(topics)])
        return hashlib.sha256(material.encode()).hexdigest()

    def public(self) -> dict[str, str]:
        """The account without its secrets, for listings."""
        return {"name": self.name, "role": self.role, "department": self.department, "created_at": self.created_at,
                "changed_at": self.changed_at}


class AccountStore:
    """The accounts file: read again whenever it changed on disk (another process, the CLI, may change it), changed
    under an exclusive lock so the view and the CLI never lose each other's writes."""

    def __init__(self, access_dir: Path) -> None:
        self.path = accounts_path(access_dir)
        self._seen: tuple[tuple[int, int, int], dict[str, Account]] | None = None

    def accounts(self) -> dict[str, Account]:
        """Every account by name, as the file holds them now."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._seen is None or self._seen[0] != signature:
            self._seen = (signature, {name: Account(**fields) for name, fields in json.loads(self.path.read_text()).items()})
        return dict(self._seen[1])

    def get(self, name: str) -> Account | None:
        return self.accounts().get(name)

    def add(self, name: str, role: str, department: str, password: str, departments: Collection[str]) -> Account:
        """A new account with a new TOTP secret; ``departments``: the departments the access model knows."""
        _check_name(name)
        _check_role(role, department, departments)
        _check_password(name, password)
        with self._changing() as accounts:
            if name in accounts:
                raise AccountError(f"account {name!r} exists already. Fix: choose another name, or "
                                   "`citybrain accounts passwd` / `set` to change it.")
            now = now_iso()
            accounts[name] = Account(name, role, department, hash_password(password), new_secret(), now, now)
            return accounts[name]

    def set_password(self, name: str, password: str) -> Account:
        """A new password: every session of the account ends."""
        _check_password(name, password)
        return self._change(name, password_hash=hash_password(password))

    def reset_totp(self, name: str) -> Account:
        """A new TOTP secret (a lost phone): every session of the account ends, the old codes stop working."""
        return self._change(name, totp_secret=new_secret())

    def set_role(self, name: str, role: str, department: str, departments: Collection[str]) -> Account:
        """A new role or department: every session of the account ends."""
        _check_role(role, department, departments)
        return self._change(name, role=role, department=department)

    def remove(self, name: str) -> Account:
        with self._changing() as accounts:
            return accounts.pop(self._known(name, accounts).name)

    def _change(self, name: str, **fields: str) -> Account:
        with self._changing() as accounts:
            accounts[name] = replace(self._known(name, accounts), **fields, changed_at=now_iso())
            return accounts[name]

    @staticmethod
    def _known(name: str, accounts: dict[str, Account]) -> Account:
        if name not in accounts:
            raise AccountError(f"no account {name!r}. Known: {', '.join(sorted(accounts)) or 'none'}. "
                               "Fix: `citybrain accounts list`, or `citybrain accounts add` it.")
        return accounts[name]

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Account]]:
        """The accounts to change, written back (owner-only, atomically) when the block ends without an error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._seen = None
            accounts = self.accounts()
            yield accounts
            write_private(self.path, json.dumps({n: asdict(a) for n, a in sorted(accounts.items())}, indent=1))


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise AccountError(f"account name {name!r} breaks the rule {NAME_RE.pattern} (lower case, 3-61 characters). "
                           "Fix: a person's name such as wang.li.")
    if name == ADMIN_USER or name.startswith("dept-") or name.startswith("svc-"):
        raise AccountError(f"account name {name!r} is a broker principal's (the super user, a department's or a "
                           "service's): people log in as themselves. Fix: a person's name such as wang.li.")


def _check_role(role: str, department: str, departments: Collection[str]) -> None:
    if role not in ROLES:
        raise AccountError(f"role {role!r} is not one of {', '.join(ROLES)}. Fix: --role {DATA_OFFICE} for the data "
                           f"office, --role {DEPARTMENT} for a department's duty officer.")
    if department not in departments:
        raise AccountError(f"department {department!r} is not in the access model. Known: "
                           f"{', '.join(sorted(departments))}. Fix: one of them, or declare it in access.yaml.")
    if role == DATA_OFFICE and department != DATA_OFFICE_DEPARTMENT:
        raise AccountError(f"a {DATA_OFFICE} account belongs to the data office ({DATA_OFFICE_DEPARTMENT}), not "
                           f"{department!r}. Fix: --department {DATA_OFFICE_DEPARTMENT}, or --role {DEPARTMENT}.")


def _check_password(name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD or password.lower() == name.lower():
        raise AccountError(f"the password of {name!r} is shorter than {MIN_PASSWORD} characters or is the account's "
                           f"name. Fix: at least {MIN_PASSWORD} characters, or let the command generate one.")
