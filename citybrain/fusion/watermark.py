"""Stream time over many partitions: the low watermark every event stream has reached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Clock:
    """Stream time over the event-stream partitions: the low watermark every input reached.

    Compacted registers (reference data, the elderly-care register) do not move stream time:
    only ``topics`` do. A partition that delivered nothing for ``idle_s`` (wall clock) is
    drained or quiet and stops holding time back; when every partition is quiet, the newest
    time seen counts."""

    topics: set[str]
    idle_s: float = 5.0
    latest: dict[tuple[str, int], tuple[datetime, float]] = field(default_factory=dict)

    def saw(self, topic: str, partition: int, at: datetime) -> None:
        if topic in self.topics:
            self.latest[(topic, partition)] = (at, time.monotonic())

    def watermark(self) -> datetime | None:
        if not self.latest:
            return None
        wall = time.monotonic()
        active = [t for t, w in self.latest.values() if wall - w < self.idle_s]
        return min(active) if active else max(t for t, _w in self.latest.values())
