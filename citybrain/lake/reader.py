"""Reading the lake back: the envelope's columns as Arrow, its JSON ``value`` decoded in one place.

Every lake file holds records in one envelope (``citybrain.lake.writer.SCHEMA``): topic,
partition, offset, timestamp, key, event id, producer, trace id, and the record's JSON as
``value``. A value that is not a JSON object (a sink of an older version, a hand-made file)
decodes to an empty mapping, so a check sees the record and finds its fields missing.

A file that cannot be read (torn, corrupt: its whole content fails twice) is set aside by
:func:`citybrain.lake.quarantine.set_aside` and skipped, with a warning in the log: one bad file
must not fail every page and check that reads its hour. A file gone between listing and reading
(compacted away) is skipped too.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa

from citybrain.lake import store
from citybrain.lake.quarantine import set_aside
from citybrain.lake.store import LakePath

__all__ = ["decode", "field_values", "latest_values", "read", "read_one", "row_count", "tables", "values"]

log = logging.getLogger(__name__)

#: Envelope columns files gained after the first lake was written, and their types: a file without one reads it as nulls.
LATER_COLUMNS = {"event_time": pa.timestamp("ms", tz="UTC")}
#: What pyarrow raises on a file it cannot read (a torn footer is ArrowInvalid, a corrupt page OSError).
READ_ERRORS = (pa.ArrowException, OSError)


def read(files: Sequence[LakePath], columns: Sequence[str] | None = None) -> pa.Table:
    """The envelope columns of ``files`` as one Arrow table (all columns unless ``columns``), unreadable files
    skipped."""
    files = list(files)
    try:
        return store.read_table(files, columns)
    except READ_ERRORS:   # one of them is bad (or gone): read them one by one to find which
        found = [t for _f, t in tables(files, columns)]
        return pa.concat_tables(found) if found else store.read_table([], columns)


def read_one(path: LakePath, columns: Sequence[str] | None = None) -> pa.Table | None:
    """One file's table; None when it is gone or unreadable (then set aside)."""
    try:
        return store.read_table(path, columns)
    except FileNotFoundError:
        log.debug("%s: gone since it was listed (compacted); skipped", path)
        return None
    except READ_ERRORS:
        pass
    try:   # again, whole: a transient fault reads now; a file that reads whole was asked for a missing column
        whole = store.read_table(path)
    except FileNotFoundError:
        return None
    except READ_ERRORS as exc:
        set_aside(path, exc)
        return None
    if not columns:
        return whole
    for name, kind in LATER_COLUMNS.items():   # null in a file written before files had it
        if name in columns and name not in whole.column_names:
            whole = whole.append_column(name, pa.nulls(whole.num_rows, kind))
    return whole.select(list(columns))


def tables(files: Iterable[LakePath], columns: Sequence[str] | None = None) -> Iterator[tuple[LakePath, pa.Table]]:
    """Each readable file with its table, in order (see :func:`read_one`)."""
    for f in files:
        table = read_one(f, columns)
        if table is not None:
            yield f, table


def row_count(path: LakePath) -> int | None:
    """The rows of a file from its footer; None when it is gone or unreadable (then set aside)."""
    try:
        return store.read_metadata(path).num_rows
    except FileNotFoundError:
        return None
    except READ_ERRORS:
        table = read_one(path)
        return None if table is None else table.num_rows


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


def topic_values(files: Iterable[LakePath]) -> list[dict[str, Any]]:
    """The decoded records of a topic's files, in partition and offset order (the order the topic held them)."""
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    for _f, table in tables(files, ["partition", "offset", "value"]):
        rows.update(zip(zip(table.column("partition").to_pylist(), table.column("offset").to_pylist()), values(table)))
    return [rows[k] for k in sorted(rows)]


def field_values(files: Iterable[LakePath], field: str) -> set[str]:
    """Every value ``field`` takes in the records of ``files`` (as text; absent values left out)."""
    found: set[str] = set()
    for _f, table in tables(files, ["value"]):
        for v in values(table):
            if v.get(field) is not None:
                found.add(str(v[field]))
    return found


def latest_values(files: Iterable[LakePath], key_field: str) -> dict[str, dict[str, Any]]:
    """A compacted register's current state: the latest record (by offset) per ``key_field``."""
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for _f, t in tables(files, ["offset", "value"]):
        for offset, v in zip(t.column("offset").to_pylist(), values(t)):
            key = v.get(key_field)
            if key and (key not in latest or offset >= latest[key][0]):
                latest[key] = (offset, v)
    return {k: v for k, (_o, v) in latest.items()}
