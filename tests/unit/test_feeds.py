"""Departmental feeds: declared mappings turn real-looking exports into contract records, or say why not."""

from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.contracts.validate import RecordValidator
from citybrain.ingest.feeds import FeedError, load_feed, load_feeds, read_feed
from citybrain.settings import PROJECT_ROOT
from citybrain.sim.exports import broken_rows, to_row, write_export

FEEDS_DIR = PROJECT_ROOT / "infra" / "feeds"
POLICE = {
    "incident_id": "110-20261122-00042", "reported_at": "2026-11-22T06:32:10Z", "category": "waterlogged_road",
    "severity": 3, "lat": 38.7, "long": 117.45, "location_text": "幸福下穿隧道", "summary": "积水约40厘米",
    "caller_phone": "13911112222", "unit_id": "PATROL-07", "status": "dispatched",
}


@pytest.fixture(scope="module")
def feeds(contracts):  # type: ignore[no-untyped-def]
    return load_feeds(FEEDS_DIR, contracts)


def test_every_declared_feed_loads_and_targets_a_contract(feeds, contracts) -> None:  # type: ignore[no-untyped-def]
    ids = {c.id for c in contracts.values()}
    assert {"police_110", "urban_inspection", "elderly_care_register", "device_registry"} <= set(feeds)
    assert all(f.contract in ids for f in feeds.values())


def test_gb18030_export_round_trips_to_the_same_records(feeds, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feed = feeds["police_110"]
    path = tmp_path / "police.csv"
    write_export(feed, [POLICE, {**POLICE, "incident_id": "110-20261122-00043", "status": "resolved",
                                 "closed_at": "2026-11-22T07:10:00Z"}], path, "gb18030")
    assert "报警时间".encode("gb18030") in path.read_bytes()
    records = list(read_feed(feed, path, "gb18030", 256 * 1024))
    assert [r.rejection for r in records] == [None, None]
    assert records[0].value == POLICE
    assert records[1].value["closed_at"] == "2026-11-22T07:10:00Z"
    check = RecordValidator(contracts["raw.police.incident_110.v1"])
    assert all(check(r.value) is None for r in records)


def test_local_times_are_read_in_the_feed_time_zone_and_sent_as_utc(feeds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feed = feeds["police_110"]
    path = tmp_path / "p.csv"
    row = to_row(feed, POLICE)
    assert row["报警时间"] == "2026/11/22 14:32:10"          # 06:32:10 UTC is 14:32:10 in Shanghai
    write_export(feed, [POLICE], path, "utf-8")
    assert next(read_feed(feed, path, "utf-8", 4096)).value["reported_at"] == "2026-11-22T06:32:10Z"


def test_bad_rows_are_rejected_naming_column_field_and_rule(feeds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feed = feeds["police_110"]
    path = tmp_path / "bad.csv"
    good = to_row(feed, POLICE)
    write_export(feed, [POLICE], path, "gb18030", broken_rows(feed, good) + [{**good, "纬度": "北纬38度"}])
    records = list(read_feed(feed, path, "gb18030", 4096))
    rejections = [r.rejection for r in records if r.rejection]
    rules = {(r.rule, r.field) for r in rejections}
    assert ("mapping", "category") in rules and ("datetime", "reported_at") in rules and ("type", "lat") in rules
    assert any("警情类别" in r.message and "交通事故" in r.message for r in rejections)
    assert len(records) == 5   # nothing dropped: 1 good + 4 bad rows, each accounted for


def test_a_line_in_the_wrong_encoding_is_rejected_alone(feeds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feed = feeds["police_110"]
    path = tmp_path / "mixed.csv"
    write_export(feed, [POLICE], path, "utf-8")
    with open(path, "ab") as f:
        row = to_row(feed, {**POLICE, "incident_id": "110-20261122-00044"})
        f.write(",".join(map(str, row.values())).encode("gb18030") + b"\r\n")
    records = list(read_feed(feed, path, "utf-8", 4096))
    assert [r.rejection.rule if r.rejection else "ok" for r in records] == ["ok", "encoding"]


def test_header_that_does_not_fit_refuses_the_whole_file(feeds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "wrong.csv"
    path.write_text("案件编号,巡查时间\nUM-1,2026-11-22 08:00\n", encoding="utf-8")
    with pytest.raises(FeedError, match="undeclared column.*案件编号.*missing required column.*警情编号"):
        list(read_feed(feeds["police_110"], path, "utf-8", 4096))


def test_feed_declaration_mistakes_are_named(contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text("feed: x\ntitle: x\ncontract: raw.police.incident_110\nowner: police\nformat: csv\n"
                   "columns:\n  编号: {field: no_such_field}\n", encoding="utf-8")
    with pytest.raises(FeedError, match="no_such_field.*not a field of raw.police.incident_110.v1"):
        load_feed(bad, contracts)
    bad.write_text("feed: x\ntitle: x\ncontract: raw.nope\nowner: police\nformat: csv\ncolumns: {}\n", encoding="utf-8")
    with pytest.raises(FeedError, match="contract 'raw.nope' does not exist"):
        load_feed(bad, contracts)


def test_list_columns_split_and_map_each_item(feeds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feed = feeds["elderly_care_register"]
    path = tmp_path / "e.csv"
    path.write_text("档案编号,街道代码,出生年份,是否独居,照护等级,服务需求,更新时间\n"
                    "EC-00000001,990101001,1941,是,半失能,助餐、上门医疗,2026-11-22 09:00:00\n", encoding="utf-8")
    value = next(read_feed(feed, path, "utf-8", 4096)).value
    assert value["needs"] == ["meals", "medical_visit"] and value["living_alone"] is True
    assert value["care_level"] == "partial_assistance" and value["updated_at"] == "2026-11-22T01:00:00Z"
