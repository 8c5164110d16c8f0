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
