"""Reading the lake back: the envelope's columns as Arrow, its JSON ``value`` decoded in one place.

Every lake file holds records in one envelope (``citybrain.lake.writer.SCHEMA``): topic,
partition, offset, timestamp, key, event id, producer, trace id, and the record's JSON as
``value``. A value that is not a JSON object (a sink of an older version, a hand-made file)
decodes to an empty mapping, so a check sees the record and finds its fields missing.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import pyarrow as pa

from citybrain.lake import store
from citybrain.lake.store import LakePath

__all__ = ["decode", "field_values", "latest_values", "read", "values"]


def read(files: Sequence[LakePath], columns: Sequence[str] | None = None) -> pa.Table:
    """The envelope columns of ``files`` as one Arrow table (all columns unless ``columns``)."""
    return store.read_table(list(files), columns)


def decode(raw: str | bytes | None) -> dict[str, Any]:
    """One record's JSON value; ``{}`` for anything that is not a JSON object."""
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def values(table: pa.Table) -> list[dict[str, Any]]:
    """The decoded ``value`` of every row of ``table``."""
    return [decode(raw) for raw in table.column("value").to_pylist()]


def field_values(files: Iterable[LakePath], field: str) -> set[str]:
    """Every value ``field`` takes in the records of ``files`` (as text; absent values left out)."""
    found: set[str] = set()
    for f in files:
        for v in values(store.read_table(f, columns=["value"])):
            if v.get(field) is not None:
                found.add(str(v[field]))
    return found


def latest_values(files: Iterable[LakePath], key_field: str) -> dict[str, dict[str, Any]]:
    """A compacted register's current state: the latest record (by offset) per ``key_field``."""
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for f in files:
        t = store.read_table(f, columns=["offset", "value"])
        for offset, v in zip(t.column("offset").to_pylist(), values(t)):
            key = v.get(key_field)
            if key and (key not in latest or offset >= latest[key][0]):
                latest[key] = (offset, v)
    return {k: v for k, (_o, v) in latest.items()}
