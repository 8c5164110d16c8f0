"""The coordinate systems of Chinese map exports, converted to the WGS84 that CityBrain keeps.

A city pack declares the system of its coordinates in ``manifest.json`` (``geometry.crs``):

- ``WGS84`` (EPSG:4326): GPS, OpenStreetMap, Tianditu (天地图, CGCS2000, the same within
  centimetres), GDAL/QGIS exports with ``-t_srs EPSG:4326``.
- ``GCJ-02`` (国测局坐标, "Mars coordinates"): AutoNavi/Amap (高德), Tencent maps, Aliyun
  DataV.GeoAtlas boundary exports; shifted from WGS84 by 100 to 700 m inside China.
- ``BD-09``: Baidu maps (百度), GCJ-02 shifted once more.

The forward transforms are the published ones (WGS84 -> GCJ-02 by the well-known series with
Krasovsky's ellipsoid; GCJ-02 -> BD-09 by Baidu's rotation and offset). Their inverses have no
closed form, so they are solved by fixed-point iteration to within 1e-9 degrees (0.1 mm), where the
widely copied one-step inverses leave centimetres (5e-7 degrees at Tiananmen). Outside China's published box
GCJ-02 and WGS84 are the same, as the published transform has it. Everything works on ``(n, 2)``
arrays of ``[lon, lat]`` and on shapely geometries through :func:`shapely.transform`, whose edges
are split first where the shift bends them by more than :data:`BEND_DEG`, so that what lies on an
edge stays on it. Converted geometries are published to :data:`DECIMALS` decimals (about 1 cm), not
at the 17 digits of a double: Beijing's 16 districts (6 decimals, GCJ-02) come out 1.2 times the
size of their file, where they came out 3.3 times with every edge split to 500 m at full precision.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import shapely

from citybrain.city.pack import Pack

log = logging.getLogger(__name__)

WGS84, GCJ02, BD09 = "WGS84", "GCJ-02", "BD-09"
SYSTEMS = (WGS84, GCJ02, BD09)
#: Krasovsky 1940, the ellipsoid of the published GCJ-02 transform.
_A = 6378245.0
_EE = 0.00669342162296594323
_X_PI = math.pi * 3000.0 / 180.0
#: Degrees of latitude (5.6 cm): the most a converted edge may stray from the curve the shift bends it into, half
#: the last digit of a 6-decimal export (what that export's own rounding already moves a vertex by). GCJ-02 bends
#: a straight edge of 500 m by up to 3 cm (median 4 mm), one of 0.1° by up to 10 m; an edge bent further than
#: this is split into as many equal pieces as keep each one within it.
BEND_DEG = 5e-7
#: Decimals of a converted coordinate: 1e-7° is about 1 cm, finer than any boundary a city draws.
DECIMALS = 7
#: Iterative inverses stop when a step moves less than this (degrees, about 0.1 mm).
INVERSE_EPS_DEG = 1e-9
_MAX_STEPS = 30
#: Rounds of measuring an edge's pieces and splitting it finer (one is nearly always enough).
_SPLIT_ROUNDS = 4

Transform = Callable[[np.ndarray], np.ndarray]


def _in_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The published GCJ-02 box: inside it coordinates are shifted, outside they are left as they are."""
    return (lon >= 72.004) & (lon <= 137.8347) & (lat >= 0.8293) & (lat <= 55.8271)


