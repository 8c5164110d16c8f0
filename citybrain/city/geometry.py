"""A city pack's boundaries measured with GEOS (shapely 2), as a real city's boundaries need.

Real district files have MultiPolygons (exclaves), holes (an exclave of a neighbour), concave
shapes and thousands of vertices per area. So each area is checked for validity with GEOS's own
reason (``shapely.is_valid_reason``) and a fix that fits that reason, and the relations between
areas are measured as areas in square metres, never guessed from probe points:

- ``overlap``: two siblings (same parent, or two districts) share more than the pack's tolerance;
- ``gap``: a parent's children leave more than the tolerance of it uncovered; for districts,
  which have no parent in the pack, land the districts enclose but none of them covers;
- ``outside-parent``: more than the tolerance of a child lies outside its parent.

The tolerance is ``geometry.tolerance_m2`` in the manifest (default :data:`DEFAULT_TOLERANCE_M2`),
one figure per problem: the overlap of one pair, the uncovered area of one parent, the part of
one child outside its parent. Areas are measured on the WGS84 ellipsoid for polygons whose edges
are straight in longitude/latitude, as RFC 7946 draws them (:func:`area_m2`): no projection, so
no pyproj, and a sliver between positions on one such edge measures zero, as it should — a
projection, even an equal-area one, curves those edges and turns such slivers into hundreds of
square metres. Sibling pairs come from an STRtree, so a city of thousands of areas is checked in
seconds. All overlay work is done in longitude/latitude; only its results are measured.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import shapely

from citybrain.city.crs import WGS84, from_wgs84
from citybrain.city.pack import Note, Problem

log = logging.getLogger(__name__)

#: Square metres an overlap, a gap or a part outside the parent may have before it is a problem: a tenth of a
#: hectare, the sliver that rounding to 6 decimals (5 cm) leaves along 20 km of border that does not share its
#: vertices, or a 30 m square; a grid (网格) is a few hectares.
DEFAULT_TOLERANCE_M2 = 1_000.0
#: Degrees (~0.1 m): a device this close to an area's boundary is in it.
ON_EDGE_DEG = 1e-6
#: More metres than any degree of longitude or latitude has (a degree of latitude near the poles: 111,694 m).
M_PER_DEG_MAX = 111_700.0
#: WGS84 ellipsoid.
_A, _F = 6378137.0, 1 / 298.257223563
_E2 = _F * (2 - _F)
_E = math.sqrt(_E2)
AREAS = "areas.geojson"
POLYGONAL = ("Polygon", "MultiPolygon")

#: The repair of an invalid polygon, as a fix names it.
MAKE_VALID = ('`shapely.orient_polygons(shapely.make_valid(geometry, method="structure"))` (Shapely 2.1+; the '
              'orientation keeps RFC 7946\'s winding; QGIS: Fix geometries, method Structure)')
#: GEOS's reason (the text before its location) -> (rule, what it means, how to fix it).
INVALID: dict[str, tuple[str, str, str]] = {
    "Self-intersection": (
        "polygon-self-intersection", "a ring crosses itself or another ring of the polygon",
        f"repair it with {MAKE_VALID}, which splits it where it crosses; a crossing ring is often a digitising slip "
        "(two vertices swapped), so look at the result or redraw it."),
    "Ring Self-intersection": (
        "polygon-self-intersection", "a ring touches itself at a point, pinching the area",
        f"repair it with {MAKE_VALID}, or move the vertex so the ring no longer touches itself."),
    "Hole lies outside shell": (
        "polygon-hole-outside-shell", "an inner ring (a hole) lies outside its outer ring",
        "if it is land of the area, write it as a part of its own (a MultiPolygon member); if not, delete the ring. "
        f"{MAKE_VALID} makes it a part."),
    "Holes are nested": (
        "polygon-nested-holes", "a hole lies inside another hole of the same polygon",
        f"delete the inner hole, or make the land between them a part of its own; {MAKE_VALID} does the latter."),
    "Interior is disconnected": (
        "polygon-disconnected-interior", "holes cut the polygon into pieces",
        f"write the pieces as the parts of a MultiPolygon: {MAKE_VALID} does."),
    "Nested shells": (
        "polygon-nested-shells", "a part of the MultiPolygon lies inside another part",
        "if the inner part is a hole, write it as an inner ring of the outer part; if it is the same land, delete "
        f"it. {MAKE_VALID} merges them (the inner part disappears)."),
    "Duplicate Rings": (
        "polygon-duplicate-rings", "the same ring appears twice",
        f"delete the copy; {MAKE_VALID} does."),
    "Too few points in geometry component": (
        "polygon-too-few-points", "a ring has fewer than three distinct positions once repeated ones are dropped: "
        "it encloses nothing",
        "redraw the ring or delete it (no repair can give it an area)."),
}
#: A MultiPolygon whose every part is valid but whose parts share an edge or overlap (GEOS: Self-intersection).
PARTS_TOUCH = (
    "polygon-self-intersection", "two of its parts share an edge or overlap (the parts of a MultiPolygon may touch "
    "at points only)",
    f"dissolve the parts into one polygon: {MAKE_VALID} does, and so does `shapely.union_all(parts)`; parts that "
    "ring a neighbour's exclave become one polygon with a hole.")
OTHER = ("polygon-invalid", "GEOS finds the geometry invalid", f"repair it with {MAKE_VALID} and check the result.")
OVERLAP_FIX = ("make the two share one border: cut the overlap from one of them (QGIS: Difference, or snap the "
               "layer; mapshaper: -clean). `ogr2ogr -makevalid` and make_valid repair each area alone and do not "
               "remove overlaps between areas. A sliver left by rounding coordinates may instead be allowed: raise "
               "geometry.tolerance_m2 above it.")


def _authalic_q(lat_rad: np.ndarray | float) -> Any:
    """q(φ) of the WGS84 ellipsoid: the area between the equator and latitude φ over a longitude span λ is
    (a²/2)·q(φ)·λ."""
    s = np.sin(lat_rad)
    return (1 - _E2) * (s / (1 - _E2 * s * s) - np.log((1 - _E * s) / (1 + _E * s)) / (2 * _E))


def _ring_areas(lonlat: np.ndarray, ring: np.ndarray, rings: int) -> np.ndarray:
    """The area (m², unsigned) enclosed by each ring: -(a²/2)·∮ q(φ) dλ by Green's theorem, along edges straight
    in longitude/latitude (RFC 7946), each edge's mean q by Simpson's rule."""
    lam, phi = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    same = ring[1:] == ring[:-1]                      # edges join consecutive positions of one ring
    dlam = (lam[1:] - lam[:-1])[same]
    q = (_authalic_q(phi[:-1]) + 4 * _authalic_q((phi[:-1] + phi[1:]) / 2) + _authalic_q(phi[1:]))[same] / 6
    sums = np.bincount(ring[:-1][same], weights=dlam * q, minlength=rings)
    return np.abs(sums) * _A * _A / 2


def area_m2(geometry: shapely.Geometry) -> float:
    """The area in square metres on the WGS84 ellipsoid of a longitude/latitude (Multi)Polygon whose edges are
    straight lines in longitude/latitude, as RFC 7946 draws them: exact up to Simpson's rule along each edge, and
    exactly zero for a sliver between positions on one such line (an equal-area projection centred 25 km away
    curves those lines and gives a 3 km edge split at its midpoint a sliver of 200 m²)."""
    polygons = [p for p in shapely.get_parts(polygonal(geometry)) if not p.is_empty]
    if not polygons:
        return 0.0
    rings, owner = shapely.get_rings(polygons, return_index=True)
    lonlat, ring = shapely.get_coordinates(rings, return_index=True)
    areas = _ring_areas(lonlat, ring, len(rings))
    outer = np.r_[True, owner[1:] != owner[:-1]]      # each polygon's first ring is its exterior
    return float(areas[outer].sum() - areas[~outer].sum())


@dataclass
class Boundary:
    """One area's geometry as measured (longitude/latitude, WGS84; repaired when invalid), and whether the file
    winds its rings against RFC 7946."""

    where: str
    code: str
    level: str
    geometry: shapely.Geometry
    clockwise: bool = False


def _clockwise(geometry: shapely.Geometry) -> bool:
    """Does any outer ring run clockwise, or any hole counterclockwise (against RFC 7946 3.1.6)?"""
    parts = [p for p in shapely.get_parts(geometry) if not p.is_empty]
    if not parts:
        return False
    rings, owner = shapely.get_rings(parts, return_index=True)
    outer = np.r_[True, owner[1:] != owner[:-1]]
    return bool((shapely.is_ccw(rings) != outer).any())


def polygonal(geometry: shapely.Geometry) -> shapely.Geometry:
    """The polygons of a geometry (make_valid may return a collection with lines or points beside them)."""
    if geometry.geom_type in POLYGONAL:
        return geometry
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in POLYGONAL]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _at(point: shapely.Geometry | tuple[float, float], crs: str) -> str:
    """A WGS84 position as the pack's file has it (its declared system), for a person to find it."""
    x, y = (point.x, point.y) if isinstance(point, shapely.Point) else point
    (lon, lat), = from_wgs84(np.array([[x, y]]), crs).tolist()
    return f"({lon:.6f}, {lat:.6f})" + ("" if crs == WGS84 else f" in {crs}")


