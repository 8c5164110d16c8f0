"""CSV exports for the loader's tests: read a sample's rows, write changed rows back as a file, judge records."""

from __future__ import annotations

import csv
from pathlib import Path

from citybrain.contracts.validate import RecordValidator
from citybrain.ingest.readers import RawRecord


def read_rows(path: Path, count: int | None = None) -> list[dict[str, str]]:
    """The first ``count`` rows of a CSV file (all without it), as the header names them."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))[:count]


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    """``rows`` as a CSV file with the first row's columns as its header."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def judged(records: list[RawRecord], check: RecordValidator) -> tuple[list[RawRecord], list[RawRecord]]:
    """(accepted, refused): refused by the reader or by the contract, as the producer judges them."""
    accepted: list[RawRecord] = []
    refused: list[RawRecord] = []
    for r in records:
        (accepted if r.rejection is None and check(r.value) is None else refused).append(r)
    return accepted, refused
