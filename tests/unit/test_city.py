"""The simulated city: deterministic, plausible, and its parts agree with its own polygons."""

from __future__ import annotations

import random

from citybrain.sim.city import build_city
from citybrain.city.catalogue import SERVICES, department_remits, routing_rules
from citybrain.sim.reference import reference_records
from citybrain.contracts.validate import RecordValidator
from citybrain.contracts.departments import DEPARTMENTS
from citybrain.geo import Area, AreaIndex, bearing_deg, point_in_geometry

CITY = build_city(7)


def test_same_seed_same_city_other_seed_other_city() -> None:
    again = build_city(7)
    assert [s.geometry for s in again.streets] == [s.geometry for s in CITY.streets]
    assert [(d.device_id, d.lon, d.lat) for d in again.devices] == [(d.device_id, d.lon, d.lat) for d in CITY.devices]
    assert [s.geometry for s in build_city(8).streets] != [s.geometry for s in CITY.streets]


def test_city_has_the_size_the_issue_asks_for() -> None:
    assert len(CITY.districts) >= 10 and len(CITY.streets) >= 100
    assert len(CITY.devices) >= 2000 and len(CITY.roads) >= 300
    assert {d.device_type for d in CITY.devices} == {"air_quality", "noise", "traffic_flow", "water_level", "weather"}
    stations = CITY.devices_of("weather")        # one automatic weather station per district, inside it
    by_street = {s.code: s for s in CITY.streets}
    assert sorted(by_street[d.street_code].district_code for d in stations) == sorted(x.code for x in CITY.districts)
    assert all(CITY.index.resolve(d.lon, d.lat).street.code == d.street_code for d in stations)
    assert 5_000_000 < CITY.population < 20_000_000
    assert len({s.code for s in CITY.streets}) == len(CITY.streets)


def test_every_device_and_poi_lies_in_its_registered_street() -> None:
    index = CITY.index
    for d in CITY.devices:
        found = index.street_at(d.lon, d.lat)
        assert found is not None and found.code == d.street_code, d
    for p in CITY.pois:
        assert index.street_at(p.lon, p.lat).code == p.street_code, p  # type: ignore[union-attr]


def test_streets_tile_the_city_without_gaps_or_overlaps() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        lon, lat = rng.uniform(117.301, 117.707), rng.uniform(38.601, 38.842)
        inside = [s.code for s in CITY.streets if point_in_geometry(lon, lat, s.geometry)]
        assert len(inside) == 1, (lon, lat, inside)
        district = CITY.district(CITY.street(inside[0]).district_code)
        assert point_in_geometry(lon, lat, district.geometry)


def test_reference_records_satisfy_their_contracts(contracts) -> None:  # type: ignore[no-untyped-def]
    by_id = {c.id: c for c in contracts.values()}
    for contract_id, records in reference_records(CITY, "2026-11-23T00:00:00Z").items():
        check = RecordValidator(by_id[contract_id])
        problems = [(r, check(r)) for r in records if check(r)]
        assert not problems, problems[:2]


def test_every_service_and_event_category_routes_to_a_real_department() -> None:
    rules = routing_rules("2026-01-01T00:00:00Z")
    assert len({r["rule_id"] for r in rules}) == len(rules)
    for r in rules:
        assert r["department"] in DEPARTMENTS
        assert all(d in DEPARTMENTS for d in r.get("co_departments", []))
    remits = department_remits()
    assert "waterlogging" in remits["water"] and "flood" in remits["emergency"]
    assert len({s.service_code for s in SERVICES}) == len(SERVICES)


def test_area_index_respects_holes_and_says_none_outside() -> None:
    ring = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
    hole = [[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]]
    index = AreaIndex([Area("100000", "d", "district", None, {"type": "Polygon", "coordinates": [ring]}),
                       Area("100000001", "s", "street", "100000", {"type": "Polygon", "coordinates": [ring, hole]})])
    assert index.resolve(1, 1)[1].code == "100000001"  # type: ignore[index]
    assert index.street_at(5, 5) is None
    assert index.resolve(5, 5) == (index.areas["100000"], None, None, None)   # the street's hole: its district only
    assert index.street_at(11, 5) is None and index.resolve(11, 5) is None


def test_neighbours_share_a_border_or_a_sliver_of_one_and_not_a_district() -> None:
    """The way a plume spreads (fusion's air cases): streets touching, or a few metres apart as boundaries digitised
    department by department are, are neighbours; a street two away is not, nor an area of another level."""
    def box(x0: float, x1: float) -> dict:  # type: ignore[type-arg]
        return {"type": "Polygon", "coordinates": [[[x0, 0], [x1, 0], [x1, 0.01], [x0, 0.01], [x0, 0]]]}
    index = AreaIndex([Area("1", "d", "district", None, box(0, 0.04)), Area("11", "a", "street", "1", box(0, 0.01)),
                       Area("12", "b", "street", "1", box(0.01, 0.02)),
                       Area("13", "c", "street", "1", box(0.02005, 0.03)),      # 5 m of sliver between b and c
                       Area("14", "e", "street", "1", box(0.0302, 0.04))])      # 20 m from c: not its neighbour
    assert [a.code for a in index.neighbours("11")] == ["12"]
    assert [a.code for a in index.neighbours("12")] == ["11", "13"]
    assert [a.code for a in index.neighbours("13")] == ["12"]
    assert index.neighbours("14") == [] and index.neighbours("1") == [] and index.neighbours("99") == []
    assert tuple(round(x, 6) for x in index.centre("12") or ()) == (0.015, 0.005) and index.centre("99") is None
    assert [round(bearing_deg(0, 0, *to)) for to in ((0, 1), (1, 0), (0, -1), (-1, 0))] == [0, 90, 180, 270]


def test_the_city_places_a_point_as_deep_as_its_areas_go_as_the_simulator_does() -> None:
    """Regression: the city's own index (districts to grids) places each device where the simulator's street
    says, down to its community and grid."""
    for d in CITY.devices[::5]:
        found = CITY.areas_at(d.lon, d.lat)
        assert found == CITY.areas_at(d.lon, d.lat, d.street_code) and set(found) == {"district", "street",
                                                                                       "community", "grid"}, d
    assert CITY.areas_at(121.5, 31.2) == {}
