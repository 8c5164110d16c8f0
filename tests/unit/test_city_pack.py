"""City packs (``citybrain.city.pack`` and ``pack_check``): the simulated city as a pack passes its
checks, a small hand-written city of another shape passes too, and every rule of the check
fails on a pack built to break it, naming the file, the place, the rule and the fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from citybrain.sim.city import build_city
from citybrain.city.pack import Pack, pack_from_city
from citybrain.city.pack_check import check_pack
from citybrain.city.pack_import import contract_problems, reference_records


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _area(code: str, name: str, level: str, parent: str | None, ring: list[list[float]], **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"code": code, "name": name, "level": level, "parent": parent, **props}}


def small_city() -> Pack:
    """临江市: two districts side by side on a river, three towns, five villages and communities, one grid;
    three departments of its own, two services, a time zone that is not Shanghai's."""
    areas = [
        _area("650101", "江北区", "district", None, _rect(87.0, 43.0, 87.2, 43.1), population=300_000),
        _area("650102", "江南区", "district", None, _rect(87.2, 43.0, 87.3, 43.1), population=120_000),
        _area("650101001", "北门街道", "street", "650101", _rect(87.0, 43.0, 87.1, 43.1), population=180_000),
        _area("650101002", "河滨镇", "street", "650101", _rect(87.1, 43.0, 87.2, 43.1), population=120_000),
        _area("650102001", "南岸街道", "street", "650102", _rect(87.2, 43.0, 87.3, 43.1), population=120_000),
        _area("650101001001", "钟楼社区", "community", "650101001", _rect(87.0, 43.0, 87.1, 43.05), population=90_000),
        _area("650101001002", "文庙社区", "community", "650101001", _rect(87.0, 43.05, 87.1, 43.1), population=90_000),
        _area("650101002001", "柳湾村", "community", "650101002", _rect(87.1, 43.0, 87.2, 43.1), population=120_000),
        _area("650102001001", "渡口社区", "community", "650102001", _rect(87.2, 43.0, 87.25, 43.1), population=60_000),
        _area("650102001002", "沙洲社区", "community", "650102001", _rect(87.25, 43.0, 87.3, 43.1), population=60_000),
        _area("65010100100101", "钟楼一网格", "grid", "650101001001", _rect(87.0, 43.0, 87.1, 43.05),
              grid_workers=["gw-001", "gw-002"]),
    ]
    departments = [{"department_id": "urban_management", "name": "城市服务中心", "name_en": "City Services Centre",
                    "remit": ["pothole", "flood"]},
                   {"department_id": "transport", "name": "路政局", "name_en": "Roads Office", "remit": ["pothole"]},
                   {"department_id": "water", "name": "河务局", "name_en": "River Office", "remit": ["flood"]}]
    services = [{"service_code": "roads.pothole", "name": "路面坑洼", "group": "transport", "category": "pothole",
                 "department": "transport", "sla_hours": 48, "priority": "normal", "keywords": ["坑"]},
                {"service_code": "river.flood", "name": "河水漫堤", "group": "river", "category": "flood",
                 "department": "water", "co_departments": ["urban_management"], "sla_hours": 2, "priority": "urgent"}]
    routing = [{"rule_id": "roads.pothole", "category": "pothole", "service_code": "roads.pothole", "department": "transport",
                "sla_hours": 48, "priority": "normal", "escalation": ["community", "street", "district", "department"]},
               {"rule_id": "river.flood", "category": "flood", "service_code": "river.flood", "department": "water",
                "sla_hours": 2, "priority": "urgent"},
               {"rule_id": "event.flood", "category": "flood", "department": "water", "co_departments": ["urban_management"],
                "sla_hours": 1, "priority": "emergency"}]
    devices = [{"device_id": "lw-0001", "device_type": "water_level", "owner_department": "water",
                "lat": 43.02, "long": 87.22, "street_code": "650102001"},
               {"device_id": "ln-0001", "device_type": "noise", "owner_department": "urban_management",
                "lat": 43.07, "long": 87.05}]
    manifest = {"format": "citybrain.citypack/1", "version": "0.1.0", "city": {"code": "6501", "name": "临江市"},
                "jurisdiction_id": "linjiang.gov.cn", "timezone": "Asia/Urumqi"}
    return Pack(manifest, areas, departments, services, routing, devices)


def _rules(tmp_path: Path, pack: Pack) -> list[tuple[str, str, str]]:
    pack.write(tmp_path)
    _pack, problems = check_pack(tmp_path)
    for p in problems:
        assert p.fix and p.message, p                   # every problem says what is wrong and how to fix it
    return [(p.file, p.where, p.rule) for p in problems]


