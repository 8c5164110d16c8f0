"""Windowed aggregates: district × category × hour (and day), published when the window closes.

Calls per hotline category, and per sensor type the readings' count, mean and maximum of
their main measure; a window is sent once stream time (the low watermark) has passed its
end by ``LATENESS``, so late readings of the fleet are still counted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from citybrain.fusion.signals import Signal
from citybrain.times import iso

LATENESS = timedelta(minutes=15)
MEASURE = {"air_quality": "pm25", "noise": "LAeq", "traffic_flow": "intensity", "water_level": "currentLevel",
           "weather": "precipitation"}


@dataclass
class Cell:
    count: int = 0
    total: float = 0.0
    top: float | None = None
    devices: set[str] = field(default_factory=set)


class Metrics:
    def __init__(self) -> None:
        self.cells: dict[tuple[str, datetime, str, str, str], Cell] = defaultdict(Cell)

    def add(self, s: Signal) -> None:
        if not s.district_code:
            return
        hour = s.at.replace(minute=0, second=0, microsecond=0)
        day = hour.replace(hour=0)
        if s.kind == "ticket" and s.state == "received":
            keys = [("hour", hour, s.district_code, "ticket", s.category), ("day", day, s.district_code, "ticket", s.category)]
            value = None
        elif s.kind == "reading" and not s.flags:
            measure = s.values.get(MEASURE.get(s.category, ""))
            if not isinstance(measure, (int, float)):
                return
            keys = [("hour", hour, s.district_code, "reading", s.category), ("day", day, s.district_code, "reading", s.category)]
            value = float(measure)
        else:
            return
        for key in keys:
            cell = self.cells[key]
            cell.count += 1
            if value is not None:
                cell.total += value
                cell.top = value if cell.top is None else max(cell.top, value)
                if s.device_id:
                    cell.devices.add(s.device_id)

    def close(self, now: datetime) -> list[dict[str, Any]]:
        """Aggregates of every window that ended more than ``LATENESS`` before ``now``."""
        out = []
        for key in sorted(k for k in self.cells if k[1] + (timedelta(hours=1) if k[0] == "hour" else timedelta(days=1))
                          + LATENESS <= now):
            window, start, district, source, category = key
            cell = self.cells.pop(key)
            record: dict[str, Any] = {
                "metric_id": f"{window}:{iso(start)}:{district}:{source}:{category}", "window": window,
                "window_start": iso(start), "district_code": district, "source": source, "category": category,
                "count": cell.count,
            }
            if source == "reading":
                record.update(measure=MEASURE[category], mean=round(cell.total / cell.count, 3),
                              max=round(cell.top or 0.0, 3), devices=len(cell.devices))
            out.append(record)
        return out
