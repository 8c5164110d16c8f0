"""City packs: one city as plain, standard files, so a city's data office loads its own city.

A pack is a folder:

```
manifest.json       format, the pack's version, the city (code, name), jurisdiction id, time zone, and
                    optionally geometry: the coordinates' system (WGS84, GCJ-02, BD-09) and tolerance,
                    the city's postal-code pattern, its code schemes (codes: city, area, device), its
                    languages (defaults: China's six digits and codes, zh) and how its 考核 weighs the
                    hotline's three rates (assessment.weights; default 0.3, 0.4, 0.3)
areas.geojson       GeoJSON (RFC 7946) FeatureCollection: districts (区) -> streets/towns (街道/镇)
                    -> communities/villages (社区/村) -> optional grids (网格), as deep as the city
                    goes, each with code, name, level, parent and population (grids: their grid
                    workers' ids)
departments.jsonl   one department per line: id (a CityBrain role, or the city's own department:
                    :mod:`citybrain.city.pack_departments`), names, remit (categories)
services.jsonl      the hotline's service catalogue: Open311 service code, name, group, category,
                    responsible and co-responsible departments, SLA hours, priority, keywords
routing.jsonl       routing rules of dispatch: category (and area) -> department, SLA, escalation
devices.csv         the device registry
```

Every file has a contract (JSON Schema) in ``schemas/citypack/``; ``citybrain city check``
checks a pack against them and against the rules between files
(:mod:`citybrain.city.pack_check`, :class:`Problem`, with :class:`Note` for what a pack may do but
should know). ``citybrain city generate`` writes the simulated city (云州市) as a pack.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citybrain.city.catalogue import SERVICES, department_remits, routing_rules
from citybrain.city.model import City
from citybrain.contracts.departments import DEPARTMENTS
from citybrain.settings import packaged

FORMAT = "citybrain.citypack/1"
SCHEMAS = packaged("schemas", "citypack")
#: file -> (its contract, how it is written)
FILES: dict[str, tuple[str, str]] = {
    "manifest.json": ("manifest.schema.json", "json"), "areas.geojson": ("area.schema.json", "geojson"),
    "departments.jsonl": ("department.schema.json", "jsonl"), "services.jsonl": ("service.schema.json", "jsonl"),
    "routing.jsonl": ("routing.schema.json", "jsonl"), "devices.csv": ("device.schema.json", "csv")}
LEVELS = ("district", "street", "community", "grid")
DEVICE_COLUMNS = ("device_id", "device_type", "owner_department", "lat", "long", "street_code", "site_type", "vendor",
                  "serial_number", "installed_at", "reporting_interval_s")
#: Columns a pack writes only when one of its devices has a value (packs written before them stay byte-identical).
OPTIONAL_DEVICE_COLUMNS = ("reporting_interval_s",)
#: The languages of a city whose manifest declares none (its Open311 notices are written in the first).
DEFAULT_LANGUAGES = ("zh",)
#: The escalation of a hotline ticket in a community with a grid (网格 -> 社区 -> 街道 -> 区 -> department).
ESCALATION = ["grid", "community", "street", "district", "department"]
#: The departments whose matters the simulated city's areas handle first (属地管理: city appearance, property,
#: neighbourhood care); the others' tickets go to the department at once.
TERRITORIAL = ("urban_management", "housing", "civil_affairs")


@dataclass(frozen=True)
class Problem:
    """Something that makes a pack unfit to import: where it is, the rule, what is wrong and how to fix it
    (``area_m2``: the measured area, for the geometry rules that measure one)."""

    file: str
    where: str          # "line 12", "feature 3 (990101001)", "" for the whole file
    rule: str
    message: str
    fix: str
    area_m2: float | None = None

    def __str__(self) -> str:
        return f"{self.file}{' ' + self.where if self.where else ''}: [{self.rule}] {self.message} Fix: {self.fix}"


@dataclass(frozen=True)
class Note:
    """Something a pack may do but should know about (it stops at districts, its rings run clockwise): said
    beside the problems, never a reason to refuse it. ``fix`` says what to add or change to have it otherwise."""

    file: str
    where: str
    rule: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}{' ' + self.where if self.where else ''}: [{self.rule}] {self.message} To change it: {self.fix}"


@dataclass
class Pack:
    """A city pack's content, file by file (records as plain JSON values)."""

    manifest: dict[str, Any]
    areas: list[dict[str, Any]]           # GeoJSON Features
    departments: list[dict[str, Any]]
    services: list[dict[str, Any]]
    routing: list[dict[str, Any]]
    devices: list[dict[str, Any]]

    def files(self) -> dict[str, str]:
        """File name -> text, as written to disk."""
        def jsonl(rows: list[dict[str, Any]]) -> str:
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

        out = io.StringIO()
        columns = [c for c in DEVICE_COLUMNS if c not in OPTIONAL_DEVICE_COLUMNS or any(d.get(c) for d in self.devices)]
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for d in self.devices:
            writer.writerow({k: d.get(k, "") for k in columns})
        return {
            "manifest.json": json.dumps(self.manifest, ensure_ascii=False, indent=2) + "\n",
            "areas.geojson": json.dumps({"type": "FeatureCollection", "features": self.areas}, ensure_ascii=False) + "\n",
            "departments.jsonl": jsonl(self.departments),
            "services.jsonl": jsonl(self.services),
            "routing.jsonl": jsonl(self.routing),
            "devices.csv": out.getvalue(),
        }

    def summary(self) -> str:
        """What the pack holds, in one line: "云州市 pack 1.0.0: 12 districts, 108 streets, ..."."""
        counts = {lvl: sum(1 for f in self.areas if f.get("properties", {}).get("level") == lvl) for lvl in LEVELS}
        plural = {"district": "districts", "street": "streets", "community": "communities", "grid": "grids"}
        return (f"{self.manifest.get('city', {}).get('name', '?')} pack {self.manifest.get('version', '?')}: "
                + ", ".join(f"{n:,} {plural[lvl]}" for lvl, n in counts.items() if n)
                + f", {len(self.departments)} departments, {len(self.services)} services, "
                f"{len(self.routing)} routing rules, {len(self.devices):,} devices")

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in self.files().items():
            path = directory / name
            path.write_text(text, encoding="utf-8")
            written.append(path)
        return written