def read_boundary(where: str, code: str, level: str, geom: shapely.Geometry, crs: str
                  ) -> tuple[Boundary | None, list[Problem]]:
    """The area (in WGS84; its file is in ``crs``), with a problem naming GEOS's reason when it is invalid; the
    boundary it is measured by is then its repair (None when nothing polygonal is left)."""
    clockwise = _clockwise(geom)
    reason = shapely.is_valid_reason(geom)
    if reason == "Valid Geometry":
        return Boundary(where, code, level, geom, clockwise), []
    match = re.match(r"^(.*?)\[(\S+) (\S+)\]$", reason)
    kind, location = (match.group(1), (float(match.group(2)), float(match.group(3)))) if match else (reason, None)
    rule, meaning, fix = INVALID.get(kind, OTHER)
    if kind == "Self-intersection" and geom.geom_type == "MultiPolygon" and shapely.is_valid(
            shapely.get_parts(geom)).all():
        rule, meaning, fix = PARTS_TOUCH
    repaired = polygonal(shapely.make_valid(geom, method="structure"))
    message = (f"{code} is not a valid {geom.geom_type}: {meaning} (GEOS: {kind}"
               + (f" at {_at(location, crs)}" if location else "") + ").")
    if repaired.is_empty:
        return None, [Problem(AREAS, where, rule, message, fix)]
    return Boundary(where, code, level, repaired, clockwise), [Problem(AREAS, where, rule, message + " It is measured as "
                                                            "repaired for the rules between areas.", fix)]


