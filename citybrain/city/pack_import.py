"""A city pack onto the reference topics: checked whole, then only what changed is published.

The pack's manifest, areas (districts, streets, communities), grids, departments, services,
routing rules and devices become records of ``raw.ref.city``, ``raw.ref.admin_area``,
``raw.ref.grid``, ``raw.ref.department``, ``raw.ref.service``, ``raw.ref.routing_rule`` and ``raw.ref.device`` —
compacted topics keyed by code, so an updated area, service, rule or device replaces only
itself. Positions are published in WGS84: a pack whose manifest declares GCJ-02 or BD-09 is
converted by the check (:mod:`citybrain.city.crs`), and the converted pack is what is published.
Every record is checked against its topic's contract before anything is sent
(:func:`contract_problems`, also run by ``city check`` when it has the contracts): a pack with
any problem is refused whole and nothing of it is produced. After the broker has
acknowledged every record, the pack's version, digest and counts are recorded in
``<state>/city/imported.json``. Before any record is sent, the departments the pack declares beyond
CityBrain's roles get their dispatch contracts, topics, principals and grants
(:mod:`citybrain.city.pack_departments`), so a rule routing to one finds its topic.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from citybrain.city.pack import FILES, Pack, languages
from citybrain.city.pack_check import Problem, check_pack
from citybrain.city.pack_departments import department_problems, write_departments
from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.errors import InputError
from citybrain.geo import Area, AreaIndex
from citybrain.ingest.codes import CodeSchemes
from citybrain.ingest.postal import DEFAULT_PATTERN, PostalCodes
from citybrain.settings import Settings
from citybrain.times import iso

log = logging.getLogger(__name__)

CITY, AREAS, GRIDS, DEPARTMENTS, SERVICES, RULES, DEVICES = (
    topics.REF_CITY, topics.REF_AREAS, topics.REF_GRIDS, topics.REF_DEPARTMENTS, topics.REF_SERVICES,
    topics.REF_ROUTING_RULES, topics.REF_DEVICES)
#: Reference topic -> (the pack file its records come from, their key field)
TARGETS = {CITY: ("manifest.json", "city_code"), AREAS: ("areas.geojson", "area_code"), GRIDS: ("areas.geojson", "grid_code"),
           DEPARTMENTS: ("departments.jsonl", "department_id"), SERVICES: ("services.jsonl", "service_code"),
           RULES: ("routing.jsonl", "rule_id"), DEVICES: ("devices.csv", "device_id")}
#: The contracts (ids, without the major version) whose records come from a pack.
PACK_CONTRACTS = tuple(topics.contract_id(topic) for topic in TARGETS)
#: Fields that change on every import and so do not make a record changed.
STAMPS = ("updated_at", "effective_from")


class PackError(InputError):
    """A city pack has problems; nothing of it was imported. ``problems`` lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"the city pack has {len(problems)} problem(s); nothing was imported. First: {problems[0]}. "
                         "Fix: each problem says how (`citybrain city import` lists them all; `citybrain city check "
                         "PACK` checks the files alone).")


