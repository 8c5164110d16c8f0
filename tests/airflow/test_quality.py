"""The data-quality suites, run by Great Expectations on lakes written by the real LakeWriter:
clean data passes; each kind of check fails on data built to break it, and the failing
partition is quarantined, alerted and kept out of scenario releases."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from citybrain.contracts.validate import RecordValidator
from citybrain.lake.writer import LakeWriter, Row
from citybrain.lake.layout import partitions
from citybrain.quality.runner import passed_files, results, run_quality
from citybrain.settings import PROJECT_ROOT

SCHEMAS = PROJECT_ROOT / "schemas"
EXPECTATIONS = PROJECT_ROOT / "expectations"
T0 = datetime(2026, 11, 22, 0, 0, tzinfo=timezone.utc)
HOURS, PER_HOUR, BROKEN_HOUR = 10, 60, 5
DEVICES = [f"aq-{i:04d}" for i in range(1, 6)]
AQ = "raw.sensor.air_quality.v1"


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def reading(device: str, t: datetime, **change: Any) -> dict[str, Any]:
    value = {"id": f"urn:ngsi-ld:AirQualityObserved:{device}:{iso(t)}", "type": "AirQualityObserved",
             "dateObserved": iso(t), "location": {"type": "Point", "coordinates": [117.3, 38.6]}, "refDevice": device,
             "pm25": 30.0, "pm10": 50.0, "airQualityIndex": 40, "airQualityLevel": "excellent"}
    value.update(change)
    return {k: v for k, v in value.items() if v is not None}


Breaker = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def write_lake(lake: Path, hour_values: Callable[[int], list[dict[str, Any]]]) -> None:
    ref = LakeWriter(lake, "bronze")
    devices = [{"device_id": d, "device_type": "air_quality", "owner_department": "environment", "lat": 38.6,
                "long": 117.3, "street_code": "990101001", "status": "active", "updated_at": iso(T0)} for d in DEVICES]
    ref.write("raw.ref.device.v1", 0, [Row("raw.ref.device.v1", 0, i, int(T0.timestamp() * 1000), v["device_id"],
                                           {"event-id": f"d{i}", "producer": "registry"}, json.dumps(v))
                                       for i, v in enumerate(devices)])
    square = {"type": "Polygon", "coordinates": [[[117.2, 38.5], [117.4, 38.5], [117.4, 38.7], [117.2, 38.5]]]}
    areas = [{"area_code": code, "name": name, "level": level, "geometry": square, "updated_at": iso(T0)}
             for code, name, level in (("990101", "鼓楼区", "district"), ("990101001", "天宁街道", "street"))]
    ref.write("raw.ref.admin_area.v1", 0, [Row("raw.ref.admin_area.v1", 0, i, int(T0.timestamp() * 1000), v["area_code"],
                                               {"event-id": f"a{i}", "producer": "registry"}, json.dumps(v))
                                           for i, v in enumerate(areas)])
    offset = 0
    for h in range(HOURS):
        rows, values = [], hour_values(h)
        for i, v in enumerate(values):
            ts = int((T0 + timedelta(hours=h, seconds=i * 3600 // len(values))).timestamp() * 1000)
            event_id = v.pop("_event_id", None) or f"{v['id']}"
            rows.append(Row(AQ, 0, offset, ts, v["refDevice"] if "refDevice" in v else None,
                            {"event-id": event_id, "producer": "gw.qingyuan"}, json.dumps(v)))
            offset += 1
        ref.write(AQ, 0, rows)


def clean_hour(h: int) -> list[dict[str, Any]]:
    start = T0 + timedelta(hours=h)
    return [reading(DEVICES[i % 5], start + timedelta(minutes=i)) for i in range(PER_HOUR)]


def lake_with(tmp_path: Path, breaker: Breaker | None = None) -> Path:
    lake = tmp_path / "lake"
    write_lake(lake, lambda h: breaker(clean_hour(h)) if breaker and h == BROKEN_HOUR else clean_hour(h))
    return lake


def check(lake: Path, now: datetime | None = None, docs: bool = False) -> tuple[Any, list[dict[str, Any]]]:
    alerts: list[dict[str, Any]] = []
    report = run_quality(lake, SCHEMAS, EXPECTATIONS, now=now or T0 + timedelta(hours=HOURS, minutes=5),
                         send_alert=alerts.append, docs=docs)
    return report, alerts


def test_clean_lake_passes_every_suite_and_builds_data_docs(tmp_path: Path) -> None:
    lake = lake_with(tmp_path)
    report, alerts = check(lake, docs=True)
    assert alerts == [] and report.checked == HOURS + 2 and report.passed == report.checked
    table = results(lake).to_pylist()
    assert {r["check"] for r in table} >= {"completeness", "validity", "uniqueness", "referential_integrity", "volume",
                                           "freshness"}
    assert all(r["success"] for r in table)
    ok, summary = passed_files(lake)
    assert len(ok) == HOURS + 2 and summary["failed"] == [] and summary["unchecked"] == []
    assert report.docs is not None and report.docs.exists() and "bronze.raw.sensor.air_quality.records" in \
        "".join(p.read_text() for p in report.docs.parent.rglob("*.html"))
    again, _ = check(lake)
    assert again.checked == 0 and again.skipped_unchanged == HOURS + 2     # unchanged partitions are not re-checked


def _drop_required(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    values[3].pop("dateObserved")
    return values


def _bad_enum(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    values[4]["typeofLocation"] = "underground"          # the model's enum: indoor or outdoor
    return values


def _out_of_range(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    values[4]["pm25"] = -3.0
    return values


def _same_id_two_payloads(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    twin = dict(values[0], pm25=99.0)
    return values + [twin]


def _unknown_devices(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for v in values[:6]:                                 # 10% of the hour, above the 1% tolerated
        v["refDevice"] = "aq-9999"
    return values


def _ten_times_the_volume(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    start = T0 + timedelta(hours=BROKEN_HOUR)
    return [reading(DEVICES[i % 5], start + timedelta(seconds=6 * i), id=f"flood-{i}") for i in range(PER_HOUR * 10)]


@pytest.mark.parametrize("breaker, kind, column", [
    (_drop_required, "completeness", "dateObserved"),
    (_bad_enum, "validity", "typeofLocation"),
    (_out_of_range, "validity", "pm25"),
    (_same_id_two_payloads, "uniqueness", "_event_id"),
    (_unknown_devices, "referential_integrity", "refDevice"),
    (_ten_times_the_volume, "volume", "rows"),
])
def test_broken_partition_fails_is_quarantined_alerted_and_left_out(tmp_path: Path, contracts, breaker: Breaker,
                                                                    kind: str, column: str) -> None:
    lake = lake_with(tmp_path, breaker)
    broken = f"date=2026-11-22/hour={BROKEN_HOUR:02d}"
    report, alerts = check(lake)
    [alert] = [a for a in alerts if a.get("partition")]
    assert alert["dataset"] == "raw.sensor.air_quality" and alert["partition"] == broken
    assert {(e["check"], e.get("column")) for e in alert["failed_expectations"]} == {(kind, column)}
    assert report.passed == report.checked - 1
    # Quarantined: out of the lake, with the reason beside the files; the alert is valid under its contract.
    assert not (lake / "bronze" / "raw.sensor.air_quality" / broken).exists()
    reason = json.loads(next((lake / alert["quarantine"]).glob("reason.json")).read_text())
    assert reason["failed"][0]["check"] == kind and "fix" in reason
    assert RecordValidator(contracts["alert.data_quality.failure.v1"])(alert) is None
    ok, summary = passed_files(lake)
    assert not any(broken in str(p) for p in ok) and len(ok) == HOURS + 1
    assert [p.name for p in partitions(lake) if p.contract == "raw.sensor.air_quality"].count(broken) == 0


def test_exact_redeliveries_are_not_duplicates(tmp_path: Path) -> None:
    lake = lake_with(tmp_path, lambda values: values + [dict(values[0]), dict(values[1])])
    report, alerts = check(lake)
    assert alerts == [] and report.passed == report.checked
    assert any(r["redelivered"] == 2 for r in results(lake).to_pylist())


def test_stale_data_fails_freshness_without_quarantine(tmp_path: Path, contracts) -> None:
    lake = lake_with(tmp_path)
    report, alerts = check(lake, now=T0 + timedelta(hours=HOURS + 3))
    [alert] = [a for a in alerts if a["dataset"] == "raw.sensor.air_quality"]
    assert alert["check"] == "freshness" and alert["action"] == "alerted" and "partition" not in alert
    assert RecordValidator(contracts["alert.data_quality.failure.v1"])(alert) is None
    assert report.passed == report.checked      # the partitions themselves are fine


def test_committed_suites_match_the_contracts() -> None:
    from citybrain.contracts.model import load_all
    from citybrain.quality.suites import generate, load_tuning, write

    suites = generate(load_all(SCHEMAS), load_tuning(EXPECTATIONS / "tuning.yaml"))
    assert write(EXPECTATIONS, suites, check=True) == [], "run `citybrain dev quality suites` and commit expectations/"


def test_a_lake_on_object_storage_is_checked_and_quarantined_with_gx_on_local_disk(tmp_path: Path) -> None:
    """The same run on a root without folders or renames (the object-storage branch of citybrain.lake.store):
    Great Expectations' context goes to the state folder, the results and the quarantine to the lake."""
    import pyarrow.fs as pafs

    from citybrain.lake.store import LakePath, LakeStorageError

    lake = LakePath(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "lake", "subtree://")
    write_lake(lake, lambda h: _out_of_range(clean_hour(h)) if h == BROKEN_HOUR else clean_hour(h))  # type: ignore[arg-type]
    with pytest.raises(LakeStorageError, match="object storage"):
        run_quality(lake, SCHEMAS, EXPECTATIONS, now=T0 + timedelta(hours=HOURS, minutes=5))
    alerts: list[dict[str, Any]] = []
    report = run_quality(lake, SCHEMAS, EXPECTATIONS, now=T0 + timedelta(hours=HOURS, minutes=5),
                         send_alert=alerts.append, docs=True, state_dir=tmp_path / "state")
    [alert] = [a for a in alerts if a.get("partition")]
    assert alert["partition"] == f"date=2026-11-22/hour={BROKEN_HOUR:02d}" and report.passed == report.checked - 1
    assert (lake / alert["quarantine"] / "reason.json").exists()
    assert report.docs is not None and report.docs.is_relative_to(tmp_path / "state" / "quality-gx")
    copy = lake / "quality" / "data_docs"   # the docs' copy in the lake, for readers on other machines
    assert (copy / "index.html").read_bytes() == report.docs.read_bytes()
    assert len(list(copy.rglob("*.html"))) == len(list(report.docs.parent.rglob("*.html")))
    assert len(results(lake)) > 0 and len(passed_files(lake)[0]) == HOURS + 1