def _shift_lat(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    return ret


def _shift_lon(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    return ret


def wgs84_to_gcj02(xy: np.ndarray) -> np.ndarray:
    """WGS84 ``[lon, lat]`` rows to GCJ-02 (the published transform)."""
    xy = np.asarray(xy, dtype=float)
    lon, lat = xy[:, 0], xy[:, 1]
    dlat = _shift_lat(lon - 105.0, lat - 35.0)
    dlon = _shift_lon(lon - 105.0, lat - 35.0)
    rad = np.radians(lat)
    magic = 1 - _EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = dlat * 180.0 / ((_A * (1 - _EE)) / (magic * sqrt_magic) * np.pi)
    dlon = dlon * 180.0 / (_A / sqrt_magic * np.cos(rad) * np.pi)
    inside = _in_china(lon, lat)
    return np.column_stack([np.where(inside, lon + dlon, lon), np.where(inside, lat + dlat, lat)])


def gcj02_to_bd09(xy: np.ndarray) -> np.ndarray:
    """GCJ-02 ``[lon, lat]`` rows to BD-09 (Baidu's published rotation and offset)."""
    xy = np.asarray(xy, dtype=float)
    x, y = xy[:, 0], xy[:, 1]
    z = np.hypot(x, y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return np.column_stack([z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006])


def _inverse(forward: Transform, xy: np.ndarray) -> np.ndarray:
    """The point p with forward(p) == xy, by fixed-point iteration (each shift is small and smooth)."""
    target = np.asarray(xy, dtype=float)
    guess = target.copy()
    for _ in range(_MAX_STEPS):
        step = forward(guess) - target
        guess -= step
        if not len(step) or float(np.max(np.abs(step))) < INVERSE_EPS_DEG:
            break
    return guess


def gcj02_to_wgs84(xy: np.ndarray) -> np.ndarray:
    """GCJ-02 ``[lon, lat]`` rows to WGS84 (the exact inverse of :func:`wgs84_to_gcj02`, to 1e-9°)."""
    return _inverse(wgs84_to_gcj02, xy)


def bd09_to_gcj02(xy: np.ndarray) -> np.ndarray:
    """BD-09 ``[lon, lat]`` rows to GCJ-02 (the exact inverse of :func:`gcj02_to_bd09`, to 1e-9°)."""
    return _inverse(gcj02_to_bd09, xy)


def to_wgs84(xy: np.ndarray, crs: str) -> np.ndarray:
    """``[lon, lat]`` rows in ``crs`` (one of :data:`SYSTEMS`) to WGS84."""
    if crs == WGS84:
        return np.asarray(xy, dtype=float)
    if crs == GCJ02:
        return gcj02_to_wgs84(xy)
    if crs == BD09:
        return gcj02_to_wgs84(bd09_to_gcj02(xy))
    raise ValueError(f"coordinate system {crs!r} is not one CityBrain converts; use one of {', '.join(SYSTEMS)}.")


def from_wgs84(xy: np.ndarray, crs: str) -> np.ndarray:
    """WGS84 ``[lon, lat]`` rows to ``crs``: where a problem found in WGS84 lies in the pack's own file."""
    if crs == WGS84:
        return np.asarray(xy, dtype=float)
    if crs == GCJ02:
        return wgs84_to_gcj02(xy)
    if crs == BD09:
        return gcj02_to_bd09(wgs84_to_gcj02(xy))
    raise ValueError(f"coordinate system {crs!r} is not one CityBrain converts; use one of {', '.join(SYSTEMS)}.")


def _bend(a: np.ndarray, b: np.ndarray, crs: str) -> np.ndarray:
    """How far the shift bends each straight edge from ``a[i]`` to ``b[i]``, at its midpoint (degrees of latitude)."""
    w = to_wgs84(np.vstack([a, b, (a + b) / 2]), crs).reshape(3, len(a), 2)
    off = w[2] - (w[0] + w[1]) / 2
    return np.hypot(off[:, 0] * np.cos(np.radians(w[2][:, 1])), off[:, 1])


def _pieces(low: np.ndarray, high: np.ndarray, crs: str) -> np.ndarray:
    """Into how many equal pieces each edge from ``low[i]`` to ``high[i]`` is split so that none bends more than
    :data:`BEND_DEG`. A piece bends about ``1 / n²`` of its edge (the shift is smooth), which gives the first
    count; the pieces are then measured, and an edge with one still bent too far is split finer."""
    n = np.maximum(1, np.ceil(np.sqrt(_bend(low, high, crs) / BEND_DEG))).astype(int)
    todo = np.flatnonzero(n > 1)
    for _ in range(_SPLIT_ROUNDS):
        if not len(todo):
            break
        m = n[todo]
        edge = np.repeat(np.arange(len(todo)), m)
        k = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)         # 0 .. m-1 along each edge
        step = (high[todo] - low[todo])[edge] / m[edge][:, None]
        start = low[todo][edge] + k[:, None] * step
        worst = np.zeros(len(todo))
        np.maximum.at(worst, edge, _bend(start, start + step, crs))
        finer = worst > BEND_DEG
        n[todo[finer]] = np.ceil(m[finer] * np.sqrt(worst[finer] / BEND_DEG)).astype(int)
        todo = todo[finer]
    return n


def _split_ring(xy: np.ndarray, crs: str) -> np.ndarray:
    """A closed ring in ``crs`` with each edge the shift bends by more than :data:`BEND_DEG` split into equal pieces
    (:func:`_pieces`), counted and placed from the edge's lower end (by longitude, then latitude), so the two areas
    on either side of a shared edge split it at the very same points whichever way their rings run."""
    a, b = xy[:-1], xy[1:]
    flip = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    low, high = np.where(flip[:, None], b, a), np.where(flip[:, None], a, b)
    n = _pieces(low, high, crs)
    edge = np.repeat(np.arange(len(a)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)         # 0 .. n-1 along each edge, from a
    steps = np.where(flip[edge], n[edge] - k, k) / n[edge]                 # the same point, counted from the low end
    points = low[edge] + steps[:, None] * (high[edge] - low[edge])
    points[k == 0] = a                                                     # each edge's own start, exactly
    return np.vstack([points, xy[-1:]])


def split_edges(geometry: shapely.Geometry, crs: str) -> shapely.Geometry:
    """A (Multi)Polygon in ``crs`` with the edges the shift bends split (see :func:`_split_ring`)."""
    polygons = [shapely.Polygon(_split_ring(shapely.get_coordinates(p.exterior), crs),
                                [_split_ring(shapely.get_coordinates(h), crs) for h in p.interiors])
                for p in shapely.get_parts(geometry)]
    return polygons[0] if geometry.geom_type == "Polygon" else shapely.MultiPolygon(polygons)


def geometry_to_wgs84(geometry: shapely.Geometry, crs: str) -> shapely.Geometry:
    """A shapely (Multi)Polygon in ``crs`` converted to WGS84, to :data:`DECIMALS` decimals.

    Edges the shift bends are split first: a street's vertex on its district's long edge must stay on it (within
    :data:`BEND_DEG`), not leave a sliver between them. Each coordinate is rounded on its own, so a border two
    areas share stays the same on both sides; where rounding would make the geometry invalid (rings a few
    millimetres apart), GEOS snaps it to the same grid keeping it valid."""
    if crs == WGS84:
        return geometry
    converted = shapely.transform(split_edges(geometry, crs), lambda xy: to_wgs84(xy, crs))
    rounded = shapely.transform(converted, lambda xy: np.round(xy, DECIMALS))
    if rounded.is_valid or not converted.is_valid:
        return rounded
    log.debug("rounding to %d decimals made a geometry invalid (%s); snapped to the grid by GEOS instead",
              DECIMALS, shapely.is_valid_reason(rounded))
    return shapely.set_precision(converted, 10.0 ** -DECIMALS)


def _lon_lat(coordinates: Any) -> Any:
    """GeoJSON coordinates with each position cut to its longitude and latitude: GEOS reads no more than three
    numbers, and the conversion keeps two."""
    if not isinstance(coordinates, list):
        return coordinates
    if coordinates and all(isinstance(v, (int, float)) for v in coordinates):
        return coordinates[:2]
    return [_lon_lat(c) for c in coordinates]


def pack_in_wgs84(pack: Pack, crs: str) -> Pack:
    """The pack with every area and device position converted from ``crs`` to WGS84 and its manifest saying
    so (``geometry.crs: WGS84``), as it is checked and published (positions lose an altitude they had). A
    feature whose geometry cannot be read as a polygon is left as it is: the check names it."""
    if crs == WGS84:
        return pack
    areas = []
    for feature in pack.areas:
        try:
            geometry = shapely.from_geojson(json.dumps({**feature["geometry"],
                                                        "coordinates": _lon_lat(feature["geometry"]["coordinates"])}))
        except (KeyError, TypeError, ValueError, shapely.errors.ShapelyError):
            geometry = None
        if geometry is None or geometry.geom_type not in ("Polygon", "MultiPolygon") or geometry.is_empty:
            areas.append(feature)
            continue
        areas.append({**feature, "geometry": json.loads(shapely.to_geojson(geometry_to_wgs84(geometry, crs)))})
    placed = [i for i, d in enumerate(pack.devices) if isinstance(d, dict)
              and all(isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool) for k in ("long", "lat"))]
    devices = list(pack.devices)
    if placed:
        xy = to_wgs84(np.array([[pack.devices[i]["long"], pack.devices[i]["lat"]] for i in placed]), crs)
        for i, (lon, lat) in zip(placed, xy.tolist()):
            devices[i] = {**pack.devices[i], "long": lon, "lat": lat}
    manifest = {**pack.manifest, "geometry": {**pack.manifest.get("geometry", {}), "crs": WGS84}}
    log.debug("pack converted from %s to WGS84: %d areas, %d devices", crs, len(areas), len(placed))
    return replace(pack, manifest=manifest, areas=areas, devices=devices)