def reference_records(pack: Pack, as_of: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Topic -> (where in the pack, record) for every record the pack publishes."""
    m = pack.manifest
    city = {"city_code": str(m["city"]["code"]), "name": m["city"]["name"], "jurisdiction_id": m["jurisdiction_id"],
            "timezone": m["timezone"], "pack_version": str(m["version"]), "updated_at": as_of}
    city.update({k: v for k, v in (("name_en", m["city"].get("name_en")), ("description", m.get("description")),
                                   ("postal_code_pattern", m.get("postal_code_pattern")), ("codes", m.get("codes")),
                                   ("languages", m.get("languages")), ("working_hours", m.get("working_hours")),
                                   ("assessment", m.get("assessment")), ("reporting", m.get("reporting"))) if v})
    city_code = str(m["city"]["code"]).ljust(6, "0")
    areas, grids, streets = [], [], []
    for i, f in enumerate(pack.areas, 1):
        p = f["properties"]
        if p["level"] == "grid":
            grid = {"grid_code": p["code"], "name": p["name"], "community_code": p["parent"],
                    "grid_workers": p.get("grid_workers", []), "geometry": f["geometry"], "updated_at": as_of}
            grid.update({k: p[k] for k in ("population",) if k in p})
            grids.append((f"feature {i} ({p['code']})", grid))
            continue
        record = {"area_code": p["code"], "name": p["name"], "level": p["level"],
                  "parent_code": p["parent"] or city_code, "geometry": f["geometry"], "updated_at": as_of}
        record.update({k: p[k] for k in ("name_en", "population") if k in p})
        areas.append((f"feature {i} ({p['code']})", record))
        if p["level"] == "street":
            streets.append(Area(p["code"], p["name"], "street", p["parent"], f["geometry"]))
    index = AreaIndex(streets)
    departments = [(f"line {n}", {**{k: d[k] for k in ("department_id", "name", "remit")},
                                  **({"name_en": d["name_en"]} if "name_en" in d else {}), "updated_at": as_of})
                   for n, d in enumerate(pack.departments, 1)]
    services = [(f"line {n}", {**s, "updated_at": as_of}) for n, s in enumerate(pack.services, 1)]
    rules = [(f"line {n}", {**r, "effective_from": as_of}) for n, r in enumerate(pack.routing, 1)]
    devices = []
    for n, d in enumerate(pack.devices, 2):      # line 1 is the header
        record = {**d, "status": d.get("status", "active"), "updated_at": as_of}
        if not record.get("street_code"):
            street = index.street_at(float(d["long"]), float(d["lat"]))
            if street is not None:
                record["street_code"] = street.code
        devices.append((f"line {n}", record))
    return {CITY: [("manifest.json", city)], AREAS: areas, GRIDS: grids, DEPARTMENTS: departments, SERVICES: services, RULES: rules,
            DEVICES: devices}


def contract_problems(pack: Pack, contracts: Mapping[str, Contract],
                      records: dict[str, list[tuple[str, dict[str, Any]]]] | None = None) -> list[Problem]:
    """The pack's records as they would be published (``records``, else built now), checked against their
    topics' contracts."""
    problems = []
    for topic, items in (records or reference_records(pack, iso(datetime.now(timezone.utc)))).items():
        check = RecordValidator(contracts[topic])
        file = TARGETS[topic][0]
        for where, record in items:
            rejection = check(record)
            if rejection is not None:
                problems.append(Problem(file, where, rejection.rule, f"as a record of {topic}: {rejection.message}.",
                                        rejection.fix or f"make it follow the contract of {topic} (`citybrain contracts show "
                                        f"{topic}`)."))
    return problems


@dataclass
class ImportResult:
    version: str
    city: str = ""
    published: dict[str, int] = field(default_factory=dict)     # topic -> records sent (new or changed)
    unchanged: dict[str, int] = field(default_factory=dict)     # topic -> records already as in the pack
    withdrawn: dict[str, int] = field(default_factory=dict)     # topic -> records the pack left out, now withdrawn
    record: Path | None = None
    departments: dict[str, str] = field(default_factory=dict)   # the pack's own department -> its dispatch topic
    access: str = ""                                            # what became of their principals and grants


def _make_departments(settings: Settings, pack: Pack) -> tuple[dict[str, str], str]:
    """The pack's own departments onto the platform before any of its rules routes to them: their contracts and
    grants written (:mod:`citybrain.city.pack_departments`), their topics created, and on the embedded broker
    their principals and ACLs applied, as ``citybrain up`` applies the roles'. Returns department -> topic and
    what became of the grants."""
    from citybrain import access
    from citybrain.contracts.model import load_all, load_platform
    from citybrain.kafka.topics import apply_topics

    written = write_departments(settings.city_dir, settings.city_contracts_dir, pack)
    if not written:
        return {}, ""
    made = load_all(settings.city_contracts_dir)
    apply_topics(settings, made.values())
    log.info("the city's own departments' topics: %s", ", ".join(made))
    if not settings.embedded:
        return ({c.owner: c.topic for c in made.values()},
                "principals and grants written; `citybrain access apply` puts them on the cluster")
    model = access.load(settings.access_file, load_platform(settings), settings.city_dir)
    applied = access.apply(settings, model, actor="citybrain-city-import")
    return {c.owner: c.topic for c in made.values()}, f"principals and grants applied ({applied.changes} changed)"


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k not in STAMPS} == {k: v for k, v in b.items() if k not in STAMPS}


#: What a record a newer pack leaves out becomes: kept, marked, so history still resolves its code.
WITHDRAWN = {DEVICES: "retired"}


def is_withdrawn(record: Mapping[str, Any]) -> bool:
    """A reference record a newer city pack left out (areas, grids, departments, services, rules: ``withdrawn``;
    devices: ``retired``)."""
    return record.get("status") in ("withdrawn", "retired")


def removal_problems(removed: Mapping[str, list[dict[str, Any]]], areas: Mapping[str, dict[str, Any]],
                     open_tickets: list[dict[str, Any]]) -> list[Problem]:
    """The removed areas and services that open tickets still refer to (an open ticket lies in the area, or asks
    for the service), one problem each with the tickets' count and a few of their ids."""
    index = AreaIndex.from_records(areas.values())
    gone_areas = {r["area_code"] for r in removed.get(AREAS, [])}
    gone_services = {r["service_code"] for r in removed.get(SERVICES, [])}
    users: dict[tuple[str, str], list[str]] = {}
    for ticket in open_tickets:
        if ticket.get("service_code") in gone_services:
            users.setdefault((SERVICES, ticket["service_code"]), []).append(ticket["service_request_id"])
        if gone_areas and ticket.get("lat") is not None and ticket.get("long") is not None:
            place = index.resolve(float(ticket["long"]), float(ticket["lat"]))
            for area in [a for a in place or () if a is not None and a.code in gone_areas]:
                users.setdefault((AREAS, area.code), []).append(ticket["service_request_id"])
    problems = []
    for (topic, code), tickets in sorted(users.items()):
        what = "area" if topic == AREAS else "service"
        problems.append(Problem(
            TARGETS[topic][0], code, "removed-but-referenced",
            f"the pack leaves out {what} {code}, which {len(tickets):,} open ticket(s) still refer to "
            f"(e.g. {', '.join(tickets[:3])}).",
            f"keep the {what} in the pack until those tickets are closed, or import with --force to withdraw it anyway "
            "(it stays on its topic as withdrawn, so the tickets still resolve it)."))
    return problems


