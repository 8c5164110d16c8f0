"""Reading the audit trails back for ``citybrain audit verify|export``: from their topic, the lake's copy or a file.

The records come back in the order they were stored (the topic's offsets; the lake's files by partition and
offset; a file's lines), which is the order :func:`citybrain.access.trail.verify` checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from citybrain.contracts.topics import AUDIT_EVENTS, contract_id
from citybrain.errors import InputError
from citybrain.lake import layout, reader
from citybrain.lake.layout import Lake
from citybrain.settings import Settings

__all__ = ["from_file", "from_lake", "from_topic", "to_file"]


def from_topic(settings: Settings) -> list[dict[str, Any]]:
    """Every record of the audit topic, oldest first (raises LookupError when the topic does not exist)."""
    from citybrain.kafka.topics import read_topic

    return [reader.decode(r.value) for r in read_topic(settings, AUDIT_EVENTS)]


def from_lake(lake: Lake) -> list[dict[str, Any]]:
    """Every record of the lake's copy of the audit topic (silver), in partition and offset order."""
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    files = layout.files(lake, "silver", contract_id(AUDIT_EVENTS))
    for _f, table in reader.tables(files, ["partition", "offset", "value"]):
        where = zip(table.column("partition").to_pylist(), table.column("offset").to_pylist())
        rows.update(zip(where, reader.values(table)))
    return [rows[k] for k in sorted(rows)]


def from_file(path: Path) -> list[dict[str, Any]]:
    """The records of an exported trail (JSON lines); refuses a line that is not a JSON object, naming it."""
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path.name} line {n} is not JSON ({exc}); an audit export holds one record per line. "
                             f"Fix: export again with `citybrain audit export`") from None
        if not isinstance(value, dict):
            raise InputError(f"{path.name} line {n} is not a JSON object; an audit export holds one record per line. "
                             f"Fix: export again with `citybrain audit export`")
        records.append(value)
    return records


def to_file(records: list[dict[str, Any]], path: Path) -> None:
    """Write records as JSON lines, each key order as stored (the hash does not depend on it)."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
