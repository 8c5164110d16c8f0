"""Scenario datasets over a lake written by the real lake writer: SQL, immutable releases, catalog, query."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from citybrain.lake.writer import LakeWriter, Row
from citybrain.scenarios.catalog import catalog, query
from citybrain.scenarios.datasets import DATASETS, build
from citybrain.scenarios.release import publish, resolve, verify

T0 = 1_763_769_600_000   # 2025-11-22T00:00:00Z


def _write(lake: Path, layer: str, topic: str, values: list[dict]) -> None:  # type: ignore[type-arg]
    rows = [Row(topic, 0, o, T0 + o * 1000, None, {}, json.dumps(v, ensure_ascii=False)) for o, v in enumerate(values)]
    LakeWriter(lake, layer).write(topic, 0, rows)


def _ticket(rid: str, *steps: tuple[str, str, dict]) -> list[dict]:  # type: ignore[type-arg]
    return [{"event_id": f"{rid}:{kind}", "service_request_id": rid, "event_type": kind, "occurred_at": at, **extra}
            for kind, at, extra in steps]


@pytest.fixture()
def lake(tmp_path: Path) -> Path:
    events = _ticket("HL1", ("received", "2025-11-22T01:00:00Z", {}),
                     ("dispatched", "2025-11-22T01:05:00Z", {"department": "water", "sla_deadline": "2025-11-22T05:05:00Z"}),
                     ("accepted", "2025-11-22T01:25:00Z", {"department": "water"}),
                     ("handled", "2025-11-22T03:00:00Z", {"department": "water", "resolved": True}),
                     ("followed_up", "2025-11-22T04:00:00Z", {"satisfaction": "satisfied", "resolved": True}))
    events += _ticket("HL2", ("received", "2025-11-22T02:00:00Z", {}),
                      ("dispatched", "2025-11-22T02:05:00Z", {"department": "water", "sla_deadline": "2025-11-22T03:05:00Z"}),
                      ("accepted", "2025-11-22T02:15:00Z", {"department": "water"}),
                      ("reopened", "2025-11-22T06:00:00Z", {"reason": "still flooded"}))
    events += _ticket("HL3", ("received", "2025-11-22T02:30:00Z", {}),
                      ("dispatched", "2025-11-22T02:35:00Z", {"department": "water", "sla_deadline": "2025-11-22T06:35:00Z"}),
                      ("accepted", "2025-11-22T03:05:00Z", {"department": "water"}),
                      ("handled", "2025-11-22T04:00:00Z", {"department": "water", "resolved": False}),
                      ("followed_up", "2025-11-22T05:00:00Z", {"satisfaction": "dissatisfied", "resolved": False}))
    _write(tmp_path, "bronze", "raw.hotline.ticket_event.v1", events)
    orders = [{"work_order_id": f"WO-{rid}-water", "department": "water", "role": "lead", "source": "ticket",
               "source_id": rid, "district_code": "990101"} for rid in ("HL1", "HL2", "HL3")]
    _write(tmp_path, "silver", "dispatch.water.work_order.v1", orders)
    _write(tmp_path, "bronze", "raw.ref.road_segment.v1",
           [{"segment_id": "seg-0001", "name": "江滨路", "road_class": "arterial", "free_speed_kmh": 60.0,
             "street_code": "990101001"}])
    _write(tmp_path, "bronze", "raw.sensor.traffic_flow.v1",
           [{"refRoadSegment": "seg-0001", "dateObservedFrom": f"2025-11-22T08:{m:02d}:00Z", "averageVehicleSpeed": s,
             "intensity": 100} for m, s in ((0, 30.0), (5, 15.0), (10, 15.0))])
    return tmp_path


def test_respond_on_receipt_kpis_follow_each_ticket_through_its_lifecycle(lake: Path) -> None:
    table, inputs = build(lake, DATASETS["respond_on_receipt_kpis"])
    rows = table.to_pylist()
    assert len(rows) == 1 and len(inputs) == 2
    row = rows[0]
    assert (row["department"], row["district_code"], str(row["day"]), row["tickets"]) == ("water", "990101", "2025-11-22", 3)
    assert row["response_min_median"] == 20.0                    # 20, 10 and 30 minutes
    assert row["handled_on_time_rate"] == 0.6667 and row["resolution_rate"] == 0.3333
    assert row["satisfaction_rate"] == 0.5                       # HL1 satisfied, HL3 not; HL2 never followed up
    assert row["followed_up"] == 2                               # what the satisfaction rate rests on
    assert row["overdue"] == 1 and row["reopened"] == 1          # HL2: past its deadline, never handled


def test_days_are_the_citys_own_days_in_the_time_zone_of_its_pack(lake: Path) -> None:
    """01:00-02:35Z is 11-22 in Asia/Shanghai (the default) and in Asia/Urumqi, but 11-21 in America/Bogota."""
    def days(zone: str) -> set[str]:
        _write(lake, "bronze", "raw.ref.city.v1", [{"city_code": "9801", "name": "临江市", "jurisdiction_id": "linjiang.gov.cn",
                                                   "timezone": zone, "pack_version": "1", "updated_at": "2026-01-01T00:00:00Z"}])
        return {str(r["day"]) for r in build(lake, DATASETS["respond_on_receipt_kpis"])[0].to_pylist()}

    assert {str(r["day"]) for r in build(lake, DATASETS["respond_on_receipt_kpis"])[0].to_pylist()} == {"2025-11-22"}
    assert days("Asia/Urumqi") == {"2025-11-22"}
    assert days("America/Bogota") == {"2025-11-21"}


def test_a_city_without_a_feed_is_told_the_dataset_is_not_for_it(lake: Path) -> None:
    """A filled lake without any elderly-care record (a city without civil affairs): NoInputError, which the
    publish DAG turns into a skipped task with the reason, not a failure."""
    from citybrain.scenarios.datasets import NoInputError

    with pytest.raises(NoInputError, match="raw.civil_affairs.elderly_care"):
        build(lake, DATASETS["elderly_care_demand"])


def test_community_assessment_ranks_communities_by_their_three_rates(lake: Path) -> None:
    """社区考核: HL1 (resolved, satisfied) in one community, HL2 and HL3 in another; the counts behind each rate."""
    orders = [{"work_order_id": f"WO-{rid}-water", "department": "water", "role": "lead", "source": "ticket",
               "source_id": rid, "district_code": "990101", "street_code": "990101001", "community_code": community}
              for rid, community in (("HL1", "990101001001"), ("HL2", "990101001002"), ("HL3", "990101001002"))]
    _write(lake, "silver", "dispatch.water.work_order.v1", orders)
    _write(lake, "bronze", "raw.ref.admin_area.v1", [
        {"area_code": "990101001", "name": "天宁街道", "level": "street", "parent_code": "990101"},
        {"area_code": "990101001001", "name": "钟楼社区", "level": "community", "parent_code": "990101001"},
        {"area_code": "990101001002", "name": "文庙社区", "level": "community", "parent_code": "990101001"}])
    rows = build(lake, DATASETS["community_assessment"])[0].to_pylist()
    assert [(r["community_name"], r["tickets"], r["responded"], r["resolved"], r["followed_up"], r["satisfied"],
             r["rank_in_city"], r["rank_in_street"]) for r in rows] == [
        ("钟楼社区", 1, 1, 1, 1, 1, 1, 1), ("文庙社区", 2, 2, 0, 1, 0, 2, 2)]
    assert rows[0]["score"] == 100.0 and rows[1]["score"] == 30.0 and rows[1]["satisfaction_rate"] == 0.0
    assert {r["street_name"] for r in rows} == {"天宁街道"} and {r["district_code"] for r in rows} == {"990101"}
    _city_weighing(lake, {"response": 1.0, "resolution": 0.0, "satisfaction": 0.0})   # the city's own 考核
    assert [r["score"] for r in build(lake, DATASETS["community_assessment"])[0].to_pylist()] == [100.0, 100.0]


def _city_weighing(lake: Path, weights: dict[str, float] | None) -> None:
    _write(lake, "bronze", "raw.ref.city.v1", [{"city_code": "9901", "name": "云州市", "jurisdiction_id": "yunzhou.gov.cn",
                                               "timezone": "Asia/Shanghai", "pack_version": "1",
                                               "updated_at": "2026-12-07T00:00:00Z",
                                               **({"assessment": {"weights": weights}} if weights else {})}])


def test_hotline_rankings_pool_the_three_rates_per_district_street_and_department_weighted_as_the_city_declares(
        tmp_path: Path) -> None:
    """考核: HL1 (on time, resolved, satisfied) in street 990101001; HL2 (late, not followed up) and HL3 (on time,
    unresolved, dissatisfied) in 990101002, HL3 dispatched to the police. Each rate over all the unit's tickets, with
    what it rests on. A lake of its own: the fixture's tickets would count in the district and the department."""
    lake = tmp_path
    orders = [{"work_order_id": f"WO-{rid}-{dept}", "department": dept, "role": "lead", "source": "ticket",
               "source_id": rid, "district_code": "990101", "street_code": street}
              for rid, dept, street in (("HL1", "water", "990101001"), ("HL2", "water", "990101002"),
                                        ("HL3", "police", "990101002"))]
    _write(lake, "silver", "dispatch.water.work_order.v1", orders)
    _write(lake, "bronze", "raw.hotline.ticket_event.v1", [
        *_ticket("HL1", ("received", "2025-11-22T01:00:00Z", {}),
                 ("dispatched", "2025-11-22T01:05:00Z", {"department": "water", "sla_deadline": "2025-11-22T05:05:00Z"}),
                 ("handled", "2025-11-22T03:00:00Z", {"department": "water", "resolved": True}),
                 ("followed_up", "2025-11-22T04:00:00Z", {"satisfaction": "satisfied", "resolved": True})),
        *_ticket("HL2", ("received", "2025-11-22T02:00:00Z", {}),
                 ("dispatched", "2025-11-22T02:05:00Z", {"department": "water", "sla_deadline": "2025-11-22T03:05:00Z"}),
                 ("handled", "2025-11-22T04:00:00Z", {"department": "water", "resolved": True})),
        *_ticket("HL3", ("received", "2025-11-22T02:30:00Z", {}),
                 ("dispatched", "2025-11-22T02:35:00Z", {"department": "police", "sla_deadline": "2025-11-22T06:35:00Z"}),
                 ("handled", "2025-11-22T04:00:00Z", {"department": "police", "resolved": False}),
                 ("followed_up", "2025-11-22T05:00:00Z", {"satisfaction": "dissatisfied", "resolved": False}))])

    def ranked() -> dict[tuple[str, str], tuple[object, ...]]:
        return {(r["scope"], r["unit"]): (r["tickets"], r["handled_on_time_rate"], r["resolution_rate"],
                                          r["satisfaction_rate"], r["followed_up"], r["score"], r["rank"])
                for r in build(lake, DATASETS["hotline_rankings"])[0].to_pylist()}

    rows = ranked()   # the default weights: 0.3, 0.4, 0.3
    assert rows[("district", "990101")] == (3, 0.6667, 0.6667, 0.5, 2, 61.7, 1)
    assert rows[("street", "990101001")] == (1, 1.0, 1.0, 1.0, 1, 100.0, 1)
    # 990101002: HL2 late and resolved, HL3 on time and unresolved, one dissatisfied follow-up (HL2 not called).
    assert rows[("street", "990101002")] == (2, 0.5, 0.5, 0.0, 1, 35.0, 2)
    assert rows[("department", "water")] == (2, 0.5, 1.0, 1.0, 1, 85.0, 1)
    assert rows[("department", "police")] == (1, 1.0, 0.0, 0.0, 1, 30.0, 2)
    _city_weighing(lake, {"response": 0.5, "resolution": 0.5, "satisfaction": 0.0})
    rows = ranked()
    assert rows[("department", "police")][5:] == (50.0, 2) and rows[("department", "water")][5:] == (75.0, 1)
    assert rows[("street", "990101002")][5] == 50.0
    # Each row says which weights its score used.
    assert {r["weight_satisfaction"] for r in build(lake, DATASETS["hotline_rankings"])[0].to_pylist()} == {0.0}


