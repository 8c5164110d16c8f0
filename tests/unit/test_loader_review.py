"""The feed loader's edge cases, each with data built to break its rule.

Computed times built by part name, templates that put a column's text in as it is, NA tokens compared trimmed,
numbers in ASCII digits only, local times a daylight-saving change repeats or skips refused, six-digit postal codes
when no city pack is imported, and a file whose reading stops part-way counted up to where it stopped.
"""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Any, Iterable

import pytest
from typer.testing import CliRunner

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.ingest.feeds import Feed, FeedError, load_feed, read_feed
from citybrain.ingest.producer import BatchProducer, LoadInterrupted, ProduceSummary, _BatchRun, _judge
from citybrain.ingest.readers import RawRecord
from citybrain.ingest.strict_json import dumps_record
from citybrain.settings import PROJECT_ROOT, get_settings, load_settings
from tests.unit.csv_rows import read_rows, write_rows

AIR_FEED = PROJECT_ROOT / "infra" / "feeds" / "air_quality_hourly.yaml"
AIR_SAMPLE = PROJECT_ROOT / "tests" / "data" / "exports" / "PRSA_Data_Aotizhongxin_excerpt.csv"
US311 = PROJECT_ROOT / "tests" / "data" / "us311"
LA_FEED, LA_SAMPLE = US311 / "myla311.yaml", US311 / "myla311_service_requests_excerpt.csv"
MAX = 256 * 1024


def _air(tmp_path: Path, contracts: dict[str, Contract], old: str = "", new: str = "") -> Feed:
    text = AIR_FEED.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "air.yaml"
    path.write_text(text.replace(old, new) if old else text, encoding="utf-8")
    return load_feed(path, contracts)


# -- computed times and templates -----------------------------------------------------------------------------


def test_a_computed_time_is_built_by_part_name_not_by_position(contracts: dict[str, Contract],
                                                              tmp_path: Path) -> None:
    """{year, month, day, hour, second}: the second goes in the second, not in the minute's place."""
    text = AIR_FEED.read_text(encoding="utf-8").replace("hour: hour}", "hour: hour, second: second}").replace(
        "  hour: {type: integer}\n", "  hour: {type: integer}\n  second: {type: integer}\n")
    (tmp_path / "air.yaml").write_text(text, encoding="utf-8")
    feed = load_feed(tmp_path / "air.yaml", contracts)
    rows = [{**row, "second": "30"} for row in read_rows(AIR_SAMPLE, 1)]
    records = list(read_feed(feed, write_rows(tmp_path / "t.csv", rows), "utf-8", MAX))
    assert records[0].value["dateObserved"] == "2013-02-28T16:00:30Z"   # type: ignore[index]


def test_a_computed_minute_without_its_hour_is_refused_naming_the_field_and_the_fix(
        contracts: dict[str, Contract], tmp_path: Path) -> None:
    with pytest.raises(FeedError, match=r"computed time 'dateObserved' has a minute or second but no hour; add "
                                        r"`hour: <column>`"):
        _air(tmp_path, contracts, "day: day, hour: hour}", "day: day, minute: hour}")


@pytest.mark.parametrize("template, shown", [("{station}-{No:05d}", ":05d"), ("{station}-{No!r}", "!r")])
def test_a_template_format_spec_is_refused_when_the_feed_is_read(contracts: dict[str, Contract], tmp_path: Path,
                                                                 template: str, shown: str) -> None:
    with pytest.raises(FeedError, match=rf"template .* of computed field 'id' formats \{{No\}} \(with {shown}\).*"
                                        r"Fix: write \{No\} alone"):
        _air(tmp_path, contracts, "{station}-{No}", template)


def test_a_template_puts_in_a_column_whose_name_has_a_dot(contracts: dict[str, Contract], tmp_path: Path) -> None:
    """{PM2.5} is the column PM2.5 (str.format would look up PM2, then its attribute 5)."""
    feed = _air(tmp_path, contracts, "{station}-{No}", "{station}-{No}-{PM2.5}")
    records = list(read_feed(feed, write_rows(tmp_path / "t.csv", read_rows(AIR_SAMPLE, 1)), "utf-8", MAX))
    assert records[0].value["id"] == "urn:ngsi-ld:AirQualityObserved:Aotizhongxin-1-4"   # type: ignore[index]


# -- NA tokens and numbers ------------------------------------------------------------------------------------


def test_a_numeric_na_token_is_compared_with_the_cell_trimmed(contracts: dict[str, Contract], tmp_path: Path) -> None:
    feed = _air(tmp_path, contracts, 'na: ["NA", "-"]', 'na: ["NA", "-", "-999"]')
    rows = read_rows(AIR_SAMPLE, 3)
    rows[0]["PM10"], rows[1]["PM10"], rows[2]["PM10"] = " -999", "-999 ", "-999.5"
    records = list(read_feed(feed, write_rows(tmp_path / "t.csv", rows), "utf-8", MAX))
    assert [r.rejection for r in records] == [None, None, None]
    assert "pm10" not in records[0].value and "pm10" not in records[1].value   # type: ignore[operator]
    assert records[2].value["pm10"] == -999.5                                   # type: ignore[index]


