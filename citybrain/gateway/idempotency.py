"""Open311 retries without duplicate tickets: POST requests.json keyed by the caller's Idempotency-Key.

A partner that did not get an answer (a timeout, a 503) cannot tell whether its ticket was opened.
It sends the request again with the same ``Idempotency-Key`` header (or ``idempotency_key`` form
field, for form clients that cannot set headers): the gateway answers the first ticket, with the
same ``service_request_id``, instead of opening another. A first attempt the broker did not
acknowledge is sent again as the same record (same id, same times), so a record that did land is
not doubled downstream either. The same key with different parameters is refused (422), a key whose
first request is still being written answers 409.

Keys are kept per partner in memory, least recently used first out, for
CITYBRAIN_GATEWAY_IDEMPOTENCY_TTL_S seconds and at most CITYBRAIN_GATEWAY_IDEMPOTENCY_KEYS keys;
a gateway restart forgets them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from citybrain.gateway.open311 import EdgeError

__all__ = ["HEADER", "PARAM", "Attempt", "IdempotencyKeys", "fingerprint", "idempotency_key"]

HEADER = "Idempotency-Key"
PARAM = "idempotency_key"
MAX_KEY_CHARS = 255


@dataclass
class Attempt:
    """One keyed request: what it asked (``fingerprint``), the record it opened and, once stored, the answer."""

    fingerprint: str
    record: dict[str, Any]
    reply: list[dict[str, Any]] | None = None
    busy: bool = True
    at: float = field(default=0.0)


class IdempotencyKeys:
    """(partner, key) -> Attempt: an LRU of at most ``max_keys`` entries, each kept ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_keys, self._clock = ttl_s, max_keys, clock
        self._attempts: OrderedDict[tuple[str, str], Attempt] = OrderedDict()

    def __len__(self) -> int:
        return len(self._attempts)

    def get(self, partner: str, key: str) -> Attempt | None:
        """The attempt under ``key``, unless it is older than the TTL (then it is forgotten)."""
        attempt = self._attempts.get((partner, key))
        if attempt is None:
            return None
        if self._clock() - attempt.at > self.ttl_s:
            del self._attempts[(partner, key)]
            return None
        self._attempts.move_to_end((partner, key))
        return attempt

    def put(self, partner: str, key: str, attempt: Attempt) -> None:
        """Keep ``attempt``; the least recently used attempts beyond ``max_keys`` are forgotten."""
        attempt.at = self._clock()
        self._attempts[(partner, key)] = attempt
        self._attempts.move_to_end((partner, key))
        while len(self._attempts) > self.max_keys:
            self._attempts.popitem(last=False)


def idempotency_key(headers: Mapping[str, str], params: Mapping[str, Any]) -> tuple[str | None, EdgeError | None]:
    """The request's key (header, else form field), None without one, or why the key cannot be used."""
    key = headers.get(HEADER)
    field_key = params.get(PARAM)
    if key is None:
        key = field_key
    elif field_key not in (None, key):
        return None, EdgeError(400, f"the {HEADER} header and the {PARAM} field differ; send one of them",
                               PARAM, "idempotency-key")
    if key is None:
        return None, None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS or not key.isascii() or not key.isprintable():
        return None, EdgeError(400, f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable ASCII characters (a UUID is "
                                    f"usual), got {str(key)[:80]!r}", PARAM, "idempotency-key")
    return key, None


def fingerprint(params: Mapping[str, Any]) -> str:
    """What a request asked, so a key sent again with other parameters is told apart."""
    text = json.dumps(params, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