def test_a_unit_nobody_was_followed_up_for_is_scored_on_its_other_two_rates(tmp_path: Path) -> None:
    """Scaled to add up to 1, the other two weights: neither a zero satisfaction (a penalty for a call not yet
    made) nor a score out of 70."""
    lake = tmp_path
    orders = [{"work_order_id": "WO-HL2-water", "department": "water", "role": "lead", "source": "ticket",
               "source_id": "HL2", "district_code": "990101", "street_code": "990101002"}]
    _write(lake, "silver", "dispatch.water.work_order.v1", orders)
    _write(lake, "bronze", "raw.hotline.ticket_event.v1", _ticket(
        "HL2", ("received", "2025-11-22T02:00:00Z", {}),
        ("dispatched", "2025-11-22T02:05:00Z", {"department": "water", "sla_deadline": "2025-11-22T03:05:00Z"}),
        ("handled", "2025-11-22T03:00:00Z", {"department": "water", "resolved": True})))
    rows = build(lake, DATASETS["hotline_rankings"])[0].to_pylist()
    assert {(r["scope"], r["satisfaction_rate"], r["followed_up"], r["score"]) for r in rows} == {
        ("district", None, 0, 100.0), ("street", None, 0, 100.0), ("department", None, 0, 100.0)}


def test_congestion_index_compares_speed_with_free_flow(lake: Path) -> None:
    rows = build(lake, DATASETS["traffic_congestion_index"])[0].to_pylist()
    assert [(r["segment_id"], r["readings"], r["mean_speed_kmh"], r["congestion_index"]) for r in rows] == \
        [("seg-0001", 3, 20.0, 66.7)]


