"""Plane geometry on WGS84 coordinates: point in polygon, distances, and an area index.

Pure functions over GeoJSON-shaped coordinates (``[lon, lat]``), shared by the simulator,
the gateway (coarsening an address to its street) and the stream layer (resolving every
located record to its district and street).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Sequence

EARTH_RADIUS_M = 6_371_008.8

Ring = Sequence[Sequence[float]]


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


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


#: Points whose (district, street) an index remembers; past this it starts over.
RESOLVED_MAX = 200_000


class Place(NamedTuple):
    """Where a point lies: its district and street and, where the city declares them, its community."""

    district: Area
    street: Area
    community: Area | None = None


class AreaIndex:
    """Find the street (and its district) containing a point, with a bounding-box grid.

    Built from ``raw.ref.admin_area`` records (or the simulator's city); lookups cost a
    few ring tests, not one per street.
    """

    def __init__(self, areas: Iterable[Area], cell_deg: float = 0.02) -> None:
        self.cell = cell_deg
        self.areas = {a.code: a for a in areas}
        self._resolved: dict[tuple[float, float], Place | None] = {}
        self._grid: dict[tuple[int, int], list[tuple[Area, tuple[float, float, float, float]]]] = {}
        #: street code -> its communities with their bounding boxes
        self._communities: dict[str, list[tuple[Area, tuple[float, float, float, float]]]] = {}
        for area in self.areas.values():
            if area.level == "community" and area.parent_code:
                self._communities.setdefault(area.parent_code, []).append((area, bbox(area.geometry)))
            if area.level != "street":
                continue
            box = bbox(area.geometry)
            for gx in range(self._gx(box[0]), self._gx(box[2]) + 1):
                for gy in range(self._gx(box[1]), self._gx(box[3]) + 1):
                    self._grid.setdefault((gx, gy), []).append((area, box))

    def _gx(self, v: float) -> int:
        return math.floor(v / self.cell)

    def street_at(self, lon: float, lat: float) -> Area | None:
        """The street containing the point, or None outside the city."""
        for area, (x0, y0, x1, y1) in self._grid.get((self._gx(lon), self._gx(lat)), ()):
            if x0 <= lon <= x1 and y0 <= lat <= y1 and point_in_geometry(lon, lat, area.geometry):
                return area
        return None

    def community_at(self, lon: float, lat: float, street: Area) -> Area | None:
        """The community of ``street`` containing the point, or None (a city without communities)."""
        for area, (x0, y0, x1, y1) in self._communities.get(street.code, ()):
            if x0 <= lon <= x1 and y0 <= lat <= y1 and point_in_geometry(lon, lat, area.geometry):
                return area
        return None

    def resolve(self, lon: float, lat: float) -> Place | None:
        """(district, street, community) containing the point, or None outside the city. Remembered
        per point: fixed sensors report from the same coordinates every few minutes."""
        key = (lon, lat)
        if key in self._resolved:
            return self._resolved[key]
        street = self.street_at(lon, lat)
        found = None if street is None or street.parent_code is None else \
            Place(self.areas[street.parent_code], street, self.community_at(lon, lat, street))
        if len(self._resolved) >= RESOLVED_MAX:
            self._resolved.clear()
        self._resolved[key] = found
        return found

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> AreaIndex:
        """From ``raw.ref.admin_area`` records (the latest per area code wins; a withdrawn area is left out)."""
        latest: dict[str, dict[str, Any]] = {}
        for r in records:
            latest[r["area_code"]] = r
        return cls(Area(r["area_code"], r["name"], r["level"], r.get("parent_code"), r["geometry"])
                   for r in latest.values() if r.get("status") != "withdrawn")


def changed(known: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """Whether a reference record (an area, a device) changes what is known of it: the same record published
    again with only a new ``updated_at`` does not (re-publications are common; an area index is costly to build)."""
    if known is None:
        return True
    return any(known.get(k) != record.get(k) for k in known.keys() | record.keys() if k != "updated_at")
