"""A city at any depth: a pack that stops at districts places every position in its district (the gateway, the
city model and fusion alike), is simulated district by district and fused into events of its districts; one that
goes deeper places a position as deep as its areas go there.

The district-only city is Beijing's 16 real districts (``tests/data/boundaries``, GCJ-02, so the points below are
GCJ-02 too) with 临江市's departments, services and routing rules; the deeper one is the example pack 临江市, whose
grids cover two of its twelve communities.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
import shapely
from shapely.geometry import mapping, shape

from citybrain.city.pack import Pack
from citybrain.city.pack_check import check_pack
from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.access.privacy import Protector
from citybrain.fusion.evaluate import evaluate
from citybrain.fusion.keys import AreaKeys
from citybrain.fusion.pipeline import Pipeline
from citybrain.fusion.signals import Enricher
from citybrain.gateway.open311 import Catalogue, public_view, request_record
from citybrain.geo import Area, AreaIndex
from citybrain.kafka.headers import EVENT_ID_NAMESPACE
from citybrain.settings import PROJECT_ROOT
from citybrain.sim.city import build_city
from citybrain.sim.engine import Simulation
from citybrain.sim.from_pack import city_of_pack
from citybrain.sim.model import SimConfig
from citybrain.sim.reference import reference_records

BEIJING = json.loads((PROJECT_ROOT / "tests" / "data" / "boundaries" / "beijing-110000-gcj02.json").read_text())
LINJIANG = json.loads((PROJECT_ROOT / "examples" / "citypacks" / "linjiang" / "areas.geojson").read_text())
#: Inside 东城区; Beijing Capital Airport, in 朝阳区's exclave inside 顺义区; 顺义区 proper; Tianjin, outside Beijing.
DONGCHENG, AIRPORT, SHUNYI, TIANJIN = (116.4135, 39.9182), (116.60, 40.08), (116.65, 40.13), (117.20, 39.10)
TICKET = {"service_code": "water.leak", "description": "路面冒水", "phone": "13800001111"}
#: Beijing's devices: two underpass gauges and a weather station in 东城区, a noise gauge in 顺义区.
DEVICES = [
    {"device_id": "wl-0001", "device_type": "water_level", "owner_department": "water", "long": DONGCHENG[0],
     "lat": DONGCHENG[1], "site_type": "underpass"},
    {"device_id": "wl-0002", "device_type": "water_level", "owner_department": "water", "long": DONGCHENG[0] + 0.002,
     "lat": DONGCHENG[1] + 0.002, "site_type": "underpass"},
    {"device_id": "ws-0001", "device_type": "weather", "owner_department": "emergency", "long": DONGCHENG[0],
     "lat": DONGCHENG[1]},
    {"device_id": "nz-0001", "device_type": "noise", "owner_department": "environment", "long": SHUNYI[0],
     "lat": SHUNYI[1]},
]


def _beijing_areas() -> list[dict[str, Any]]:
    """Beijing's districts as ``raw.ref.admin_area`` records, as importing a pack that stops at districts
    publishes them."""
    return [{"area_code": str(f["properties"]["adcode"]), "name": f["properties"]["name"], "level": "district",
             "parent_code": "110000", "geometry": f["geometry"], "updated_at": "2026-12-01T00:00:00Z"}
            for f in BEIJING["features"]]


def _beijing_pack() -> Pack:
    """Beijing as a pack that stops at districts: its districts, ``DEVICES``, and 临江市's departments,
    services and routing rules (a pack's catalogue does not depend on its depth)."""
    linjiang, problems = check_pack(PROJECT_ROOT / "examples" / "citypacks" / "linjiang")
    assert linjiang is not None and not problems
    areas = [{"type": "Feature", "geometry": f["geometry"],
              "properties": {"code": str(f["properties"]["adcode"]), "name": f["properties"]["name"],
                             "level": "district", "parent": None}} for f in BEIJING["features"]]
    return Pack({"city": {"code": "1100", "name": "北京市"}, "jurisdiction_id": "beijing.gov.cn",
                 "timezone": "Asia/Shanghai", "version": "1.0.0"}, areas, linjiang.departments, linjiang.services,
                linjiang.routing, DEVICES)


def _catalogue() -> Catalogue:
    ref = reference_records(build_city(7), "2026-12-01T00:00:00Z")
    return Catalogue("beijing.gov.cn", {s["service_code"]: s for s in ref["raw.ref.service"]}, {})


def _linjiang(leave_out: str = "") -> AreaIndex:
    """临江市's areas, without those under ``leave_out`` (a code prefix)."""
    areas = [Area(p["code"], p["name"], p["level"], p["parent"], f["geometry"])
             for f in LINJIANG["features"] for p in [f["properties"]]]
    return AreaIndex(a for a in areas if a.level == "district" or not leave_out or not a.code.startswith(leave_out))


def _inside(code: str) -> tuple[float, float]:
    feature = next(f for f in LINJIANG["features"] if f["properties"]["code"] == code)
    point = shape(feature["geometry"]).representative_point()
    return point.x, point.y


def test_a_pack_that_stops_at_districts_places_a_position_in_its_district_and_nowhere_deeper(contracts: dict[str, Contract]) -> None:
    check = RecordValidator(contracts["raw.ref.admin_area.v1"])
    assert all(check(r) is None for r in _beijing_areas())
    index = AreaIndex.from_records(_beijing_areas())
    place = index.resolve(*DONGCHENG)
    assert place is not None and (place.district.name, place.street, place.community, place.grid) == \
        ("东城区", None, None, None)
    # the airport is in 朝阳区's exclave, a part of its MultiPolygon, not in the 顺义区 around it
    assert index.resolve(*AIRPORT).district.name == "朝阳区"   # type: ignore[union-attr]
    assert index.resolve(*SHUNYI).district.name == "顺义区"    # type: ignore[union-attr]
    assert index.resolve(*TIANJIN) is None and index.street_at(*DONGCHENG) is None


def test_a_position_in_a_districts_hole_or_outside_it_is_refused() -> None:
    """顺义区 made valid is one polygon with a hole where 朝阳区's airport exclave is: a city of 顺义区 alone does
    not hold the airport."""
    shunyi = next(f for f in BEIJING["features"] if f["properties"]["name"] == "顺义区")
    holed = shapely.make_valid(shape(shunyi["geometry"]), method="structure")
    assert holed.geom_type == "Polygon" and len(holed.interiors) == 1
    for geometry in (mapping(holed), shunyi["geometry"]):   # as made valid, and as published (two parts around it)
        index = AreaIndex([Area("110113", "顺义区", "district", "110000", geometry)])
        assert index.resolve(*SHUNYI).district.code == "110113"   # type: ignore[union-attr]
        assert index.resolve(*AIRPORT) is None and index.resolve(*TIANJIN) is None


def test_the_gateway_geolocates_requests_of_a_district_only_city_to_their_district(contracts: dict[str, Contract]) -> None:
    """Regression: a city that stops at districts refused every position as outside its jurisdiction."""
    index, catalogue = AreaIndex.from_records(_beijing_areas()), _catalogue()
    record, errors = request_record({**TICKET, "long": str(DONGCHENG[0]), "lat": str(DONGCHENG[1])}, "p", catalogue,
                                    index)
    assert errors == [] and record is not None and record["address"] == "东城区"
    assert RecordValidator(contracts["raw.hotline.service_request.v1"])(record) is None
    assert public_view(record, index, catalogue)["address"] == "东城区"
    record, _ = request_record({**TICKET, "long": str(AIRPORT[0]), "lat": str(AIRPORT[1])}, "p", catalogue, index)
    assert record is not None and record["address"] == "朝阳区"
    _, errors = request_record({**TICKET, "long": str(TIANJIN[0]), "lat": str(TIANJIN[1])}, "p", catalogue, index)
    assert [(e.field, e.rule) for e in errors] == [("lat", "outside-jurisdiction")]


def test_fusion_places_the_records_of_a_district_only_city_in_their_district(contracts: dict[str, Contract]) -> None:
    record, _ = request_record({**TICKET, "long": str(DONGCHENG[0]), "lat": str(DONGCHENG[1])}, "p", _catalogue(),
                               AreaIndex.from_records(_beijing_areas()))
    assert record is not None
    signal = Enricher(AreaIndex.from_records(_beijing_areas())).signal("raw.hotline.service_request.v1", record, "t1")
    assert signal is not None and (signal.district_code, signal.street_code, signal.street_name, signal.flags) == \
        ("110101", None, None, [])
    keys, pipeline = AreaKeys(), Pipeline(contracts, Protector.ephemeral())
    for area in _beijing_areas():
        keys.reference("raw.ref.admin_area.v1", area)
        pipeline.feed("raw.ref.admin_area.v1", area, "ref")
    assert keys.key("raw.hotline.service_request.v1", record) == "110101"
    pipeline.feed("raw.hotline.service_request.v1", record, "t1")
    assert {key[2] for key in pipeline.metrics.cells} == {"110101"}   # counted in its district's windows
    outside = {**record, "long": TIANJIN[0], "lat": TIANJIN[1]}
    assert "outside_city" in Enricher(AreaIndex.from_records(_beijing_areas())).signal(  # type: ignore[union-attr]
        "raw.hotline.service_request.v1", outside, "t2").flags


def test_the_city_model_of_a_district_only_pack_places_a_position_in_its_district() -> None:
    city = city_of_pack(_beijing_pack())
    assert city.areas_at(*DONGCHENG) == {"district": "110101"}
    assert city.areas_at(*AIRPORT) == {"district": "110105"} and city.areas_at(*TIANJIN) == {}
    assert city.areas_at(*DONGCHENG, street_code="110101") == {"district": "110101"}   # the simulator's unit


def test_a_district_only_pack_is_simulated_district_by_district_with_valid_records(
        contracts: dict[str, Contract]) -> None:
    """Regression: the simulator built its units from the pack's streets only, so a pack that stops at
    districts had no street to place its devices in and dropped them all."""
    city = city_of_pack(_beijing_pack())
    assert [(d.device_id, d.street_code) for d in city.devices] == \
        [("wl-0001", "110101"), ("wl-0002", "110101"), ("ws-0001", "110101"), ("nz-0001", "110113")]
    assert len(city.streets) == 16 and all(s.is_district for s in city.streets)
    sim = Simulation(SimConfig(seed=5, start=datetime(2026, 7, 20, 16, tzinfo=timezone.utc), hours=3, scale=1.0,
                               incidents=()), city=city)
    emissions = [e for _t, batch in sim.ticks() for e in batch]
    by_id = {c.id: RecordValidator(c) for c in contracts.values()}
    assert [(e.contract, by_id[e.contract](e.value)) for e in emissions if by_id[e.contract](e.value)] == []
    readings = Counter(e.value.get("refDevice") or e.value.get("stationID") for e in emissions
                       if e.contract.startswith("raw.sensor."))
    assert set(readings) == {"wl-0001", "wl-0002", "ws-0001", "nz-0001"}
    placed = [e.value for e in emissions if e.contract in ("raw.ref.poi", "raw.ref.road_segment", "raw.ref.device")]
    assert placed and not any("street_code" in r for r in placed)       # a district is no street
    tickets = [e.value for e in emissions if e.contract == "raw.hotline.service_request"]
    index = AreaIndex.from_records(_beijing_areas())
    assert tickets and all(index.resolve(t["long"], t["lat"]) is not None for t in tickets)


def test_a_district_only_citys_flood_is_one_event_of_its_district_dispatched_to_its_departments(
        contracts: dict[str, Contract]) -> None:
    """The simulated flood at 东城区's underpass (gauges, calls, 110 reports) fused without streets: one event and
    an early warning naming 东城区 and no street, valid under their contracts, with work orders to the
    departments of the city's ``event.flood`` rule; the ground truth scores both found."""
    sim = Simulation(SimConfig(seed=5, start=datetime(2026, 7, 20, 16, tzinfo=timezone.utc), hours=12, scale=0.2,
                               incidents=("underpass_flood",)), city=city_of_pack(_beijing_pack()))
    pipeline, produced = Pipeline(contracts, Protector.ephemeral()), []
    for t, batch in sim.ticks():
        for e in batch:
            produced += pipeline.feed(f"{e.contract}.v1", e.value,
                                      uuid.uuid5(EVENT_ID_NAMESPACE, json.dumps(e.value)).hex, t)
    by_topic = {c.topic: RecordValidator(c) for c in contracts.values()}
    assert [(t, by_topic[t](r)) for t, r in produced if by_topic[t](r)] == []
    events = [r for t, r in produced if t == "city.event.incident.v1"]
    warnings = [r for t, r in produced if t == "alert.early_warning.risk.v1"]
    assert {(e["event_id"], e["district_code"], e["title"]) for e in events} == \
        {("CE-110101-flood-202607202335", "110101", "东城区道路积水/内涝")}
    assert all("street_code" not in r and r["street_name"] is None for r in events + warnings)
    # a district's background calls join its flood case early, so the calls rising there warn first
    assert [(w["kind"], w["category"], w["district_code"]) for w in warnings] == \
        [("trending_hotspot", "waterlogging", "110101")]
    orders = {(t, r["role"], r["district_code"], r["street_code"]) for t, r in produced
              if t.startswith("dispatch.") and r["source"] == "city_event"}
    assert orders == {("dispatch.water.work_order.v1", "lead", "110101", None)} | \
        {(f"dispatch.{d}.work_order.v1", "support", "110101", None) for d in ("emergency", "police", "transport")}
    assert evaluate(sim.ground_truth("t"), events, warnings)["recall"] == 1.0


def test_a_city_event_or_warning_names_a_street_or_a_district(contracts: dict[str, Contract]) -> None:
    """Since city.event.incident and alert.early_warning.risk 1.1.0 a record without a street needs its district."""
    event = contracts["city.event.incident.v1"].raw["examples"][0]
    warning = contracts["alert.early_warning.risk.v1"].raw["examples"][0]
    for contract, record in (("city.event.incident.v1", event), ("alert.early_warning.risk.v1", warning)):
        check = RecordValidator(contracts[contract])
        no_street = {k: v for k, v in record.items() if k != "street_code"}
        assert check(record) is None and check({**no_street, "street_name": None}) is None
        nowhere = {k: v for k, v in no_street.items() if k != "district_code"}
        for nowhere in (nowhere, {**nowhere, "district_code": None}):
            problem = check(nowhere)
            assert problem is not None and (problem.rule, problem.field) == ("required", "street_code"), nowhere


def test_a_position_is_placed_as_deep_as_the_city_goes_there() -> None:
    """临江市 has grids in 钟楼街道's communities only; without 东港区's streets, 东港区 stops at its district."""
    index = _linjiang()
    grid = index.resolve(*_inside("98010200100101"))
    assert grid is not None and [a.code if a else None for a in grid] == \
        ["980102", "980102001", "980102001001", "98010200100101"]
    community = index.resolve(*_inside("980101001001"))
    assert community is not None and [a.code if a else None for a in community] == \
        ["980101", "980101001", "980101001001", None]
    dock = _inside("980103001001")
    assert index.resolve(*dock).street.code == "980103001"   # type: ignore[union-attr]
    partial = _linjiang(leave_out="980103")
    assert partial.resolve(*dock) == (partial.areas["980103"], None, None, None)
    assert partial.resolve(*_inside("98010200100101")) == grid


def test_an_area_geos_cannot_read_is_left_out_and_its_positions_go_to_its_parent(
        caplog: pytest.LogCaptureFixture) -> None:
    """A ring of two positions (no polygon): 钟楼街道's positions are placed in its district, with a warning."""
    broken = Area("980102001", "钟楼街道", "street", "980102",
                  {"type": "Polygon", "coordinates": [[[87.6, 43.7], [87.7, 43.8]]]})
    areas = [Area(p["code"], p["name"], p["level"], p["parent"], f["geometry"])
             for f in LINJIANG["features"] for p in [f["properties"]] if p["level"] in ("district", "street")]
    with caplog.at_level(logging.WARNING, logger="citybrain.geo"):
        index = AreaIndex([broken if a.code == broken.code else a for a in areas])
    assert "980102001" in caplog.text and "fix its coordinates" in caplog.text
    assert index.resolve(*_inside("980102001001")) == (index.areas["980102"], None, None, None)
    assert index.resolve(*_inside("980102002001")).street.code == "980102002"   # type: ignore[union-attr]