def test_the_simulated_city_as_a_pack_passes_its_checks(tmp_path: Path, contracts) -> None:  # type: ignore[no-untyped-def]
    pack = pack_from_city(build_city(7))
    levels = {lvl: sum(1 for f in pack.areas if f["properties"]["level"] == lvl) for lvl in ("district", "street", "community", "grid")}
    assert levels == {"district": 12, "street": 108, "community": 432, "grid": 864}
    assert _rules(tmp_path, pack) == []
    loaded, _ = check_pack(tmp_path)
    assert loaded is not None and loaded.manifest["jurisdiction_id"] == "yunzhou.gov.cn" and len(loaded.devices) == 2191 + 12   # 12 weather stations, one per district
    assert contract_problems(loaded, contracts) == []


def test_a_small_hand_written_city_of_another_shape_passes(tmp_path: Path, contracts) -> None:  # type: ignore[no-untyped-def]
    assert _rules(tmp_path, small_city()) == []
    assert contract_problems(small_city(), contracts) == []       # and its records fit the reference topics


def test_the_example_pack_passes_under_the_default_tolerance() -> None:
    """Regression: 临江市's hand-written grids sit 157 m² off their community (coordinates rounded to 6 decimals);
    the default tolerance (1,000 m²) takes such slivers, as the old share-of-area check did."""
    from citybrain.settings import PROJECT_ROOT

    pack, problems = check_pack(PROJECT_ROOT / "examples" / "citypacks" / "linjiang")
    assert pack is not None and problems == []


def test_records_the_reference_topics_would_refuse_are_named_before_anything_is_sent(contracts) -> None:  # type: ignore[no-untyped-def]
    pack = small_city()
    pack.devices[0]["device_id"] = "LJ/WL/1"                     # no topic key or file name carries a slash
    del pack.departments[1]["name_en"]                           # the department topic requires an English name
    found = {(p.file, p.where, p.rule) for p in contract_problems(pack, contracts)}
    assert found == {("devices.csv", "line 2", "pattern"), ("departments.jsonl", "line 2", "required")}


def test_a_pack_becomes_reference_records_keyed_by_code_with_devices_placed_in_their_street(contracts) -> None:  # type: ignore[no-untyped-def]
    records = reference_records(small_city(), "2026-12-01T00:00:00Z")
    areas = {r["area_code"]: r for _w, r in records["raw.ref.admin_area.v1"]}
    assert len(areas) == 10 and areas["650101"]["parent_code"] == "650100"      # grids wait for their topic
    assert areas["650101001001"]["level"] == "community" and areas["650101001001"]["parent_code"] == "650101001"
    devices = {r["device_id"]: r for _w, r in records["raw.ref.device.v1"]}
    assert devices["ln-0001"]["street_code"] == "650101001" and devices["ln-0001"]["status"] == "active"
    rules = {r["rule_id"]: r for _w, r in records["raw.ref.routing_rule.v1"]}
    assert rules["roads.pothole"]["escalation"] == ["community", "street", "district", "department"]


def _broken(change: Callable[[Pack], None]) -> Pack:
    pack = copy.deepcopy(small_city())
    change(pack)
    return pack


def _area_of(pack: Pack, code: str) -> dict[str, Any]:
    return next(f for f in pack.areas if f["properties"]["code"] == code)