def import_pack(settings: Settings, contracts: Mapping[str, Contract], directory: Path,
                now: datetime | None = None, force: bool = False) -> ImportResult:
    """Check the pack (whole), then publish the records that are new or changed, and mark what it leaves out
    withdrawn; raises PackError, also when it leaves out an area or a service open tickets refer to (unless
    ``force``)."""
    from citybrain.ingest.producer import ValidatedProducer
    from citybrain.kafka.topics import read_values

    pack, problems = check_pack(directory)
    if problems or pack is None:
        raise PackError(problems)
    as_of = iso(now or datetime.now(timezone.utc))
    records = reference_records(pack, as_of)      # built once: checked, then compared and sent
    problems = contract_problems(pack, contracts, records) + department_problems(pack, settings.city_contracts_dir)
    if problems:
        raise PackError(problems)
    result = ImportResult(pack.manifest["version"], pack.manifest["city"]["name"])
    todo = []
    removed: dict[str, list[dict[str, Any]]] = {}
    current_areas: dict[str, dict[str, Any]] = {}
    for topic, items in records.items():
        key = TARGETS[topic][1]
        current = {v.get(key): v for v in read_values(settings, topic, timeout_s=60)}
        changed = [r for _w, r in items if r[key] not in current or not _same(current[r[key]], r)]
        result.published[topic], result.unchanged[topic] = len(changed), len(items) - len(changed)
        todo += [(contracts[topic], r) for r in changed]
        if topic == AREAS:
            current_areas = current
        if topic != CITY:   # another city's record stays: the latest city record is the city being served
            kept = {r[key] for _w, r in items}
            removed[topic] = [v for k, v in current.items() if k not in kept and not is_withdrawn(v)]
    if any(removed.values()) and not force:
        tickets: dict[str, dict[str, Any]] = {}
        for v in read_values(settings, topics.SERVICE_REQUESTS, timeout_s=120):
            tickets[v.get("service_request_id")] = v
        problems = removal_problems(removed, current_areas, [v for v in tickets.values() if v.get("status") == "open"])
        if problems:
            raise PackError(problems)
    for topic, gone in removed.items():
        result.withdrawn[topic] = len(gone)
        todo += [(contracts[topic], {**v, "status": WITHDRAWN.get(topic, "withdrawn"),
                                     ("effective_from" if topic == RULES else "updated_at"): as_of}) for v in gone]
    result.departments, result.access = _make_departments(settings, pack)     # before a rule routes to them
    with ValidatedProducer(settings, producer_id="citybrain-city-import") as producer:
        summaries = producer.produce_values_many(todo, source=f"citypack:{pack.manifest['version']}")
    refused = {t: s.dead_lettered for t, s in summaries.items() if s.dead_lettered}
    if refused:   # cannot happen after contract_problems; if it does, say so rather than record the version
        raise InputError(f"the broker's contracts refused records of {refused} (dead-lettered); the pack's version "
                         "was not recorded. Fix: `citybrain city check PACK`, then import again.")
    result.record = _record(settings, pack, directory, result, as_of)
    return result


def _record(settings: Settings, pack: Pack, directory: Path, result: ImportResult, as_of: str) -> Path:
    digest = hashlib.sha256()
    for name in FILES:
        digest.update(name.encode() + b"\0" + (directory / name).read_bytes())
    path = settings.city_dir / "imported.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": pack.manifest["version"], "city": pack.manifest["city"],
                                "jurisdiction_id": pack.manifest["jurisdiction_id"], "timezone": pack.manifest["timezone"],
                                "postal_code_pattern": pack.manifest.get("postal_code_pattern", DEFAULT_PATTERN),
                                "codes": pack.manifest.get("codes", {}),     # declared only: the rest default
                                "languages": list(languages(pack.manifest)),
                                "sha256": digest.hexdigest(), "imported_at": as_of, "published": result.published,
                                "unchanged": result.unchanged, "withdrawn": result.withdrawn},
                               ensure_ascii=False, indent=2))
    return path


def imported(settings: Settings) -> dict[str, Any] | None:
    """The record of the last import, or None before the first."""
    path = settings.city_dir / "imported.json"
    return json.loads(path.read_text()) if path.exists() else None


def imported_postal_codes(settings: Settings) -> PostalCodes | None:
    """The postal codes of the city last imported here (a record written before they were kept: China's six
    digits), or None before the first import."""
    record = imported(settings)
    if record is None:
        return None
    return PostalCodes.of_city({**record.get("city", {}), **record})


def imported_codes(settings: Settings) -> CodeSchemes | None:
    """The code schemes of the city last imported here (a record written before they were kept: China's), or
    None before the first import."""
    record = imported(settings)
    if record is None:
        return None
    return CodeSchemes.of_city({**record.get("city", {}), **record})
