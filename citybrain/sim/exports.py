"""Departmental export files from simulated records, in the shape each feed declares.

The inverse of a feed's mapping: contract fields back to the department's column names,
values back to its words (traffic_accident -> 交通事故), UTC back to local time, written
in the encoding the department's system uses. A few rows carry the mistakes real exports
carry, so ``citybrain load`` has something to dead-letter.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from citybrain.contracts.topics import REF_DEVICES, contract_id
from citybrain.ingest.feeds import Feed
from citybrain.times import parse_time

if TYPE_CHECKING:  # pragma: no cover
    from citybrain.sim.model import SimConfig

#: feed -> (file name, encoding): older systems export GB18030, newer ones UTF-8 with a BOM for Excel.
EXPORTS = {
    "police_110": ("police_110.csv", "gb18030"),
    "urban_inspection": ("urban_inspection.csv", "utf-8-sig"),
    "elderly_care_register": ("elderly_care_register.csv", "utf-8"),
    "device_registry": ("device_registry.jsonl", "utf-8"),
}


def _source_value(feed: Feed, column_name: str, value: Any) -> Any:
    column = feed.columns[column_name]
    if column.map is not None:
        reverse = {v: k for k, v in column.map.items()}
        if column.type == "list":
            return column.separator.join(reverse[v] for v in value)
        return reverse[value]
    if column.type == "datetime":
        moment = parse_time(str(value)).astimezone(feed.tz)
        return moment.strftime(column.format or "%Y-%m-%d %H:%M:%S")
    if column.type == "boolean":
        return "是" if value else "否"
    if column.type == "list":
        return column.separator.join(value)
    return value


def to_row(feed: Feed, record: dict[str, Any]) -> dict[str, Any]:
    """A contract record as the department's export row."""
    row: dict[str, Any] = {}
    for name, column in feed.columns.items():
        if column.field is None:
            row[name] = "值班员" if feed.format == "csv" else None
        elif column.field in record:
            row[name] = _source_value(feed, name, record[column.field])
        else:
            row[name] = ""
    return row


def write_export(feed: Feed, records: Iterable[dict[str, Any]], path: Path, encoding: str,
                 broken: list[dict[str, Any]] = ()) -> int:  # type: ignore[assignment]
    """Write records (and ``broken`` rows, already in source form) as the feed's export file."""
    rows = [to_row(feed, r) for r in records] + list(broken)
    path.parent.mkdir(parents=True, exist_ok=True)
    if feed.format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(feed.columns), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        path.write_bytes(buffer.getvalue().encode(encoding))
    else:
        with open(path, "w", encoding=encoding) as f:
            for row in rows:
                f.write(json.dumps({k: v for k, v in row.items() if v not in ("", None)}, ensure_ascii=False) + "\n")
    return len(rows)


def broken_rows(feed: Feed, good: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows with the mistakes real exports have: an unmapped word, a wrong date format, a missing key."""
    out = []
    mapped = next((c for c in feed.columns.values() if c.map and c.type != "list"), None)
    dated = next((c for c in feed.columns.values() if c.type == "datetime" and c.required), None)
    key = next(c for c in feed.columns.values() if c.required and c.type == "string")
    if mapped:
        out.append({**good, mapped.name: "未知类别"})
    if dated:
        out.append({**good, dated.name: "2026年11月22日 下午3点"})
    out.append({**good, key.name: ""})
    return out


@dataclass(frozen=True)
class Written:
    feed: str
    path: Path
    encoding: str
    rows: int
    broken: int


def write_exports(config: SimConfig, feeds: dict[str, Feed], directory: Path) -> list[Written]:
    """Simulate ``config`` and write one export file per feed of :data:`EXPORTS` into ``directory``:
    the latest state of each record (by its own id), plus the broken rows real exports carry."""
    from citybrain.sim.reference import reference_records
    from citybrain.sim.engine import Simulation
    from citybrain.times import iso

    sim = Simulation(config)
    by_contract: dict[str, dict[str, dict[str, Any]]] = {}
    for _t, emissions in sim.ticks():
        for e in emissions:
            key = next(iter(e.value.values()))   # the record's own id (first field): latest state wins
            by_contract.setdefault(e.contract, {})[str(key)] = e.value
    devices = contract_id(REF_DEVICES)
    by_contract[devices] = {d["device_id"]: d for d in reference_records(sim.city, iso(sim.start))[devices]}
    written = []
    for name, (filename, encoding) in EXPORTS.items():
        feed = feeds[name]
        records = list(by_contract.get(feed.contract, {}).values())
        broken = broken_rows(feed, to_row(feed, records[0])) if records else []
        n = write_export(feed, records, directory / filename, encoding, broken)
        written.append(Written(name, directory / filename, encoding, n, len(broken)))
    return written
