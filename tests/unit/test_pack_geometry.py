"""Real boundaries in a city pack (``citybrain.city.geometry`` through ``pack_check``): Beijing's 16
districts as DataV exports them (GCJ-02, MultiPolygons, concave, shared borders, an exclave; see
tests/data/boundaries/README.md) check clean once the one invalid district is repaired the way its
problem says; every geometry rule fails on a pack built to break it, naming the file, the feature,
GEOS's reason or the measured area, and the fix."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import shapely
from shapely.geometry import mapping, shape

from citybrain.city import crs
from citybrain.city.crs import gcj02_to_bd09, gcj02_to_wgs84, geometry_to_wgs84
from citybrain.city.geometry import AREAS, DEFAULT_TOLERANCE_M2, area_m2
from citybrain.city.pack import Pack
from citybrain.city.pack_check import PackReport, check_pack, review_pack
from citybrain.city.pack_import import reference_records
from tests.unit.test_city_pack import small_city

DATA = Path(__file__).parents[1] / "data" / "boundaries" / "beijing-110000-gcj02.json"
#: Beijing's area, Beijing Municipal Bureau of Statistics (北京市统计局), km².
BEIJING_KM2 = 16_410.54
DONGCHENG, XICHENG, CHAOYANG, SHUNYI = "110101", "110102", "110105", "110113"


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def _geojson(geometry: shapely.Geometry) -> dict[str, Any]:
    g = mapping(geometry)
    return {"type": g["type"], "coordinates": _lists(g["coordinates"])}


def beijing_pack() -> Pack:
    """Beijing's districts as read from the file (GCJ-02), and nothing deeper: a pack that stops at districts.
    The file has no population, so each district says 0; the catalogue is 临江市's; two devices sit at the
    districts' DataV centres (GCJ-02, as a device register exported from Amap has them)."""
    doc = json.loads(DATA.read_text(encoding="utf-8"))
    areas = [{"type": "Feature", "geometry": f["geometry"],
              "properties": {"code": str(f["properties"]["adcode"]), "name": f["properties"]["name"], "level": "district",
                             "parent": None, "population": 0}} for f in doc["features"]]
    centre = {str(f["properties"]["adcode"]): f["properties"]["center"] for f in doc["features"]}
    city = small_city()
    devices = [{"device_id": "bj-0001", "device_type": "water_level", "owner_department": "water",
                "long": centre[DONGCHENG][0], "lat": centre[DONGCHENG][1]},
               {"device_id": "bj-0002", "device_type": "noise", "owner_department": "urban_management",
                "long": centre["110119"][0], "lat": centre["110119"][1]}]
    manifest = {"format": "citybrain.citypack/1", "version": "2026.1.0", "city": {"code": "1101", "name": "北京市"},
                "jurisdiction_id": "beijing.gov.cn", "timezone": "Asia/Shanghai", "geometry": {"crs": "GCJ-02"}}
    return Pack(manifest, areas, city.departments, city.services, city.routing, devices)


def _area(pack: Pack, code: str) -> dict[str, Any]:
    return next(f for f in pack.areas if f["properties"]["code"] == code)


def repaired(pack: Pack) -> Pack:
    """The fix the invalid district's problem names, applied in the file's own coordinates."""
    f = _area(pack, SHUNYI)
    f["geometry"] = _geojson(shapely.orient_polygons(shapely.make_valid(shape(f["geometry"]), method="structure")))
    return pack


def _review(tmp_path: Path, pack: Pack) -> PackReport:
    pack.write(tmp_path)
    report = review_pack(tmp_path)
    for p in report.problems:
        assert p.fix and p.message, p
    return report


def _rules(report: PackReport) -> list[tuple[str, str, str]]:
    return [(p.file, p.where, p.rule) for p in report.problems]


def test_real_districts_with_shared_borders_raise_no_overlap_or_gap_only_the_invalid_one(tmp_path: Path) -> None:
    """Regression: the probe points of the old check fell into concave neighbours (32 false overlaps) and it
    never saw 顺义区's invalid MultiPolygon; measured by GEOS, shared borders overlap by nothing."""
    report = _review(tmp_path, beijing_pack())
    assert _rules(report) == [(AREAS, f"feature 10 ({SHUNYI})", "polygon-self-intersection")]
    problem = report.problems[0]
    # GEOS's reason and where, given back in the file's own GCJ-02: on an edge the two parts share
    at = [float(v) for v in problem.message.split("Self-intersection at (")[1].split(") in GCJ-02")[0].split(", ")]
    first, second = shapely.get_parts(shape(_area(beijing_pack(), SHUNYI)["geometry"]))
    assert first.intersection(second).distance(shapely.Point(at)) < 1e-5
    assert "two of its parts share an edge" in problem.message           # not "a ring crosses itself": it does not
    assert 'make_valid(geometry, method="structure")' in problem.fix and "hole" in problem.fix


