"""A US city's 311 export (MyLA311's columns) through the loader's parsing and validation.

The sample is real-shaped (tests/data/us311/README.md): US ZIP codes, Los Angeles wall-clock times in
AM/PM, the request's own number and time, a row without a ZIP code or a position. The contract takes a
postal code of any country; the city's own pattern (its pack's ``postal_code_pattern``) is checked as the
row is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.ingest.feeds import Feed, FeedError, load_feed, read_feed
from citybrain.ingest.postal import PostalCodes
from citybrain.settings import PROJECT_ROOT
from tests.unit.csv_rows import judged, read_rows, write_rows

DATA = PROJECT_ROOT / "tests" / "data" / "us311"
FEED, SAMPLE = DATA / "myla311.yaml", DATA / "myla311_service_requests_excerpt.csv"
LOS_ANGELES = PostalCodes("^[0-9]{5}(-[0-9]{4})?$", "Los Angeles")
MAX = 256 * 1024


@pytest.fixture(scope="module")
def feed(contracts: dict[str, Contract]) -> Feed:
    return load_feed(FEED, contracts)


@pytest.fixture(scope="module")
def check(contracts: dict[str, Contract]) -> RecordValidator:
    return RecordValidator(contracts["raw.hotline.service_request.v1"])


def test_every_row_of_the_export_loads_with_its_us_zip_and_its_own_number_and_time(feed: Feed,
                                                                                  check: RecordValidator) -> None:
    source = read_rows(SAMPLE)
    records = list(read_feed(feed, SAMPLE, "utf-8", MAX, postal=LOS_ANGELES))
    accepted, refused = judged(records, check)
    assert len(records) == len(source) == 12
    assert (len(accepted), len(refused)) == (12, 0)
    by_number = {r.value["source_request_id"]: r.value for r in accepted}   # type: ignore[index]
    assert set(by_number) == {row["SRNumber"] for row in source}
    first = by_number["1-3449383281"]
    assert first["service_request_id"] == "LA-1-3449383281" and first["source_system"] == "MyLA311"
    assert first["zipcode"] == "90026" and first["service_code"] == "la.bulky_items"
    assert first["source_requested_datetime"] == "2024-01-01T16:07:31Z"     # 08:07:31 AM in Los Angeles (PST)
    assert first["updated_datetime"] == "2024-01-03T22:15:10Z"
    assert first["requested_datetime"] == first["source_requested_datetime"]  # the export's time, not the load's
    assert (first["status"], first["lifecycle_state"], first["channel"]) == ("closed", "closed", "app")
    states = [(v["status"], v["lifecycle_state"]) for v in by_number.values()]
    assert states.count(("open", "received")) == 5 and states.count(("closed", "closed")) == 5
    approximate = by_number["1-3450170532"]
    assert not {"zipcode", "lat", "long"} & set(approximate)               # empty cells: absent fields


def test_a_zip_that_is_not_the_citys_is_refused_naming_the_field_the_pattern_and_the_fix(
        feed: Feed, check: RecordValidator, tmp_path: Path) -> None:
    rows = read_rows(SAMPLE)
    rows[1]["ZipCode"] = "9OO64"          # letters O for zeros: a postal code to the contract, not to Los Angeles
    rows[2]["ZipCode"] = "K1A 0B1"        # Ottawa's
    rows[3]["ZipCode"] = "90044-1234"     # ZIP+4: Los Angeles' own
    records = list(read_feed(feed, write_rows(tmp_path / "la.csv", rows), "utf-8", MAX, postal=LOS_ANGELES))
    accepted, refused = judged(records, check)
    assert (len(accepted), len(refused)) == (10, 2) and len(accepted) + len(refused) == len(rows)
    for record in refused:
        assert record.rejection is not None and record.rejection.rule == "postal-code"
        assert record.rejection.field == "zipcode" and check(record.value) is None   # the contract alone takes it
        assert "`zipcode` (sent as `ZipCode`)" in record.rejection.message
        assert "'^[0-9]{5}(-[0-9]{4})?$'" in record.rejection.message and "Fix:" in record.rejection.message
    assert [r.rejection.value_excerpt for r in refused] == ["9OO64", "K1A 0B1"]   # type: ignore[union-attr]


def test_a_city_that_declares_no_pattern_keeps_chinas_six_digits(feed: Feed) -> None:
    records = list(read_feed(feed, SAMPLE, "utf-8", MAX, postal=PostalCodes.of_city({"name": "云州市"})))
    refused = [r for r in records if r.rejection is not None]
    assert len(refused) == 11 and {r.rejection.rule for r in refused} == {"postal-code"}   # type: ignore[union-attr]
    assert "'^[0-9]{6}$'" in refused[0].rejection.message                                   # type: ignore[union-attr]


def test_a_status_the_feeds_map_does_not_know_is_named(feed: Feed, tmp_path: Path) -> None:
    rows = read_rows(SAMPLE)[:2]
    rows[0]["Status"] = "Escalated"
    records = list(read_feed(feed, write_rows(tmp_path / "la.csv", rows), "utf-8", MAX))
    problems = {(p.rule, p.field) for p in records[0].problems}
    assert problems == {("mapping", "lifecycle_state"), ("mapping", "status")}
    assert records[1].rejection is None


def test_a_computed_map_needs_a_template(contracts: dict[str, Contract], tmp_path: Path) -> None:
    text = FEED.read_text(encoding="utf-8").replace('description: {template: "{RequestType} requested through '
                                                    '{RequestSource}", required: true}',
                                                    "description: {received: true, map: {a: b}}")
    assert "{received: true, map: {a: b}}" in text
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(FeedError, match="needs a `template`"):
        load_feed(tmp_path / "bad.yaml", contracts)


def test_loading_the_same_export_twice_sends_the_same_records_with_the_same_event_ids(
        feed: Feed, contracts: dict[str, Contract], monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload is byte-identical: requested_datetime (the SLA clock) is the export's CreatedDate, not the load's
    time, so fusion does not count the tickets again."""
    from citybrain.ingest.strict_json import dumps_record
    from citybrain.kafka.headers import event_id

    contract = contracts["raw.hotline.service_request.v1"]

    def sent() -> list[tuple[bytes, str]]:
        payloads = [dumps_record(r.value) for r in read_feed(feed, SAMPLE, "utf-8", MAX, postal=LOS_ANGELES)]
        return [(p, event_id(contract, json.loads(p), p.decode("utf-8"))) for p in payloads]

    loads = iter(["2026-11-22T14:00:00Z", "2026-11-23T09:30:00Z"])   # two loads a day apart
    monkeypatch.setattr("citybrain.ingest.feeds.now_iso", lambda: next(loads))
    first = sent()
    assert sent() == first and len({e for _p, e in first}) == 12
    assert json.loads(first[0][0])["requested_datetime"] == "2024-01-01T16:07:31Z"   # 08:07:31 AM in Los Angeles


def test_the_loader_takes_the_postal_codes_of_the_city_last_imported(tmp_path: Path) -> None:
    from citybrain.city.pack_import import imported_postal_codes
    from citybrain.settings import load_settings

    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    assert imported_postal_codes(settings) is None                      # no city imported: the contract alone
    settings.city_dir.mkdir(parents=True, exist_ok=True)
    record = {"version": "1", "city": {"code": "9801", "name": "临江市"}, "jurisdiction_id": "linjiang.gov.cn"}
    (settings.city_dir / "imported.json").write_text(json.dumps(record), encoding="utf-8")
    assert imported_postal_codes(settings) == PostalCodes("^[0-9]{6}$", "临江市")   # recorded before they were kept
    record.update(city={"code": "0644", "name": "Los Angeles"}, postal_code_pattern=LOS_ANGELES.pattern)
    (settings.city_dir / "imported.json").write_text(json.dumps(record), encoding="utf-8")
    assert imported_postal_codes(settings) == LOS_ANGELES
