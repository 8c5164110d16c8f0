"""Completeness per device: the readings a device misses against the reporting interval it declares.

A device of the registry (``raw.ref.device``) may declare ``reporting_interval_s``. Its readings in a contract are
put in slots of that length by their event time; every empty slot between its first and its last reading is a
missing reading, and consecutive ones make a gap, named by its first and last missing slot. Silence after a
device's last reading is not counted here: that is freshness's to judge. The data_quality DAG runs the
``<layer>.<contract>.devices`` suite on one row per device (:func:`frame`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from citybrain.lake import reader
from citybrain.lake.store import LakePath

#: Gaps named per device in the quality table (the count of all of them is kept beside).
GAPS_NAMED = 5


@dataclass(frozen=True)
class Gap:
    first_missing: datetime    # start of the first empty slot
    missing: int               # empty slots in a row

    def describe(self, interval_s: int) -> str:
        last = datetime.fromtimestamp(self.first_missing.timestamp() + (self.missing - 1) * interval_s, timezone.utc)
        if self.missing == 1:
            return f"{_iso(self.first_missing)} (1 missing)"
        return f"{_iso(self.first_missing)}..{_iso(last)} ({self.missing} missing)"


@dataclass(frozen=True)
class DeviceCompleteness:
    device: str
    interval_s: int
    first: datetime            # slot of its first reading
    last: datetime             # slot of its last reading
    expected: int              # slots from the first to the last reading
    observed: int              # slots with a reading
    gaps: tuple[Gap, ...]

    @property
    def missing(self) -> int:
        return self.expected - self.observed

    @property
    def missing_share(self) -> float:
        return self.missing / self.expected

    def describe(self) -> str:
        """What a data office reads in the quality table: the count, the span and the first gaps by name."""
        head = (f"{self.device}: {self.missing} of {self.expected} reading(s) missing every {self.interval_s} s "
                f"from {_iso(self.first)} to {_iso(self.last)}")
        if not self.gaps:
            return head
        named = "; ".join(g.describe(self.interval_s) for g in self.gaps[:GAPS_NAMED])
        more = f"; {len(self.gaps) - GAPS_NAMED} more gap(s)" if len(self.gaps) > GAPS_NAMED else ""
        return f"{head}: {named}{more}"


def completeness(times_ms: Iterable[int], device: str, interval_s: int) -> DeviceCompleteness | None:
    """One device's completeness from its readings' event times (ms since the epoch); None without readings."""
    step = interval_s * 1000
    slots = sorted({t // step for t in times_ms})
    if not slots:
        return None
    gaps = tuple(Gap(_at(a + 1, step), b - a - 1) for a, b in zip(slots, slots[1:]) if b - a > 1)
    return DeviceCompleteness(device, interval_s, _at(slots[0], step), _at(slots[-1], step),
                              slots[-1] - slots[0] + 1, len(slots), gaps)


def cadences(ref_devices: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """device id -> reporting interval (s), for the registered devices that declare one."""
    return {d: int(v["reporting_interval_s"]) for d, v in ref_devices.items()
            if isinstance(v.get("reporting_interval_s"), int) and v["reporting_interval_s"] > 0}


def readings_by_device(files: Sequence[LakePath], device_in_key: bool, field: str,
                       devices: Mapping[str, int]) -> dict[str, list[int]]:
    """Event times (ms) of the readings of ``devices`` in ``files``; the device from the record's key where the
    contract keys its records by the device field first (no JSON to decode), else from ``field`` of the value. A
    record without an event time counts at its Kafka timestamp."""
    out: dict[str, list[int]] = defaultdict(list)
    columns = ["key", "timestamp", "event_time"] if device_in_key else ["value", "timestamp", "event_time"]
    for _path, table in reader.tables(files, columns):
        loaded = table.column("timestamp").cast("int64").to_pylist()
        events = table.column("event_time").cast("int64").to_pylist()
        if device_in_key:
            names = table.column("key").to_pylist()
        else:
            names = [v.get(field) for v in reader.values(table)]
        for name, event, load in zip(names, events, loaded):
            if name in devices:
                out[name].append(event if event is not None else load)
    return out


def measure(files: Sequence[LakePath], device_in_key: bool, field: str,
            devices: Mapping[str, int]) -> list[DeviceCompleteness]:
    """The completeness of every device of ``devices`` that has readings in ``files``, by device id."""
    found = readings_by_device(files, device_in_key, field, devices)
    measured = (completeness(times, device, devices[device]) for device, times in sorted(found.items()))
    return [m for m in measured if m is not None]


def frame(measured: Sequence[DeviceCompleteness]) -> Any:
    """One row per device, as the ``devices`` suite reads it."""
    import pandas as pd

    return pd.DataFrame({"device": [m.device for m in measured], "expected": [m.expected for m in measured],
                         "observed": [m.observed for m in measured], "missing": [m.missing for m in measured],
                         "missing_share": [m.missing_share for m in measured],
                         "gaps": [len(m.gaps) for m in measured]})


def _at(slot: int, step_ms: int) -> datetime:
    return datetime.fromtimestamp(slot * step_ms / 1000, timezone.utc)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
