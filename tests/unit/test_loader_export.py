"""An ordinary export (the Beijing air-quality station files) through the loader's parsing and validation.

The sample is real (tests/data/exports/README.md): NA cells, CO in µg/m³, time in year/month/day/hour
columns, no id column, a column named `No`. Each rule has a test built to break it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.ingest.feeds import Feed, FeedError, load_feed, read_feed
from citybrain.ingest.producer import RejectionReport, problems_of, summarised
from citybrain.settings import PROJECT_ROOT
from tests.unit.csv_rows import judged, read_rows, write_rows

FEED = PROJECT_ROOT / "infra" / "feeds" / "air_quality_hourly.yaml"
SAMPLE = PROJECT_ROOT / "tests" / "data" / "exports" / "PRSA_Data_Aotizhongxin_excerpt.csv"
MAX = 256 * 1024


@pytest.fixture(scope="module")
def feed(contracts: dict[str, Contract]) -> Feed:
    return load_feed(FEED, contracts)


def test_the_real_export_loads_every_row_with_na_cells_as_absent_fields(feed: Feed, air: Contract) -> None:
    source = read_rows(SAMPLE)
    records = list(read_feed(feed, SAMPLE, "utf-8", MAX))
    accepted, refused = judged(records, RecordValidator(air))
    assert len(records) == len(source) == 410
    assert (len(accepted), len(refused)) == (410, 0)     # before: every row with an NA cell was dead-lettered
    by_no = {r.value["id"].rsplit("-", 1)[1]: r.value for r in records}   # type: ignore[index]
    assert "co" not in by_no["76"] and by_no["76"]["no2"] == 12.0          # CO NA: absent, the rest kept
    assert "so2" not in by_no["75"]                                        # a cell holding a space
    gap = by_no["16749"]
    assert not {"temperature", "pressure", "precipitation", "windDirection", "windSpeed"} & set(gap)
    assert gap["co"] == 1.3 and gap["pm25"] == 26.0


def test_values_are_sent_in_the_contract_unit_and_times_in_utc(feed: Feed) -> None:
    source = {row["No"]: row for row in read_rows(SAMPLE)}
    records = {r.value["id"]: r.value for r in read_feed(feed, SAMPLE, "utf-8", MAX)}   # type: ignore[index]
    first = records["urn:ngsi-ld:AirQualityObserved:Aotizhongxin-1"]
    assert first["co"] == 0.3 and first["pm25"] == 4.0 and first["temperature"] == -0.7
    assert first["dateObserved"] == "2013-02-28T16:00:00Z"      # 2013-03-01 00:00 Beijing time
    assert first["windDirection"] == -22.5 and first["refDevice"] == "Aotizhongxin"
    for value in records.values():
        row = source[value["id"].rsplit("-", 1)[1]]
        if row["CO"] != "NA":
            assert value["co"] == float(row["CO"]) / 1000        # µg/m³ -> mg/m³, exactly
            assert value["co"] <= 1150                           # the contract's maximum, in mg/m³


def test_na_in_a_required_field_is_dead_lettered_naming_the_field(feed: Feed, tmp_path: Path) -> None:
    rows = read_rows(SAMPLE)[:5]
    rows[1]["station"] = "NA"
    rows[2]["year"] = "NA"
    rows[3]["No"] = ""
    records = list(read_feed(feed, write_rows(tmp_path / "na.csv", rows), "utf-8", MAX))
    refused = {r.source: r.rejection for r in records if r.rejection}
    assert [r.rejection is None for r in records] == [True, False, False, False, True]
    station, year, number = refused["na.csv:3"], refused["na.csv:4"], refused["na.csv:5"]
    assert (station.rule, station.field) == ("required", "refDevice") and "column `station`" in station.message
    assert (year.rule, year.field) == ("required", "dateObserved") and "column `year`" in year.message
    assert (number.rule, number.field) == ("required", "id") and "column `No` is empty" in number.message


def test_every_problem_of_a_row_is_listed_and_reported(feed: Feed, air: Contract, tmp_path: Path) -> None:
    rows = read_rows(SAMPLE)[:2]
    rows[1].update({"station": "NA", "wd": "北风", "PM10": "lots", "PM2.5": "99999", "month": "13"})
    record = list(read_feed(feed, write_rows(tmp_path / "bad.csv", rows), "utf-8", MAX))[1]
    assert [(p.rule, p.field) for p in record.problems] == [
        ("type", "pm10"), ("mapping", "windDirection"), ("required", "refDevice"), ("datetime", "dateObserved"),
        ("required", "id")]   # the id is built from the station too
    problems = problems_of(record, record.rejection, RecordValidator(air))   # type: ignore[arg-type]
    assert ("maximum", "pm25") in [(p.rule, p.field) for p in problems]     # the contract's rule, reported too
    assert len({p.field for p in problems}) == len(problems)                  # one problem per field
    summary = summarised(problems)
    assert summary.rule == "type" and f"and {len(problems) - 1} more" in summary.message
    report = RejectionReport(tmp_path / "run" / "rejections.jsonl")
    with report:
        report.add(air, record, problems)
    line = json.loads(report.path.read_text(encoding="utf-8"))
    assert (line["file"], line["line"], line["contract"]) == ("bad.csv", 3, air.topic)
    assert [p["rule"] for p in line["problems"]] == [p.rule for p in problems] and line["problems"][0]["fix"]


def test_a_report_without_rejections_writes_no_file(tmp_path: Path) -> None:
    with RejectionReport(tmp_path / "r.jsonl") as report:
        pass
    assert report.records == 0 and not report.path.exists()


def _declare(tmp_path: Path, contracts: dict[str, Contract], text: str, name: str = "feed.yaml") -> Feed:
    path = tmp_path / name
    path.write_text(FEED.read_text(encoding="utf-8") if not text else text, encoding="utf-8")
    return load_feed(path, contracts)


def _variant(old: str, new: str) -> str:
    text = FEED.read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new)


def test_a_unit_pint_cannot_convert_is_refused_when_the_feed_is_read(contracts: dict[str, Contract],
                                                                      tmp_path: Path) -> None:
    text = _variant("CO: {field: co, type: number, unit: ug/m3}", "CO: {field: co, type: number, unit: ppm}")
    with pytest.raises(FeedError, match=r"column 'CO' is in 'ppm'.*field 'co'.*'mg/m³'.*Fix: declare the unit"):
        _declare(tmp_path, contracts, text)
    text = _variant("CO: {field: co, type: number, unit: ug/m3}", "CO: {field: co, type: number, unit: blorps}")
    with pytest.raises(FeedError, match="'blorps' is not a unit pint knows"):
        _declare(tmp_path, contracts, text)
    text = _variant("PRES: {field: pressure, type: number}", "PRES: {field: pressure, type: number, unit: hPa}")
    with pytest.raises(FeedError, match="field 'pressure'.*declares no x-unit"):
        _declare(tmp_path, contracts, text)


def test_a_boolean_looking_yaml_key_is_refused_naming_line_and_fix(contracts: dict[str, Contract],
                                                                    tmp_path: Path) -> None:
    text = _variant('  "No": {}', "  No: {}")
    with pytest.raises(FeedError, match=r"feed\.yaml, line 12, column 3: the key No is unquoted.*boolean False.*"
                                        r"quote it, \"No\""):
        _declare(tmp_path, contracts, text)
    text = _variant('{"N": 0, NNE', "{On: 0, NNE")
    with pytest.raises(FeedError, match=r"line 29, column 11: the key On is unquoted.*the boolean True"):
        _declare(tmp_path, contracts, text)
    feed = _declare(tmp_path, contracts, _variant('{"N": 0, NNE', "{N: 0, NNE"))
    assert feed.columns["wd"].map is not None and feed.columns["wd"].map["N"] == 0   # PyYAML reads N as a word
    text = _variant("DEWP: {ignore: true}", "DEWP: {ignore: yes}")
    with pytest.raises(FeedError, match=r"the value yes is unquoted"):
        _declare(tmp_path, contracts, text)


def test_computed_fields_are_checked_against_the_declared_columns(contracts: dict[str, Contract],
                                                                  tmp_path: Path) -> None:
    text = _variant("{station}-{No}", "{station}-{row}")
    with pytest.raises(FeedError, match=r"names \{row\}, which is not a declared column"):
        _declare(tmp_path, contracts, text)
    text = _variant("hour: hour}", "hour: hour, minute: minute}")
    with pytest.raises(FeedError, match="reads column.s. minute, which the feed does not declare"):
        _declare(tmp_path, contracts, text)
    text = _variant("timezone: Asia/Shanghai          # year/month/day/hour are Beijing time\n", "")
    with pytest.raises(FeedError, match="needs the zone its parts are local to"):
        _declare(tmp_path, contracts, text)
    text = _variant("  day: {type: integer}\n", "")
    with pytest.raises(FeedError, match="reads column.s. day"):
        _declare(tmp_path, contracts, text)


def test_a_local_time_that_does_not_exist_or_is_no_date_is_refused(contracts: dict[str, Contract],
                                                                   tmp_path: Path) -> None:
    feed = _declare(tmp_path, contracts, _variant("timezone: Asia/Shanghai ", "timezone: America/New_York "))
    rows = read_rows(SAMPLE)[:3]
    rows[0].update({"year": "2021", "month": "3", "day": "14", "hour": "2"})    # clocks jump from 02:00 to 03:00
    rows[1].update({"year": "2021", "month": "3", "day": "14", "hour": "3"})
    rows[2].update({"month": "2", "day": "30"})
    records = list(read_feed(feed, write_rows(tmp_path / "t.csv", rows), "utf-8", MAX))
    assert records[0].rejection is not None and "daylight-saving gap" in records[0].rejection.message
    assert records[1].value["dateObserved"] == "2021-03-14T07:00:00Z"   # type: ignore[index]
    assert records[2].rejection is not None and records[2].rejection.rule == "datetime"
    assert "day='30'" in records[2].rejection.message