# -- backfills and completeness per device (issue 31) -------------------------------------------------------

EXPORT = PROJECT_ROOT / "tests" / "data" / "exports" / "PRSA_Data_Aotizhongxin_excerpt.csv"
LOADED = datetime(2026, 12, 7, 9, 30, tzinfo=timezone.utc)


def backfilled_lake(tmp_path: Path, keep: Callable[[int], bool], interval_s: int | None = 3600) -> Path:
    """The real hourly export (tests/data/exports) loaded through its feed today, as the sink files it: each record
    under the hour it was observed, its Kafka timestamp the load time. The station declares an hourly cadence."""
    from citybrain.contracts.model import load_all
    from citybrain.ingest.feeds import load_feed, read_feed

    contracts = load_all(SCHEMAS)
    feed = load_feed(PROJECT_ROOT / "infra" / "feeds" / "air_quality_hourly.yaml", contracts)
    records = [r.value for r in read_feed(feed, EXPORT, "utf-8", 1 << 20)
               if r.value and keep(int(r.value["id"].rsplit("-", 1)[1]))]
    lake = tmp_path / "lake"
    writer = LakeWriter(lake, "bronze", {c.topic: c.event_time_fields for c in contracts.values()})
    at = int(LOADED.timestamp() * 1000)
    device = {"device_id": "Aotizhongxin", "device_type": "air_quality", "owner_department": "environment",
              "lat": 39.982, "long": 116.397, "status": "active", "updated_at": iso(LOADED),
              **({"reporting_interval_s": interval_s} if interval_s else {})}
    writer.write("raw.ref.device.v1", 0, [Row("raw.ref.device.v1", 0, 0, at, "Aotizhongxin", {"event-id": "d0"},
                                              json.dumps(device))])
    writer.write(AQ, 0, [Row(AQ, 0, i, at + i, v["refDevice"], {"event-id": v["id"], "producer": "citybrain-loader"},
                             json.dumps(v)) for i, v in enumerate(records)])
    return lake