def test_hourly_datasets_give_each_hour_on_the_citys_clock_beside_utc(lake: Path) -> None:
    """08:00Z is 16:00 in Asia/Shanghai (the default) and 03:00 in America/Bogota; 14:00Z is 22:00 (night) in
    Shanghai, 09:00 (day) in Bogotá. A local day or hour is the city's, for scenario teams that aggregate by it;
    hour_start itself stays UTC."""
    def hours() -> list[tuple[str, str]]:
        return [(str(r["hour_start"]), str(r["hour_start_local"]))
                for r in build(lake, DATASETS["traffic_congestion_index"])[0].to_pylist()]

    def exceedances() -> list[tuple[str, str, float]]:
        return [(str(r["hour_start"]), str(r["hour_start_local"]), r["limit_value"])
                for r in build(lake, DATASETS["environmental_exceedances"])[0].to_pylist()]

    _write(lake, "bronze", "raw.ref.device.v1", [{"device_id": d, "street_code": "990101001", "status": "active",
                                                 "updated_at": "2025-11-01T00:00:00Z"} for d in ("nz-0001", "aq-0001")])
    _write(lake, "bronze", "raw.sensor.noise_level.v1", [{"refDevice": "nz-0001", "dateObservedFrom": "2025-11-22T14:10:00Z",
                                                         "LAeq": 55.0}])
    _write(lake, "bronze", "raw.sensor.air_quality.v1", [{"refDevice": "aq-0001", "dateObserved": "2025-11-22T14:10:00Z",
                                                         "pm25": 20.0}])
    assert hours() == [("2025-11-22 08:00:00", "2025-11-22 16:00:00")]
    assert exceedances() == [("2025-11-22 14:00:00", "2025-11-22 22:00:00", 50.0)]     # over the night limit
    _write(lake, "bronze", "raw.ref.city.v1", [{"city_code": "0001", "name": "Bogotá", "jurisdiction_id": "bogota.gov.co",
                                               "timezone": "America/Bogota", "pack_version": "1",
                                               "updated_at": "2026-01-01T00:00:00Z"}])
    assert hours() == [("2025-11-22 08:00:00", "2025-11-22 03:00:00")]
    assert exceedances() == []                                                          # under the day limit