@pytest.mark.parametrize("cell", ["1_000", "１２", "١٢", "1２"])
def test_a_number_in_other_digits_or_with_underscores_is_refused_naming_the_field(
        contracts: dict[str, Contract], tmp_path: Path, cell: str) -> None:
    feed = _air(tmp_path, contracts)
    rows = read_rows(AIR_SAMPLE, 2)
    rows[0]["PRES"] = cell
    rows[1]["PRES"] = "\u3000" + "1023" + "\u3000"   # an ideographic space around ASCII digits: trimmed, read
    records = list(read_feed(feed, write_rows(tmp_path / "t.csv", rows), "utf-8", MAX))
    problem = records[0].rejection
    assert problem is not None and (problem.rule, problem.field) == ("type", "pressure")
    assert "column `PRES` (field `pressure`)" in problem.message and "ASCII digits" in problem.message
    assert records[1].rejection is None and records[1].value["pressure"] == 1023.0   # type: ignore[index]


def test_time_parts_in_other_digits_are_refused(contracts: dict[str, Contract], tmp_path: Path) -> None:
    feed = _air(tmp_path, contracts)
    rows = read_rows(AIR_SAMPLE, 2)
    rows[0]["year"], rows[1]["day"] = "２０１３", "1_0"
    records = list(read_feed(feed, write_rows(tmp_path / "t.csv", rows), "utf-8", MAX))
    assert [(r.rejection.rule, r.rejection.field) for r in records] == [   # type: ignore[union-attr]
        ("datetime", "dateObserved"), ("datetime", "dateObserved")]


# -- local times a daylight-saving change repeats or skips -------------------------------------------------------


def test_an_hour_repeated_when_daylight_saving_ends_is_refused_naming_the_zone(contracts: dict[str, Contract],
                                                                                tmp_path: Path) -> None:
    """A US hourly export's two 01:00 rows of 7 November 2021 would otherwise get the same UTC time."""
    feed = _air(tmp_path, contracts, "timezone: Asia/Shanghai ", "timezone: America/New_York ")
    rows = read_rows(AIR_SAMPLE, 3)
    for row, hour in zip(rows, ("0", "1", "2")):
        row.update({"year": "2021", "month": "11", "day": "7", "hour": hour})
    records = list(read_feed(feed, write_rows(tmp_path / "t.csv", rows), "utf-8", MAX))
    refused = records[1].rejection
    assert refused is not None and (refused.rule, refused.field) == ("datetime", "dateObserved")
    assert "2021-11-07 01:00:00 occurs twice in America/New_York" in refused.message
    assert "the export must carry the offset or UTC" in refused.message
    assert records[0].value["dateObserved"] == "2021-11-07T04:00:00Z"   # type: ignore[index]   EDT
    assert records[2].value["dateObserved"] == "2021-11-07T07:00:00Z"   # type: ignore[index]   EST


def test_a_time_column_repeated_or_skipped_by_daylight_saving_is_refused(contracts: dict[str, Contract],
                                                                         tmp_path: Path) -> None:
    feed = load_feed(LA_FEED, contracts)
    rows = read_rows(LA_SAMPLE, 3)
    rows[0]["CreatedDate"] = "11/05/2023 01:30:00 AM"   # Los Angeles' clocks go back at 02:00 PDT
    rows[1]["CreatedDate"] = "03/12/2023 02:30:00 AM"   # and jump from 02:00 to 03:00
    rows[2]["CreatedDate"] = "11/05/2023 02:30:00 AM"   # once: PST
    records = list(read_feed(feed, write_rows(tmp_path / "la.csv", rows), "utf-8", MAX))
    repeated = {p.field: p for p in records[0].problems}
    assert set(repeated) == {"source_requested_datetime", "requested_datetime"}
    assert all(p.rule == "datetime" and "occurs twice in America/Los_Angeles" in p.message
               for p in repeated.values())
    assert "column `CreatedDate` (field `source_requested_datetime`)" in repeated["source_requested_datetime"].message
    assert all("does not exist in America/Los_Angeles" in p.message for p in records[1].problems)
    assert records[2].rejection is None
    assert records[2].value["requested_datetime"] == "2023-11-05T10:30:00Z"   # type: ignore[index]


# -- postal codes when no city is imported ------------------------------------------------------------------------


