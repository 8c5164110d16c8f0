"""Departmental file feeds: a declared column mapping from a department's export to a contract.

A feed file in ``infra/feeds/<name>.yaml`` says which contract the export fills, its
format (CSV with a header row, or JSON Lines), and for each source column the contract
field it fills and how to read it: ``type`` (string, integer, number, boolean, datetime,
list), a datetime ``format`` read in the feed's ``timezone``, a value ``map`` (e.g.
交通事故 -> traffic_accident), a list ``separator``, a ``unit`` converted (pint) to the
field's ``x-unit``, or ``ignore: true``. A column without a field feeds ``computed``
fields: a ``time`` from year/month/day/hour(/minute/second) columns in a declared zone, a
``template`` over columns (``"{station}-{No}"``, each column's text as it is), optionally through a
value ``map`` (one column feeding a second field: a 311 export's Status gives both ``status`` and
``lifecycle_state``) or read as a local time (``type: datetime`` with a ``format``: a time column
feeding a second field), or ``received: true``, the time the loader reads the file (the platform's
receive time beside the export's own). ``constants`` fill fields the export does not carry; ``na``
lists the texts that mean "no value" besides the empty cell (``NA``, ``-``), compared with the cell
trimmed. A local time the zone repeats (the hour daylight saving time ends) or skips is refused: the
export must carry the offset. Numbers are ASCII digits (no ``1_000``, no other scripts' digits). A
postal code (:data:`citybrain.ingest.postal.FIELDS`), device id and area code
(:data:`citybrain.ingest.codes.FIELDS`) are checked against the city's own patterns when the loader knows
the city. Every row becomes a record or a rejection that lists every problem it has,
each naming the column, the field and the rule. Declarations are read with :mod:`citybrain.ingest.yaml_safe`.
"""

from __future__ import annotations

import csv
import math
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from zoneinfo import ZoneInfo

import yaml

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import Rejection, excerpt
from citybrain.errors import InputError
from citybrain.ingest.readers import RawRecord, _lines, _too_large
from citybrain.ingest.codes import CodeSchemes
from citybrain.ingest.postal import FIELDS as POSTAL_FIELDS
from citybrain.ingest.postal import PostalCodes
from citybrain.ingest.strict_json import DEFAULT_MAX_DEPTH, JsonRefused, loads
from citybrain.ingest.units import Conversion, UnitError, conversion
from citybrain.ingest.yaml_safe import BooleanWordError, load_yaml
from citybrain.times import iso, now_iso

TYPES = ("string", "integer", "number", "boolean", "datetime", "list")
#: The parts of a computed time, in order; year, month and day are needed, the others default to 0 (a minute or
#: second needs its hour).
TIME_PARTS = ("year", "month", "day", "hour", "minute", "second")
_KEYS = {"feed", "title", "contract", "owner", "format", "timezone", "columns", "computed", "constants", "na"}
_COLUMN_KEYS = {"field", "type", "format", "map", "separator", "required", "ignore", "unit"}
_COMPUTED_KEYS = {"time", "template", "received", "required", "map", "timezone", "type", "format"}
_TRUE = {"true", "1", "yes", "y", "是", "有", "√"}
_FALSE = {"false", "0", "no", "n", "否", "无", "×"}
_UTC = timezone.utc


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
    unit: str | None = None
    conversion: Conversion | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Computed:
    """A field built from several columns: a ``time`` (``parts``: time part -> column) or a ``template`` (its text
    through ``map`` when one is given, or read as a local time in ``format`` when that is given); or, with
    ``received``, the time the file is read. ``timezone``: the zone of its local times, else the feed's."""

    field: str
    columns: tuple[str, ...]
    template: str | None = None
    parts: dict[str, str] | None = None
    timezone: str | None = None
    required: bool = False
    map: dict[str, Any] | None = None
    received: bool = False
    format: str | None = None


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
    computed: dict[str, Computed] = field(default_factory=dict)
    na: frozenset[str] = frozenset({""})

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


# -- the declaration ----------------------------------------------------------------------------