def clockwise_note(boundaries: Iterable[Boundary]) -> list[Note]:
    """A note naming the areas whose rings wind against RFC 7946's right-hand rule: CityBrain reads them either
    way, a map drawn on the sphere does not."""
    wrong = [b.code for b in boundaries if b.clockwise]
    if not wrong:
        return []
    return [Note(AREAS, "", "ring-orientation",
                 f"{len(wrong)} area(s) wind their rings against RFC 7946 (3.1.6: outer rings counterclockwise, holes "
                 f"clockwise), e.g. {', '.join(wrong[:5])}. CityBrain reads them either way; a map drawn on the sphere "
                 "(d3-geo) fills the rest of the globe instead.",
                 "rewind them: `shapely.orient_polygons(geometry)` (Shapely 2.1+) or `ogr2ogr -lco RFC7946=YES`.")]


def sibling_problems(parent: Boundary | None, children: list[Boundary], tolerance_m2: float, crs: str,
                     parent_where: str = "", top_level: bool = False) -> list[Problem]:
    """Children outside their parent, overlapping each other, or leaving a gap in it, each above
    ``tolerance_m2``. The districts (``top_level``) have no parent: their gap is land they enclose but do not
    cover. Children of a parent GEOS cannot measure (``parent`` None) are checked for overlaps only."""
    if not children:
        return []
    problems: list[Problem] = []
    geoms = np.array([c.geometry for c in children], dtype=object)
    level = children[0].level
    allowed = f"the pack allows {tolerance_m2:,.0f} m² (manifest geometry.tolerance_m2)"
    if parent is not None:
        shapely.prepare(parent.geometry)
        covered = shapely.covers(parent.geometry, geoms)
        if tolerance_m2 > 0 and not covered.all():
            # Children cut from the parent by other software sit off its border by rounding. A child inside the
            # parent widened by ``hair`` has at most perimeter x hair outside it: half the tolerance, so only the
            # others need the (costly) difference.
            hair = tolerance_m2 / (2 * max(parent.geometry.length, 1e-9) * M_PER_DEG_MAX ** 2)
            widened = shapely.buffer(parent.geometry, hair, quad_segs=1)
            shapely.prepare(widened)
            covered |= shapely.covers(widened, geoms)
        for child, inside in zip(children, covered):
            if inside:
                continue
            outside = shapely.difference(child.geometry, parent.geometry)
            area = area_m2(outside)
            if area > tolerance_m2:
                share = area / max(area_m2(child.geometry), 1e-9)
                problems.append(Problem(AREAS, child.where, "outside-parent",
                                        f"{area:,.0f} m² ({share:.1%}) of {child.code} lies outside its parent "
                                        f"{parent.code}, around {_at(outside.representative_point(), crs)}; {allowed}.",
                                        "clip the area to its parent (QGIS: Clip), or correct its parent code; a rounding "
                                        "sliver may instead be allowed by raising geometry.tolerance_m2.", area))
    # The union tells first whether anything can be wrong: the children's areas exceed their union's by at least
    # any one pair's overlap, and the parent's area exceeds the union's by the gap (less what lies outside).
    union = shapely.union_all(geoms)
    union_m2 = area_m2(union)
    if sum(area_m2(g) for g in geoms) - union_m2 > tolerance_m2:
        problems += _overlaps(children, geoms, tolerance_m2, crs, allowed)
    if parent is None and not top_level:
        return problems
    if parent is not None:
        if covered.all() and area_m2(parent.geometry) - union_m2 <= tolerance_m2 / 2:
            return problems          # the gap is at most that plus the half tolerance outside: within it
        gap = polygonal(shapely.difference(parent.geometry, union))
        whole = parent.geometry
    else:
        holes = [shapely.Polygon(ring) for poly in shapely.get_parts(polygonal(union)) for ring in poly.interiors]
        gap, whole = shapely.union_all(holes) if holes else shapely.Polygon(), union
    if not gap.is_empty:
        area = area_m2(gap)
        if area > tolerance_m2:
            largest = max(shapely.get_parts(gap), key=lambda g: g.area)
            at = _at(largest.representative_point(), crs)
            share = area / max(area_m2(whole), 1e-9)
            if parent is not None:
                problems.append(Problem(AREAS, parent_where, "gap",
                                        f"its {len(children)} {level} area(s) leave {area:,.0f} m² ({share:.2%}) of "
                                        f"{parent.code} uncovered, the largest piece around {at}; {allowed}.",
                                        f"extend the {level} areas to the parent's border, or add the missing {level} "
                                        "(mapshaper -clean gap-fill-area=... fills slivers; a rounding sliver may "
                                        "instead be allowed by raising geometry.tolerance_m2).", area))
            else:
                near = [children[k].code for k in shapely.STRtree(geoms).query(largest, predicate="touches").tolist()]
                problems.append(Problem(AREAS, "", "gap",
                                        f"the {level}s enclose {area:,.0f} m² that none of them covers, the largest "
                                        f"piece around {at}" + (f" (between {', '.join(sorted(near))})" if near else "")
                                        + f"; {allowed}.",
                                        f"extend a neighbouring {level} over it, or add the missing {level}.", area))
    return problems


