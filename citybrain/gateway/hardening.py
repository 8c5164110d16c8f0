"""What every HTTP answer of the platform carries and every per-client table keeps to: the security headers,
the trace id of a failed answer, and a bounded, expiring table for limiters and caches.

The gateway and the operations view both use it (the view sits above the gateway's room), so a browser,
a partner system and an attacker meet the same rules on both.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

from aiohttp import web

__all__ = ["API_CSP", "TRACE_HEADER", "ExpiringLru", "security_headers"]

#: The trace id of an answer a server failed on, also in the log line that tells what failed.
TRACE_HEADER = "X-CityBrain-Trace-Id"
#: An answer that is data, never a page: nothing may load, run or frame it.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: Browsers remember for a year to come back only over HTTPS.
HSTS = "max-age=31536000; includeSubDomains"
FIXED = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

K = TypeVar("K")
V = TypeVar("V")


def security_headers(app: web.Application, csp: Callable[[web.Request], str], behind_tls_proxy: bool) -> None:
    """Stamp every answer of ``app`` (handlers', static files', streams' and aiohttp's own refusals) with a
    Content-Security-Policy (``csp`` of the request), X-Frame-Options DENY, nosniff and no referrer, and with
    Strict-Transport-Security when the request came over TLS or ``behind_tls_proxy`` says a proxy terminates it.

    A response-prepare signal rather than a middleware, so errors aiohttp answers itself carry them too."""
    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(FIXED)
        response.headers["Content-Security-Policy"] = csp(request)
        if request.secure or behind_tls_proxy:
            response.headers["Strict-Transport-Security"] = HSTS
    app.on_response_prepare.append(stamp)


class ExpiringLru(Generic[K, V]):
    """A table of at most ``max_size`` entries, each forgotten ``ttl_s`` after it was last written, the least
    recently used first when full: what a per-client limiter or cache needs so made-up clients cannot grow it."""

    def __init__(self, max_size: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1:
            raise ValueError(f"max_size {max_size} is below 1; a table must hold at least one entry")
        self.max_size, self.ttl_s, self._clock = max_size, ttl_s, clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The live value of ``key`` (now the most recently used), or None."""
        found = self._items.get(key)
        if found is None:
            return None
        if self._clock() - found[0] >= self.ttl_s:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return found[1]

    def put(self, key: K, value: V) -> None:
        """Write ``key`` (its time to live starts again), forgetting the least recently used entries over the size."""
        self._items[key] = (self._clock(), value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)
