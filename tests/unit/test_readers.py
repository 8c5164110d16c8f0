"""Reading bad input: every line ends as a record or a rejection with a rule; bad CSV headers refuse the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.contracts.model import Contract
from citybrain.ingest.readers import InputFileError, read_csv, read_jsonl
from tests.conftest import write_bytes

MAX = 4096


def test_jsonl_bad_lines_each_get_a_rule(tmp_path: Path) -> None:
    path = write_bytes(
        tmp_path / "feed.jsonl",
        b'{"ok": 1}',
        b'{"broken": ',
        b"",
        b'[1, 2]',
        b'{"name": "\xd6\xd0\xce\xc4"}',           # GB18030 bytes, not UTF-8
        b'{"v": NaN}',
        b'{"big": "' + b"x" * (MAX * 3) + b'"}',    # over the limit, skipped without loading
        '{"名称": "中文"}'.encode(),
    )
    records = list(read_jsonl(path, MAX))
    rules = [r.rejection.rule if r.rejection else "ok" for r in records]
    assert rules == ["ok", "json-syntax", "empty-record", "not-an-object", "encoding", "json-number", "too-large", "ok"]
    assert [r.source for r in records][4] == "feed.jsonl:5"
    assert records[6].size > MAX * 3 and len(records[6].raw) <= MAX
    assert "offset" in records[4].rejection.message


def test_utf8_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"b": 2}\r\n')
    assert [r.value for r in read_jsonl(path, MAX)] == [{"a": 1}, {"b": 2}]


@pytest.fixture
def inspection(contracts: dict[str, Contract]) -> Contract:
    return contracts["raw.urban_management.inspection.v1"]


HEADER = b"inspection_id,inspected_at,inspector_id,category,lat,long,status"


def test_csv_rows_are_typed_per_schema(tmp_path: Path, inspection: Contract) -> None:
    path = write_bytes(tmp_path / "um.csv", HEADER,
                       b"UM-20261122-001044,2026-11-22T15:05:00Z,grid-1,garbage,39.91,116.36,found")
    [record] = list(read_csv(path, inspection, MAX))
    assert record.value is not None and record.value["lat"] == 39.91 and record.value["status"] == "found"


def test_csv_bad_rows(tmp_path: Path, inspection: Contract) -> None:
    path = write_bytes(
        tmp_path / "um.csv", HEADER,
        b"UM-20261122-001044,2026-11-22T15:05:00Z,grid-1,garbage,not-a-number,116.36,found",
        b"UM-20261122-001045,2026-11-22T15:05:00Z,grid-1,garbage,39.9",
        "UM-20261122-001046,2026-11-22T15:05:00Z,网格员,garbage,39.9,116.3,found".encode("gb18030"),
        b",,,,,,",
    )
    records = list(read_csv(path, inspection, MAX))
    assert [(r.rejection.rule, r.rejection.field) for r in records] == [
        ("type", "lat"), ("csv-row-shape", "(record)"), ("encoding", "(record)"), ("empty-record", "(record)")]


def test_csv_with_wrong_columns_is_refused_with_the_columns_named(tmp_path: Path, inspection: Contract) -> None:
    path = write_bytes(tmp_path / "um.csv", b"inspection_id,when,inspector_id,category,lat,long,status,status",
                       b"UM-20261122-001044,x,grid-1,garbage,39.9,116.3,found,found")
    with pytest.raises(InputFileError) as info:
        list(read_csv(path, inspection, MAX))
    message = str(info.value)
    assert "unknown column(s) when" in message and "duplicate column(s) status" in message
    assert "missing required column(s) inspected_at" in message and "Fix:" in message