def test_the_fix_it_names_clears_it_and_leaves_a_hole_and_an_exclave_converted_to_wgs84(tmp_path: Path,
                                                                                         contracts) -> None:  # type: ignore[no-untyped-def]
    report = _review(tmp_path, repaired(beijing_pack()))
    assert report.problems == []
    assert report.pack is not None
    shunyi, chaoyang = (shape(_area(report.pack, c)["geometry"]) for c in (SHUNYI, CHAOYANG))
    assert shunyi.geom_type == "Polygon" and len(shunyi.interiors) == 1       # the hole of the airport exclave ...
    assert chaoyang.geom_type == "MultiPolygon" and len(chaoyang.geoms) == 2  # ... which is 朝阳区's island
    assert shapely.Polygon(shunyi.interiors[0]).equals(chaoyang.geoms[1])
    # the checked pack is in WGS84: each of the file's positions converted by the published GCJ-02 transform, to
    # 7 decimals, its edges the shift bends split first
    raw = np.array(json.loads(DATA.read_text(encoding="utf-8"))["features"][0]["geometry"]["coordinates"][0][0])
    ring = np.array(_area(report.pack, DONGCHENG)["geometry"]["coordinates"][0][0])
    assert {tuple(p) for p in np.round(gcj02_to_wgs84(raw), 7)} <= {tuple(p) for p in ring} and len(ring) > len(raw)
    assert report.pack.manifest["geometry"]["crs"] == "WGS84"
    records = reference_records(report.pack, "2026-12-01T00:00:00Z")             # what the import publishes
    published = {r["area_code"]: r for _w, r in records["raw.ref.admin_area.v1"]}
    assert published[DONGCHENG]["geometry"] == _area(report.pack, DONGCHENG)["geometry"]
    # the districts tile Beijing: 16,407 km², as the statistics bureau's 16,410.54 km² within 0.1%
    total = sum(area_m2(shape(f["geometry"])) for f in report.pack.areas) / 1e6
    assert total == pytest.approx(BEIJING_KM2, rel=1e-3)


def test_a_converted_pack_is_published_at_seven_decimals_about_the_size_of_its_file(tmp_path: Path) -> None:
    """Regression: converted boundaries were published at a double's 17 digits and with every edge split to 500 m,
    3.3 times the size of the file they came from; a full-resolution district could pass the 256 KiB record
    limit. At 7 decimals (1 cm), split only where the shift bends an edge, Beijing's districts come out 1.21 times
    their file's size, and still check clean: each shared border is the same on both sides."""
    pack = repaired(beijing_pack())
    report = _review(tmp_path / "in", pack)
    assert report.problems == [] and report.pack is not None
    report.pack.write(tmp_path / "out")
    ratio = (tmp_path / "out" / AREAS).stat().st_size / (tmp_path / "in" / AREAS).stat().st_size
    assert 1.0 < ratio < 1.3
    coordinates = np.concatenate([shapely.get_coordinates(shape(f["geometry"])) for f in report.pack.areas])
    assert (np.round(coordinates, 7) == coordinates).all()
    assert all(shape(f["geometry"]).is_valid for f in report.pack.areas)
    dongcheng, xicheng = (shape(_area(report.pack, c)["geometry"]) for c in (DONGCHENG, XICHENG))
    border = dongcheng.intersection(xicheng)
    assert border.area == 0 and border.length > 0.05                # ~6 km of shared border, and no sliver


def test_each_area_is_converted_once_and_measured_as_published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """Regression: the check converted every area to WGS84 twice, for the pack and again to measure it."""
    pack = repaired(beijing_pack())
    pack.write(tmp_path)
    converted: list[str] = []
    real = crs.split_edges       # the first step of every conversion of a geometry, whoever asks for it

    def counted(geometry: shapely.Geometry, system: str) -> shapely.Geometry:
        converted.append(system)
        return real(geometry, system)

    monkeypatch.setattr(crs, "split_edges", counted)
    assert review_pack(tmp_path).problems == []
    assert converted == ["GCJ-02"] * len(pack.areas)


