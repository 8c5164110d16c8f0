"""Many open operations-view pages at once, for `make bench`: N server-sent-event connections to `/api/live`.

They run in a thread of their own (one event loop), log in once as the data office and count the records
each connection receives, so the benchmark can say both that they were live and what they cost the
fusion worker.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from citybrain.devtools.accounts import DemoAccount


class LiveClients:
    """``count`` live connections to the view at ``url`` while the ``with`` block runs."""

    def __init__(self, url: str, account: DemoAccount, count: int = 50) -> None:
        self.url, self.account, self.count = url, account, count
        self.received = [0] * count
        self.errors: list[str] = []
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="ui-live-clients", daemon=True)

    def __enter__(self) -> LiveClients:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"the {self.count} live connections did not open within 30 s: {self.errors[:3]}")
        if self.errors:
            raise RuntimeError(f"live connections failed: {self.errors[:3]}")
        return self

    def __exit__(self, *_exc: Any) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def summary(self) -> dict[str, Any]:
        return {"connections": self.count, "records_min": min(self.received), "records_max": max(self.received),
                "errors": self.errors[:5]}

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        import aiohttp

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        # unsafe: the view is on 127.0.0.1, and aiohttp keeps no cookie for an IP address otherwise
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            code = await asyncio.to_thread(self.account.code)
            login = await session.post(f"{self.url}/api/login", json={"principal": self.account.name,
                                                                      "password": self.account.password, "code": code})
            if login.status != 200:
                self.errors.append(f"login: HTTP {login.status}")
                self._ready.set()
                return
            opened = 0

            async def listen(i: int) -> None:
                nonlocal opened
                try:
                    async with session.get(f"{self.url}/api/live") as r:
                        if r.status != 200:
                            self.errors.append(f"connection {i}: HTTP {r.status}")
                            self._ready.set()
                            return
                        opened += 1
                        if opened == self.count:
                            self._ready.set()
                        async for line in r.content:
                            if line.startswith(b"event: record"):
                                self.received[i] += 1
                except (aiohttp.ClientError, asyncio.CancelledError) as exc:
                    if not isinstance(exc, asyncio.CancelledError):
                        self.errors.append(f"connection {i}: {type(exc).__name__}: {exc}")

            tasks = [asyncio.create_task(listen(i)) for i in range(self.count)]
            await self._stop.wait()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