def test_a_dataset_without_its_inputs_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="lake bronze"):
        build(tmp_path, DATASETS["traffic_congestion_index"])


def test_a_release_is_immutable_checksummed_with_lineage_and_refused_on_failed_quality(lake: Path) -> None:
    dataset = DATASETS["traffic_congestion_index"]
    table, inputs = build(lake, dataset)
    with pytest.raises(ValueError, match="failed quality"):
        publish(lake, dataset.name, table, dataset.contract(), {"passed": False, "failed": ["raw.sensor.traffic_flow"]}, inputs)
    release = publish(lake, dataset.name, table, dataset.contract(), {"passed": True}, inputs,
                      now=datetime(2025, 11, 23, 1, tzinfo=timezone.utc))
    m = release.manifest
    assert m["rows"] == 1 and m["contract"]["fields"]["congestion_index"]
    assert {e["path"].split("/")[1] for e in m["lineage"]} == {"raw.sensor.traffic_flow", "raw.ref.road_segment"}
    assert verify(release) == []
    assert not os.access(release.path / "data.parquet", os.W_OK) or os.geteuid() == 0   # read-only (root ignores modes)
    os.chmod((release.path / "data.parquet").path, 0o644)
    (release.path / "data.parquet").write_bytes(b"tampered")
    assert verify(release) == ["data.parquet"]