def load_feed(path: Path, contracts: dict[str, Contract]) -> Feed:
    """Read and check one feed declaration against its contract (before any row is read)."""
    where = path.name
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"), where)
    except BooleanWordError as exc:
        raise FeedError(str(exc)) from None
    except (OSError, yaml.YAMLError) as exc:
        raise FeedError(f"{where}: cannot read the feed declaration: {exc}") from exc
    if not isinstance(doc, dict):
        raise FeedError(f"{where}: a feed declaration is a YAML mapping")
    missing = sorted({"feed", "title", "contract", "owner", "format", "columns"} - set(doc))
    if missing:
        raise FeedError(f"{where}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(map(str, doc)) - _KEYS)
    if unknown:
        raise FeedError(f"{where}: unknown key(s) {', '.join(unknown)}; a feed declares {', '.join(sorted(_KEYS))}")
    by_id = {c.id: c for c in contracts.values()}
    contract = by_id.get(doc["contract"])
    if contract is None:
        raise FeedError(f"{where}: contract {doc['contract']!r} does not exist; use a contract id from "
                        "`citybrain contracts list`")
    if doc["format"] not in ("csv", "jsonl"):
        raise FeedError(f"{where}: format {doc['format']!r} must be csv or jsonl")
    props = contract.schema.get("properties", {})
    tz = _zone(where, doc.get("timezone", "Asia/Shanghai"), "timezone")
    specs = {str(name): spec or {} for name, spec in (doc["columns"] or {}).items()}
    computed = _computed(where, doc.get("computed") or {}, specs, props, contract, "timezone" in doc)
    used = {name for c in computed.values() for name in c.columns}
    columns = {name: _column(where, name, spec, props, contract, name in used) for name, spec in specs.items()}
    unknown_constants = sorted(set(doc.get("constants") or {}) - set(props))
    if unknown_constants:
        raise FeedError(f"{where}: constants {', '.join(unknown_constants)} are not fields of {contract.topic}")
    na = doc.get("na", [])
    if not isinstance(na, list) or not all(isinstance(t, str) for t in na):
        raise FeedError(f"{where}: `na` is a list of the texts that mean \"no value\", e.g. na: [\"NA\", \"\", \"-\"]; "
                        f"got {na!r} (quote numbers: \"-999\")")
    return Feed(doc["feed"], doc["title"], contract.id, doc["owner"], doc["format"], tz, columns,
                dict(doc.get("constants") or {}), path, computed, frozenset({"", *(t.strip() for t in na)}))


def _zone(where: str, name: Any, key: str) -> str:
    try:
        ZoneInfo(str(name))
    except Exception:   # zoneinfo raises several kinds
        raise FeedError(f"{where}: {key} {name!r} is not an IANA zone name such as Asia/Shanghai") from None
    return str(name)


def _column(where: str, name: str, spec: dict[str, Any], props: dict[str, Any], contract: Contract,
            used: bool) -> Column:
    unknown = sorted(set(map(str, spec)) - _COLUMN_KEYS)
    if unknown:
        raise FeedError(f"{where}: column {name!r} has unknown key(s) {', '.join(unknown)}; a column declares "
                        f"{', '.join(sorted(_COLUMN_KEYS))}")
    required = bool(spec.get("required", False))
    if spec.get("ignore"):
        if used:
            raise FeedError(f"{where}: column {name!r} is `ignore: true` but a computed field uses it; "
                            "remove `ignore: true`")
        return Column(name, None, required=required)
    target = spec.get("field")
    kind = spec.get("type", "string")
    if kind not in TYPES:
        raise FeedError(f"{where}: column {name!r} has type {kind!r}; use one of {', '.join(TYPES)}")
    if target is None and not used:
        raise FeedError(f"{where}: column {name!r} has no `field`; give it one, use it in `computed`, "
                        "or say `ignore: true`")
    if target is not None and target not in props:
        raise FeedError(f"{where}: column {name!r} maps to {target!r}, which is not a field of {contract.topic} "
                        f"(fields: {', '.join(props)})")
    if kind == "datetime" and not spec.get("format"):
        raise FeedError(f"{where}: datetime column {name!r} needs a `format`, e.g. \"%Y/%m/%d %H:%M:%S\"")
    unit, convert = spec.get("unit"), None
    if unit is not None:
        convert = _unit(where, name, str(unit), kind, target, props, contract)
    return Column(name, target, kind, spec.get("format"), spec.get("map"), spec.get("separator", ";"), required,
                  None if unit is None else str(unit), convert)


def _unit(where: str, name: str, unit: str, kind: str, target: str | None, props: dict[str, Any],
          contract: Contract) -> Conversion | None:
    """The conversion of a column's declared unit to its field's ``x-unit``; a FeedError naming both when none."""
    if target is None or kind != "number":
        raise FeedError(f"{where}: column {name!r} declares unit {unit!r}, which needs `type: number` and a "
                        "`field` whose contract declares an x-unit; remove `unit` or add them")
    wanted = props[target].get("x-unit")
    if not wanted:
        raise FeedError(f"{where}: column {name!r} declares unit {unit!r} but field {target!r} of {contract.topic} "
                        "declares no x-unit to convert it to; remove `unit` (the value is sent as it is), or add "
                        "an x-unit to the contract (schemas/)")
    try:
        found = conversion(unit, str(wanted))
    except UnitError as exc:
        raise FeedError(f"{where}: column {name!r} is in {unit!r}, which cannot be converted to field {target!r}'s "
                        f"unit {wanted!r} ({exc}). Fix: declare the unit the export really uses (e.g. ug/m3, mg/m3, "
                        f"degC, km/h, hPa), or map the column to a field in {unit!r}'s dimension") from None
    return None if found.identity else found


def _computed(where: str, spec: Any, columns: dict[str, dict[str, Any]], props: dict[str, Any],
              contract: Contract, feed_zone: bool) -> dict[str, Computed]:
    if not isinstance(spec, dict):
        raise FeedError(f"{where}: `computed` maps contract fields to a `time`, a `template` or `received: true`")
    out: dict[str, Computed] = {}
    for target, body in spec.items():
        target = str(target)
        body = body or {}
        if not isinstance(body, dict):
            raise FeedError(f"{where}: computed field {target!r} is a mapping such as {{template: \"{{column}}\"}}; "
                            f"got {body!r}")
        unknown = sorted(set(map(str, body)) - _COMPUTED_KEYS)
        if unknown:
            raise FeedError(f"{where}: computed field {target!r} has unknown key(s) {', '.join(unknown)}; a computed "
                            f"field declares {', '.join(sorted(_COMPUTED_KEYS))}")
        if target not in props:
            raise FeedError(f"{where}: computed field {target!r} is not a field of {contract.topic} "
                            f"(fields: {', '.join(props)})")
        required = bool(body.get("required", False))
        kinds = [k for k in ("time", "template", "received") if k in body]
        if len(kinds) != 1 or body.get("received", True) is not True:
            raise FeedError(f"{where}: computed field {target!r} needs exactly one of `time: {{year: <column>, "
                            "month: ..., day: ..., hour: ...}`, `template: \"{column}-{column}\"` (optionally with "
                            "a `map` of its texts) or `received: true` (the time the file is read)")
        mapping = body.get("map")
        if mapping is not None and ("template" not in body or not isinstance(mapping, dict)):
            raise FeedError(f"{where}: computed field {target!r}: `map` maps a template's texts to field values "
                            f"(e.g. map: {{Closed: closed}}) and needs a `template`; got {mapping!r}")
        kind, fmt = body.get("type"), body.get("format")
        if (kind, fmt) != (None, None) and ("template" not in body or kind != "datetime" or not isinstance(fmt, str)
                                            or mapping is not None):
            raise FeedError(f"{where}: computed field {target!r}: `type: datetime` with a `format` reads a template's "
                            "text as a local time (e.g. template: \"{CreatedDate}\", type: datetime, format: "
                            f"\"%m/%d/%Y %I:%M:%S %p\"), without a `map`; got type {kind!r}, format {fmt!r}")
        if "received" in body:
            out[target] = Computed(target, (), received=True)
            continue
        zone = _zone(where, body["timezone"], f"computed field {target!r}'s timezone") if "timezone" in body else None
        if fmt is not None and "timezone" not in body and not feed_zone:
            raise FeedError(f"{where}: computed field {target!r} reads a local time and needs its zone: add "
                            "`timezone: <IANA zone>` to the feed or to the computed field, e.g. America/Los_Angeles")
        if "template" in body:
            names = _template_columns(where, target, str(body["template"]), columns)
            out[target] = Computed(target, names, template=str(body["template"]), required=required,
                                   map=None if mapping is None else {str(k): v for k, v in mapping.items()},
                                   timezone=zone, format=fmt)
            continue
        parts = body["time"]
        if not isinstance(parts, dict) or not {"year", "month", "day"} <= set(parts) or set(parts) - set(TIME_PARTS):
            raise FeedError(f"{where}: computed time {target!r} maps time parts to columns: year, month and day, "
                            f"optionally hour, minute, second (e.g. time: {{year: year, month: month, day: day, "
                            f"hour: hour}}); got {parts!r}")
        if "hour" not in parts and {"minute", "second"} & set(parts):
            raise FeedError(f"{where}: computed time {target!r} has a minute or second but no hour; add `hour: "
                            "<column>` (a time without its hour is no time of day), or leave minute and second out")
        missing = [str(c) for c in parts.values() if str(c) not in columns]
        if missing:
            raise FeedError(f"{where}: computed time {target!r} reads column(s) {', '.join(missing)}, which the "
                            f"feed does not declare; declare them under `columns` (e.g. {missing[0]}: {{}})")
        if "timezone" not in body and not feed_zone:
            raise FeedError(f"{where}: computed time {target!r} needs the zone its parts are local to: add "
                            "`timezone: <IANA zone>` to the feed or to the computed field, e.g. Asia/Shanghai")
        ordered = {p: str(parts[p]) for p in TIME_PARTS if p in parts}
        out[target] = Computed(target, tuple(ordered.values()), parts=ordered, timezone=zone, required=required)
    return out


def _template_columns(where: str, target: str, template: str, columns: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise FeedError(f"{where}: template {template!r} of computed field {target!r} is not valid ({exc}); write "
                        "column names in braces, e.g. \"{station}-{No}\" (double a literal brace: {{)") from None
    for _text, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise FeedError(f"{where}: template {template!r} of computed field {target!r} formats {{{name}}} "
                            f"(with {'!' + conversion if conversion else ':' + str(spec)}); a template puts each "
                            f"column's text in as it is. Fix: write {{{name}}} alone, and have the export carry the "
                            "text the field needs")
        if name not in columns:
            raise FeedError(f"{where}: template {template!r} of computed field {target!r} names {{{name}}}, which "
                            f"is not a declared column (columns: {', '.join(columns)})")
        names.append(name)
    if not names:
        raise FeedError(f"{where}: template {template!r} of computed field {target!r} names no column; use a "
                        "constant instead, or name columns in braces")
    return tuple(dict.fromkeys(names))


def load_feeds(directory: Path, contracts: dict[str, Contract]) -> dict[str, Feed]:
    feeds = {}
    for path in sorted(directory.glob("*.yaml")):
        feed = load_feed(path, contracts)
        feeds[feed.name] = feed
    return feeds


# -- reading a file -------------------------------------------------------------------------


def read_feed(feed: Feed, path: Path, encoding: str, max_bytes: int,
              max_depth: int = DEFAULT_MAX_DEPTH, postal: PostalCodes | None = None,
              codes: CodeSchemes | None = None) -> Iterator[RawRecord]:
    """One RawRecord per row or line; raises FeedError (before yielding) when the header does not fit.

    JSON lines are read strictly (citybrain.ingest.strict_json), each line judged alone. ``postal``: the
    city's postal codes, which a postal-code field must be one of (None: the contract's pattern alone);
    ``codes``: the city's code schemes, likewise for its device ids and area codes."""
    received = now_iso()
    if feed.format == "csv":
        yield from _read_csv(feed, path, encoding, max_bytes, postal, received, codes)
    else:
        yield from _read_jsonl(feed, path, encoding, max_bytes, max_depth, postal, received, codes)


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
    utf8 = codec in ("utf-8", "utf8")
    with open(path, "rb") as f:
        for number, line, size in _lines(f, max_bytes):
            if size > max_bytes:
                rejected.append(_too_large(f"{path.name}:{number}", line, size, max_bytes))
                continue
            try:
                text = line.decode(codec)
            except UnicodeDecodeError as exc:
                rejected.append(RawRecord(f"{path.name}:{number}", line, rejection=Rejection(
                    "encoding", "(record)",
                    f"line {number} is not {encoding}: byte 0x{line[exc.start]:02x} at offset {exc.start}", excerpt(line))))
                continue
            yield number, text, (line if utf8 else text.encode("utf-8"))


def _read_csv(feed: Feed, path: Path, encoding: str, max_bytes: int, postal: PostalCodes | None,
              received: str, codes: CodeSchemes | None) -> Iterator[RawRecord]:
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
    row_plan = _RowPlan(feed, header, postal, received, codes)
    width = len(header)
    yield from rejected
    rejected.clear()
    name = path.name
    for row in reader:
        if rejected:
            yield from rejected
            rejected.clear()
        number, raw = current["number"], current["raw"]
        source = f"{name}:{number}"
        if not any(map(str.strip, row)):   # stops at the first cell with text: the first, in a real row
            yield RawRecord(source, raw, rejection=Rejection("empty-record", "(record)", f"line {number} is empty"))
            continue
        if len(row) != width:
            yield RawRecord(source, raw, rejection=Rejection(
                "csv-row-shape", "(record)", f"line {number} has {len(row)} cells but the header has {width} columns",
                excerpt(raw)))
            continue
        yield row_plan.record(row, source, raw)
    yield from rejected


def _read_jsonl(feed: Feed, path: Path, encoding: str, max_bytes: int, max_depth: int, postal: PostalCodes | None,
                received: str, codes: CodeSchemes | None) -> Iterator[RawRecord]:
    rejected: list[RawRecord] = []
    plans: dict[tuple[str, ...], _RowPlan] = {}
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
        keys = tuple(value)   # the line's own key order: the record's field order, as it always was
        row_plan = plans.get(keys)
        if row_plan is None:
            row_plan = plans[keys] = _RowPlan(feed, [*keys, *(c for c in feed.columns if c not in value)], postal,
                                              received, codes)
        yield row_plan.record([*value.values(), *(None for c in feed.columns if c not in value)], source, raw)
    yield from rejected


def _check_header(feed: Feed, path: Path, header: list[str]) -> None:
    unknown = [h for h in header if h not in feed.columns]
    dupes = sorted({h for h in header if header.count(h) > 1})
    missing = [c.name for c in feed.columns.values() if c.required and c.name not in header]
    needed = sorted({n for c in feed.computed.values() for n in c.columns} - set(header) - set(missing))
    if unknown or dupes or missing or needed:
        parts = []
        if unknown:
            parts.append(f"undeclared column(s) {', '.join(unknown)}")
        if dupes:
            parts.append(f"duplicate column(s) {', '.join(dupes)}")
        if missing:
            parts.append(f"missing required column(s) {', '.join(missing)}")
        if needed:
            parts.append(f"missing column(s) {', '.join(needed)} that computed fields are built from")
        raise FeedError(
            f"{path.name}: the header does not match feed {feed.name}: {'; '.join(parts)}. Fix: export the columns "
            f"the feed declares ({', '.join(feed.columns)}), or declare new columns (or `ignore: true`) in "
            f"{feed.source.name if feed.source else 'the feed file'}. Nothing from this file was produced.")


# -- one row --------------------------------------------------------------------------------

_BAD_CELL = (ValueError, TypeError, KeyError, OverflowError)
_UNKNOWN: Any = object()   # a day whose offset is not looked up yet


class _RowPlan:
    """How to turn one row of a given header into a record: worked out once per file (per key order for JSON).

    Cells are text (CSV) or JSON values; ``None`` is a missing key. A cell that is None or, as text
    (stripped), one of the feed's NA tokens is an absent field.
    """

    def __init__(self, feed: Feed, header: Sequence[str], postal: PostalCodes | None = None, received: str = "",
                 codes: CodeSchemes | None = None) -> None:
        self.feed = feed
        self.na = feed.na
        index = {name: i for i, name in enumerate(header)}
        columns = [feed.columns[n] for n in header]
        #: (cell index, field, column, reader, number, conversion): the columns that fill a field of their own, in
        #: the header's order (the record's field order); plain number cells (most) are read inline first
        self.cells = [(index[c.name], c.field, c, _cell_reader(feed, c), c.type == "number" and c.map is None,
                       c.conversion) for c in columns if c.field is not None]
        #: required columns without a field of their own (they feed computed fields)
        self.required = [(index[c.name], c) for c in columns if c.required and c.field is None]
        self.times = [(c, [index[n] for n in c.columns], _LocalTime(ZoneInfo(c.timezone or feed.timezone)))
                      for c in feed.computed.values() if c.parts]
        #: (computed field, its cells' indexes, its text as (literal, column or None) pieces, the zone of its time)
        self.templates = [(c, [index[n] for n in c.columns], _pieces(c.template), ZoneInfo(c.timezone or feed.timezone))
                          for c in feed.computed.values() if c.template]
        #: an NA token that reads as a number ("-999"): number cells are compared with it trimmed before reading
        self.numeric_na = any(_reads_as_number(t) for t in self.na)
        #: fields stamped with the time the file is read
        self.received = {c.field: received for c in feed.computed.values() if c.received}
        #: (field, its column, the city's postal codes) for the postal-code fields the feed fills
        self.postal = [] if postal is None else [(c.field, c.name, postal) for c in columns if c.field in POSTAL_FIELDS]
        #: the city's code schemes, and the column each field came in
        self.codes = codes
        self.sent_as = {c.field: c.name for c in columns if c.field is not None}

    def record(self, row: Sequence[Any], source: str, raw: bytes) -> RawRecord:
        """The row as a record, or refused with every problem it has (and what could be read, for the contract's
        rules to be reported too)."""
        feed, na, numeric_na = self.feed, self.na, self.numeric_na
        value: dict[str, Any] = {**feed.constants, **self.received}
        problems: list[Rejection] = []
        isfinite = math.isfinite
        for i, target, column, read, number, convert in self.cells:
            cell = row[i]
            if (number and cell.__class__ is str and cell.isascii() and "_" not in cell
                    and (cell.strip() if numeric_na else cell) not in na):
                try:
                    found = float(cell)   # reads " 4 " as 4: most cells need no strip
                    if isfinite(found):
                        value[target] = convert(found) if convert else found
                        continue
                except ValueError:
                    pass
            self._cell(target, column, read, cell, value, problems)
        for i, column in self.required:
            text = _stripped(row[i])
            if text is None or (text.__class__ is str and text in na):
                problems.append(_absent(feed, column, None, text))
        for computed, inputs, clock in self.times:
            texts = self._inputs(computed, inputs, row, problems)
            if texts is not None:
                built, problem = clock.wire_time(computed, texts)
                if problem is None:
                    value[computed.field] = built
                else:
                    problems.append(problem)
        for computed, inputs, pieces, zone in self.templates:
            texts = self._inputs(computed, inputs, row, problems)
            if texts is not None:
                cells = dict(zip(computed.columns, texts))
                text = "".join(literal + (cells[name] if name is not None else "") for literal, name in pieces)
                if computed.format is not None:
                    built, problem = _template_time(computed, text, zone)
                    if problem is None:
                        value[computed.field] = built
                    else:
                        problems.append(problem)
                elif computed.map is None:
                    value[computed.field] = text
                elif text in computed.map:
                    value[computed.field] = computed.map[text]
                else:
                    problems.append(Rejection("mapping", computed.field, f"computed field `{computed.field}` from "
                                              f"column(s) {', '.join(computed.columns)}: value {text!r} is not in "
                                              f"the feed's map (known: {', '.join(computed.map)})", excerpt(text)))
        for target, column_name, postal in self.postal:
            if target in value:
                problem = postal.problem(value[target], target, column_name)
                if problem is not None:
                    problems.append(problem)
        if self.codes is not None:
            problems += self.codes.record_problems(value, self.sent_as)
        if problems:
            return RawRecord(source, raw, value=value, rejection=problems[0], problems=tuple(problems))
        return RawRecord(source, raw, value=value)

    def _cell(self, target: str, column: Column, read: Callable[[Any], Any], cell: Any, value: dict[str, Any],
              problems: list[Rejection]) -> None:
        """One cell into ``value``, or its problem into ``problems``: read as it is, then stripped."""
        if self._put(target, column, read, cell, value, problems):
            return
        text = _stripped(cell)
        if text != cell and self._put(target, column, read, text, value, problems):
            return
        problems.append(_convert(self.feed, column, text)[1] or _unreadable(column, text))

    def _put(self, target: str, column: Column, read: Callable[[Any], Any], text: Any, value: dict[str, Any],
             problems: list[Rejection]) -> bool:
        """True when ``text`` is settled: absent (an NA cell, trimmed: a problem if the column is required) or read."""
        if text is None or (text.__class__ is str and text.strip() in self.na):
            if column.required:
                problems.append(_absent(self.feed, column, target, text))
            return True
        try:
            value[target] = read(text)
        except _BAD_CELL:
            return False
        return True

    def _inputs(self, computed: Computed, inputs: list[int], row: Sequence[Any], problems: list[Rejection]
                ) -> list[str] | None:
        """The texts a computed field is built from; None (and, when it is required, a problem) if one is NA."""
        texts = []
        for i, name in zip(inputs, computed.columns):
            text = row[i]
            if text.__class__ is str:
                text = text.strip()
            if text is None or (text.__class__ is str and text in self.na):
                if computed.required:
                    problems.append(_absent(self.feed, self.feed.columns[name], computed.field, text))
                return None
            texts.append(text if text.__class__ is str else str(text))
        return texts


class _LocalTime:
    """Local wall times of one zone to the wire format; a day's UTC offset is looked up once."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.steady: dict[tuple[int, int, int], timedelta | None] = {}   # day -> its one offset; None: it changes

    def wire_time(self, computed: Computed, texts: list[str]) -> tuple[str | None, Rejection | None]:
        try:
            if not _plain_number("".join(texts)):
                raise ValueError("write ASCII digits 0-9, without '_'")
            try:
                numbers = [int(t) for t in texts]
            except ValueError:
                numbers = [_whole(t) for t in texts]   # "3.0"
            parts = dict(zip(computed.parts or (), numbers))   # by name: {year, month, day, hour} in any order
            day = (parts["year"], parts["month"], parts["day"])
            offset = self.steady.get(day, _UNKNOWN)
            if offset is _UNKNOWN:
                offset = self._day(day)
            if offset is not None:
                return iso(datetime(**parts, tzinfo=_UTC) - offset), None
            local = datetime(**parts)
        except (ValueError, TypeError, OverflowError) as exc:
            shown = ", ".join(f"{p}={t!r}" for p, t in zip(computed.parts or {}, texts))
            return None, Rejection("datetime", computed.field, f"computed time `{computed.field}` from columns "
                                                              f"{', '.join(computed.columns)}: {shown} is not a "
                                                              f"time ({exc})", excerpt(shown))
        try:
            return _wall_time(local, self.zone), None
        except _NotOneMoment as exc:
            return None, Rejection("datetime", computed.field, f"computed time `{computed.field}`: {exc}",
                                   f"{local:%Y-%m-%d %H:%M:%S}")

    def _day(self, day: tuple[int, int, int]) -> timedelta | None:
        """The UTC offset of every moment of a local day, or None on a day the offset changes (raises for no day)."""
        start = datetime(*day, tzinfo=self.zone)
        end = datetime(*day, 23, 59, 59, tzinfo=self.zone)
        offsets = {start.utcoffset(), start.replace(fold=1).utcoffset(), end.utcoffset(),
                   end.replace(fold=1).utcoffset()}
        steady = offsets.pop() if len(offsets) == 1 else None
        if len(self.steady) > 100_000:
            self.steady.clear()
        self.steady[day] = steady
        return steady


class _NotOneMoment(ValueError):
    """A local wall time that is no single moment in its zone: skipped or repeated by a daylight-saving change."""


def _wall_time(local: datetime, zone: ZoneInfo) -> str:
    """A parsed time in the wire format: an aware one as it is, a naive one as a wall time of ``zone``; raises
    _NotOneMoment for a wall time the zone skips (spring) or repeats (autumn), which no rule can place."""
    if local.tzinfo is not None:
        return iso(local)
    first = local.replace(tzinfo=zone)
    if first.utcoffset() == local.replace(tzinfo=zone, fold=1).utcoffset():
        return iso(first)
    shown = f"{local:%Y-%m-%d %H:%M:%S}"
    if first.astimezone(_UTC).astimezone(zone).replace(tzinfo=None) != local:
        raise _NotOneMoment(f"{shown} does not exist in {zone.key} (a daylight-saving gap): fix the export's time, "
                           "or have the export carry the offset or UTC")
    raise _NotOneMoment(f"{shown} occurs twice in {zone.key} (the hour repeated when daylight saving time ends): the "
                       "export must carry the offset or UTC")


def _template_time(computed: Computed, text: str, zone: ZoneInfo) -> tuple[str | None, Rejection | None]:
    """A templated text read as a local time in the computed field's ``format``, or the rejection saying why not."""
    where = f"computed field `{computed.field}` from column(s) {', '.join(computed.columns)}"
    try:
        return _wall_time(datetime.strptime(text, computed.format or ""), zone), None
    except _NotOneMoment as exc:
        return None, Rejection("datetime", computed.field, f"{where}: {exc}", excerpt(text))
    except ValueError:
        return None, Rejection("datetime", computed.field, f"{where}: {text!r} does not match the format "
                                                           f"{computed.format!r} ({zone.key})", excerpt(text))


def _pieces(template: str | None) -> tuple[tuple[str, str | None], ...]:
    """A template as (literal text, column name or None) pieces; checked when the feed was read."""
    return tuple((literal, name) for literal, name, _spec, _conversion in string.Formatter().parse(template or ""))


def _plain_number(text: str) -> bool:
    """True for a text that may be a number: ASCII only, without ``_`` (Python's float() and int() also read
    ``1_000`` and other scripts' digits, which no export means as a number)."""
    return text.isascii() and "_" not in text


def _reads_as_number(token: str) -> bool:
    """True for an NA token a number cell could be read as (``-999``)."""
    try:
        float(token)
    except ValueError:
        return False
    return _plain_number(token)


def _stripped(cell: Any) -> Any:
    return cell.strip() if cell.__class__ is str else cell


def _cell_reader(feed: Feed, column: Column) -> Callable[[Any], Any]:
    """A cell (text, or a JSON value) to its field value; raises on a cell it cannot read, so that the caller
    tries once more with the text stripped."""
    kind, mapping, convert, zone = column.type, column.map, column.conversion, feed.tz
    if mapping is not None and kind != "list":
        return mapping.__getitem__
    if kind == "number":
        isfinite = math.isfinite

        def number(text: Any) -> float:
            if text.__class__ is bool:
                raise TypeError
            if text.__class__ is str and not _plain_number(text):
                raise ValueError
            value = float(text)
            if not isfinite(value):
                raise ValueError
            return convert(value) if convert else value
        return number
    if kind == "string":
        def text_cell(text: Any) -> str:
            if text.__class__ is not str:
                return str(text)
            if len(text.strip()) != len(text):
                raise ValueError   # padded: read again stripped (it may be an NA token)
            return text   # type: ignore[no-any-return]
        return text_cell
    if kind == "integer":
        def integer(text: Any) -> int:
            if text.__class__ is int:
                return text   # type: ignore[no-any-return]
            if text.__class__ is str and text.isascii() and text.isdigit():
                return int(text)
            if text.__class__ is bool:
                raise TypeError
            if text.__class__ is str and not _plain_number(text):
                raise ValueError
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        return integer

    def general(text: Any) -> Any:
        value, problem = _convert_value(column, text, zone)
        if problem:
            raise ValueError
        return value
    return general


def _absent(feed: Feed, column: Column, target: str | None, text: Any) -> Rejection:
    shown = "missing" if text is None else ("empty" if text == "" else f"{text!r}, an NA token of feed {feed.name}")
    if target is None:
        return Rejection("required", column.name, f"required column `{column.name}` is {shown}")
    return Rejection("required", target, f"required field `{target}` is absent: column `{column.name}` is {shown}")


def _unreadable(column: Column, text: Any) -> Rejection:
    return Rejection("type", column.field or column.name, f"column `{column.name}`: {text!r} is not a {column.type}",
                     excerpt(text))


def _whole(text: str) -> int:
    number = float(text)
    if not number.is_integer():
        raise ValueError(f"{text!r} is not a whole number")
    return int(number)


def _convert(feed: Feed, column: Column, cell: Any) -> tuple[Any, Rejection | None]:
    """A cell's value, or the rejection that names its column, field and rule."""
    text = cell.strip() if isinstance(cell, str) else cell
    value, problem = _convert_value(column, text, feed.tz)
    if problem != "failed":
        return value, problem   # type: ignore[return-value]
    field_name = column.field or column.name
    where = f"column `{column.name}` (field `{field_name}`)"
    if column.type == "datetime":
        return None, Rejection("datetime", field_name, f"{where}: {text!r} does not match the format "
                                                       f"{column.format!r} ({feed.timezone})", excerpt(text))
    return None, Rejection("type", field_name, f"{where}: {text!r} is not a {column.type}", excerpt(text))


def _convert_value(column: Column, text: Any, zone: ZoneInfo) -> tuple[Any, Rejection | str | None]:
    """(value, None), (None, a mapping Rejection), or (None, "failed") for a cell not of the column's type."""
    kind = column.type
    if column.map is not None:
        field_name = column.field or column.name
        parts = [p.strip() for p in str(text).split(column.separator) if p.strip()] if kind == "list" else [text]
        try:
            unknown = [p for p in parts if p not in column.map]
        except TypeError:   # a JSON list or object where a word was expected
            unknown = parts
        if unknown:
            allowed = ", ".join(map(str, column.map))
            return None, Rejection("mapping", field_name, f"column `{column.name}` (field `{field_name}`): value "
                                                          f"{unknown[0]!r} is not in the feed's mapping (known: "
                                                          f"{allowed})", excerpt(text))
        mapped = [column.map[p] for p in parts]
        return (mapped if kind == "list" else mapped[0]), None
    if kind in ("integer", "number") and isinstance(text, str) and not _plain_number(text):
        field_name = column.field or column.name
        return None, Rejection("type", field_name, f"column `{column.name}` (field `{field_name}`): {text!r} is not a "
                                                   f"{kind}: write ASCII digits 0-9, without '_' separators or other "
                                                   "scripts' digits", excerpt(text))
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
            return (column.conversion(number) if column.conversion else number), None
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
            try:
                return _wall_time(moment, zone), None
            except _NotOneMoment as exc:
                field_name = column.field or column.name
                return None, Rejection("datetime", field_name, f"column `{column.name}` (field `{field_name}`): {exc}",
                                       excerpt(text))
    except (TypeError, ValueError, OverflowError):
        pass
    return None, "failed"
