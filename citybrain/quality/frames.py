"""The lake's partitions (one contract's records of one hour) as pandas frames for validation.

A frame has one row per record: the record's top-level fields, plus the lake's metadata as
``_event_id``, ``_producer``, ``_timestamp``, ``_key``, ``_partition``, ``_offset``. Exact
redeliveries (same event id and same payload, as at-least-once producers send them) are
collapsed and counted, so the uniqueness check fails only on one id carrying two payloads.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from citybrain.lake.sink import LAYERS as SINK_LAYERS

LAYERS = tuple(SINK_LAYERS)
PART_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")


@dataclass(frozen=True)
class Partition:
    layer: str
    contract: str
    date: str
    hour: str
    path: Path
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"date={self.date}/hour={self.hour}"

    @property
    def start(self) -> datetime:
        return datetime.fromisoformat(f"{self.date}T{self.hour}:00:00+00:00")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=1)

    @property
    def fingerprint(self) -> str:
        """Changes when the partition's files change (new records, compaction)."""
        return hashlib.sha256("\n".join(self.files).encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.contract}/{self.name}"


def partitions(lake: Path, layers: tuple[str, ...] = LAYERS) -> list[Partition]:
    """Every partition of the lake's bronze and silver layers, oldest first per contract."""
    found = []
    for layer in layers:
        for hour_dir in sorted((lake / layer).glob("*/date=*/hour=*")):
            files = tuple(sorted(p.name for p in hour_dir.glob("*.parquet")))
            if not files:
                continue
            m = PART_RE.match(f"{hour_dir.parent.name}/{hour_dir.name}")
            if m:
                found.append(Partition(layer, hour_dir.parent.parent.name, m.group(1), m.group(2), hour_dir, files))
    return found


def load(partition: Partition) -> tuple[Any, int]:
    """(frame, exact redeliveries collapsed) for one partition."""
    import pandas as pd

    table = pq.ParquetDataset([partition.path / f for f in partition.files]).read()
    meta = table.select(["event_id", "producer", "timestamp", "key", "partition", "offset"]).to_pydict()
    values = table.column("value").to_pylist()
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str | None, str]] = set()
    redelivered = 0
    for i, raw in enumerate(values):
        ident = (meta["event_id"][i], raw)
        if ident in seen:
            redelivered += 1
            continue
        seen.add(ident)
        try:
            row = json.loads(raw)
        except ValueError:
            row = {}
        if not isinstance(row, dict):
            row = {}
        row["_event_id"] = meta["event_id"][i]
        row["_producer"] = meta["producer"][i]
        row["_timestamp"] = meta["timestamp"][i]
        row["_key"] = meta["key"][i]
        row["_partition"] = meta["partition"][i]
        row["_offset"] = meta["offset"][i]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["_event_id", "_producer", "_timestamp", "_key", "_partition", "_offset"])
    return frame, redelivered

