"""Stream time over many partitions: the low watermark every event stream has reached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class Clock:
    """Stream time over the event-stream partitions: the low watermark every input reached.

    Compacted registers (reference data, the elderly-care register) do not move stream time:
    only ``topics`` do. A partition that delivered nothing for ``idle_s`` (wall clock) is
    drained or quiet and stops holding time back; when every partition is quiet, the newest
    time seen counts.

    ``quiet_after`` judges quiet by stream time instead: a partition whose latest record is more than that behind
    the newest record seen stops holding time back. The watermark is then a function of the records alone, in the
    order they came, so a state rebuilt from the same records reaches the same watermarks as the live pass did
    (keyed by area, a share taken over must sweep what its last owner swept, see :mod:`citybrain.streams.shares`)."""

    topics: set[str]
    idle_s: float = 5.0
    latest: dict[tuple[str, int], tuple[datetime, float]] = field(default_factory=dict)
    quiet_after: timedelta | None = None
    #: With ``quiet_after``: the newest time seen and the watermark last computed, kept while the records leave them
    #: true (a share asks once per record; most records move neither).
    _newest: datetime | None = None
    _mark: datetime | None = None

    def saw(self, topic: str, partition: int, at: datetime) -> None:
        if topic in self.topics:
            before = self.latest.get((topic, partition))
            self.latest[(topic, partition)] = (at, time.monotonic())
            mark, newest = self._mark, self._newest
            if mark is None or newest is None or self.quiet_after is None:
                return
            if before is None or before[0] <= mark or at < mark or (before[0] >= newest and at < newest):
                self._mark = None    # a partition at or below the watermark moved, one came below it, the newest fell
            elif at > newest:
                self._newest = at    # the watermark stays unless the newest leaves it behind
                if mark < at - self.quiet_after:
                    self._mark = None

    def watermark(self) -> datetime | None:
        if not self.latest:
            return None
        if self.quiet_after is not None:
            if self._mark is None:
                self._newest = max(t for t, _w in self.latest.values())
                self._mark = min(t for t, _w in self.latest.values() if t >= self._newest - self.quiet_after)
            return self._mark
        wall = time.monotonic()
        active = [t for t, w in self.latest.values() if wall - w < self.idle_s]
        return min(active) if active else max(t for t, _w in self.latest.values())