def test_a_backfill_lands_in_its_own_hours_is_recognised_and_not_judged_stale(tmp_path: Path) -> None:
    """Before: four years of readings loaded today landed in today's hour and were called 2 minutes fresh."""
    lake = backfilled_lake(tmp_path, lambda no: no <= 12 or no >= 16751)
    hours = {p.name for p in partitions(lake) if p.contract == "raw.sensor.air_quality"}
    assert len(hours) == 16 and "date=2013-02-28/hour=16" in hours and "date=2015-01-27/hour=17" in hours
    assert not any(h.startswith("date=2026-12-07") for h in hours)
    report, alerts = check(lake, now=LOADED + timedelta(minutes=5))
    [backfill] = report.backfills
    assert backfill["contract"] == "raw.sensor.air_quality" and backfill["records"] == 16
    assert (backfill["observed_from"], backfill["observed_to"]) == ("2013-02-28T16:00:00Z", "2015-01-27T17:00:00Z")
    assert backfill["loaded_from"].startswith("2026-12-07T09:30")
    assert any("raw.sensor.air_quality" in line and "backfill" in line for line in report.freshness_not_evaluated)
    assert not [a for a in alerts if a["check"] == "freshness"]


def test_completeness_per_device_names_the_gaps_against_its_declared_cadence(tmp_path: Path, contracts) -> None:
    # Rows 1-12 and 16751-16754 of the real export, row 5 removed: two gaps, one of an hour.
    lake = backfilled_lake(tmp_path, lambda no: (no <= 12 and no != 5) or no >= 16751)
    report, alerts = check(lake, now=LOADED + timedelta(minutes=5))
    [alert] = [a for a in alerts if a["dataset"] == "raw.sensor.air_quality"]
    assert alert["check"] == "completeness" and "partition" not in alert and alert["action"] == "alerted"
    assert RecordValidator(contracts["alert.data_quality.failure.v1"])(alert) is None
    [failed] = alert["failed_expectations"]
    assert failed["column"] == "refDevice=Aotizhongxin"
    assert failed["unexpected_count"] == 16754 - 15      # slots from the first to the last reading, less the readings
    [gaps] = report.device_gaps
    assert "2013-02-28T20:00:00Z (1 missing)" in gaps                         # row 5: 2013-03-01 04:00 Beijing time
    assert f"2013-03-01T04:00:00Z..2015-01-27T13:00:00Z ({16751 - 13} missing)" in gaps
    rows = [r for r in results(lake).to_pylist() if r["suite"] == "bronze.raw.sensor.air_quality.devices"]
    assert [r["success"] for r in rows] == [False, False] and rows[1]["observed"] == gaps


def test_a_device_without_gaps_or_without_a_cadence_passes(tmp_path: Path) -> None:
    complete = backfilled_lake(tmp_path / "a", lambda no: no <= 12)
    report, alerts = check(complete, now=LOADED)
    assert report.device_gaps == [] and not [a for a in alerts if a["check"] == "completeness"]
    assert [r["observed"] for r in results(complete).to_pylist() if r["suite"].endswith(".devices")] != []
    undeclared = backfilled_lake(tmp_path / "b", lambda no: no <= 12 and no != 5, interval_s=None)
    report, alerts = check(undeclared, now=LOADED)
    assert report.device_gaps == [] and not [r for r in results(undeclared).to_pylist() if r["suite"].endswith(".devices")]