def test_positions_of_more_than_three_numbers_are_converted_too(tmp_path: Path) -> None:
    """GEOS reads no more than three numbers a position; a district written with four is still converted (it was
    left in GCJ-02, 550 m off its neighbours) and the pack checks clean."""
    pack = repaired(beijing_pack())
    f = _area(pack, DONGCHENG)
    f["geometry"]["coordinates"] = [[[[*p, 44.0, 0.0] for p in ring] for ring in part]
                                    for part in f["geometry"]["coordinates"]]
    report = _review(tmp_path, pack)
    assert report.problems == [] and report.pack is not None
    clean = _review(tmp_path / "clean", repaired(beijing_pack())).pack
    assert clean is not None and _area(report.pack, DONGCHENG)["geometry"] == _area(clean, DONGCHENG)["geometry"]


def test_a_pack_that_stops_at_districts_passes_with_notes_on_what_it_forgoes(tmp_path: Path) -> None:
    report = _review(tmp_path, repaired(beijing_pack()))
    assert report.problems == []
    assert check_pack(tmp_path)[1] == []                     # the callers of check_pack see a passing pack
    notes = {n.rule: n for n in report.notes}
    assert set(notes) == {"depth", "escalation-levels"}
    assert "stops at districts" in notes["depth"].message and "no street, community or grid dispatch" in notes["depth"].message
    assert "through street, community" in notes["escalation-levels"].message   # 临江市's pothole rule escalates so


def test_bd09_coordinates_are_converted_like_the_same_boundaries_in_gcj02(tmp_path: Path) -> None:
    gcj = _review(tmp_path / "gcj", repaired(beijing_pack())).pack
    pack = repaired(beijing_pack())
    pack.manifest["geometry"] = {"crs": "BD-09"}
    for f in pack.areas:
        f["geometry"] = _geojson(shapely.transform(shape(f["geometry"]), gcj02_to_bd09))
    for d in pack.devices:
        (d["long"], d["lat"]), = gcj02_to_bd09(np.array([[d["long"], d["lat"]]])).tolist()
    report = _review(tmp_path / "bd", pack)
    assert report.problems == []
    assert gcj is not None and report.pack is not None
    # the same positions (straight BD-09 edges are not straight in GCJ-02, by up to 2 m: only vertices, and areas
    # to 0.1%, compare)
    assert np.allclose([d["long"] for d in gcj.devices], [d["long"] for d in report.pack.devices], atol=1e-8, rtol=0)
    for a, b in zip(gcj.areas, report.pack.areas):
        assert np.allclose(a["geometry"]["coordinates"][0][0][0], b["geometry"]["coordinates"][0][0][0],
                           atol=1.01e-7, rtol=0)                 # both rounded to 7 decimals: one step apart at most
        assert area_m2(shape(a["geometry"])) == pytest.approx(area_m2(shape(b["geometry"])), rel=1e-3)


def _break(change: Callable[[Pack], None]) -> Pack:
    pack = repaired(beijing_pack())
    change(pack)
    return pack


def _crossing(pack: Pack) -> None:
    """Two neighbouring vertices of 东城区's outline swapped: its ring crosses itself there."""
    ring = _area(pack, DONGCHENG)["geometry"]["coordinates"][0][0]
    ring[5], ring[6] = ring[6], ring[5]


def _shifted(pack: Pack, code: str, dlon: float) -> None:
    f = _area(pack, code)
    f["geometry"] = _geojson(shapely.transform(shape(f["geometry"]), lambda xy: xy + [dlon, 0.0]))


def test_a_self_intersecting_ring_is_named_with_geos_reason_and_place(tmp_path: Path) -> None:
    pack = _break(_crossing)
    ring = _area(pack, DONGCHENG)["geometry"]["coordinates"][0][0]
    report = _review(tmp_path, pack)
    assert (AREAS, f"feature 1 ({DONGCHENG})", "polygon-self-intersection") in _rules(report)
    problem = next(p for p in report.problems if p.rule == "polygon-self-intersection")
    at = [float(v) for v in problem.message.split("Self-intersection at (")[1].split(")")[0].split(", ")]
    assert min(math.dist(at, p) for p in ring[4:8]) < 0.005      # where the swapped vertices are, in GCJ-02
    assert "a ring crosses itself" in problem.message and "make_valid" in problem.fix