def test_catalog_and_query_use_the_latest_or_a_pinned_release(lake: Path) -> None:
    dataset = DATASETS["traffic_congestion_index"]
    table, inputs = build(lake, dataset)
    first = publish(lake, dataset.name, table, dataset.contract(), {"passed": True}, inputs,
                    now=datetime(2025, 11, 23, 1, tzinfo=timezone.utc))
    second = publish(lake, dataset.name, table.slice(0, 0), dataset.contract(), {"passed": True}, inputs,
                     now=datetime(2025, 11, 23, 2, tzinfo=timezone.utc))
    entry = next(e for e in catalog(lake, now=datetime(2025, 11, 23, 3, tzinfo=timezone.utc))
                 if e["dataset"] == dataset.name)
    assert entry["versions"] == [first.version, second.version] and entry["latest"] == second.version
    assert (entry["rows"], entry["quality"], entry["age_h"]) == (0, "passed", 1.0)
    assert query(lake, "SELECT count(*) AS n FROM traffic_congestion_index").to_pylist() == [{"n": 0}]
    pinned = query(lake, "SELECT congestion_index FROM traffic_congestion_index",
                   pins={dataset.name: first.version}).to_pylist()
    assert pinned == [{"congestion_index": 66.7}]
    with pytest.raises(LookupError, match="no version"):
        resolve(lake, dataset.name, "v1")


def _located(lake: Path, orders: list[tuple[str, str, str | None, str]], incidents: list[tuple[str, str | None, str]],
             areas: list[tuple[str, str, str, str | None]]) -> None:
    """Lead ticket orders (id, district, street, category), fused incidents (district, street, category) and the
    city's areas (code, name, level, parent) in the lake."""
    _write(lake, "silver", "dispatch.water.work_order.v1", [
        {"work_order_id": f"WO-{rid}-water", "department": "water", "role": "lead", "source": "ticket", "source_id": rid,
         "district_code": district, "street_code": street, "category": category,
         "received_at": f"2025-11-22T{i:02d}:00:00Z"} for i, (rid, district, street, category) in enumerate(orders)])
    _write(lake, "silver", "city.event.incident.v1", [
        {"event_id": f"CE-{district}-{category}-{i}", "district_code": district, "street_code": street, "category": category}
        for i, (district, street, category) in enumerate(incidents)])
    _write(lake, "bronze", "raw.ref.admin_area.v1", [
        {"area_code": code, "name": name, "level": level, "parent_code": parent} for code, name, level, parent in areas])
    _write(lake, "bronze", "raw.ref.device.v1", [{"device_id": "wl-0001", "street_code": "990101001", "status": "active",
                                                 "updated_at": "2025-11-01T00:00:00Z"}])
    _write(lake, "bronze", "raw.sensor.water_level.v1", [
        {"refDevice": "wl-0001", "currentLevel": 0.3, "referenceLevel": 0.6, "floodLevelStatus": "warning",
         "siteType": "underpass"}])


def test_street_datasets_give_a_district_only_city_rows_per_district(tmp_path: Path) -> None:
    """Beijing's 东城区 and 西城区 without streets: their tickets and incidents name only the district, and the
    street datasets count them per district (they had no row at all: everything was grouped by street)."""
    _located(tmp_path, [(f"HL{i}", "110101", None, "waterlogging") for i in range(6)]
             + [("HL8", "110102", None, "waterlogging"), ("HL9", "110105", None, "waterlogging")],
             [("110101", None, "flood")],
             [("110101", "东城区", "district", "11"), ("110102", "西城区", "district", "11"),
              ("110105", "朝阳区", "district", "11")])
    hotspots = build(tmp_path, DATASETS["hotline_hotspots"])[0].to_pylist()
    assert [(r["area_code"], r["area_level"], r["area_name"], r["street_code"], r["street_name"], r["district_code"],
             r["category"], r["tickets"], r["incidents"], r["hotspot"]) for r in hotspots] == [
        ("110101", "district", "东城区", None, None, "110101", "waterlogging", 6, 1, True),     # 6 >= 3 x the median 1
        ("110102", "district", "西城区", None, None, "110102", "waterlogging", 1, 0, False),
        ("110105", "district", "朝阳区", None, None, "110105", "waterlogging", 1, 0, False)]
    flood = build(tmp_path, DATASETS["flood_risk_by_street"])[0].to_pylist()
    assert [(r["area_code"], r["area_level"], r["area_name"], r["street_code"], r["district_code"],
             r["waterlogging_tickets"], r["flood_incidents"], r["risk_score"], r["risk_level"]) for r in flood] == [
        ("110101", "district", "东城区", None, "110101", 6, 1, 30.0, "elevated"),
        ("110102", "district", "西城区", None, "110102", 1, 0, 5.0, "low"),
        ("110105", "district", "朝阳区", None, "110105", 1, 0, 5.0, "low")]
    _release_inputs_of_district_safety(tmp_path)
    safety = build(tmp_path, DATASETS["district_safety_index"])[0].to_pylist()
    assert [(r["district_code"], r["hotspot_streets"], r["max_flood_risk"]) for r in safety] == [
        ("110101", 1, 30.0), ("110102", 0, 5.0), ("110105", 0, 5.0)]        # 东城区's own hotspot counts


