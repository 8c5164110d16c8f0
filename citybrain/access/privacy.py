"""Personal data leaving the restricted raw zone: pseudonymised, coarsened or dropped, as the contract says.

Every personal field of a raw contract (``x-personal: true``) declares ``x-protect``:

- ``pseudonymise``: a keyed hash (HMAC-SHA-256) of the normalised value, so the same caller
  links across tickets without revealing the number, and nobody without the key can test a
  guessed number against it;
- ``coarsen_street``: an exact address becomes the street (街道) it lies in, resolved from the
  record's coordinates in the stream;
- ``drop``: free text and names do not leave the raw zone at all.

The key is configuration: ``CITYBRAIN_PSEUDONYM_KEY``, or on a local platform a random key
created once in ``<access_dir>/pseudonym.key`` (``var/access/``) (owner-only). Changing the key breaks the
links between old and new pseudonyms, so rotate it only with a new lake.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Any

from citybrain.contracts.model import PROTECTIONS, Contract
from citybrain.errors import InputError

__all__ = ["PROTECTIONS", "Protector", "PrivacyError", "load_key", "protector_from_settings"]

PREFIX = "psn_"
MIN_KEY_CHARS = 32


class PrivacyError(InputError):
    """The pseudonymisation key is missing or too weak; the message says how to fix it."""


def _normalise(value: str) -> str:
    """Spaces, dashes and a +86/0086 country prefix do not make a different caller."""
    v = re.sub(r"[\s()-]", "", str(value)).lower()
    return re.sub(r"^(\+86|0086)(?=1\d{10}$)", "", v)


class Protector:
    """Applies a contract's ``x-protect`` rules with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise PrivacyError(f"the pseudonymisation key has {len(key)} characters; at least {MIN_KEY_CHARS} are needed. "
                               "Fix: set CITYBRAIN_PSEUDONYM_KEY to e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`.")
        self._key = key

    @classmethod
    def ephemeral(cls) -> "Protector":
        """A random key: pseudonyms link within this process only (replays, tests)."""
        return cls(secrets.token_bytes(32))

    def pseudonym(self, value: str) -> str:
        """``psn_`` + 120 bits of the HMAC in lower-case base32 (a-z, 2-7): no 0, 1, 8 or 9, so a
        pseudonym can never look like a mobile or ID number to a scanner (hex did, about 1 in 1,000)."""
        digest = hmac.new(self._key, _normalise(value).encode(), hashlib.sha256).digest()
        return PREFIX + base64.b32encode(digest[:15]).decode().lower()

    def protect(self, contract: Contract, record: dict[str, Any], street_name: str | None) -> dict[str, Any]:
        """The protected form of ``record``'s personal fields: ``<field>_ref`` for pseudonymised ones,
        ``<field>_street`` for coarsened ones; dropped fields and absent values give nothing."""
        out: dict[str, Any] = {}
        for name in contract.personal_fields():
            value = record.get(name)
            if value in (None, ""):
                continue
            how = contract.fields[name].protect
            if how == "pseudonymise":
                out[f"{name}_ref"] = self.pseudonym(str(value))
            elif how == "coarsen_street":
                out[f"{name}_street"] = street_name
        return out


def load_key(access_dir: Path, configured: str | None) -> bytes:
    """The configured key, else the local platform's key file (created on first use, owner-only)."""
    if configured:
        return configured.encode()
    path = access_dir / "pseudonym.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:   # another worker created it first
            return path.read_text().strip().encode()
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def protector_from_settings(settings: Any) -> Protector:
    key = settings.pseudonym_key.get_secret_value() if settings.pseudonym_key else None
    return Protector(load_key(settings.access_dir, key))
