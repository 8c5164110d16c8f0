"""GCJ-02 and BD-09, the systems of Chinese map exports, to WGS84 and back (``citybrain.city.crs``).

Reference values are the ones the npm package coordtransform (2.1.2, MIT) publishes in its README for
(116.404, 39.915). Its forward transforms are the published ones, so ours must match them to 1e-9°
(0.1 mm). Its inverses are the one-step approximations, which ours (iterated to 1e-9°) must match to
1e-6° (0.1 m), the size of their error. Round trips must close to 1e-8° (1 mm)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from citybrain.city import crs

TIANANMEN = np.array([[116.404, 39.915]])
PUBLISHED = {   # coordtransform's README: function of (116.404, 39.915) -> [lon, lat]
    "wgs84togcj02": [116.41024449916938, 39.91640428150164],
    "gcj02tobd09": [116.41036949371029, 39.92133699351021],
    "gcj02towgs84": [116.39775550083061, 39.91359571849836],
    "bd09togcj02": [116.39762729119315, 39.90865673957631],
}
#: Positions across China (Urumqi, Harbin, Lhasa, Sanya, Shanghai, a Beijing district corner) and two
#: outside the GCJ-02 box (Moscow, London).
PLACES = np.array([[87.6168, 43.8256], [126.5350, 45.8038], [91.1409, 29.6456], [109.5120, 18.2528],
                   [121.4737, 31.2304], [116.44364, 39.87284], [37.6173, 55.7558], [-0.1276, 51.5072]])


def test_forward_transforms_match_the_published_values() -> None:
    assert crs.wgs84_to_gcj02(TIANANMEN)[0] == pytest.approx(PUBLISHED["wgs84togcj02"], abs=1e-9)
    assert crs.gcj02_to_bd09(TIANANMEN)[0] == pytest.approx(PUBLISHED["gcj02tobd09"], abs=1e-9)


def test_inverse_transforms_agree_with_the_published_one_step_inverses_to_their_error() -> None:
    assert crs.gcj02_to_wgs84(TIANANMEN)[0] == pytest.approx(PUBLISHED["gcj02towgs84"], abs=1e-6)
    assert crs.bd09_to_gcj02(TIANANMEN)[0] == pytest.approx(PUBLISHED["bd09togcj02"], abs=1e-6)
    # and they are exact inverses of the forward transforms, which the one-step ones are not
    assert crs.wgs84_to_gcj02(crs.gcj02_to_wgs84(TIANANMEN)) == pytest.approx(TIANANMEN, abs=1e-9)
    one_step = np.array([PUBLISHED["gcj02towgs84"]])
    assert np.abs(crs.wgs84_to_gcj02(one_step) - TIANANMEN).max() > 1e-7


@pytest.mark.parametrize("system", [crs.GCJ02, crs.BD09])
def test_round_trips_close_across_china(system: str) -> None:
    there = crs.from_wgs84(PLACES, system)
    assert crs.to_wgs84(there, system) == pytest.approx(PLACES, abs=1e-8)
    shift_m = np.hypot(*(there - PLACES).T * [[85_000], [111_000]])  # rough metres per degree
    assert (shift_m[:6] > 50).all()                                    # inside China: shifted ...
    assert (shift_m[:6] < 1_500).all()                                 # ... by hundreds of metres


def test_outside_china_gcj02_is_wgs84() -> None:
    assert crs.wgs84_to_gcj02(PLACES[6:]) == pytest.approx(PLACES[6:], abs=0)
    assert crs.gcj02_to_wgs84(PLACES[6:]) == pytest.approx(PLACES[6:], abs=0)


def test_a_geometry_is_converted_vertex_by_vertex_keeping_its_parts_and_holes() -> None:
    outer = shapely.box(116.3, 39.8, 116.5, 40.0)
    holed = shapely.Polygon(outer.exterior.coords, [shapely.box(116.35, 39.85, 116.4, 39.9).exterior.coords])
    multi = shapely.MultiPolygon([holed, shapely.box(116.6, 39.8, 116.7, 39.9)])
    converted = crs.geometry_to_wgs84(multi, crs.GCJ02)
    assert converted.geom_type == "MultiPolygon" and len(converted.geoms[0].interiors) == 1
    # every vertex converted as a point is one of the geometry's; its edges were split to 0.005° first
    vertices = {tuple(v) for v in shapely.get_coordinates(converted)}
    assert {tuple(v) for v in crs.gcj02_to_wgs84(shapely.get_coordinates(multi))} <= vertices
    assert len(shapely.get_coordinates(converted)) >= 4 * (40 + 10 + 20) + 3      # 0.2°, 0.05°, 0.1° edges
    assert crs.geometry_to_wgs84(multi, crs.WGS84) is multi


def test_an_edge_shared_by_two_areas_is_split_at_the_same_points_whichever_way_they_run() -> None:
    west, east = shapely.box(116.3, 39.8, 116.4, 39.9), shapely.box(116.4, 39.8, 116.5, 39.9)
    a, b = (crs.geometry_to_wgs84(g, crs.GCJ02) for g in (west, east))
    on_border = lambda g: {tuple(v) for v in shapely.get_coordinates(g) if abs(v[0] - a.bounds[2]) < 1e-3}  # noqa: E731
    assert len(on_border(a)) >= 21 and on_border(a) == on_border(b)
    assert a.intersection(b).area == 0


def test_a_vertex_on_a_long_edge_stays_on_it() -> None:
    """A street's corner halfway along its district's 0.1° (~9 km) edge in Beijing: converted without splitting
    the edge, the shift bends it by 5 m and leaves a sliver; split first, the corner stays on it within 3 cm."""
    district = shapely.box(116.4, 39.8, 116.5, 39.9)
    corner = shapely.Point(crs.gcj02_to_wgs84(np.array([[116.45, 39.9]]))[0])
    split = crs.geometry_to_wgs84(district, crs.GCJ02).exterior.distance(corner)
    assert split * 111_000 < 0.03
    unsplit = shapely.transform(district, crs.gcj02_to_wgs84).exterior.distance(corner)
    assert unsplit * 111_000 > 4


def test_an_unknown_system_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="CGCS2000.*WGS84, GCJ-02, BD-09"):
        crs.to_wgs84(TIANANMEN, "CGCS2000")