def test_a_district_moved_onto_its_neighbour_is_an_overlap_measured_in_square_metres(tmp_path: Path) -> None:
    report = _review(tmp_path, _break(lambda p: _shifted(p, XICHENG, 0.004)))   # 西城区 ~340 m east
    overlap = next(p for p in report.problems if p.rule == "overlap" and XICHENG in p.message
                   and DONGCHENG in p.message)
    assert overlap.where == f"feature 1 ({DONGCHENG})" and overlap.area_m2 is not None
    # the same overlap measured another way: WGS84 degrees² scaled by the local metres per degree
    east = geometry_to_wgs84(shape(_area(_break(lambda p: _shifted(p, XICHENG, 0.004)), XICHENG)["geometry"]), "GCJ-02")
    dongcheng = geometry_to_wgs84(shape(_area(repaired(beijing_pack()), DONGCHENG)["geometry"]), "GCJ-02")
    shared = east.intersection(dongcheng)
    lat = math.radians(shared.centroid.y)
    m_per_deg_lat = 111_132.954 - 559.822 * math.cos(2 * lat)
    m_per_deg_lon = 111_412.84 * math.cos(lat) - 93.5 * math.cos(3 * lat)
    assert overlap.area_m2 == pytest.approx(shared.area * m_per_deg_lat * m_per_deg_lon, rel=2e-3)
    assert f"{overlap.area_m2:,.0f} m²" in overlap.message and "ogr2ogr -makevalid" in overlap.fix
    gap = next(p for p in report.problems if p.rule == "gap")    # and the land it left is enclosed by no district
    assert gap.where == "" and gap.area_m2 is not None and gap.area_m2 > DEFAULT_TOLERANCE_M2


def test_the_manifest_tolerance_decides_what_overlap_is_a_problem(tmp_path: Path) -> None:
    def nudged(pack: Pack) -> None:
        _shifted(pack, XICHENG, 0.00002)                           # ~1.7 m: a sliver along the shared border
    measured = [p.area_m2 for p in _review(tmp_path / "strict", _break(nudged)).problems if p.rule == "overlap"]
    assert measured and all(a is not None and a > DEFAULT_TOLERANCE_M2 for a in measured)
    loose = _break(nudged)
    loose.manifest["geometry"]["tolerance_m2"] = max(a for a in measured if a is not None) + 1
    assert not [p for p in _review(tmp_path / "loose", loose).problems if p.rule == "overlap"]


def test_an_exported_pack_needs_the_tolerance_it_was_imported_with_carried_over(tmp_path: Path) -> None:
    """``raw.ref.city`` keeps no ``geometry``: a city imported with a tolerance above the default exports without
    it and fails the check, until the manifest's ``geometry`` block is carried over (as the docs say to)."""
    from citybrain.city.pack_export import pack_of_records

    loose = _break(lambda p: _shifted(p, XICHENG, 0.00002))
    measured = [p.area_m2 or 0.0 for p in _review(tmp_path / "strict", copy.deepcopy(loose)).problems]
    loose.manifest["geometry"]["tolerance_m2"] = max(measured) + 10
    imported = _review(tmp_path / "loose", loose)
    assert imported.problems == [] and imported.pack is not None
    records = reference_records(imported.pack, "2026-12-01T00:00:00Z")
    exported = pack_of_records(lambda topic: [r for _w, r in records.get(topic, [])])
    assert "geometry" not in exported.manifest
    assert {p.rule for p in _review(tmp_path / "exported", exported).problems} == {"overlap", "gap"}   # slivers
    exported.manifest["geometry"] = {"tolerance_m2": loose.manifest["geometry"]["tolerance_m2"]}
    assert _review(tmp_path / "carried", exported).problems == []