def _overlaps(children: list[Boundary], geoms: np.ndarray, tolerance_m2: float, crs: str, allowed: str
              ) -> list[Problem]:
    """Each pair of siblings that overlap by more than ``tolerance_m2`` (pairs from an STRtree)."""
    problems = []
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    for i, j, shared in zip(left.tolist(), right.tolist(), shapely.intersection(geoms[left], geoms[right])):
        shared = polygonal(shared)
        area = area_m2(shared)
        if area > tolerance_m2:
            a, b = children[i], children[j]
            problems.append(Problem(AREAS, a.where, "overlap",
                                    f"{a.code} and its sibling {b.code} overlap by {area:,.0f} m², around "
                                    f"{_at(shared.representative_point(), crs)}; {allowed}.", OVERLAP_FIX, area))
    return problems


def within(geometries: list[shapely.Geometry], lonlat: np.ndarray, distance: float = ON_EDGE_DEG
           ) -> tuple[np.ndarray, np.ndarray]:
    """(point index, geometry index) of every point within ``distance`` degrees of a geometry (inside or on
    its boundary)."""
    if not geometries or not len(lonlat):
        return np.array([], dtype=int), np.array([], dtype=int)
    points = shapely.points(lonlat)
    tree = shapely.STRtree(np.array(geometries, dtype=object))
    found = tree.query(points, predicate="dwithin", distance=distance)
    return found[0], found[1]

