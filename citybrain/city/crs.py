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
are split to :data:`SEGMENT_DEG` first so that what lies on an edge stays on it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from typing import Callable

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
#: Degrees (~500 m): edges are split to this length before they are converted. GCJ-02 bends a straight edge
#: of this length by at most 3 cm (median 4 mm) away from its ends' straight line; one of 0.1° by up to 10 m.
SEGMENT_DEG = 0.005
#: Iterative inverses stop when a step moves less than this (degrees, about 0.1 mm).
INVERSE_EPS_DEG = 1e-9
_MAX_STEPS = 30

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


def _split_ring(xy: np.ndarray) -> np.ndarray:
    """A closed ring with each edge longer than :data:`SEGMENT_DEG` split into equal pieces, the points computed
    from the edge's lower end (by longitude, then latitude), so the two areas on either side of a shared edge
    split it at the very same points whichever way their rings run."""
    a, b = xy[:-1], xy[1:]
    n = np.maximum(1, np.ceil(np.hypot(b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]) / SEGMENT_DEG)).astype(int)
    flip = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    low, high = np.where(flip[:, None], b, a), np.where(flip[:, None], a, b)
    edge = np.repeat(np.arange(len(a)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)         # 0 .. n-1 along each edge, from a
    steps = np.where(flip[edge], n[edge] - k, k) / n[edge]                 # the same point, counted from the low end
    points = low[edge] + steps[:, None] * (high[edge] - low[edge])
    points[k == 0] = a                                                     # each edge's own start, exactly
    return np.vstack([points, xy[-1:]])


def split_edges(geometry: shapely.Geometry) -> shapely.Geometry:
    """A (Multi)Polygon with its edges split to :data:`SEGMENT_DEG` (see :func:`_split_ring`)."""
    polygons = [shapely.Polygon(_split_ring(shapely.get_coordinates(p.exterior)),
                                [_split_ring(shapely.get_coordinates(h)) for h in p.interiors])
                for p in shapely.get_parts(geometry)]
    return polygons[0] if geometry.geom_type == "Polygon" else shapely.MultiPolygon(polygons)


def geometry_to_wgs84(geometry: shapely.Geometry, crs: str) -> shapely.Geometry:
    """A shapely (Multi)Polygon in ``crs`` converted to WGS84, all its coordinates in one array. Edges longer than
    :data:`SEGMENT_DEG` are split first: the shift bends a straight edge, and a street's vertex on its district's
    long edge must stay on it (within 3 cm), not leave a sliver between them."""
    if crs == WGS84:
        return geometry
    return shapely.transform(split_edges(geometry), lambda xy: to_wgs84(xy, crs))


def pack_in_wgs84(pack: Pack, crs: str) -> Pack:
    """The pack with every area and device position converted from ``crs`` to WGS84 and its manifest saying
    so (``geometry.crs: WGS84``), as it is checked and published (positions lose an altitude they had). A
    feature whose geometry cannot be read as a polygon is left as it is: the check names it."""
    if crs == WGS84:
        return pack
    areas = []
    for feature in pack.areas:
        try:
            geometry = shapely.from_geojson(json.dumps(feature["geometry"]))
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