def test_streets_of_a_real_district_are_measured_against_it(tmp_path: Path) -> None:
    """东城区 cut into two streets: inside their parent and covering it; one street pushed out and away is
    named outside its parent, and the hole it left a gap of its parent, both in square metres."""
    def streets(pack: Pack, dlon: float = 0.0) -> None:
        district = shape(_area(pack, DONGCHENG)["geometry"])
        x0, y0, x1, y1 = district.bounds
        halves = [district.intersection(shapely.box(x0 - 1, y0 - 1, (x0 + x1) / 2, y1 + 1)),
                  district.intersection(shapely.box((x0 + x1) / 2, y0 - 1, x1 + 1, y1 + 1))]
        halves[1] = shapely.transform(halves[1], lambda xy: xy + [dlon, 0.0])
        for k, half in enumerate(halves, 1):
            pack.areas.append({"type": "Feature", "geometry": _geojson(half),
                               "properties": {"code": f"{DONGCHENG}00{k}", "name": f"第{k}街道", "level": "street",
                                              "parent": DONGCHENG, "population": 0}})

    fits = _review(tmp_path / "fits", _break(streets))
    assert fits.problems == []
    depth = [n.message for n in fits.notes if n.rule == "depth"]    # a pack as deep as streets in one district only
    assert any(m.startswith("the pack stops at streets") for m in depth)
    assert any(m.startswith("15 district(s) have no street areas while others do") for m in depth)
    report = _review(tmp_path / "out", _break(lambda p: streets(p, 0.01)))
    rules = _rules(report)
    assert (AREAS, f"feature 18 ({DONGCHENG}002)", "outside-parent") in rules
    assert (AREAS, f"feature 1 ({DONGCHENG})", "gap") in rules
    outside = next(p for p in report.problems if p.rule == "outside-parent")
    assert outside.area_m2 is not None and outside.area_m2 > 1e5 and "outside its parent 110101" in outside.message


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "a hole outside its shell": ({"type": "Polygon", "coordinates": [
        [[116.0, 40.0], [116.01, 40.0], [116.01, 40.01], [116.0, 40.01], [116.0, 40.0]],
        [[116.02, 40.02], [116.03, 40.02], [116.03, 40.03], [116.02, 40.03], [116.02, 40.02]]]},
        "polygon-hole-outside-shell"),
    "a part inside another part": ({"type": "MultiPolygon", "coordinates": [
        [[[116.0, 40.0], [116.03, 40.0], [116.03, 40.03], [116.0, 40.03], [116.0, 40.0]]],
        [[[116.01, 40.01], [116.02, 40.01], [116.02, 40.02], [116.01, 40.02], [116.01, 40.01]]]]},
        "polygon-nested-shells"),
    "a hole cutting the area in two": ({"type": "Polygon", "coordinates": [
        [[116.0, 40.0], [116.04, 40.0], [116.04, 40.04], [116.0, 40.04], [116.0, 40.0]],
        [[116.02, 40.0], [116.03, 40.02], [116.02, 40.04], [116.01, 40.02], [116.02, 40.0]]]},
        "polygon-disconnected-interior"),
    "repeated positions leaving a line": ({"type": "Polygon", "coordinates": [
        [[116.0, 40.0], [116.01, 40.01], [116.01, 40.01], [116.0, 40.0]]]}, "polygon-too-few-points"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_each_kind_of_invalid_polygon_is_named_by_its_reason(tmp_path: Path, case: str) -> None:
    geometry, rule = INVALID[case]
    pack = small_city()
    pack.manifest["city"]["code"] = "9901"
    pack.areas.append({"type": "Feature", "geometry": copy.deepcopy(geometry),
                       "properties": {"code": "990199", "name": "飞地区", "level": "district", "parent": None,
                                      "population": 0}})
    report = _review(tmp_path, pack)
    assert (AREAS, "feature 12 (990199)", rule) in _rules(report)


def test_clockwise_rings_are_a_note_not_a_problem(tmp_path: Path) -> None:
    pack = repaired(beijing_pack())
    for f in pack.areas:
        f["geometry"] = _geojson(shapely.orient_polygons(shape(f["geometry"]), exterior_cw=True))
    report = _review(tmp_path, pack)
    assert report.problems == []
    note = next(n for n in report.notes if n.rule == "ring-orientation")
    assert note.message.startswith("16 area(s)") and "orient_polygons" in note.fix


def test_areas_are_measured_on_the_ellipsoid_and_a_sliver_on_one_edge_is_nothing() -> None:
    # a 1° cell: the closed form a²/2 · Δλ · (q(φ2) - q(φ1)) of the WGS84 ellipsoid, 9,549.52 km² at 39-40°N
    assert area_m2(shapely.box(116, 39, 117, 40)) / 1e6 == pytest.approx(9_549.52, abs=0.01)
    # a hole is taken off, parts are added
    ring = shapely.box(116, 39, 117, 40)
    holed = shapely.Polygon(ring.exterior.coords, [shapely.box(116.25, 39.25, 116.75, 39.75).exterior.coords])
    assert area_m2(holed) == pytest.approx(area_m2(ring) - area_m2(shapely.box(116.25, 39.25, 116.75, 39.75)))
    # three positions on one straight longitude/latitude edge 3 km long enclose nothing (a projection says ~200 m²)
    sliver = shapely.Polygon([(117.639112, 38.68353), (117.6560115, 38.6841925), (117.672911, 38.684855)])
    assert area_m2(sliver) < 1e-3
