"""Checking a city pack: every problem at once, each with its file, line or feature, rule and fix.

A pack is checked like a feed: each file against its contract (``schemas/citypack/``), then
the rules between files and features — codes of the schemes the manifest declares (``codes``:
:mod:`citybrain.ingest.codes`), polygons closed, inside WGS84 and valid (GEOS's reason),
codes unique, parents known and one level up, children inside their parent, siblings neither
overlapping nor leaving gaps (measured in square metres against the manifest's
``geometry.tolerance_m2``: :mod:`citybrain.city.geometry`), departments beyond CityBrain's roles
with a valid id (their topics, principals and grants: :mod:`citybrain.city.pack_departments`),
services and rules routed to departments the pack declares and to known areas, every service
routed, working hours the SLA clock can count with (:mod:`citybrain.city.working_time`) wherever a rule
counts in them, devices inside the city and their street. Coordinates the manifest declares as GCJ-02
or BD-09 are converted to WGS84 first (:mod:`citybrain.city.crs`); the checked pack is the
converted one, the one that is imported. A pack with any problem is refused whole
(``citybrain city import`` imports nothing of it).

Beside the problems come notes (:func:`review_pack`): what the pack may do but should know,
e.g. that it stops at districts and so forgoes street, community and grid dispatch.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import shapely

from citybrain.city.crs import WGS84, pack_in_wgs84
from citybrain.city.geometry import (DEFAULT_TOLERANCE_M2, ON_EDGE_DEG, Boundary, clockwise_note,
                                     read_boundary, sibling_problems, within)
from citybrain.city.pack import DEVICE_COLUMNS, FILES, LEVELS, SCHEMAS, Note, Pack, Problem
from citybrain.city.working_time import working_hours_problems
from citybrain.contracts.departments import DEPARTMENT_ID_RE, RESERVED_IDS, DEPARTMENTS as DEPARTMENT_ROLES
from citybrain.contracts.topics import work_orders
from citybrain.ingest.codes import DEFAULTS as DEFAULT_CODES
from citybrain.ingest.codes import CodeSchemes
from citybrain.ingest.codes import pattern_problem as code_pattern_problem
from citybrain.ingest.postal import DEFAULT_PATTERN, pattern_problem

__all__ = ["ON_EDGE_DEG", "Note", "PackReport", "Problem", "check_pack", "review_pack"]

RULE_OF_KEYWORD = {"additionalProperties": "unknown-field"}
#: What a pack that stops at a level forgoes (the levels below it are what it lacks).
FORGONE = {
    "district": "no street, community or grid dispatch: a position resolves to its district only, devices carry no "
                "street, a routing rule's escalation starts at the district, and fusion's city events and early "
                "warnings name the district, no street",
    "street": "no community or grid dispatch: a position resolves to its district and street, and a routing rule's "
              "escalation starts at the street",
    "community": "no grid dispatch (no 网格员): a routing rule's escalation starts at the community",
}
#: Schemes of another city, for the fixes: Los Angeles's city, council districts and sanitation devices.
CODE_EXAMPLES = {"city": "^US-[A-Z]{2}-[A-Z]{2,4}$", "area": "^LA-[A-Z0-9]{2,8}$", "device": "^LASAN-[A-Z]{2}-[0-9]{3}$"}
PLURAL = {"district": "districts", "street": "streets", "community": "communities", "grid": "grids"}
#: How far the 考核 weights of the three rates (manifest assessment.weights) may add up from 1: rounding, no more.
WEIGHTS_SUM_TOLERANCE = 1e-6


@dataclass
class PackReport:
    """A checked pack (None when a file could not be read at all; converted to WGS84), its problems (any one
    refuses it) and its notes (never a reason to refuse it)."""

    pack: Pack | None
    problems: list[Problem]
    notes: list[Note] = field(default_factory=list)


def check_pack(directory: Path) -> tuple[Pack | None, list[Problem]]:
    """(the pack, every problem found); the pack is None when a file could not be read at all."""
    report = review_pack(directory)
    return report.pack, report.problems


def review_pack(directory: Path) -> PackReport:
    """The pack in ``directory`` checked whole: its problems and its notes."""
    problems: list[Problem] = []
    content: dict[str, list[tuple[str, Any]]] = {}
    for name in FILES:
        content[name] = _read(directory, name, problems)
    if any(p.rule in ("missing-file", "encoding", "json-syntax") and p.where == "" for p in problems):
        return PackReport(None, problems)
    validators = _validators()
    ok: dict[str, list[int]] = {}
    for name, items in content.items():
        schema = validators[FILES[name][0]]
        ok[name] = []
        for k, (where, value) in enumerate(items):
            errors = sorted(schema.iter_errors(value), key=lambda e: list(e.absolute_path))
            problems += [_schema_problem(name, where, error) for error in errors]
            if not errors:
                ok[name].append(k)
    pick = lambda name: [v for _w, v in content[name]]  # noqa: E731
    manifest = pick("manifest.json")[0] if content["manifest.json"] else {}
    settings = manifest.get("geometry", {}) if ok["manifest.json"] else {}
    crs, tolerance = settings.get("crs", WGS84), float(settings.get("tolerance_m2", DEFAULT_TOLERANCE_M2))
    read = Pack(manifest, pick("areas.geojson"), pick("departments.jsonl"), pick("services.jsonl"),
                pick("routing.jsonl"), pick("devices.csv"))
    pack = pack_in_wgs84(read, crs)
    # The rules between records judge the records that have their contract's shape, so one broken
    # record does not hide the other problems; ids are known from every record that carries one.
    valid = {name: [content[name][k] for k in ok[name]] for name in FILES}
    if valid["manifest.json"]:
        problems += _manifest_rules(manifest)
        problems += _code_rules(manifest, valid)
    areas = [(where, f, pack.areas[k]) for k, (where, f) in zip(ok["areas.geojson"], valid["areas.geojson"])]
    area_problems, boundaries, notes = _area_rules(areas, crs, tolerance)
    problems += area_problems
    departments = {d.get("department_id") for d in pack.departments if isinstance(d, dict)}
    if valid["manifest.json"]:
        problems += _clock_rules(manifest, valid["routing.jsonl"], valid["services.jsonl"])
    problems += _catalogue_rules(valid, departments,
                                 {s.get("service_code") for s in pack.services if isinstance(s, dict)},
                                 {_code(f) for f in pack.areas})
    devices = [(where, d, pack.devices[k]) for k, (where, d) in zip(ok["devices.csv"], valid["devices.csv"])]
    levels = {f["properties"]["code"]: f["properties"]["level"] for _w, f in valid["areas.geojson"]}
    problems += _device_rules(devices, boundaries, levels, departments)
    notes += _depth_notes([f for _w, f in valid["areas.geojson"]], [r for _w, r in valid["routing.jsonl"]])
    return PackReport(pack, problems, notes)


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
        for column, kind in (("lat", float), ("long", float), ("reporting_interval_s", int)):
            if column in value:
                try:
                    value[column] = kind(value[column])
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
    problems = []
    try:
        ZoneInfo(manifest["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(Problem("manifest.json", "", "unknown-timezone",
                                f"timezone {manifest['timezone']!r} is not an IANA zone.",
                                "use e.g. Asia/Shanghai or Asia/Urumqi."))
    postal = pattern_problem(manifest.get("postal_code_pattern", DEFAULT_PATTERN))
    if postal is not None:
        problems.append(Problem("manifest.json", "", "postal-code-pattern", f"{postal}.",
                                "write a Python regular expression matching the city's whole postal codes, e.g. "
                                "^[0-9]{5}(-[0-9]{4})?$ for US ZIP codes, or leave it out for China's six digits."))
    if "working_hours" in manifest:
        problems += [Problem("manifest.json", "", "working-hours", f"{field}: {message}", fix[:1].upper() + fix[1:])
                     for field, message, fix in working_hours_problems(manifest["working_hours"])]
    weights = (manifest.get("assessment") or {}).get("weights") or {}
    if weights and abs(sum(float(w) for w in weights.values()) - 1) > WEIGHTS_SUM_TOLERANCE:
        problems.append(Problem("manifest.json", "", "assessment-weights",
                                f"assessment.weights {weights} add up to {sum(weights.values()):g}, not 1.",
                                "give the three rates weights that add up to 1 (e.g. response 0.3, resolution 0.4, "
                                "satisfaction 0.3), or leave assessment out for those."))
    for kind, pattern in (manifest.get("codes") or {}).items():
        problem = code_pattern_problem(kind, pattern)
        if problem is not None:
            problems.append(Problem("manifest.json", "", "code-pattern", f"{problem}.",
                                    f"write codes.{kind} as the city's whole codes, e.g. {CODE_EXAMPLES[kind]}, or "
                                    f"leave it out for China's {DEFAULT_CODES[kind]}."))
    return problems


def _code_rules(manifest: dict[str, Any], valid: dict[str, list[tuple[str, Any]]]) -> list[Problem]:
    """The city's code, its areas' codes and parents and its devices' ids and streets, each against the scheme
    the manifest declares (China's where it declares none)."""
    declared = manifest.get("codes") or {}
    if any(code_pattern_problem(kind, pattern) for kind, pattern in declared.items()):
        return []   # the pattern itself is the problem, reported by _manifest_rules
    codes = CodeSchemes.of_city(manifest)
    problems = []

    def check(file: str, where: str, kind: str, field: str, value: Any) -> None:
        if value is not None and not codes.matches(kind, value):
            problems.append(Problem(file, where, "code-scheme", f"{field} {value!r} does not match codes.{kind} "
                                    f"{codes.patterns[kind]!r}{'' if kind in declared else ' (the default)'}.",
                                    f"write the {kind} code as the city's scheme has it, or declare the scheme the "
                                    f"city uses as codes.{kind} in manifest.json (e.g. {CODE_EXAMPLES[kind]})."))

    check("manifest.json", "", "city", "city.code", (manifest.get("city") or {}).get("code"))
    for where, f in valid["areas.geojson"]:
        props = f.get("properties") or {}
        check("areas.geojson", where, "area", "code", props.get("code"))
        check("areas.geojson", where, "area", "parent", props.get("parent"))
    for where, d in valid["devices.csv"]:
        check("devices.csv", where, "device", "device_id", d.get("device_id"))
        check("devices.csv", where, "area", "street_code", d.get("street_code"))
    return problems


def _clock_rules(manifest: dict[str, Any], rules: list[tuple[str, dict[str, Any]]],
                 services: list[tuple[str, dict[str, Any]]]) -> list[Problem]:
    """A rule or service whose SLA counts working time needs the manifest to say when the city works."""
    if "working_hours" in manifest:
        return []
    fix = ('add working_hours to the manifest (e.g. {"days": ["mon", "tue", "wed", "thu", "fri"], "start": '
           '"09:00", "end": "18:00"}), or drop sla_clock for the calendar clock.')
    return [Problem(file, where, "no-working-hours", f"{what} counts its SLA in working time (sla_clock: working), "
                    "but manifest.json declares no working_hours.", fix)
            for file, what, where, r in [*(("routing.jsonl", f"rule {r['rule_id']}", w, r) for w, r in rules),
                                         *(("services.jsonl", f"service {s['service_code']}", w, s)
                                           for w, s in services)]
            if r.get("sla_clock") == "working"]


def _polygons(geometry: dict[str, Any]) -> list[list[Any]]:
    """The rings of each polygon of a Polygon or MultiPolygon, as written (a polygon without rings has one empty)."""
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    return [rings if isinstance(rings, list) and rings else [[]] for rings in polygons]


def _positions(ring: Any) -> np.ndarray | None:
    """A ring's [lon, lat] as an (n, 2) array; None when it is not a list of positions of at least two numbers."""
    if not isinstance(ring, list):
        return None
    try:
        xy = np.asarray(ring)
    except ValueError:            # positions of two and three numbers mixed
        xy = None
    if xy is not None and xy.dtype.kind in "iuf" and xy.ndim == 2 and xy.shape[1] >= 2:
        return xy[:, :2].astype(float)
    if all(isinstance(p, list) and len(p) >= 2 and all(type(v) in (int, float) for v in p[:2]) for p in ring):
        return np.array([p[:2] for p in ring], dtype=float)
    return None


def _ring_problems(where: str, geometry: dict[str, Any]) -> tuple[list[Problem], shapely.Geometry | None]:
    """The rings' own shape (GeoJSON's rules), before GEOS can read them; and the geometry when they have it."""
    out = []
    polygons = []
    for rings in _polygons(geometry):
        arrays = []
        for ring in rings:
            xy = _positions(ring)
            if xy is None or len(xy) < 4:
                out.append(Problem("areas.geojson", where, "polygon-too-few-points",
                                   "a ring needs at least 4 positions of two numbers (a triangle and its first point "
                                   "again).", "redraw the polygon."))
                continue
            arrays.append(xy)
            if (xy[0] != xy[-1]).any():
                out.append(Problem("areas.geojson", where, "polygon-not-closed",
                                   f"a ring starts at {ring[0][:2]} and ends at {ring[-1][:2]}.",
                                   "repeat the first position at the end of the ring (RFC 7946 3.1.6)."))
            bad = np.flatnonzero(~((np.abs(xy[:, 0]) <= 180) & (np.abs(xy[:, 1]) <= 90)))
            if len(bad):
                out.append(Problem("areas.geojson", where, "coordinates-out-of-range",
                                   f"{len(bad)} position(s) outside WGS84 longitude/latitude, e.g. {ring[bad[0]][:2]}.",
                                   "reproject to WGS84 (EPSG:4326), e.g. `ogr2ogr -t_srs EPSG:4326`; GeoJSON is [lon, "
                                   "lat]. GCJ-02 (Amap, DataV) or BD-09 (Baidu) longitude/latitude is declared in the "
                                   "manifest (geometry.crs) and converted."))
        polygons.append(arrays)
    if out:
        return out, None
    parts = [shapely.Polygon(rings[0], rings[1:]) for rings in polygons]
    return [], parts[0] if geometry["type"] == "Polygon" else shapely.MultiPolygon(parts)


def _in_wgs84(geometry: shapely.Geometry, converted: dict[str, Any], crs: str) -> shapely.Geometry:
    """An area's geometry (read from its positions, in ``crs``) in WGS84: the converted pack's, so that what is
    measured is what is published, and no area is converted twice."""
    return geometry if crs == WGS84 else shapely.from_geojson(json.dumps(converted["geometry"]))


def _area_rules(features: list[tuple[str, dict[str, Any], dict[str, Any]]], crs: str, tolerance_m2: float
                ) -> tuple[list[Problem], dict[str, Boundary], list[Note]]:
    """Problems of the areas (where, as read in ``crs``, as converted to WGS84), their boundaries by code (in WGS84,
    those GEOS can measure), and the notes on them."""
    problems: list[Problem] = []
    by_code: dict[str, tuple[str, dict[str, Any]]] = {}
    boundaries: dict[str, Boundary] = {}
    for where, f, converted in features:
        code = f["properties"]["code"]
        if code in by_code:
            problems.append(Problem("areas.geojson", where, "duplicate-code",
                                    f"code {code} is also {by_code[code][0]}.", "give every area its own code."))
            continue
        by_code[code] = (where, f)
        ring_problems, geometry = _ring_problems(where, f["geometry"])
        problems += ring_problems
        if geometry is not None:
            boundary, invalid = read_boundary(where, code, f["properties"]["level"],
                                              _in_wgs84(geometry, converted, crs), crs)
            problems += invalid
            if boundary is not None:
                boundaries[code] = boundary
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
        kids = [boundaries[c] for c in codes if c in boundaries]
        problems += sibling_problems(boundaries.get(parent) if parent else None, kids, tolerance_m2, crs,
                                     parent_where=by_code[parent][0] if parent else "", top_level=parent is None)
    notes = clockwise_note(boundaries.values())
    return problems, boundaries, notes


def _depth_notes(features: list[dict[str, Any]], rules: list[dict[str, Any]]) -> list[Note]:
    """What the pack forgoes by stopping above grids: the level it stops at, the districts (streets, communities)
    that stop above the others, the escalation steps its routing rules name but it lacks."""
    levels = {f["properties"]["level"] for f in features}
    present = [lvl for lvl in LEVELS if lvl in levels]
    if not present:
        return []
    notes = []
    deepest = present[-1]
    if deepest != "grid":
        lacking = [PLURAL[lvl] for lvl in LEVELS[LEVELS.index(deepest) + 1:]]
        lacking_text = " or ".join([", ".join(lacking[:-1]), lacking[-1]] if len(lacking) > 1 else lacking)
        notes.append(Note("areas.geojson", "", "depth",
                          f"the pack stops at {PLURAL[deepest]}, with no {lacking_text}: {FORGONE[deepest]}. It is a "
                          "complete pack at that depth.",
                          f"add {LEVELS[LEVELS.index(deepest) + 1]} areas (parent: their {deepest}'s code) to dispatch "
                          "closer to the ground; grids are optional even then."))
    parents_with_children = {f["properties"]["parent"] for f in features}
    for level in present[:-1]:
        if level == "community":      # communities without grids are common: grids are drawn where workers are
            continue
        bare = [f["properties"]["code"] for f in features
                if f["properties"]["level"] == level and f["properties"]["code"] not in parents_with_children]
        if bare:
            below = LEVELS[LEVELS.index(level) + 1]
            notes.append(Note("areas.geojson", "", "depth",
                              f"{len(bare)} {level}(s) have no {below} areas while others do, e.g. {', '.join(bare[:5])}: "
                              f"positions there resolve to the {level} and dispatch stops there.",
                              f"add their {below} areas, or leave them if that is how the city is organised."))
    missing = [lvl for lvl in ("grid", "community", "street") if lvl not in levels]
    named = sorted({lvl for r in rules for lvl in r.get("escalation") or () if lvl in missing},
                   key=LEVELS.index)
    if named:
        count = sum(1 for r in rules if set(r.get("escalation") or ()) & set(named))
        notes.append(Note("routing.jsonl", "", "escalation-levels",
                          f"{count} routing rule(s) escalate through {', '.join(named)}, which the pack does not have: "
                          "a ticket skips those steps and is dispatched to the first level its position has "
                          "(citybrain.city.routing.chain).",
                          f"add {', '.join(named)} areas, or drop them from the rules' escalation."))
    return notes


def _catalogue_rules(valid: dict[str, list[tuple[str, Any]]], departments: set[str | None],
                     services: set[str | None], areas: set[str | None]) -> list[Problem]:
    problems: list[Problem] = []
    _unique("departments.jsonl", valid["departments.jsonl"], "department_id", problems)
    for where, d in valid["departments.jsonl"]:
        dept = d["department_id"]
        if dept in DEPARTMENT_ROLES:
            continue
        if not DEPARTMENT_ID_RE.match(dept) or dept in RESERVED_IDS:
            why = (f"is reserved ({work_orders(dept)} is the city's area offices' topic)" if dept in RESERVED_IDS
                   else "is not lower snake case (letters and digits in words joined by single underscores, 2-40 "
                        "characters, starting with a letter)")
            problems.append(Problem(
                "departments.jsonl", where, "department-id",
                f"department_id {dept!r} {why}; a department beyond CityBrain's roles names its dispatch topic "
                f"({work_orders('<department_id>')}) and its broker principal (dept-<department_id>).",
                "choose an id like parks or market_supervision, and use it in services.jsonl, routing.jsonl and "
                "devices.csv; or, for a department doing a role's work, the role's id "
                f"({', '.join(DEPARTMENT_ROLES)}) with the city's own name in `name`."))
    _unique("services.jsonl", valid["services.jsonl"], "service_code", problems)
    _unique("routing.jsonl", valid["routing.jsonl"], "rule_id", problems)

    def known(file: str, where: str, record: dict[str, Any], what: str) -> None:
        named = [("department", record["department"]), *(("co_departments", d) for d in record.get("co_departments", []))]
        for field_name, d in named:
            if d not in departments:
                problems.append(Problem(file, where, "unknown-department",
                                        f"{what}: {field_name} {d!r} is not a department departments.jsonl "
                                        "declares.",
                                        f"declare {d!r} in departments.jsonl (id, name, name_en, remit; a department "
                                        "beyond CityBrain's roles gets its dispatch topic, principal and grants on "
                                        "import), or route to a declared one."))

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


def _device_rules(devices: list[tuple[str, dict[str, Any], dict[str, Any]]], boundaries: dict[str, Boundary],
                  levels: dict[str, str], departments: set[str | None]) -> list[Problem]:
    """Devices (as read, and converted to WGS84) owned by a known department, inside the city and their street
    (``levels``: code -> level of every area, measurable or not)."""
    problems: list[Problem] = []
    _unique("devices.csv", [(w, d) for w, d, _c in devices], "device_id", problems)
    districts = [b.geometry for b in boundaries.values() if b.level == "district"]
    # A device in no measurable district may lie in one GEOS could not read: that district's problem is named.
    judge_city = all(c in boundaries for c, lvl in levels.items() if lvl == "district")
    streets = {c: b.geometry for c, b in boundaries.items() if b.level == "street"}
    xy = np.array([[c["long"], c["lat"]] for _w, _d, c in devices], dtype=float).reshape(-1, 2)
    in_city = set(within(districts, xy)[0].tolist())
    for k, (where, d, converted) in enumerate(devices):
        lon, lat, device, street = d["long"], d["lat"], f"device {d['device_id']}", d.get("street_code")

        def flag(rule: str, message: str, fix: str, where: str = where) -> None:
            problems.append(Problem("devices.csv", where, rule, message, fix))

        if d["owner_department"] not in departments:
            flag("unknown-department", f"{device} belongs to {d['owner_department']!r}, which departments.jsonl does "
                 "not list.", "correct owner_department or add the department.")
        if k not in in_city:
            if judge_city:
                flag("outside-city", f"{device} at ({lon}, {lat}) is in none of the pack's districts.",
                     "correct its position (lat and long, in the manifest's geometry.crs; a swapped pair is common) "
                     "or remove it.")
        elif street and levels.get(street) != "street":
            flag("unknown-area", f"{device}'s street_code {street} is not a street of the pack.",
                 "use a street's code, or leave street_code empty (it is resolved from the position).")
        elif street and street in streets and not shapely.dwithin(streets[street], shapely.Point(converted["long"], converted["lat"]),
                                            ON_EDGE_DEG):
            flag("outside-street", f"{device} at ({lon}, {lat}) is not in its street {street}.",
                 "correct its position or its street_code.")
    return problems
