"""Plane geometry on WGS84 coordinates: point in polygon, distances, and an area index.

Pure functions over GeoJSON-shaped coordinates (``[lon, lat]``), shared by the simulator,
the gateway (placing a request in the city, coarsening an address to its street) and the stream
layer (resolving every located record to its district, street and community, as deep as the
city's areas go).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Sequence

import shapely
from shapely import Point, intersects_xy
from shapely.errors import GEOSException
from shapely.geometry import shape

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_008.8

Ring = Sequence[Sequence[float]]


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def bearing_deg(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Initial great-circle bearing from the first point to the second, degrees clockwise from north [0, 360)."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(x, y)) % 360


def point_in_ring(lon: float, lat: float, ring: Ring) -> bool:
    """Ray casting; points exactly on an edge may fall either side (the index breaks ties)."""
    inside = False
    n = len(ring)
    j = n - 1
    for i in range(n):
        xi, yi = ring[i][0], ring[i][1]
        xj, yj = ring[j][0], ring[j][1]
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def point_in_geometry(lon: float, lat: float, geometry: dict[str, Any]) -> bool:
    """Is the point inside a GeoJSON Polygon or MultiPolygon (holes respected)?"""
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    for rings in polygons:
        if rings and point_in_ring(lon, lat, rings[0]) and not any(point_in_ring(lon, lat, h) for h in rings[1:]):
            return True
    return False


def bbox(geometry: dict[str, Any]) -> tuple[float, float, float, float]:
    """(min lon, min lat, max lon, max lat) of a Polygon or MultiPolygon."""
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    xs = [p[0] for rings in polygons for p in rings[0]]
    ys = [p[1] for rings in polygons for p in rings[0]]
    return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class Area:
    """An administrative area as the index needs it."""

    code: str
    name: str
    level: str
    parent_code: str | None
    geometry: dict[str, Any]


#: The levels of a city's areas, largest first: each area's parent is an area of the level above (a district's
#: is the city). A city's pack may stop at any of them, and at different ones in different places.
LEVELS = ("district", "street", "community", "grid")
#: Where a point is placed first: its street, the level every city with streets divides all of itself into,
#: else its district (a city, or a district, without streets); communities and grids, which a city may declare
#: in some places only, refine it.
ANCHORS = ("street", "district")
#: Points whose place an index remembers; past this it starts over.
RESOLVED_MAX = 200_000
#: Areas this close (degrees, about 10 m) are neighbours: a real city's boundaries, digitised department by department,
#: leave slivers between areas that share a street in the city (the pack check's gaps tolerance is of that order).
NEIGHBOUR_GAP_DEG = 1e-4


class Place(NamedTuple):
    """Where a point lies, as deep as the city's areas go there: its district always; its street, community and
    grid where the city declares them (None below the deepest level the city has at that point)."""

    district: Area
    street: Area | None = None
    community: Area | None = None
    grid: Area | None = None


class AreaIndex:
    """Find the areas containing a point, down to the deepest level the city has there.

    Built from ``raw.ref.admin_area`` records (or a city's own parts). A point is placed in its street, else
    (a city, or a part of it, without streets) in its district, and then in the community and grid of that
    area containing it, where the city declares them: a city whose pack stops at districts places every point
    in its district, one with communities in some streets only places a point in its street where there is
    none. Each level has an STRtree over its polygons as GEOS reads them (holes and MultiPolygons included),
    prepared, so a lookup costs microseconds whatever the size of real boundaries.
    """

    def __init__(self, areas: Iterable[Area]) -> None:
        self.areas = {a.code: a for a in areas}
        self._resolved: dict[tuple[float, float], Place | None] = {}
        self._polygons: dict[str, Any] = {}
        self._neighbours: dict[str, list[Area]] = {}
        #: level -> its areas with their polygons; area code -> its children with theirs
        by_level: dict[str, list[tuple[Area, Any]]] = {}
        self._children: dict[str, list[tuple[Area, Any]]] = {}
        for area in self.areas.values():
            if area.level not in LEVELS:
                continue
            try:
                polygon = shape(area.geometry)
            except (GEOSException, AttributeError, KeyError, TypeError, ValueError) as exc:
                log.warning("area %s (%s) left out of the area index: its geometry is no polygon GEOS can read "
                            "(%s); fix its coordinates in the city pack", area.code, area.name, exc)
                continue
            shapely.prepare(polygon)
            self._polygons[area.code] = polygon
            by_level.setdefault(area.level, []).append((area, polygon))
            if area.parent_code:
                self._children.setdefault(area.parent_code, []).append((area, polygon))
        #: level -> (its areas with their polygons, an STRtree over the polygons)
        self._levels = {level: (found, shapely.STRtree([p for _a, p in found])) for level, found in by_level.items()}

    def area_at(self, lon: float, lat: float, level: str) -> Area | None:
        """The area of ``level`` containing the point (its border included), or None."""
        found = self._levels.get(level)
        if found is None:
            return None
        areas, tree = found
        return _first([areas[i][0] for i in sorted(tree.query(Point(lon, lat)))
                       if intersects_xy(areas[i][1], lon, lat)], lon, lat)

    def neighbours(self, code: str) -> list[Area]:
        """The areas of ``code``'s level that share a border with it (or a corner; within NEIGHBOUR_GAP_DEG), by
        code; none for an area the index does not hold. Worked out once per area: the way a street's trouble
        (a plume, a flood) may spread."""
        known = self._neighbours.get(code)
        if known is not None:
            return known
        area, polygon = self.areas.get(code), self._polygons.get(code)
        found = self._levels.get(area.level) if area is not None else None
        if area is None or polygon is None or found is None:
            return []
        areas, tree = found
        near = tree.query(polygon, predicate="dwithin", distance=NEIGHBOUR_GAP_DEG)
        out = self._neighbours[code] = sorted((areas[i][0] for i in near if areas[i][0].code != code),
                                              key=lambda a: a.code)
        return out

    def centre(self, code: str) -> tuple[float, float] | None:
        """(lon, lat) of the area's centroid, None for an area the index does not hold."""
        polygon = self._polygons.get(code)
        if polygon is None:
            return None
        point = polygon.centroid
        return point.x, point.y

    def street_at(self, lon: float, lat: float) -> Area | None:
        """The street containing the point, or None (outside the city, or where the city has no streets)."""
        return self.area_at(lon, lat, "street")

    def community_at(self, lon: float, lat: float, street: Area) -> Area | None:
        """The community of ``street`` containing the point, or None (a street without communities)."""
        return self._child_at(lon, lat, street)

    def _child_at(self, lon: float, lat: float, area: Area) -> Area | None:
        """The child of ``area`` containing the point, or None."""
        return _first([a for a, polygon in self._children.get(area.code, ()) if intersects_xy(polygon, lon, lat)],
                      lon, lat)

    def resolve(self, lon: float, lat: float) -> Place | None:
        """The place of the point, as deep as the city's areas go there, or None outside the city. Remembered
        per point: fixed sensors report from the same coordinates every few minutes."""
        key = (lon, lat)
        if key in self._resolved:
            return self._resolved[key]
        found = self._place(lon, lat)
        if len(self._resolved) >= RESOLVED_MAX:
            self._resolved.clear()
        self._resolved[key] = found
        return found

    def _place(self, lon: float, lat: float) -> Place | None:
        """The point's street (else district) with its parents up to a district, and the areas below it
        containing the point."""
        for level in ANCHORS:
            area = self.area_at(lon, lat, level)
            if area is None:
                continue
            chain = {area.level: area}
            parent = self.areas.get(area.parent_code or "")
            while parent is not None and parent.level in LEVELS and parent.level not in chain:
                chain[parent.level] = parent
                parent = self.areas.get(parent.parent_code or "")
            if "district" not in chain:
                continue
            below = self._child_at(lon, lat, area)
            while below is not None and below.level not in chain:
                chain[below.level] = below
                below = self._child_at(lon, lat, below)
            return Place(chain["district"], chain.get("street"), chain.get("community"), chain.get("grid"))
        return None

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> AreaIndex:
        """From ``raw.ref.admin_area`` records (the latest per area code wins; a withdrawn area is left out)."""
        latest: dict[str, dict[str, Any]] = {}
        for r in records:
            latest[r["area_code"]] = r
        return cls(Area(r["area_code"], r["name"], r["level"], r.get("parent_code"), r["geometry"])
                   for r in latest.values() if r.get("status") != "withdrawn")


def _first(hits: list[Area], lon: float, lat: float) -> Area | None:
    """The area a point lies in among the areas whose polygons hold it (in the index's order): on a border that
    several share, the one ray casting puts it in (every point of a tiled city in exactly one), else the first."""
    if len(hits) > 1:
        return next((a for a in hits if point_in_geometry(lon, lat, a.geometry)), hits[0])
    return hits[0] if hits else None


def changed(known: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """Whether a reference record (an area, a device) changes what is known of it: the same record published
    again with only a new ``updated_at`` does not (re-publications are common; an area index is costly to build)."""
    if known is None:
        return True
    return any(known.get(k) != record.get(k) for k in known.keys() | record.keys() if k != "updated_at")
