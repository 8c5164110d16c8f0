"""Live updates for the operations view: one Kafka consumer shared by every open page.

The consumer reads, from their end at start-up, the topics the City page shows as they happen
(city events, early warnings, every department's work orders) without a consumer group, so it
commits nothing and never delays the platform's own consumers. Each record goes to the pages whose
viewer may read its topic (a department: its own work orders only), through server-sent events;
the latest ones are kept so a page opened later shows them too, before the lake sinks have them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

from citybrain.settings import Settings
from citybrain.ui.auth import Viewer

log = logging.getLogger(__name__)

#: Records kept for pages opened after they arrived.
KEEP = 500
#: A page that falls this far behind is dropped (it reconnects and reloads).
QUEUE = 1000


class LiveFeed:
    """The shared consumer and the open pages it feeds."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.settings, self.topics = settings, topics
        self.recent: deque[tuple[str, dict[str, Any]]] = deque(maxlen=KEEP)
        self.pages: dict[asyncio.Queue[tuple[str, dict[str, Any]] | None], Viewer] = {}
        self.status = "starting"
        #: Records published since start: what a page's cache key changes with (``recent`` stops growing at KEEP).
        self.published = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ui-live-feed")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for q in list(self.pages):
            q.put_nowait(None)

    def subscribe(self, viewer: Viewer) -> asyncio.Queue[tuple[str, dict[str, Any]] | None]:
        q: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(QUEUE)
        self.pages[q] = viewer
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[str, dict[str, Any]] | None]) -> None:
        self.pages.pop(q, None)

    def seen_by(self, viewer: Viewer) -> list[tuple[str, dict[str, Any]]]:
        """The kept records of the topics the viewer may read."""
        return [(t, v) for t, v in self.recent if viewer.may_read(t)]

    def publish(self, topic: str, value: dict[str, Any]) -> None:
        self.recent.append((topic, value))
        self.published += 1
        for q, viewer in list(self.pages.items()):
            if not viewer.may_read(topic):
                continue
            try:
                q.put_nowait((topic, value))
            except asyncio.QueueFull:   # a stalled page must not hold the feed back: it is told to reload
                self.pages.pop(q, None)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        while True:
            consumer = None
            try:
                # No group: every partition of the topics, from their end; nothing committed.
                consumer = AIOKafkaConsumer(*self.topics, **self.settings.aiokafka_config(), enable_auto_commit=False,
                                            group_id=None, auto_offset_reset="latest", client_id="citybrain-ui-live")
                await consumer.start()
                self.status = f"live: {len(self.topics)} topics"
                log.info("ui live feed on %d topic(s)", len(self.topics))
                async for msg in consumer:
                    try:
                        value = json.loads(msg.value)
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        self.publish(msg.topic, value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:   # the broker down: the pages keep the lake's view, the feed retries
                self.status = f"broker unreachable ({type(exc).__name__}); retrying"
                log.warning("ui live feed: %s: %s; retrying in 5 s", type(exc).__name__, exc)
                await asyncio.sleep(5)
            finally:
                if consumer is not None:
                    await consumer.stop()
