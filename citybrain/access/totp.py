"""Time-based one-time passwords (TOTP, RFC 6238, over HOTP, RFC 4226): the second factor of a person's login.

The codes an authenticator app (FreeOTP, Google Authenticator, Microsoft Authenticator) shows from an
``otpauth://`` URI: HMAC-SHA1 of the 30-second step since the Unix epoch, 6 digits. A code is accepted one
step either side of now (clocks drift, people type slowly); which step it matched is returned, so the caller
can refuse any code of that step or an earlier one again (RFC 6238 §5.2: a code is used once).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from urllib.parse import quote, urlencode

__all__ = ["DIGITS", "STEP_S", "WINDOW", "hotp", "matching_step", "new_secret", "otpauth_uri", "secret_bytes", "totp"]

STEP_S = 30
DIGITS = 6
#: Steps accepted either side of the current one.
WINDOW = 1


def new_secret() -> str:
    """A new shared secret: 160 random bits (RFC 4226 §4 recommends them), in base32 as apps take it."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def secret_bytes(secret: str) -> bytes:
    """The key behind a base32 secret (spaces, case and missing padding forgiven, as apps show it)."""
    text = secret.replace(" ", "").upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def hotp(key: bytes, counter: int, digits: int = DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 §5.3: the dynamically truncated HMAC of ``counter``, ``digits`` long."""
    mac = hmac.new(key, struct.pack(">Q", counter), getattr(hashlib, digest)).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10 ** digits).zfill(digits)


def totp(key: bytes, at: float, digits: int = DIGITS, digest: str = "sha1", step_s: int = STEP_S) -> str:
    """RFC 6238 §4.2: the code of the step ``at`` (Unix seconds) falls in."""
    return hotp(key, int(at // step_s), digits, digest)


def matching_step(secret: str, code: str, at: float) -> int | None:
    """The step within ``WINDOW`` of ``at`` whose code is ``code`` (compared in constant time), else None."""
    key, now = secret_bytes(secret), int(at // STEP_S)
    found = None
    for step in range(now - WINDOW, now + WINDOW + 1):   # every step is computed: the time taken says nothing
        if hmac.compare_digest(hotp(key, step).encode(), code.strip().encode()):
            found = step
    return found


def otpauth_uri(secret: str, account: str, issuer: str = "CityBrain") -> str:
    """The key URI authenticator apps read (as a QR code or pasted): ``otpauth://totp/<issuer>:<account>?...``."""
    query = urlencode({"secret": secret, "issuer": issuer, "algorithm": "SHA1", "digits": DIGITS, "period": STEP_S})
    return f"otpauth://totp/{quote(issuer)}:{quote(account)}?{query}"