BREAKS: dict[str, tuple[Callable[[Pack], None], tuple[str, str, str]]] = {
    "polygon not closed": (lambda p: _area_of(p, "650102001002")["geometry"]["coordinates"][0].pop(),
                           ("areas.geojson", "feature 10 (650102001002)", "polygon-not-closed")),
    "siblings overlap": (lambda p: _area_of(p, "650101001002")["geometry"].update(coordinates=[_rect(87.0, 43.04, 87.1, 43.1)]),
                         ("areas.geojson", "feature 6 (650101001001)", "overlap")),
    "a gap between siblings": (lambda p: _area_of(p, "650102001002")["geometry"].update(coordinates=[_rect(87.26, 43.0, 87.3, 43.1)]),
                               ("areas.geojson", "feature 5 (650102001)", "gap")),
    "a child outside its parent": (lambda p: _area_of(p, "650101002001")["geometry"].update(coordinates=[_rect(87.1, 43.0, 87.21, 43.1)]),
                                   ("areas.geojson", "feature 8 (650101002001)", "outside-parent")),
    "an unknown parent": (lambda p: _area_of(p, "650101002001")["properties"].update(parent="650199"),
                          ("areas.geojson", "feature 8 (650101002001)", "unknown-parent")),
    "a parent two levels up": (lambda p: _area_of(p, "650101002001")["properties"].update(parent="650101"),
                               ("areas.geojson", "feature 8 (650101002001)", "wrong-parent-level")),
    "a duplicate code": (lambda p: p.areas.append(copy.deepcopy(_area_of(p, "650102001002"))),
                         ("areas.geojson", "feature 12 (650102001002)", "duplicate-code")),
    "projected coordinates, not WGS84": (lambda p: _area_of(p, "650102001002")["geometry"].update(   # metres, CGCS2000 3° zone
        coordinates=[_rect(520_000, 4_760_000, 524_000, 4_770_000)]),
        ("areas.geojson", "feature 10 (650102001002)", "coordinates-out-of-range")),
    "longitude and latitude swapped": (lambda p: _area_of(p, "650102001002")["geometry"].update(
        coordinates=[[[y, x] for x, y in _rect(87.25, 43.0, 87.3, 43.1)]]),
        ("areas.geojson", "feature 10 (650102001002)", "outside-parent")),
    "a service routed to an unknown department": (lambda p: p.services[0].update(department="highways"),
                                                  ("services.jsonl", "line 1", "unknown-department")),
    "a rule routed to an unknown co-department": (lambda p: p.routing[2].update(co_departments=["fire"]),
                                                  ("routing.jsonl", "line 3", "unknown-department")),
    "a service without an SLA": (lambda p: p.services[1].pop("sla_hours"), ("services.jsonl", "line 2", "required")),
    "a service no rule dispatches": (lambda p: p.routing.pop(0), ("services.jsonl", "line 1", "unrouted-service")),
    "a rule for an unknown area": (lambda p: p.routing[0].update(area_code="650109"), ("routing.jsonl", "line 1", "unknown-area")),
    "a device outside the city": (lambda p: p.devices[1].update(lat=39.9, long=116.4), ("devices.csv", "line 3", "outside-city")),
    "a device outside its street": (lambda p: p.devices[0].update(street_code="650101001"),
                                    ("devices.csv", "line 2", "outside-street")),
    "a grid without its workers": (lambda p: _area_of(p, "65010100100101")["properties"].pop("grid_workers"),
                                   ("areas.geojson", "feature 11 (65010100100101)", "required")),
    "an unknown field": (lambda p: p.departments[0].update(phone="12345"), ("departments.jsonl", "line 1", "unknown-field")),
    "an unknown time zone": (lambda p: p.manifest.update(timezone="China/Beijing"), ("manifest.json", "", "unknown-timezone")),
    "an unknown coordinate system": (lambda p: p.manifest.update(geometry={"crs": "CGCS2000"}), ("manifest.json", "", "enum")),
    "a negative tolerance": (lambda p: p.manifest.update(geometry={"tolerance_m2": -1}), ("manifest.json", "", "minimum")),
    "a postal-code pattern that is no regular expression": (lambda p: p.manifest.update(postal_code_pattern="^[0-9{5}$"),
                                                            ("manifest.json", "", "postal-code-pattern")),
    "a language that is no BCP 47 tag": (lambda p: p.manifest.update(languages=["English"]), ("manifest.json", "", "pattern")),
    "考核 weights that do not add up to 1": (
        lambda p: p.manifest.update(assessment={"weights": {"response": 0.3, "resolution": 0.4, "satisfaction": 0.4}}),
        ("manifest.json", "", "assessment-weights")),
    "a 考核 weight above 1": (
        lambda p: p.manifest.update(assessment={"weights": {"response": 1.5, "resolution": -0.5, "satisfaction": 0}}),
        ("manifest.json", "", "maximum")),
    "a summoned department given no time to sign": (lambda p: p.manifest.update(reporting={"sign_hours": 0}),
                                                     ("manifest.json", "", "exclusiveMinimum")),
    "a report due in half a working day": (
        lambda p: p.manifest.update(reporting={"report_working_days": {"simple": 0.5}}), ("manifest.json", "", "type")),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_a_pack_built_to_break_a_rule_is_refused_naming_it(tmp_path: Path, case: str) -> None:
    change, expected = BREAKS[case]
    assert expected in _rules(tmp_path, _broken(change))


def test_every_problem_is_named_at_once(tmp_path: Path) -> None:
    def several(p: Pack) -> None:
        p.services[0].update(department="highways")
        p.devices[1].update(lat=39.9, long=116.4)
        _area_of(p, "650101002001")["properties"].update(parent="650199")
        p.services[1].pop("sla_hours")               # one record breaking its contract hides nothing else

    rules = {r for _f, _w, r in _rules(tmp_path, _broken(several))}
    assert {"unknown-department", "outside-city", "unknown-parent", "required"} <= rules


def test_a_file_that_is_not_utf8_or_missing_is_named(tmp_path: Path) -> None:
    small_city().write(tmp_path)
    (tmp_path / "departments.jsonl").write_bytes("\n".join(json.dumps(d, ensure_ascii=False) for d in small_city().departments)
                                                 .encode("gb18030"))
    (tmp_path / "routing.jsonl").unlink()
    pack, problems = check_pack(tmp_path)
    assert pack is None
    assert {(p.file, p.rule) for p in problems} == {("departments.jsonl", "encoding"), ("routing.jsonl", "missing-file")}
    assert "UTF-8" in next(p.fix for p in problems if p.rule == "encoding")


def test_a_broken_line_is_named_and_the_rest_still_checked(tmp_path: Path) -> None:
    small_city().write(tmp_path)
    with open(tmp_path / "services.jsonl", "a", encoding="utf-8") as f:
        f.write('{"service_code": "x.y", "name": \n')
    (tmp_path / "devices.csv").write_text("device_id,device_type,owner_department,lat,long\nlj-1,noise,roads,north,87.1\n",
                                          encoding="utf-8")
    _pack, problems = check_pack(tmp_path)
    found = {(p.file, p.where, p.rule) for p in problems}
    assert ("services.jsonl", "line 3", "json-syntax") in found and ("devices.csv", "line 2", "type") in found


def test_the_city_on_the_reference_topics_exports_as_the_pack_it_was_imported_from(tmp_path: Path, contracts) -> None:  # type: ignore[no-untyped-def]
    """``city export`` is the inverse of the import: the records read back make the same pack, which passes."""
    from citybrain.city.pack_export import pack_of_records

    pack = small_city()
    records = reference_records(pack, "2026-12-01T00:00:00Z")
    exported = pack_of_records(lambda topic: [r for _w, r in records[topic]])
    assert exported.manifest == pack.manifest
    key = lambda f: f["properties"]["code"]  # noqa: E731
    assert sorted(exported.areas, key=key) == sorted(pack.areas, key=key)
    assert sorted(exported.routing, key=lambda r: r["rule_id"]) == sorted(pack.routing, key=lambda r: r["rule_id"])
    assert {d["device_id"]: d for d in exported.devices}["ln-0001"]["street_code"] == "650101001"   # placed on import
    assert _rules(tmp_path, exported) == []
    again = reference_records(exported, "2026-12-02T00:00:00Z")
    strip = lambda rs: sorted(json.dumps({k: v for k, v in r.items() if k not in ("updated_at", "effective_from")},  # noqa: E731
                                         sort_keys=True, ensure_ascii=False) for _w, r in rs)
    assert all(strip(again[t]) == strip(records[t]) for t in records)   # re-imported, nothing would change


def test_leaving_out_an_area_or_service_that_open_tickets_refer_to_is_named_with_the_tickets() -> None:
    from citybrain.city.pack_import import AREAS, SERVICES, removal_problems

    records = reference_records(small_city(), "2026-12-01T00:00:00Z")
    areas = {r["area_code"]: r for _w, r in records[AREAS]}
    removed = {AREAS: [areas["650102001002"]], SERVICES: [r for _w, r in records[SERVICES] if r["service_code"] == "river.flood"]}
    tickets = [{"service_request_id": "T1", "service_code": "roads.pothole", "lat": 43.05, "long": 87.27},   # in 沙洲社区
               {"service_request_id": "T2", "service_code": "river.flood", "lat": 43.05, "long": 87.05},
               {"service_request_id": "T3", "service_code": "roads.pothole", "lat": 43.05, "long": 87.05}]  # elsewhere
    problems = removal_problems(removed, areas, tickets)
    assert [(p.file, p.where, p.rule) for p in problems] == [
        ("areas.geojson", "650102001002", "removed-but-referenced"), ("services.jsonl", "river.flood", "removed-but-referenced")]
    assert "T1" in problems[0].message and "T2" in problems[1].message and "--force" in problems[0].fix
    assert removal_problems(removed, areas, [tickets[2]]) == []          # nothing refers to them: they may go


def test_a_withdrawn_area_resolves_no_position_and_a_withdrawn_rule_routes_nothing(contracts) -> None:  # type: ignore[no-untyped-def]
    from citybrain.fusion.dispatch import Dispatcher
    from citybrain.geo import AreaIndex
    from citybrain.access.privacy import Protector

    records = reference_records(small_city(), "2026-12-01T00:00:00Z")
    areas = [r for _w, r in records["raw.ref.admin_area.v1"]]
    assert AreaIndex.from_records(areas).resolve(87.27, 43.05).community.code == "650102001002"
    withdrawn = areas + [{**a, "status": "withdrawn"} for a in areas if a["area_code"] == "650102001002"]
    assert AreaIndex.from_records(withdrawn).resolve(87.27, 43.05).community is None
    rules = {r["rule_id"]: r for _w, r in records["raw.ref.routing_rule.v1"]}
    d = Dispatcher(Protector.ephemeral(), contracts["raw.hotline.service_request.v1"], rules)
    assert d.event_rule("flood")["department"] == "water"
    d.update_rule({**rules["event.flood"], "status": "withdrawn"})
    with pytest.raises(LookupError, match="event.flood"):
        d.event_rule("flood")


def test_a_packs_postal_codes_and_languages_reach_the_city_record_and_export_back(tmp_path: Path, contracts) -> None:  # type: ignore[no-untyped-def]
    """Declared: on raw.ref.city and back in the exported manifest; left out: the record as before (six digits, zh)."""
    from citybrain.city.pack_export import pack_of_records

    pack = small_city()
    pack.manifest.update(postal_code_pattern="^[0-9]{5}(-[0-9]{4})?$", languages=["en", "es"])
    assert _rules(tmp_path, pack) == [] and contract_problems(pack, contracts) == []
    records = reference_records(pack, "2026-12-01T00:00:00Z")
    city = records["raw.ref.city.v1"][0][1]
    assert (city["postal_code_pattern"], city["languages"]) == ("^[0-9]{5}(-[0-9]{4})?$", ["en", "es"])
    assert pack_of_records(lambda topic: [r for _w, r in records[topic]]).manifest == pack.manifest
    plain = reference_records(small_city(), "2026-12-01T00:00:00Z")["raw.ref.city.v1"][0][1]
    assert not {"postal_code_pattern", "languages"} & set(plain)


def test_a_packs_assessment_weights_reach_the_city_record_and_export_back(tmp_path: Path, contracts) -> None:  # type: ignore[no-untyped-def]
    """Declared: on raw.ref.city (1.4.0) and back in the exported manifest, weights adding up to 1 in floating point
    taken; left out: no assessment on the record (the datasets weigh 0.3, 0.4, 0.3)."""
    from citybrain.city.pack_export import pack_of_records

    pack = small_city()
    pack.manifest.update(assessment={"weights": {"response": 0.1, "resolution": 0.45, "satisfaction": 0.45}})
    assert _rules(tmp_path, pack) == [] and contract_problems(pack, contracts) == []
    records = reference_records(pack, "2026-12-07T00:00:00Z")
    assert records["raw.ref.city.v1"][0][1]["assessment"] == pack.manifest["assessment"]
    assert pack_of_records(lambda topic: [r for _w, r in records[topic]]).manifest == pack.manifest
    assert "assessment" not in reference_records(small_city(), "2026-12-07T00:00:00Z")["raw.ref.city.v1"][0][1]


def test_a_packs_reporting_deadlines_reach_the_city_record_and_export_back(tmp_path: Path, contracts) -> None:  # type: ignore[no-untyped-def]
    """Declared: on raw.ref.city (1.5.0), as the view's urges and whistles count them, and back in the exported
    manifest; left out: none on the record, and the view counts 1 h, 24 h, 3 or 5 working days."""
    from citybrain.city.pack_export import pack_of_records
    from citybrain.city.reporting import Reporting

    pack = small_city()
    pack.manifest.update(reporting={"sign_hours": 0.5, "contact_hours": 12, "report_working_days": {"simple": 2}})
    assert _rules(tmp_path, pack) == [] and contract_problems(pack, contracts) == []
    records = reference_records(pack, "2026-12-07T00:00:00Z")
    city = records["raw.ref.city.v1"][0][1]
    assert city["reporting"] == pack.manifest["reporting"]
    assert Reporting.from_city(city) == Reporting(0.5, 12.0, (("simple", 2), ("complex", 5)))
    assert pack_of_records(lambda topic: [r for _w, r in records[topic]]).manifest == pack.manifest
    plain = reference_records(small_city(), "2026-12-07T00:00:00Z")["raw.ref.city.v1"][0][1]
    assert "reporting" not in plain and Reporting.from_city(plain) == Reporting()
