"""How long ``citybrain city check`` takes on a city pack with real-sized boundaries.

:func:`bench_pack_check` writes a pack of 16 districts of about 10,000 vertices each and 300
streets and times :func:`citybrain.city.pack_check.check_pack` on it (reading, contracts,
validity, overlaps, gaps, children in parents, devices). The boundaries are built, not
downloaded, the same every run: a 4 x 4 grid whose shared borders are wavy lines (so the
districts are concave and neighbours share every vertex of their border), one district with an
exclave lying in a hole of its neighbour, and each district cut into vertical strips as its
streets (some strips MultiPolygons, some with the hole, one street with the exclave). The
catalogue and devices are the simulated city's catalogue and one device per street. The pack
checks clean; ``problems`` in the result says so.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping

from citybrain.city.pack import FORMAT, Pack, pack_from_city
from citybrain.city.pack_check import check_pack

log = logging.getLogger(__name__)

GRID = 4                       # districts per side
CELL = (0.1, 0.08)             # degrees of longitude, latitude per district
ORIGIN = (117.0, 38.6)
EDGE_POINTS = 2_500            # positions per shared border: four borders make a district of ~10,000
STREETS = 300
WAVE = 0.12                    # the borders' waves, as a share of a cell


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def _feature(code: str, name: str, level: str, parent: str | None, geometry: shapely.Geometry) -> dict[str, Any]:
    g = mapping(geometry)
    return {"type": "Feature", "geometry": {"type": g["type"], "coordinates": _lists(g["coordinates"])},
            "properties": {"code": code, "name": name, "level": level, "parent": parent, "population": 10_000}}


def _node(i: int, j: int) -> np.ndarray:
    """A corner of the grid, interior ones moved a little so no district is a rectangle."""
    jitter = 0.0 if i in (0, GRID) or j in (0, GRID) else 0.15
    return np.array([ORIGIN[0] + CELL[0] * (i + jitter * math.sin(3.1 * i + 1.7 * j)),
                     ORIGIN[1] + CELL[1] * (j + jitter * math.cos(2.3 * i - 1.3 * j))])


def _border(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A wavy line from a to b: the straight line pushed sideways by a few sine waves that die out at both
    ends (a graph over the line, so it never crosses itself)."""
    t = np.linspace(0.0, 1.0, EDGE_POINTS)
    d = b - a
    normal = np.array([-d[1], d[0]]) / np.hypot(*d)
    size = WAVE * min(CELL)
    offset = size * np.sin(np.pi * t) ** 2 * (0.6 * np.sin(2 * np.pi * (2 + seed % 3) * t + seed)
                                              + 0.4 * np.sin(2 * np.pi * (7 + seed % 5) * t))
    return a + np.outer(t, d) + np.outer(offset, normal)


def districts() -> list[shapely.Geometry]:
    """The 16 districts, row by row: each border built once and used by both its neighbours."""
    horizontal = {(i, j): _border(_node(i, j), _node(i + 1, j), 17 * i + j) for i in range(GRID) for j in range(GRID + 1)}
    vertical = {(i, j): _border(_node(i, j), _node(i, j + 1), 31 * i + j + 5) for i in range(GRID + 1) for j in range(GRID)}
    out = []
    for j in range(GRID):
        for i in range(GRID):
            ring = np.vstack([horizontal[(i, j)][:-1], vertical[(i + 1, j)][:-1],
                              horizontal[(i, j + 1)][::-1][:-1], vertical[(i, j)][::-1]])
            out.append(shapely.Polygon(ring))
    # district 0 has an exclave in a hole of district 5 (as 朝阳区's airport lies inside 顺义区)
    centre = np.mean([_node(1, 1), _node(2, 1), _node(2, 2), _node(1, 2)], axis=0)
    exclave = shapely.Point(*centre).buffer(0.1 * min(CELL), quad_segs=100)
    out[5] = out[5].difference(exclave)
    out[0] = shapely.MultiPolygon([out[0], exclave])
    return out


def _streets(district: shapely.Geometry, count: int) -> list[shapely.Geometry]:
    """The district cut into ``count`` vertical strips of its main part; an exclave goes to the last strip."""
    parts = sorted(shapely.get_parts(district), key=lambda p: -p.area)
    main, rest = parts[0], parts[1:]
    x0, y0, x1, y1 = main.bounds
    cuts = np.linspace(x0, x1, count + 1)
    cuts[0], cuts[-1] = x0 - 1, x1 + 1          # the outer strips reach past the district, so nothing is left over
    strips = [shapely.intersection(main, shapely.box(cuts[k], y0 - 1, cuts[k + 1], y1 + 1)) for k in range(count)]
    if rest:
        strips[-1] = shapely.union_all([strips[-1], *rest])
    return strips


def _positions(coordinates: Any) -> int:
    return 1 if coordinates and isinstance(coordinates[0], (int, float)) else sum(_positions(c) for c in coordinates)


def build_pack() -> Pack:
    """The benchmark's pack: 16 districts, 300 streets, one device per street, the simulated city's catalogue."""
    from citybrain.sim.city import build_city

    catalogue = pack_from_city(build_city(7), grids=False)
    areas: list[dict[str, Any]] = []
    devices: list[dict[str, Any]] = []
    counts = [STREETS // GRID ** 2 + (1 if k < STREETS % GRID ** 2 else 0) for k in range(GRID ** 2)]
    for k, (district, count) in enumerate(zip(districts(), counts)):
        code = f"9801{k + 1:02d}"
        areas.append(_feature(code, f"第{k + 1}区", "district", None, district))
        for s, street in enumerate(_streets(district, count)):
            street_code = f"{code}{s + 1:03d}"
            areas.append(_feature(street_code, f"第{k + 1}区第{s + 1}街道", "street", code, street))
            spot = street.representative_point()
            devices.append({"device_id": f"bp-{len(devices) + 1:04d}", "device_type": "noise",
                            "owner_department": "urban_management", "lat": round(spot.y, 7), "long": round(spot.x, 7),
                            "street_code": street_code})
    manifest = {"format": FORMAT, "version": "bench.1", "city": {"code": "9801", "name": "测试市", "name_en": "Bench"},
                "jurisdiction_id": "bench.citybrain.example", "timezone": "Asia/Shanghai",
                "geometry": {"crs": "WGS84", "tolerance_m2": 100}}
    return Pack(manifest, areas, catalogue.departments, catalogue.services, catalogue.routing, devices)


def bench_pack_check(work_dir: Path) -> dict[str, Any]:
    """Write the benchmark's pack under ``work_dir`` and time ``check_pack`` on it: seconds, districts, streets,
    vertices (positions in areas.geojson) and the problems found (0: it checks clean)."""
    pack = build_pack()
    directory = work_dir / "bench-pack"
    pack.write(directory)
    started = time.perf_counter()
    _checked, problems = check_pack(directory)
    seconds = time.perf_counter() - started
    for p in problems[:5]:
        log.warning("bench pack problem: %s", p)
    vertices = sum(_positions(f["geometry"]["coordinates"]) for f in pack.areas)
    result = {"seconds": round(seconds, 3), "districts": sum(f["properties"]["level"] == "district" for f in pack.areas),
              "streets": sum(f["properties"]["level"] == "street" for f in pack.areas), "vertices": vertices,
              "problems": len(problems)}
    log.info("city pack check: %s", result)
    return result

