"""Checking a city pack: every problem at once, each with its file, line or feature, rule and fix.

A pack is checked like a feed: each file against its contract (``schemas/citypack/``), then
the rules between files and features — polygons closed and inside WGS84, codes unique,
parents known and one level up, children inside their parent, siblings neither overlapping
nor leaving gaps in their parent, departments named by CityBrain's department
roles, services and rules routed to known departments and areas,
every service routed, devices inside the city and their street. A pack with any problem is
refused whole (``citybrain city import`` imports nothing of it).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from citybrain.city.pack import DEVICE_COLUMNS, FILES, LEVELS, SCHEMAS, Pack
from citybrain.contracts.departments import DEPARTMENTS as DEPARTMENT_ROLES
from citybrain.geo import point_in_geometry

#: Degrees (~0.1 m): a vertex this close to its parent's boundary is on it, not outside.
ON_EDGE_DEG = 1e-6
#: Share of a parent's area its children may miss or exceed before it is a gap or an overlap.
AREA_TOLERANCE = 0.002
RULE_OF_KEYWORD = {"additionalProperties": "unknown-field"}


@dataclass(frozen=True)
class Problem:
    file: str
    where: str          # "line 12", "feature 3 (990101001)", "" for the whole file
    rule: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}{' ' + self.where if self.where else ''}: [{self.rule}] {self.message} Fix: {self.fix}"


def check_pack(directory: Path) -> tuple[Pack | None, list[Problem]]:
    """(the pack, every problem found); the pack is None when a file could not be read at all."""
    problems: list[Problem] = []
    content: dict[str, list[tuple[str, Any]]] = {}
    for name in FILES:
        content[name] = _read(directory, name, problems)
    if any(p.rule in ("missing-file", "encoding", "json-syntax") and p.where == "" for p in problems):
        return None, problems
    validators = _validators()
    valid: dict[str, list[tuple[str, Any]]] = {}
    for name, items in content.items():
        schema = validators[FILES[name][0]]
        valid[name] = []
        for where, value in items:
            errors = sorted(schema.iter_errors(value), key=lambda e: list(e.absolute_path))
            problems += [_schema_problem(name, where, error) for error in errors]
            if not errors:
                valid[name].append((where, value))
    pick = lambda name: [v for _w, v in content[name]]  # noqa: E731
    manifest = pick("manifest.json")[0] if content["manifest.json"] else {}
    pack = Pack(manifest, pick("areas.geojson"), pick("departments.jsonl"), pick("services.jsonl"),
                pick("routing.jsonl"), pick("devices.csv"))
    # The rules between records judge the records that have their contract's shape, so one broken
    # record does not hide the other problems; ids are known from every record that carries one.
    if valid["manifest.json"]:
        problems += _manifest_rules(manifest)
    problems += _area_rules(valid["areas.geojson"])
    departments = {d.get("department_id") for d in pack.departments if isinstance(d, dict)}
    problems += _catalogue_rules(valid, departments,
                                 {s.get("service_code") for s in pack.services if isinstance(s, dict)},
                                 {_code(f) for f in pack.areas})
    problems += _device_rules(valid["devices.csv"], [f for _w, f in valid["areas.geojson"]], departments)
    return pack, problems


# -- reading ---------------------------------------------------------------------------------------


def _read(directory: Path, name: str, problems: list[Problem]) -> list[tuple[str, Any]]:
    """(where, value) of every record of one file; problems that stop a record are added."""
    path = directory / name
    if not path.exists():
        problems.append(Problem(name, "", "missing-file", f"the pack has no {name}.",
                                f"add {name} (see schemas/citypack/{FILES[name][0]} and docs/reference/city-pack.md)."))
        return []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        problems.append(Problem(name, "", "encoding", f"is not UTF-8 (byte {exc.start}, line {line}).",
                                "save it as UTF-8 (e.g. `iconv -f GB18030 -t UTF-8`); RFC 7946 requires UTF-8 for GeoJSON."))
        return []
    kind = FILES[name][1]
    if kind in ("json", "geojson"):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            problems.append(Problem(name, "", "json-syntax", f"is not valid JSON: {exc}.", "correct the JSON."))
            return []
        if kind == "json":
            return [("", doc)]
        if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
            problems.append(Problem(name, "", "json-syntax", "is not a GeoJSON FeatureCollection.",
                                    'write {"type": "FeatureCollection", "features": [...]} (ogr2ogr -f GeoJSON does).'))
            return []
        return [(_feature_where(i, f), f) for i, f in enumerate(doc["features"], 1)]
    if kind == "jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append((f"line {n}", json.loads(line)))
            except ValueError as exc:
                problems.append(Problem(name, f"line {n}", "json-syntax", f"is not valid JSON: {exc}.",
                                        "one JSON object per line."))
        return out
    return _read_csv(name, text, problems)


def _read_csv(name: str, text: str, problems: list[Problem]) -> list[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in DEVICE_COLUMNS]
    if unknown or "device_id" not in header:
        problems.append(Problem(name, "line 1", "csv-header", f"has columns {unknown or header}; known columns are "
                                f"{', '.join(DEVICE_COLUMNS)}.", "rename or drop the columns (device_id, device_type, "
                                "owner_department, lat and long are required)."))
        return []
    out = []
    for n, row in enumerate(reader, 2):
        value: dict[str, Any] = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        for column in ("lat", "long"):
            if column in value:
                try:
                    value[column] = float(value[column])
                except ValueError:
                    pass     # the contract names it: type
        out.append((f"line {n}", value))
    return out


def _code(feature: Any) -> str | None:
    props = feature.get("properties") if isinstance(feature, dict) else None
    return props.get("code") if isinstance(props, dict) else None


def _feature_where(i: int, feature: Any) -> str:
    code = _code(feature)
    return f"feature {i}" + (f" ({code})" if code else "")


def _validators() -> dict[str, Any]:
    from jsonschema import Draft202012Validator

    return {schema: Draft202012Validator(json.loads((SCHEMAS / schema).read_text())) for schema, _kind in FILES.values()}


def _schema_problem(name: str, where: str, error: Any) -> Problem:
    field = "/".join(str(p) for p in error.absolute_path) or "(record)"
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        field = "/".join([*(str(p) for p in error.absolute_path), *missing[:1]])
    rule = RULE_OF_KEYWORD.get(error.validator, error.validator)
    fix = {"required": "add the field", "unknown-field": "remove the field or correct its name (the contract lists them)",
           "enum": f"use one of {error.validator_value}"}.get(rule, f"make {field} follow schemas/citypack/{FILES[name][0]}")
    return Problem(name, where, rule, f"{field}: {error.message}.", fix + ".")


# -- the rules between features and files ----------------------------------------------------------


def _manifest_rules(manifest: dict[str, Any]) -> list[Problem]:
    try:
        ZoneInfo(manifest["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        return [Problem("manifest.json", "", "unknown-timezone", f"timezone {manifest['timezone']!r} is not an IANA zone.",
                        "use e.g. Asia/Shanghai or Asia/Urumqi.")]
    return []


def _rings(geometry: dict[str, Any]) -> list[list[list[float]]]:
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    return [ring for rings in polygons for ring in rings]


def _area(geometry: dict[str, Any]) -> float:
    """Area in square degrees of longitude scaled to the latitude (only ever compared with its relatives)."""
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    total = 0.0
    for rings in polygons:
        for k, ring in enumerate(rings):
            scale = math.cos(math.radians(ring[0][1]))
            a = abs(sum(x0 * y1 - x1 * y0 for (x0, y0, *_), (x1, y1, *_) in zip(ring, ring[1:]))) / 2 * scale
            total += a if k == 0 else -a
    return total


def _near_edge(lon: float, lat: float, geometry: dict[str, Any]) -> bool:
    for ring in _rings(geometry):
        for (x0, y0, *_), (x1, y1, *_) in zip(ring, ring[1:]):
            dx, dy = x1 - x0, y1 - y0
            t = max(0.0, min(1.0, ((lon - x0) * dx + (lat - y0) * dy) / (dx * dx + dy * dy or 1)))
            if math.hypot(lon - x0 - t * dx, lat - y0 - t * dy) <= ON_EDGE_DEG:
                return True
    return False


def _inside(lon: float, lat: float, geometry: dict[str, Any]) -> bool:
    """Inside or on the boundary."""
    return point_in_geometry(lon, lat, geometry) or _near_edge(lon, lat, geometry)


def _strictly_inside(lon: float, lat: float, geometry: dict[str, Any]) -> bool:
    return point_in_geometry(lon, lat, geometry) and not _near_edge(lon, lat, geometry)


def _ring_problems(where: str, geometry: dict[str, Any]) -> list[Problem]:
    out = []
    for ring in _rings(geometry):
        if not isinstance(ring, list) or len(ring) < 4 or not all(isinstance(p, list) and len(p) >= 2 for p in ring):
            out.append(Problem("areas.geojson", where, "polygon-too-few-points",
                               "a ring needs at least 4 positions (a triangle and its first point again).", "redraw the polygon."))
            continue
        if ring[0][:2] != ring[-1][:2]:
            out.append(Problem("areas.geojson", where, "polygon-not-closed",
                               f"a ring starts at {ring[0][:2]} and ends at {ring[-1][:2]}.",
                               "repeat the first position at the end of the ring (RFC 7946 3.1.6)."))
        bad = [p for p in ring if not (-180 <= p[0] <= 180 and -90 <= p[1] <= 90)]
        if bad:
            out.append(Problem("areas.geojson", where, "coordinates-out-of-range",
                               f"{len(bad)} position(s) outside WGS84 longitude/latitude, e.g. {bad[0][:2]}.",
                               "reproject to WGS84 (EPSG:4326), e.g. `ogr2ogr -t_srs EPSG:4326`; GeoJSON is [lon, lat]."))
    return out


def _area_rules(features: list[tuple[str, dict[str, Any]]]) -> list[Problem]:
    problems: list[Problem] = []
    by_code: dict[str, tuple[str, dict[str, Any]]] = {}
    usable: dict[str, bool] = {}
    for where, f in features:
        code = f["properties"]["code"]
        if code in by_code:
            problems.append(Problem("areas.geojson", where, "duplicate-code",
                                    f"code {code} is also {by_code[code][0]}.", "give every area its own code."))
            continue
        ring_problems = _ring_problems(where, f["geometry"])
        problems += ring_problems
        by_code[code] = (where, f)
        usable[code] = not ring_problems
    children: dict[str | None, list[str]] = defaultdict(list)
    for code, (where, f) in by_code.items():
        p = f["properties"]
        level, parent = p["level"], p["parent"]
        if level == "district":
            if parent is not None:
                problems.append(Problem("areas.geojson", where, "wrong-parent-level",
                                        f"district {code} has parent {parent}.", "districts have parent null."))
            children[None].append(code)
            continue
        if parent is None or parent not in by_code:
            problems.append(Problem("areas.geojson", where, "unknown-parent",
                                    f"{level} {code}'s parent {parent!r} is not an area of the pack.",
                                    "set parent to the code of the area one level up, or add that area."))
            continue
        want = LEVELS[LEVELS.index(level) - 1]
        if by_code[parent][1]["properties"]["level"] != want:
            problems.append(Problem("areas.geojson", where, "wrong-parent-level",
                                    f"{level} {code}'s parent {parent} is a {by_code[parent][1]['properties']['level']}, "
                                    f"not a {want}.", f"a {level}'s parent is a {want}."))
            continue
        children[parent].append(code)
    for parent, codes in children.items():
        codes = [c for c in codes if usable[c]]
        problems += _sibling_rules(parent, codes, by_code, usable)
    return problems


def _sibling_rules(parent: str | None, codes: list[str], by_code: dict[str, tuple[str, dict[str, Any]]],
                   usable: dict[str, bool]) -> list[Problem]:
    problems = []
    geometry = {c: by_code[c][1]["geometry"] for c in codes}
    vertices = {c: [p for ring in _rings(g) for p in ring[:-1]] for c, g in geometry.items()}
    if parent is not None and usable.get(parent):
        pg = by_code[parent][1]["geometry"]
        for c in codes:
            out = [p for p in vertices[c] if not _inside(p[0], p[1], pg)]
            if out:
                problems.append(Problem("areas.geojson", by_code[c][0], "outside-parent",
                                        f"{len(out)} vertex(es) of {c} lie outside its parent {parent}, e.g. {out[0][:2]}.",
                                        "clip the area to its parent, or correct its parent code."))
    overlapping = set()
    probes = {c: _probes(vertices[c]) for c in codes}
    for i, a in enumerate(codes):
        for b in codes[i + 1:]:
            if any(_strictly_inside(p[0], p[1], geometry[b]) for p in probes[a]) or \
                    any(_strictly_inside(p[0], p[1], geometry[a]) for p in probes[b]):
                overlapping.add(a)
                problems.append(Problem("areas.geojson", by_code[a][0], "overlap",
                                        f"{a} and its sibling {b} overlap.",
                                        "make siblings share their borders (e.g. `ogr2ogr -makevalid`, or snap them in QGIS)."))
    if parent is not None and usable.get(parent) and codes and not overlapping:
        whole = _area(by_code[parent][1]["geometry"])
        covered = sum(_area(geometry[c]) for c in codes)
        level = by_code[codes[0]][1]["properties"]["level"]
        if whole and covered < whole * (1 - AREA_TOLERANCE):
            problems.append(Problem("areas.geojson", by_code[parent][0], "gap",
                                    f"its {len(codes)} {level} area(s) cover {covered / whole:.1%} of it, leaving a gap.",
                                    f"extend the {level} areas to the parent's border, or add the missing {level}."))
        elif whole and covered > whole * (1 + AREA_TOLERANCE):
            problems.append(Problem("areas.geojson", by_code[parent][0], "overlap",
                                    f"its {len(codes)} {level} area(s) add up to {covered / whole:.1%} of it: they overlap.",
                                    "make siblings share their borders instead of covering each other."))
    return problems


def _probes(points: list[list[float]]) -> list[list[float]]:
    """Points just inside an area (its vertices and edge midpoints nudged towards its centre, and the centre):
    one of them inside a sibling means the two overlap. Overlaps no probe finds still show in the area sums."""
    cx, cy = sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)
    nudge = lambda x, y: [x + (cx - x) * 0.02, y + (cy - y) * 0.02]  # noqa: E731
    edges = zip(points, points[1:] + points[:1])
    return [[cx, cy]] + [nudge(*p[:2]) for p in points] + [nudge((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in edges]


def _catalogue_rules(valid: dict[str, list[tuple[str, Any]]], departments: set[str | None],
                     services: set[str | None], areas: set[str | None]) -> list[Problem]:
    problems: list[Problem] = []
    _unique("departments.jsonl", valid["departments.jsonl"], "department_id", problems)
    for where, d in valid["departments.jsonl"]:
        if d["department_id"] not in DEPARTMENT_ROLES:
            problems.append(Problem(
                "departments.jsonl", where, "unknown-role",
                f"department id {d['department_id']!r} is not one of CityBrain's department roles, which name the "
                f"dispatch topics, contract owners and broker principals ({', '.join(DEPARTMENT_ROLES)}).",
                "use the role id of the department's function and keep the city's own name in `name` (e.g. a "
                "综合行政执法局 is urban_management); a new role is a change to the platform "
                "(citybrain/contracts/departments.py, `citybrain dev contracts dispatch`, infra/access.yaml)."))
    _unique("services.jsonl", valid["services.jsonl"], "service_code", problems)
    _unique("routing.jsonl", valid["routing.jsonl"], "rule_id", problems)

    def known(file: str, where: str, record: dict[str, Any], what: str) -> None:
        for d in [record["department"], *record.get("co_departments", [])]:
            if d not in departments:
                problems.append(Problem(file, where, "unknown-department",
                                        f"{what} is routed to department {d!r}, which departments.jsonl does not list.",
                                        "add the department to departments.jsonl, or route to a listed one."))

    for where, s in valid["services.jsonl"]:
        known("services.jsonl", where, s, f"service {s['service_code']}")
    routed_services, routed_categories = set(), set()
    for where, r in valid["routing.jsonl"]:
        known("routing.jsonl", where, r, f"rule {r['rule_id']}")
        rule = f"rule {r['rule_id']} is for"
        if r.get("area_code") and r["area_code"] not in areas:
            problems.append(Problem("routing.jsonl", where, "unknown-area", f"{rule} area {r['area_code']!r}, which "
                                    "areas.geojson does not have.", "use an area's code, or drop area_code for a city-wide rule."))
        if r.get("service_code") and r["service_code"] not in services:
            problems.append(Problem("routing.jsonl", where, "unknown-service", f"{rule} service {r['service_code']!r}, "
                                    "which services.jsonl does not list.", "correct the service code or add the service."))
        if r.get("service_code"):
            routed_services.add(r["service_code"])
        else:
            routed_categories.add(r["category"])
    for where, s in valid["services.jsonl"]:
        if s["service_code"] not in routed_services and s["category"] not in routed_categories:
            problems.append(Problem("services.jsonl", where, "unrouted-service",
                                    f"no routing rule dispatches service {s['service_code']} (category {s['category']}).",
                                    "add a rule to routing.jsonl for the service code or its category."))
    return problems


def _unique(file: str, records: Iterable[tuple[str, dict[str, Any]]], key: str, problems: list[Problem]) -> None:
    seen: dict[str, str] = {}
    for where, r in records:
        if r[key] in seen:
            problems.append(Problem(file, where, "duplicate-id", f"{key} {r[key]} is also on {seen[r[key]]}.",
                                    f"give every record its own {key}."))
        seen.setdefault(r[key], where)


def _device_rules(devices: list[tuple[str, dict[str, Any]]], areas: list[dict[str, Any]],
                  departments: set[str | None]) -> list[Problem]:
    problems: list[Problem] = []
    _unique("devices.csv", devices, "device_id", problems)
    districts = [f["geometry"] for f in areas if f["properties"]["level"] == "district"]
    streets = {f["properties"]["code"]: f["geometry"] for f in areas if f["properties"]["level"] == "street"}
    for where, d in devices:
        lon, lat, device, street = d["long"], d["lat"], f"device {d['device_id']}", d.get("street_code")

        def flag(rule: str, message: str, fix: str, where: str = where) -> None:
            problems.append(Problem("devices.csv", where, rule, message, fix))

        if d["owner_department"] not in departments:
            flag("unknown-department", f"{device} belongs to {d['owner_department']!r}, which departments.jsonl does "
                 "not list.", "correct owner_department or add the department.")
        if not any(_inside(lon, lat, g) for g in districts):
            flag("outside-city", f"{device} at ({lon}, {lat}) is in none of the pack's districts.",
                 "correct its position (lat and long, WGS84; a swapped pair is common) or remove it.")
        elif street and street not in streets:
            flag("unknown-area", f"{device}'s street_code {street} is not a street of the pack.",
                 "use a street's code, or leave street_code empty (it is resolved from the position).")
        elif street and not _inside(lon, lat, streets[street]):
            flag("outside-street", f"{device} at ({lon}, {lat}) is not in its street {street}.",
                 "correct its position or its street_code.")
    return problems