def languages(city: dict[str, Any]) -> tuple[str, ...]:
    """The languages of a manifest or a ``raw.ref.city`` record, first the one the city answers in."""
    return tuple(city.get("languages") or DEFAULT_LANGUAGES)


def _feature(code: str, name: str, level: str, parent: str | None, ring: list[list[float]], **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"code": code, "name": name, "level": level, "parent": parent, **props}}


def _mid(a: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...]) -> list[float]:
    return [round((a[0] + b[0]) / 2, 7), round((a[1] + b[1]) / 2, 7)]


def _split(ring: list[list[float]]) -> list[list[list[float]]]:
    """A quadrilateral ring (4 corners, closed) cut into four by its edge midpoints and centre:
    the four quads tile it exactly, and neighbours cut a shared edge at the same point."""
    p = [tuple(c) for c in ring[:4]]
    m01, m12, m23, m30 = _mid(p[0], p[1]), _mid(p[1], p[2]), _mid(p[2], p[3]), _mid(p[3], p[0])
    c = [round(sum(q[0] for q in p) / 4, 7), round(sum(q[1] for q in p) / 4, 7)]
    quads = [[list(p[0]), m01, c, m30], [m01, list(p[1]), m12, c], [c, m12, list(p[2]), m23], [m30, c, m23, list(p[3])]]
    return [q + [q[0]] for q in quads]


def _halves(ring: list[list[float]]) -> list[list[list[float]]]:
    """A quadrilateral ring cut in two across its first and third edges."""
    p = ring[:4]
    m01, m23 = _mid(p[0], p[1]), _mid(p[2], p[3])
    return [[p[0], m01, m23, p[3], p[0]], [m01, p[1], p[2], m23, m01]]


def pack_from_city(city: City, version: str = "1.0.0", grids: bool = True) -> Pack:
    """The simulated city as a pack: its districts and streets, each street cut into four communities
    (named after its residential compounds) and each community into two grids with two grid workers.
    A city read from a pack is that pack."""
    if city.pack is not None:
        return city.pack
    areas = [_feature(d.code, d.name, "district", None, d.geometry["coordinates"][0], name_en=d.name_en,
                      population=d.population) for d in city.districts]
    for s in city.streets:
        areas.append(_feature(s.code, s.name, "street", s.district_code, s.geometry["coordinates"][0],
                              name_en=s.name_en, population=s.population))
        share = [s.population // 4 + (1 if k < s.population % 4 else 0) for k in range(4)]
        for k, ring in enumerate(_split(s.geometry["coordinates"][0])):
            code = f"{s.code}{k + 1:03d}"
            areas.append(_feature(code, f"{s.communities[k % len(s.communities)]}社区", "community", s.code, ring,
                                  population=share[k]))
            if grids:
                for g, half in enumerate(_halves(ring)):
                    areas.append(_feature(f"{code}{g + 1:02d}", f"第{g + 1}网格", "grid", code, half,
                                          grid_workers=[f"gw-{code}{g + 1:02d}-{w}" for w in (1, 2)]))
    remits = department_remits()
    departments = [{"department_id": d, "name": zh, "name_en": en, "remit": remits[d]} for d, (zh, en) in DEPARTMENTS.items()]
    services = []
    for s in SERVICES:
        service: dict[str, Any] = {"service_code": s.service_code, "name": s.service_name, "name_en": s.service_name_en,
                                   "group": s.group, "category": s.category, "department": s.department,
                                   "sla_hours": s.sla_hours, "priority": s.priority}
        if s.co_departments:
            service["co_departments"] = list(s.co_departments)
        if s.keywords:
            service["keywords"] = list(s.keywords)
        services.append(service)
    routing = []
    for rule in routing_rules("2026-01-01T00:00:00Z"):
        rule = {k: v for k, v in rule.items() if k != "effective_from"}
        if "service_code" in rule and rule["department"] in TERRITORIAL and rule["priority"] == "normal":
            rule["escalation"] = ESCALATION
        routing.append(rule)
    devices = [{"device_id": d.device_id, "device_type": d.device_type, "owner_department": d.owner_department,
                "lat": d.lat, "long": d.lon, "street_code": d.street_code, "site_type": d.site_type, "vendor": d.vendor,
                "serial_number": d.serial_number, "installed_at": d.installed_at} for d in city.devices]
    manifest = {"format": FORMAT, "version": version,
                "city": {"code": city.districts[0].code[:4], "name": city.name, "name_en": city.name_en},
                "jurisdiction_id": city.jurisdiction_id, "timezone": city.timezone,
                "description": f"The simulated city {city.name} ({city.name_en}), generated from seed {city.seed}."}
    return Pack(manifest, areas, departments, services, routing, devices)
