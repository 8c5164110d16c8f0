"""Read JSONL and CSV files into records, turning every unreadable line into a Rejection.

Readers never raise for a bad record: each input line ends as a ``RawRecord`` carrying
either a parsed value or the reason it could not be read (every problem of the line, the
first as its ``rejection``). Only a file that cannot be read as a whole (a CSV header that
does not match the contract) raises ``InputFileError``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import Rejection, excerpt
from citybrain.errors import InputError
from citybrain.ingest.strict_json import DEFAULT_MAX_DEPTH, JsonRefused, loads

_CHUNK = 64 * 1024


class InputFileError(InputError):
    """A whole input file cannot be read against its contract; nothing from it was produced."""


@dataclass(frozen=True)
class RawRecord:
    """One input record: where it came from, its original bytes, and its value or rejection.

    A refused record may still carry ``value``, what could be read of it, so that the contract's rules are
    reported too; ``problems`` lists every problem the reader found (``rejection`` is the first).
    """

    source: str
    raw: bytes
    value: dict[str, Any] | None = None
    rejection: Rejection | None = None
    original_size: int = -1
    producer: str | None = None  # who sent it, when not the producing process itself (a gateway's partner)
    timestamp_ms: int | None = None  # Kafka record timestamp; None = now (the simulator sends simulated time)
    lint: tuple[str, ...] = ()       # the edge's corrections of a known model defect (gateway lint rules)
    problems: tuple[Rejection, ...] = ()

    @property
    def size(self) -> int:
        return self.original_size if self.original_size >= 0 else len(self.raw)


def _too_large(source: str, raw: bytes, size: int, max_bytes: int) -> RawRecord:
    """The rejection of a record over the size limit; only its first ``max_bytes`` are kept."""
    return RawRecord(source, raw[:max_bytes], rejection=Rejection(
        "too-large", "(record)",
        f"{source} is {size} bytes, over the limit of {max_bytes} bytes (CITYBRAIN_MAX_RECORD_BYTES)",
        excerpt(raw)), original_size=size)


def parse_json_record(raw: bytes, source: str, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> RawRecord:
    """Parse one JSON document (one JSONL line) into a RawRecord, read strictly (citybrain.ingest.strict_json)."""
    if len(raw) > max_bytes:
        return _too_large(source, raw, len(raw), max_bytes)
    if not raw.strip():
        return RawRecord(source, raw, rejection=Rejection("empty-record", "(record)", "record is empty"))
    try:
        value = loads(raw, max_depth)
    except JsonRefused as exc:
        refused = exc.rejection()
        return RawRecord(source, raw, rejection=Rejection(refused.rule, refused.field, f"record: {refused.message}",
                                                          refused.value_excerpt or excerpt(raw)))
    if not isinstance(value, dict):
        return RawRecord(source, raw, rejection=Rejection(
            "not-an-object", "(record)", f"record must be a JSON object, got {type(value).__name__}", excerpt(raw)))
    return RawRecord(source, raw, value=value)


def _lines(f: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """(line number, content without newline, content size) per line.

    Over-long lines are cut at ``max_bytes + 1`` and the rest skipped in chunks, never loaded.
    """
    number = 0
    while True:
        line = f.readline(max_bytes + 1)
        if not line:
            return
        number += 1
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        content = line.rstrip(b"\r\n")
        size = len(content)
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while True:
                rest = f.readline(_CHUNK)
                if not rest:
                    break
                if rest.endswith(b"\n"):
                    size += len(rest.rstrip(b"\r\n"))
                    break
                size += len(rest)
        yield number, content, size


def read_jsonl(path: Path, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Iterator[RawRecord]:
    """One RawRecord per line of a JSON Lines file. A final newline does not make an empty record."""
    with open(path, "rb") as f:
        for number, line, size in _lines(f, max_bytes):
            source = f"{path.name}:{number}"
            if size > max_bytes:
                yield _too_large(source, line, size, max_bytes)
                continue
            yield parse_json_record(line, source, max_bytes, max_depth)


# -- CSV ----------------------------------------------------------------------------------


def read_csv(path: Path, contract: Contract, max_bytes: int) -> Iterator[RawRecord]:
    """Rows of a CSV file with a header row naming contract fields; cells typed per the schema.

    Raises InputFileError (before yielding anything) when the header has unknown, duplicate
    or missing required columns.
    """
    props: dict[str, Any] = contract.schema.get("properties", {})
    required = set(contract.schema.get("required", ()))
    with open(path, "rb") as f:
        line_iter = _lines(f, max_bytes)
        rejected: list[RawRecord] = []
        current = {"number": 0, "raw": b""}

        def decoded() -> Iterator[str]:
            for number, line, size in line_iter:
                current["number"], current["raw"] = number, line
                source = f"{path.name}:{number}"
                if size > max_bytes:
                    rejected.append(_too_large(source, line, size, max_bytes))
                    continue
                try:
                    yield line.decode("utf-8") + "\n"
                except UnicodeDecodeError as exc:
                    rejected.append(RawRecord(source, line, rejection=Rejection(
                        "encoding", "(record)",
                        f"line {number} is not UTF-8: byte 0x{line[exc.start]:02x} at offset {exc.start}",
                        excerpt(line))))

        reader = csv.reader(decoded())
        header = next(reader, None)
        if header is None:
            raise InputFileError(f"{path.name}: the CSV file is empty; expected a header row naming contract fields.")
        header = [h.strip() for h in header]
        _check_header(path, contract, header, props, required)
        yield from rejected
        rejected.clear()

        for row in reader:
            yield from rejected
            rejected.clear()
            number = current["number"]
            source = f"{path.name}:{number}"
            raw = current["raw"]
            if not any(cell.strip() for cell in row):
                yield RawRecord(source, raw, rejection=Rejection("empty-record", "(record)", f"line {number} is empty"))
                continue
            if len(row) != len(header):
                yield RawRecord(source, raw, rejection=Rejection(
                    "csv-row-shape", "(record)",
                    f"line {number} has {len(row)} cells but the header has {len(header)} columns", excerpt(raw)))
                continue
            value: dict[str, Any] = {}
            problems: list[Rejection] = []
            for name, cell in zip(header, row, strict=True):
                if cell == "":
                    continue  # an empty cell is an absent field
                converted, problem = _convert(name, cell, props[name])
                if problem:
                    problems.append(problem)
                else:
                    value[name] = converted
            if problems:
                yield RawRecord(source, raw, value=value, rejection=problems[0], problems=tuple(problems))
            else:
                yield RawRecord(source, raw, value=value)
        yield from rejected


def _check_header(path: Path, contract: Contract, header: list[str], props: dict[str, Any], required: set[str]) -> None:
    unknown = [h for h in header if h not in props]
    dupes = sorted({h for h in header if header.count(h) > 1})
    missing = sorted(required - set(header))
    if unknown or dupes or missing:
        parts = []
        if unknown:
            parts.append(f"unknown column(s) {', '.join(unknown)}")
        if dupes:
            parts.append(f"duplicate column(s) {', '.join(dupes)}")
        if missing:
            parts.append(f"missing required column(s) {', '.join(missing)}")
        raise InputFileError(
            f"{path.name}: the CSV header does not match contract {contract.topic}: {'; '.join(parts)}. "
            f"Fix: name the columns after the contract's fields ({', '.join(props)}); "
            f"see `citybrain contracts show {contract.id}`. Nothing from this file was produced."
        )


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _convert(name: str, cell: str, schema: dict[str, Any]) -> tuple[Any, Rejection | None]:
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types or ["string"])
    text = cell.strip()
    for t in types:
        try:
            if t == "string":
                return cell, None
            if t == "integer":
                return int(text), None
            if t == "number":
                number = float(text)
                if math.isfinite(number):
                    return number, None
            if t == "boolean":
                low = text.lower()
                if low in _TRUE or low in _FALSE:
                    return low in _TRUE, None
            if t in ("object", "array"):
                parsed = loads(text)
                if isinstance(parsed, dict if t == "object" else list):
                    return parsed, None
            if t == "null" and text.lower() == "null":
                return None, None
        except JsonRefused as exc:
            return None, Rejection(exc.rule, name, f"`{name}`: {exc.message}", excerpt(cell))
        except ValueError:
            continue
    return None, Rejection("type", name, f"`{name}` must be {'/'.join(types)}, got {cell!r}", excerpt(cell))