def _fake_produce(seen: list[RawRecord]) -> Any:
    def produce(self: BatchProducer, contract: Contract, records: Iterable[RawRecord], **_kw: Any) -> ProduceSummary:
        summary = ProduceSummary(topic=contract.topic)
        for record in records:
            seen.append(record)
            summary.read += 1
            if record.rejection is None:
                summary.accepted += 1
            else:
                summary.dead_lettered += 1
                summary.by_rule[record.rejection.rule] += 1
        return summary
    return produce


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterable[CliRunner]:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "myla311.yaml").write_text(LA_FEED.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("CITYBRAIN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CITYBRAIN_FEEDS_DIR", str(feeds))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_load_checks_six_digit_postal_codes_when_no_city_pack_is_imported(
        cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from citybrain.cli import app

    seen: list[RawRecord] = []
    monkeypatch.setattr(BatchProducer, "produce", _fake_produce(seen))
    result = cli.invoke(app, ["load", "myla311", str(LA_SAMPLE), "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 3, result.output
    refused = [r for r in seen if r.rejection is not None]
    assert len(seen) == 12 and len(refused) == 11   # every row with a (five-digit) ZIP code
    problem = refused[0].rejection
    assert problem is not None and (problem.rule, problem.field) == ("postal-code", "zipcode")
    assert "default postal-code pattern '^[0-9]{6}$' (no city pack is imported here)" in problem.message
    assert "`citybrain city import PACK`" in problem.message


def test_an_interrupted_load_reports_its_counts_and_exits_1(cli: CliRunner, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    from citybrain.cli import app

    def produce(self: BatchProducer, contract: Contract, records: Iterable[RawRecord], **_kw: Any) -> ProduceSummary:
        summary = ProduceSummary(topic=contract.topic, read=5, accepted=4, dead_lettered=1)
        raise LoadInterrupted(summary, OSError("Input/output error"), 0, None)

    monkeypatch.setattr(BatchProducer, "produce", produce)
    result = cli.invoke(app, ["load", "myla311", str(LA_SAMPLE), "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "read 5, accepted 4, dead-lettered 1" in result.output
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert (report["read"], report["accepted"], report["dead_lettered"]) == (5, 4, 1)
    assert "stopped after 5 (OSError: Input/output error)" in report["interrupted"]


# -- a file whose reading stops part-way ---------------------------------------------------------------------------


class _Batch:
    def __init__(self) -> None:
        self.records = 0

    def append(self, **_record: Any) -> object | None:
        self.records += 1
        return object()


class _Cluster:
    def partitions_for_topic(self, _topic: str) -> set[int]:
        return {0}


class _Client:
    async def fetch_all_metadata(self) -> _Cluster:
        return _Cluster()


class _Producer:
    """The part of aiokafka's producer a batch run uses; every batch acknowledged."""

    client = _Client()

    def __init__(self) -> None:
        self.acknowledged: list[tuple[str, int]] = []

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> asyncio.Future[Any]:
        self.acknowledged.append((topic, batch.records))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _run(contract: Contract, records: Iterable[RawRecord], tmp_path: Path) -> tuple[ProduceSummary, _Producer]:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "state")})
    producer = _Producer()
    run = _BatchRun(BatchProducer(settings), producer, contract, None, None)   # type: ignore[arg-type]
    return asyncio.run(run.run(records, None)), producer


def test_a_file_whose_reading_stops_part_way_is_counted_up_to_there(contracts: dict[str, Contract],
                                                                    tmp_path: Path) -> None:
    """Rows already sent when the CSV reader gives up (a cell over csv's field size limit) are acknowledged and
    counted in the error, not lost in a traceback."""
    feed = load_feed(LA_FEED, contracts)
    rows = read_rows(LA_SAMPLE, 4)
    rows[1]["Status"] = "Escalated"                          # dead-lettered: not in the feed's map
    rows[2]["NCName"] = "x" * (csv.field_size_limit() + 1)   # csv.Error: field larger than field limit
    records = read_feed(feed, write_rows(tmp_path / "la.csv", rows), "utf-8", MAX)
    with pytest.raises(LoadInterrupted) as caught:
        _run(contracts["raw.hotline.service_request.v1"], records, tmp_path)
    summary = caught.value.summary
    assert (summary.read, summary.accepted, summary.dead_lettered) == (2, 1, 1)
    assert isinstance(caught.value.cause, csv.Error)
    assert "stopped after 2 (Error: field larger than field limit" in str(caught.value)
    assert "1 were accepted to raw.hotline.service_request.v1 and 1 dead-lettered" in str(caught.value)


def test_a_header_that_does_not_fit_stops_the_load_before_anything_is_sent(contracts: dict[str, Contract],
                                                                           tmp_path: Path) -> None:
    feed = load_feed(LA_FEED, contracts)
    rows = [{("Zip" if k == "ZipCode" else k): v for k, v in row.items()} for row in read_rows(LA_SAMPLE, 2)]
    records = read_feed(feed, write_rows(tmp_path / "la.csv", rows), "utf-8", MAX)
    with pytest.raises(FeedError, match="undeclared column.s. Zip"):
        _run(contracts["raw.hotline.service_request.v1"], records, tmp_path)


def test_a_record_is_sent_as_dumps_record_writes_it(contracts: dict[str, Contract]) -> None:
    """One JSON encoding for payloads and event ids: the producer's is strict_json.dumps_record's, byte for byte."""
    contract = contracts["raw.hotline.service_request.v1"]
    feed = load_feed(LA_FEED, contracts)
    record = next(iter(read_feed(feed, LA_SAMPLE, "utf-8", MAX)))
    payload, text, rejection = _judge(RecordValidator(contract), record, MAX)
    assert rejection is None and payload == dumps_record(record.value) and text == payload.decode("utf-8")
