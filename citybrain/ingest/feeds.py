"""Departmental file feeds: a declared column mapping from a department's export to a contract.

A feed file in ``infra/feeds/<name>.yaml`` says which contract the export fills, its
format (CSV with a header row, or JSON Lines), and for each source column the contract
field it fills and how to read it: ``type`` (string, integer, number, boolean, datetime,
list), a datetime ``format`` read in the feed's ``timezone``, a value ``map`` (e.g.
交通事故 -> traffic_accident), a list ``separator``, or ``ignore: true``. ``constants``
fill fields the export does not carry. Every row becomes a record or a rejection that
names the column, the field and the rule.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import yaml

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import Rejection, excerpt
from citybrain.ingest.readers import RawRecord, _lines, _too_large
from citybrain.ingest.strict_json import DEFAULT_MAX_DEPTH, JsonRefused, loads
from citybrain.times import iso
from citybrain.errors import InputError

TYPES = ("string", "integer", "number", "boolean", "datetime", "list")
_TRUE = {"true", "1", "yes", "y", "是", "有", "√"}
_FALSE = {"false", "0", "no", "n", "否", "无", "×"}


class FeedError(InputError):
    """A feed declaration or a whole file cannot be used; nothing from the file was produced."""


@dataclass(frozen=True)
class Column:
    name: str
    field: str | None
    type: str = "string"
    format: str | None = None
    map: dict[str, Any] | None = None
    separator: str = ";"
    required: bool = False


@dataclass(frozen=True)
class Feed:
    name: str
    title: str
    contract: str
    owner: str
    format: str
    timezone: str
    columns: dict[str, Column]
    constants: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_feed(path: Path, contracts: dict[str, Contract]) -> Feed:
    """Read and check one feed declaration against its contract."""
    where = path.name
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FeedError(f"{where}: cannot read the feed declaration: {exc}") from exc
    if not isinstance(doc, dict):
        raise FeedError(f"{where}: a feed declaration is a YAML mapping")
    missing = sorted({"feed", "title", "contract", "owner", "format", "columns"} - set(doc))
    if missing:
        raise FeedError(f"{where}: missing key(s) {', '.join(missing)}")
    by_id = {c.id: c for c in contracts.values()}
    contract = by_id.get(doc["contract"])
    if contract is None:
        raise FeedError(f"{where}: contract {doc['contract']!r} does not exist; use a contract id from "
                        "`citybrain contracts list`")
    if doc["format"] not in ("csv", "jsonl"):
        raise FeedError(f"{where}: format {doc['format']!r} must be csv or jsonl")
    props = contract.schema.get("properties", {})
    columns: dict[str, Column] = {}
    for name, spec in (doc["columns"] or {}).items():
        spec = spec or {}
        if spec.get("ignore"):
            columns[str(name)] = Column(str(name), None)
            continue
        target = spec.get("field")
        if target not in props:
            raise FeedError(f"{where}: column {name!r} maps to {target!r}, which is not a field of {contract.topic} "
                            f"(fields: {', '.join(props)})")
        kind = spec.get("type", "string")
        if kind not in TYPES:
            raise FeedError(f"{where}: column {name!r} has type {kind!r}; use one of {', '.join(TYPES)}")
        if kind == "datetime" and not spec.get("format"):
            raise FeedError(f"{where}: datetime column {name!r} needs a `format`, e.g. \"%Y/%m/%d %H:%M:%S\"")
        columns[str(name)] = Column(str(name), target, kind, spec.get("format"), spec.get("map"),
                                    spec.get("separator", ";"), bool(spec.get("required", False)))
    unknown_constants = sorted(set(doc.get("constants") or {}) - set(props))
    if unknown_constants:
        raise FeedError(f"{where}: constants {', '.join(unknown_constants)} are not fields of {contract.topic}")
    tz = doc.get("timezone", "Asia/Shanghai")
    try:
        ZoneInfo(tz)
    except Exception:   # zoneinfo raises several kinds
        raise FeedError(f"{where}: timezone {tz!r} is not an IANA zone name such as Asia/Shanghai") from None
    return Feed(doc["feed"], doc["title"], contract.id, doc["owner"], doc["format"], tz, columns,
                dict(doc.get("constants") or {}), path)


def load_feeds(directory: Path, contracts: dict[str, Contract]) -> dict[str, Feed]:
    feeds = {}
    for path in sorted(directory.glob("*.yaml")):
        feed = load_feed(path, contracts)
        feeds[feed.name] = feed
    return feeds


# -- reading a file -------------------------------------------------------------------------


def read_feed(feed: Feed, path: Path, encoding: str, max_bytes: int,
              max_depth: int = DEFAULT_MAX_DEPTH) -> Iterator[RawRecord]:
    """One RawRecord per row or line; raises FeedError (before yielding) when the header does not fit.

    JSON lines are read strictly (citybrain.ingest.strict_json), each line judged alone."""
    if feed.format == "csv":
        yield from _read_csv(feed, path, encoding, max_bytes)
    else:
        yield from _read_jsonl(feed, path, encoding, max_bytes, max_depth)


def _decoded_lines(path: Path, encoding: str, max_bytes: int, rejected: list[RawRecord]) -> Iterator[tuple[int, str, bytes]]:
    """(line number, text, original bytes); lines that do not decode are put in ``rejected``."""
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    if codec == "utf-16":
        try:
            text = path.read_text(encoding="utf-16")
        except UnicodeDecodeError as exc:
            raise FeedError(f"{path.name} is not UTF-16 at byte {exc.start} ({exc.reason}); re-export it as UTF-8 "
                            "or UTF-16. Nothing from this file was produced.") from None
        for number, line in enumerate(text.splitlines(), 1):
            yield number, line, line.encode("utf-8")
        return
    with open(path, "rb") as f:
        for number, line, size in _lines(f, max_bytes):
            source = f"{path.name}:{number}"
            if size > max_bytes:
                rejected.append(_too_large(source, line, size, max_bytes))
                continue
            try:
                text = line.decode(codec)
            except UnicodeDecodeError as exc:
                rejected.append(RawRecord(source, line, rejection=Rejection(
                    "encoding", "(record)",
                    f"line {number} is not {encoding}: byte 0x{line[exc.start]:02x} at offset {exc.start}", excerpt(line))))
                continue
            yield number, text, text.encode("utf-8")


def _read_csv(feed: Feed, path: Path, encoding: str, max_bytes: int) -> Iterator[RawRecord]:
    rejected: list[RawRecord] = []
    current = {"number": 0, "raw": b""}

    def texts() -> Iterator[str]:
        for number, text, raw in _decoded_lines(path, encoding, max_bytes, rejected):
            current["number"], current["raw"] = number, raw
            yield text + "\n"

    reader = csv.reader(texts())
    header = next(reader, None)
    if header is None:
        raise FeedError(f"{path.name}: the file is empty; expected a header row with the columns of feed {feed.name}")
    header = [h.strip().lstrip("\ufeff") for h in header]
    _check_header(feed, path, header)
    yield from rejected
    rejected.clear()
    for row in reader:
        yield from rejected
        rejected.clear()
        number, raw = current["number"], current["raw"]
        source = f"{path.name}:{number}"
        if not any(cell.strip() for cell in row):
            yield RawRecord(source, raw, rejection=Rejection("empty-record", "(record)", f"line {number} is empty"))
            continue
        if len(row) != len(header):
            yield RawRecord(source, raw, rejection=Rejection(
                "csv-row-shape", "(record)", f"line {number} has {len(row)} cells but the header has {len(header)} columns",
                excerpt(raw)))
            continue
        yield _map_row(feed, dict(zip(header, row, strict=True)), source, raw)
    yield from rejected


def _read_jsonl(feed: Feed, path: Path, encoding: str, max_bytes: int, max_depth: int) -> Iterator[RawRecord]:
    rejected: list[RawRecord] = []
    for number, text, raw in _decoded_lines(path, encoding, max_bytes, rejected):
        yield from rejected
        rejected.clear()
        source = f"{path.name}:{number}"
        if not text.strip():
            yield RawRecord(source, raw, rejection=Rejection("empty-record", "(record)", f"line {number} is empty"))
            continue
        try:
            value = loads(text, max_depth)
        except JsonRefused as exc:
            yield RawRecord(source, raw, rejection=exc.rejection())
            continue
        if not isinstance(value, dict):
            yield RawRecord(source, raw, rejection=Rejection("not-an-object", "(record)",
                                                             f"line {number} must be a JSON object", excerpt(text)))
            continue
        unknown = sorted(k for k in value if k not in feed.columns)
        if unknown:
            yield RawRecord(source, raw, rejection=Rejection(
                "unknown-field", unknown[0], f"key `{unknown[0]}` is not a column of feed {feed.name} "
                f"(declared: {', '.join(feed.columns)})", excerpt(value[unknown[0]])))
            continue
        yield _map_row(feed, {k: v for k, v in value.items()}, source, raw)
    yield from rejected


def _check_header(feed: Feed, path: Path, header: list[str]) -> None:
    unknown = [h for h in header if h not in feed.columns]
    dupes = sorted({h for h in header if header.count(h) > 1})
    missing = [c.name for c in feed.columns.values() if c.required and c.name not in header]
    if unknown or dupes or missing:
        parts = []
        if unknown:
            parts.append(f"undeclared column(s) {', '.join(unknown)}")
        if dupes:
            parts.append(f"duplicate column(s) {', '.join(dupes)}")
        if missing:
            parts.append(f"missing required column(s) {', '.join(missing)}")
        raise FeedError(
            f"{path.name}: the header does not match feed {feed.name}: {'; '.join(parts)}. Fix: export the columns "
            f"the feed declares ({', '.join(feed.columns)}), or declare new columns (or `ignore: true`) in "
            f"{feed.source.name if feed.source else 'the feed file'}. Nothing from this file was produced.")


def _map_row(feed: Feed, row: dict[str, Any], source: str, raw: bytes) -> RawRecord:
    value: dict[str, Any] = dict(feed.constants)
    for name, cell in row.items():
        column = feed.columns[name]
        if column.field is None or cell is None or (isinstance(cell, str) and cell.strip() == ""):
            continue
        converted, problem = _convert(feed, column, cell)
        if problem:
            return RawRecord(source, raw, rejection=problem)
        value[column.field] = converted
    return RawRecord(source, raw, value=value)


def _convert(feed: Feed, column: Column, cell: Any) -> tuple[Any, Rejection | None]:
    field_name = column.field or column.name
    where = f"column `{column.name}` (field `{field_name}`)"
    text = cell.strip() if isinstance(cell, str) else cell
    kind = column.type
    if column.map is not None:
        parts = [p.strip() for p in str(text).split(column.separator) if p.strip()] if kind == "list" else [text]
        unknown = [p for p in parts if p not in column.map]
        if unknown:
            allowed = ", ".join(map(str, column.map))
            return None, Rejection("mapping", field_name, f"{where}: value {unknown[0]!r} is not in the feed's "
                                                          f"mapping (known: {allowed})", excerpt(text))
        mapped = [column.map[p] for p in parts]
        return (mapped if kind == "list" else mapped[0]), None
    try:
        if kind == "string":
            return (text if isinstance(text, str) else str(text)), None
        if kind == "integer":
            if isinstance(text, bool):
                raise ValueError
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number), None
        if kind == "number":
            if isinstance(text, bool):
                raise ValueError
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number, None
        if kind == "boolean":
            if isinstance(text, bool):
                return text, None
            low = str(text).lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE, None
            raise ValueError
        if kind == "list":
            if isinstance(text, list):
                return text, None
            return [part.strip() for part in str(text).split(column.separator) if part.strip()], None
        if kind == "datetime":
            moment = datetime.strptime(str(text), column.format or "")
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=feed.tz)
            return iso(moment), None
    except (TypeError, ValueError):
        pass
    if kind == "datetime":
        return None, Rejection("datetime", field_name, f"{where}: {text!r} does not match the format "
                                                       f"{column.format!r} ({feed.timezone})", excerpt(text))
    return None, Rejection("type", field_name, f"{where}: {text!r} is not a {kind}", excerpt(text))
