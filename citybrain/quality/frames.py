"""The lake's partitions (one contract's records of one hour) as pandas frames for validation.

A frame has one row per record: the record's top-level fields, plus the lake's metadata as
``_event_id``, ``_producer``, ``_timestamp`` (when the platform took it), ``_event_time`` (when it happened, where its
contract names that; else empty), ``_key``, ``_partition``, ``_offset``. Exact
redeliveries (same event id and same payload, as at-least-once producers send them) are
collapsed and counted, so the uniqueness check fails only on one id carrying two payloads.
"""

from __future__ import annotations

from typing import Any

from citybrain.lake import reader
from citybrain.lake.layout import Partition


def load(partition: Partition) -> tuple[Any, int]:
    """(frame, exact redeliveries collapsed) for one partition."""
    import pandas as pd

    table = reader.read([partition.path / f for f in partition.files])
    meta = table.select(["event_id", "producer", "timestamp", "key", "partition", "offset"]).to_pydict()
    events = table.column("event_time").to_pylist() if "event_time" in table.column_names else [None] * table.num_rows
    raws = table.column("value").to_pylist()
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str | None, str]] = set()
    redelivered = 0
    for i, raw in enumerate(raws):
        ident = (meta["event_id"][i], raw)
        if ident in seen:
            redelivered += 1
            continue
        seen.add(ident)
        row = reader.decode(raw)
        row["_event_id"] = meta["event_id"][i]
        row["_producer"] = meta["producer"][i]
        row["_timestamp"] = meta["timestamp"][i]
        row["_event_time"] = events[i]
        row["_key"] = meta["key"][i]
        row["_partition"] = meta["partition"][i]
        row["_offset"] = meta["offset"][i]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["_event_id", "_producer", "_timestamp", "_event_time", "_key", "_partition", "_offset"])
    return frame, redelivered