def _release_inputs_of_district_safety(lake: Path) -> None:
    """Releases of district_safety_index's four inputs: the two area datasets built from the lake, no exceedance
    and no ticket KPIs (a city without environmental sensors or ticket events in the data)."""
    import pyarrow as pa

    now = datetime(2025, 11, 23, 1, tzinfo=timezone.utc)
    for name in ("hotline_hotspots", "flood_risk_by_street"):
        table, inputs = build(lake, DATASETS[name])
        publish(lake, name, table, DATASETS[name].contract(), {"passed": True}, inputs, now=now)
    for name in ("environmental_exceedances", "respond_on_receipt_kpis"):
        fields = DATASETS[name].fields
        empty = pa.table({f: pa.array([], pa.int64() if f in ("tickets", "overdue") else pa.string()) for f in fields})
        publish(lake, name, empty, DATASETS[name].contract(), {"passed": True}, [], now=now)


def test_a_city_with_streets_keeps_its_street_rows_and_gains_the_area_columns_after_them(tmp_path: Path) -> None:
    """The simulated city's released rows are unchanged: the same columns in the same order with the same values,
    area_code, area_level and area_name appended; a district with streets has no row of its own."""
    _located(tmp_path, [("HL1", "990101", "990101001", "waterlogging"), ("HL2", "990101", "990101001", "waterlogging")],
             [("990101", "990101001", "flood")],
             [("990101", "天宁区", "district", "99"), ("990101001", "天宁街道", "street", "990101"),
              ("990101002", "文庙街道", "street", "990101")])
    hotspots = build(tmp_path, DATASETS["hotline_hotspots"])[0]
    assert hotspots.column_names == ["street_code", "street_name", "district_code", "category", "tickets",
                                     "tickets_last_6h", "vs_category_median", "recent_rate_ratio", "incidents",
                                     "hotspot", "emerging", "as_of", "area_code", "area_level", "area_name"]
    row = hotspots.to_pylist()[0]
    assert len(hotspots) == 1 and (row["street_code"], row["street_name"], row["district_code"], row["tickets"],
                                   row["incidents"], row["area_code"], row["area_level"], row["area_name"]) == (
        "990101001", "天宁街道", "990101", 2, 1, "990101001", "street", "天宁街道")
    flood = build(tmp_path, DATASETS["flood_risk_by_street"])[0]
    assert flood.column_names == ["street_code", "street_name", "district_code", "gauges", "underpass_gauges",
                                  "max_level_ratio", "warning_readings", "flooded_readings", "waterlogging_tickets",
                                  "flood_incidents", "risk_score", "risk_level", "area_code", "area_level", "area_name"]
    assert [(r["street_code"], r["street_name"], r["district_code"], r["gauges"], r["underpass_gauges"],
             r["max_level_ratio"], r["waterlogging_tickets"], r["flood_incidents"], r["risk_score"], r["area_code"],
             r["area_level"]) for r in flood.to_pylist()] == [
        ("990101001", "天宁街道", "990101", 1, 1, 0.5, 2, 1, 45.0, "990101001", "street"),
        ("990101002", "文庙街道", "990101", 0, 0, None, 0, 0, 0.0, "990101002", "street")]
