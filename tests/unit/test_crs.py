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
    # every vertex converted as a point, to 7 decimals, is one of the geometry's; its bent edges were split first
    vertices = {tuple(v) for v in shapely.get_coordinates(converted)}
    assert {tuple(v) for v in np.round(crs.gcj02_to_wgs84(shapely.get_coordinates(multi)), 7)} <= vertices
    assert len(vertices) > len(shapely.get_coordinates(multi))
    assert crs.geometry_to_wgs84(multi, crs.WGS84) is multi


def test_converted_coordinates_have_seven_decimals_not_seventeen() -> None:
    """Regression: converted boundaries were published at a double's 17 digits, twice the size of their file."""
    coordinates = shapely.get_coordinates(crs.geometry_to_wgs84(shapely.box(116.3, 39.8, 116.4, 39.9), crs.GCJ02))
    assert (np.round(coordinates, crs.DECIMALS) == coordinates).all()
    assert max(len(repr(float(v)).split(".")[1]) for v in coordinates.ravel()) == 7


def test_rounding_that_would_make_a_geometry_invalid_snaps_it_valid_instead() -> None:
    """A hole 3 mm from its shell, 3e-8° off the 1e-7° grid: rounded on its own, its edge would lie on the
    shell's; GEOS snaps the polygon to the same grid keeping it valid."""
    x, y = 116.4, 39.9
    shell = np.array([[x, y], [x + 5e-4, y], [x + 5e-4, y + 5e-4], [x, y + 5e-4], [x, y]])
    hole = np.array([[x + 1e-4, y + 3e-8], [x + 2e-4, y + 1e-4], [x + 3e-4, y + 3e-8], [x + 1e-4, y + 3e-8]])
    wgs84 = shapely.Polygon(shell, [hole])
    assert wgs84.is_valid and not shapely.transform(wgs84, lambda xy: np.round(xy, 7)).is_valid
    in_gcj02 = shapely.transform(wgs84, crs.wgs84_to_gcj02)
    converted = crs.geometry_to_wgs84(in_gcj02, crs.GCJ02)
    assert converted.is_valid and converted.area == pytest.approx(wgs84.area, rel=1e-3)
    coordinates = shapely.get_coordinates(converted)
    assert np.abs(np.round(coordinates, 7) - coordinates).max() < 1e-12


def test_an_edge_shared_by_two_areas_is_split_at_the_same_points_whichever_way_they_run() -> None:
    south, north = shapely.box(116.3, 39.8, 116.4, 39.9), shapely.box(116.3, 39.9, 116.4, 40.0)
    a, b = (crs.geometry_to_wgs84(g, crs.GCJ02) for g in (south, north))
    border = crs.gcj02_to_wgs84(np.array([[116.35, 39.9]]))[0, 1]
    on_border = lambda g: {tuple(v) for v in shapely.get_coordinates(g) if abs(v[1] - border) < 1e-3}  # noqa: E731
    assert len(on_border(a)) > 2 and on_border(a) == on_border(b)
    assert a.intersection(b).area == 0


def test_a_long_edge_stays_within_the_bend_allowed_along_its_whole_length() -> None:
    """A 0.1° (~9 km) edge in Beijing: converted without splitting, the shift bends it by 2 m and leaves a sliver
    against a street's corner on it; split where bent, every point of it stays within 5.6 cm (BEND_DEG)."""
    district = shapely.box(116.4, 39.8, 116.5, 39.9)
    along = np.column_stack([np.linspace(116.4, 116.5, 201), np.full(201, 39.9)])
    points = shapely.points(crs.gcj02_to_wgs84(along))
    split = crs.geometry_to_wgs84(district, crs.GCJ02).exterior
    assert shapely.distance(split, points).max() * 111_000 < crs.BEND_DEG * 111_000 + 0.01   # + rounding's 1 cm
    unsplit = shapely.transform(district, crs.gcj02_to_wgs84).exterior
    assert shapely.distance(unsplit, points).max() * 111_000 > 1.5


def test_an_unknown_system_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="CGCS2000.*WGS84, GCJ-02, BD-09"):
        crs.to_wgs84(TIANANMEN, "CGCS2000")
