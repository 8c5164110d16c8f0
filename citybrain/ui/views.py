"""What each page of the operations view shows, read from the lake and the releases, cut to a viewer's remit.

Every function takes the lake and a ``Viewer`` and returns plain JSON-able data. What a viewer
may see follows the topics its principal may read on the broker: city events and early warnings
only with a grant on their topic, sensor readings only for the sensor topics granted, work orders
only from the viewer's own ``dispatch.<department>`` topic; the data office (admin) sees all.
Reference data classified public (areas, devices' positions) is shown to every viewer.

A lake file that cannot be read is set aside by :mod:`citybrain.lake.reader` and left out, with a
warning in the log: the pages around it keep working.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

from citybrain.access.trail import verify
from citybrain.contracts import topics
from citybrain.lake import layout, store
from citybrain.lake.layout import Lake
from citybrain.lake.store import LakePath
from citybrain.lake.reader import READ_ERRORS, latest_values, row_count, tables, topic_values, values
from citybrain.times import iso, parse_time
from citybrain.ui.auth import Viewer
from citybrain.ui.kpis import pooled, pooled_by

#: Sensor topic -> (device type in the registry, the measure the map shows, its unit).
SENSORS = {
    topics.WATER_LEVEL: ("water_level", "currentLevel", "m"),
    topics.NOISE_LEVEL: ("noise", "LAeq", "dB(A)"),
    topics.AIR_QUALITY: ("air_quality", "pm25", "µg/m³"),
    topics.TRAFFIC_FLOW: ("traffic_flow", "intensity", "veh"),
    topics.WEATHER: ("weather", "precipitation", "mm/h"),
}
#: A device with no reading in this long before the newest reading of its feed is silent.
SILENT_AFTER = timedelta(hours=1)
#: The map also shows the events of the last day of the data, open or closed since.
RECENT = timedelta(hours=24)
STAGES = ("received", "dispatched", "accepted", "handled", "closed", "followed_up", "reopened")
#: Steps that leave a ticket in the stage of another: an escalated ticket is dispatched again.
STAGE_OF = {"escalated": "dispatched"}


#: Results over lake files, reused while those files are unchanged: (what, files' names, sizes, mtimes) -> value.
_MEMO: dict[tuple[Any, ...], Any] = {}
_MEMO_LOCK = threading.RLock()


def _memo(what: str, files: list[LakePath], compute: Callable[[list[LakePath]], Any], also: Hashable = None) -> Any:
    """``compute(files)``, or its last result if no file was added, removed or rewritten since (and ``also``, what
    else the result rests on, is equal)."""
    key = (what, tuple((str(f), *_stat(f)) for f in files), also)
    with _MEMO_LOCK:   # pages are computed in threads; one computes, the others wait for its result
        if key not in _MEMO:
            for old in [k for k in _MEMO if k[0] == what]:   # one result per input: the lake's newest
                del _MEMO[old]
            _MEMO[key] = compute(files)
        return _MEMO[key]


def _stat(f: LakePath) -> tuple[int, int]:
    st = f.stat()
    return st.st_size, st.st_mtime_ns


class Forbidden(PermissionError):
    """The viewer's principal may not read what was asked; the message says what and why."""


class BadArgument(ValueError):
    """A page's argument the view cannot take (answered 400); the message names it, the rule and the fix."""


class NotFound(LookupError):
    """Nothing the viewer may read has the id asked for (answered 404)."""


def _records(files: list[LakePath]) -> list[dict[str, Any]]:
    return [v for _f, table in tables(files, ["value"]) for v in values(table)]


def _silver(lake: Lake, topic: str) -> list[dict[str, Any]]:
    return _memo(f"silver:{topic}", layout.files(lake, "silver", layout.contract_of(topic)), _records)


def _register(lake: Lake, topic: str, key: str) -> dict[str, dict[str, Any]]:
    """A compacted reference register's current state (areas, devices, the city)."""
    return _memo(f"register:{topic}", layout.files(lake, "bronze", layout.contract_of(topic)),
                 lambda fs: latest_values(fs, key))


def _latest_by(records: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """The last record (in lake order) per ``key``: an event's updates replace its earlier states."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get(key):
            out[str(r[key])] = r
    return out


def the_city(lake: Lake) -> dict[str, Any]:
    """The city the lake serves (its latest ``raw.ref.city`` record): names and the IANA zone the page shows times
    in (UTC until a city is imported: the wire's own)."""
    cities = _register(lake, topics.REF_CITY, "city_code")
    city = max(cities.values(), key=lambda c: str(c.get("updated_at", "")), default={})
    return {"name": city.get("name"), "name_en": city.get("name_en"), "timezone": city.get("timezone") or "UTC"}


def areas(lake: Lake) -> dict[str, Any]:
    """The city's active areas as one GeoJSON FeatureCollection per level (district, street, community, and grid from
    the grids' own register, ``raw.ref.grid``)."""
    found = _register(lake, topics.REF_AREAS, "area_code")
    levels: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for code, a in sorted(found.items()):
        if a.get("status") == "withdrawn" or not a.get("geometry"):
            continue
        levels[a["level"]].append({"type": "Feature", "geometry": a["geometry"], "properties": {
            "name": code, "label": a.get("name"), "label_en": a.get("name_en"), "parent": a.get("parent_code"),
            "population": a.get("population")}})
    for code, g in sorted(_register(lake, topics.REF_GRIDS, "grid_code").items()):   # grids: a register of their own
        if g.get("status") == "withdrawn" or not g.get("geometry"):
            continue
        levels["grid"].append({"type": "Feature", "geometry": g["geometry"], "properties": {
            "name": code, "label": g.get("name"), "label_en": None, "parent": g.get("community_code"),
            "population": g.get("population")}})
    return {"city": the_city(lake),
            "levels": {level: {"type": "FeatureCollection", "features": feats} for level, feats in levels.items()},
            "names": names(lake)}


def names(lake: Lake) -> dict[str, dict[str, dict[str, Any]]]:
    """What the page shows instead of codes: every area (district, street, community and grid) and department of
    the city's reference data by its code, with its names, and an area's level and parent. Withdrawn ones too: an
    older ticket still names them."""
    areas = {code: {"name": a.get("name"), "name_en": a.get("name_en"), "level": a.get("level"),
                    "parent": a.get("parent_code")}
             for code, a in _register(lake, topics.REF_AREAS, "area_code").items()}
    for code, g in _register(lake, topics.REF_GRIDS, "grid_code").items():
        areas.setdefault(code, {"name": g.get("name"), "name_en": None, "level": "grid", "parent": g.get("community_code")})
    departments = {d: {"name": r.get("name"), "name_en": r.get("name_en")}
                   for d, r in _register(lake, topics.REF_DEPARTMENTS, "department_id").items()}
    return {"areas": areas, "departments": departments}


#: The department whose orders are the city's area offices': the grid, community and street offices work their
#: tickets in the hotline's system (its grant on dispatch.territorial.work_order), so that is what it follows.
AREA_OFFICES = "hotline_12345"


def orders_topic(department: str) -> str:
    """The topic of the orders a department follows: its own dispatch topic, the area offices' for the hotline."""
    return topics.TERRITORIAL_WORK_ORDERS if department == AREA_OFFICES else topics.work_orders(department)


def work_orders(lake: Lake, viewer: Viewer, department: str | None = None) -> list[dict[str, Any]]:
    """The viewer's own work orders (the data office: every department's, or ``department``'s)."""
    if department and not viewer.admin and department != viewer.department:
        raise Forbidden(f"{viewer.principal} may read only its own work orders (dispatch.{viewer.department}.work_order), "
                        f"not {department}'s.")
    want = department or (None if viewer.admin else viewer.department)
    if want is None and not viewer.admin:
        return []
    topic = orders_topic(want) if want else topics.work_orders("*")
    pattern = layout.contract_of(topic)
    if want and not viewer.may_read(topic):
        raise Forbidden(f"{viewer.principal} is not granted read on {topic}.")
    return _memo(f"silver:{pattern}", layout.files(lake, "silver", pattern), _records)


def city(lake: Lake, viewer: Viewer, live: Sequence[tuple[str, dict[str, Any]]] = ()) -> dict[str, Any]:
    """The City page: per area (the street, else the district of a city without streets there) the open city
    events, early warnings and open work orders, the latest events with their evidence, and the sensors with
    their last reading and health. ``live``: (topic, record) the live feed has seen since it started and the
    viewer may read; they replace the lake's older states."""
    by_area: dict[str, Counter[str]] = defaultdict(Counter)
    orders = ([] if viewer.admin else work_orders(lake, viewer)) + \
        [v for t, v in live if t == orders_topic(viewer.department or "")]
    events = visible_events(lake, viewer, orders, live)
    newest = max((w for w in map(_when, events) if w), default=None)
    for e in events:
        area, when = _area(e), _when(e)
        if e.get("status") != "closed":
            by_area[area]["events"] += 1
        if newest and when and newest - when <= RECENT:
            by_area[area]["recent"] += 1
    for w in visible_warnings(lake, viewer, live):
        by_area[_area(w)]["warnings"] += 1
    if not viewer.admin:
        for o in _latest_by(orders, "work_order_id").values():
            if o.get("source") == "ticket":
                by_area[_area(o)]["orders"] += 1
    return {"by_area": {k: dict(v) for k, v in by_area.items() if k},
            "events": [_with_area(_event_row(e), lake) for e in events[:100]], "devices": sensors(lake, viewer, faulty(events))}


def visible_events(lake: Lake, viewer: Viewer, orders: list[dict[str, Any]],
                   live: Sequence[tuple[str, dict[str, Any]]] = ()) -> list[dict[str, Any]]:
    """The city events the viewer may see, newest first, in their latest state: every one with a grant on the city
    events; else the ones routed to it, through its own work orders (``orders``)."""
    if viewer.may_read(topics.CITY_EVENTS):
        latest = _latest_by(_silver(lake, topics.CITY_EVENTS) + [v for t, v in live if t == topics.CITY_EVENTS],
                            "event_id")
        return sorted(latest.values(), key=lambda e: str(e.get("detected_at")), reverse=True)
    mine = [o for o in orders if o.get("source") == "city_event"]
    return sorted(_latest_by(mine, "source_id").values(), key=lambda o: str(o.get("received_at")), reverse=True)


def visible_warnings(lake: Lake, viewer: Viewer, live: Sequence[tuple[str, dict[str, Any]]] = ()) -> list[dict[str, Any]]:
    """The early warnings in their latest state, for a viewer granted their topic (none for the others)."""
    if not viewer.may_read(topics.EARLY_WARNINGS):
        return []
    warnings = _silver(lake, topics.EARLY_WARNINGS) + [v for t, v in live if t == topics.EARLY_WARNINGS]
    return list(_latest_by(warnings, "warning_id").values())


def faulty(events: list[dict[str, Any]]) -> set[str]:
    """The devices an open sensor-fault event names."""
    return {d for e in events if e.get("category") == "sensor_fault" and e.get("status") != "closed"
            for d in (e.get("evidence") or {}).get("devices", [])}


def _area(record: dict[str, Any]) -> str:
    """The deepest area an event, warning or work order names: its street, else its district (a city whose
    pack has no streets there); "" for none."""
    return str(record.get("street_code") or record.get("district_code") or "")


def _with_area(row: dict[str, Any], lake: Lake) -> dict[str, Any]:
    """An event row with its deepest area's code and name (street, else district), which the City page's table
    shows: a district's event has no street_name to show."""
    code = _area(row)
    name = row.get("street_name") if row.get("street_code") else None
    if code and not name:
        name = _register(lake, topics.REF_AREAS, "area_code").get(code, {}).get("name")
    return {**row, "area_code": code or None, "area_name": name}


def _when(e: dict[str, Any]) -> datetime | None:
    """When an event was detected, or its work order received."""
    at = e.get("detected_at") or e.get("received_at")
    return parse_time(at) if at else None


def _event_row(e: dict[str, Any]) -> dict[str, Any]:
    keep = ("event_id", "work_order_id", "warning_id", "kind", "source", "category", "title", "status", "severity", "confidence", "priority",
            "street_code", "street_name", "district_code", "detected_at", "received_at", "sla_deadline",
            "department", "co_departments", "evidence", "explanation", "lat", "long")
    return {k: e[k] for k in keep if k in e}


def sensors(lake: Lake, viewer: Viewer, faulty: set[str]) -> list[dict[str, Any]]:
    """Every registered device of the sensor feeds the viewer may read: position, last reading, health."""
    registry = _register(lake, topics.REF_DEVICES, "device_id")
    out = []
    for topic, (kind, measure, unit) in SENSORS.items():
        files = layout.files(lake, "bronze", layout.contract_of(topic))
        if not viewer.may_read(topic) or not files:
            continue
        last = _memo(f"last:{topic}", files, lambda fs, measure=measure: _last_readings(fs, measure))
        # Against the feed's median last reading, so one device with a skewed clock does not silence the rest.
        times = sorted(parse_time(a) for a, _v in last.values())
        newest = times[len(times) // 2] if times else None
        for dev, d in sorted(registry.items()):
            if d.get("device_type") != kind or d.get("status") == "retired":
                continue
            seen, value = last.get(dev, (None, None))
            health = ("fault" if dev in faulty else "silent" if seen is None or (newest and newest - parse_time(seen) > SILENT_AFTER)
                      else "ok")
            out.append({"device_id": dev, "type": kind, "lat": d.get("lat"), "long": d.get("long"),
                        "street_code": d.get("street_code"), "measure": measure, "unit": unit,
                        "value": float(value) if value not in (None, "") else None, "observed_at": seen, "health": health})
    return out


def _last_readings(files: list[LakePath], measure: str) -> dict[str, tuple[str, Any]]:
    """Device id -> (time, value of ``measure``) of its last reading in ``files``."""
    import duckdb

    at = "coalesce(value->>'dateObserved', value->>'dateObservedTo')"

    def query(files: list[LakePath]) -> list[tuple[Any, ...]]:
        if not files:
            return []
        con = duckdb.connect()
        try:
            return con.sql(f"""
                SELECT replace(value->>'refDevice', 'urn:ngsi-ld:Device:', '') AS dev, max({at}) AS at,
                       arg_max(value->>'{measure}', {at}) AS v
                FROM {store.register(con, 'readings', files)} GROUP BY 1""").fetchall()
        finally:
            con.close()

    try:
        rows = query(files)
    except (duckdb.Error, *READ_ERRORS):   # a file that cannot be read: set it aside, then the others again
        rows = query([f for f, _table in tables(files, ["value"])])
    return {dev: (at_, v) for dev, at_, v in rows if dev and at_}


def hotline(lake: Lake, viewer: Viewer) -> dict[str, Any]:
    """The Hotline page: tickets by stage of the closed loop, the three rates by department and district per
    day (released respond_on_receipt_kpis) and pooled by day, department and district over their tickets
    (:mod:`citybrain.ui.kpis`), the 考核 rankings of districts, streets and departments (released
    hotline_rankings; a department: its own row), overdue work orders and hotspots by street, and per department
    the urges and whistles that summoned it with the share of its answers on time (``actions``)."""
    from citybrain.scenarios.catalog import query

    stages: dict[str, int] = {}
    overdue: list[dict[str, Any]] = []
    if viewer.may_read(topics.TICKET_EVENTS):
        stage_of = _memo("stages", layout.files(lake, "bronze", layout.contract_of(topics.TICKET_EVENTS)), _stages)
        counts = Counter(stage_of.values())
        stages = {s: counts.get(s, 0) for s in STAGES}
        if viewer.may_read(topics.SLA_ALERTS):   # past their deadline and not handled since
            breached = _latest_by([a for a in _silver(lake, topics.SLA_ALERTS) if a.get("kind") == "breached"], "service_request_id")
            overdue = [{"work_order_id": rid, "level": a.get("level") or "department", "area_code": a.get("area_code"),
                        "department": a.get("department"), "sla_deadline": a.get("sla_deadline"),
                        "overdue_min": a.get("overdue_min")}
                       for rid, a in sorted(breached.items(), key=lambda kv: str(kv[1].get("sla_deadline")))
                       if stage_of.get(rid) in ("received", "dispatched", "accepted")]
    releases = layout.release_manifests(lake)
    kpis = _memo("kpis", releases, lambda _fs: _rows(query, lake, """
        SELECT * REPLACE (CAST(day AS VARCHAR) AS day)
        FROM respond_on_receipt_kpis ORDER BY day, department, district_code"""))
    if not viewer.admin:
        kpis = [k for k in kpis if k.get("department") == viewer.department]
    released = [k for k in kpis if "error" not in k]
    rates = {"all": pooled(released), "day": pooled_by(released, "day"), "department": pooled_by(released, "department"),
             "district": pooled_by([k for k in released if k.get("district_code") not in (None, "unknown")], "district_code")}
    hotspots = _memo("hotspots", releases, lambda _fs: _rows(query, lake, "SELECT * FROM hotline_hotspots ORDER BY 1")) \
        if viewer.admin else []
    rankings = _memo("rankings", releases, lambda _fs: _rows(query, lake, """
        SELECT * FROM hotline_rankings ORDER BY scope, rank, unit"""))
    if not viewer.admin:   # a department: its own place among the departments
        rankings = [r for r in rankings if r.get("scope") == "department" and r.get("unit") == viewer.department]
    orders = [] if viewer.admin else list(_latest_by(work_orders(lake, viewer), "work_order_id").values())
    newest = max((parse_time(o["received_at"]) for o in orders if o.get("received_at")), default=None)
    overdue += [_event_row(o) | {"area_code": _area(o) or None} for o in orders
                if newest and o.get("sla_deadline") and parse_time(o["sla_deadline"]) < newest]
    from citybrain.ui.orders import action_counts   # orders reads this module's helpers

    return {"stages": stages, "kpis": kpis, "rates": rates, "hotspots": hotspots[:500], "rankings": rankings,
            "orders": len(orders), "actions": action_counts(lake, viewer, datetime.now(timezone.utc)),
            "overdue": overdue[:200], "overdue_total": len(overdue), "as_of": iso(newest) if newest else None}


def _stages(files: list[LakePath]) -> dict[str, str]:
    """Each ticket's stage of the closed loop: its last step (an escalation counts as dispatched)."""
    latest: dict[str, str] = {}
    for v in _records(files):
        stage = STAGE_OF.get(v.get("event_type"), v.get("event_type"))
        if v.get("service_request_id") and stage in STAGES:
            latest[v["service_request_id"]] = stage
    return latest


def warm(lake: Lake, viewer: Viewer) -> None:
    """Read what the pages share once, so the first screen after a start does not wait for it."""
    city(lake, viewer)
    areas(lake)
    hotline(lake, viewer)
    if viewer.admin:
        data(lake, viewer, {})


def _rows(query: Any, lake: Lake, sql: str) -> list[dict[str, Any]]:
    try:
        return query(lake, sql).to_pylist()
    except Exception as exc:   # no release yet: the page says so instead of failing
        return [{"error": f"{type(exc).__name__}: {exc}"}]


def data(lake: Lake, viewer: Viewer, contracts: dict[str, Any], state_dir: Path | None = None) -> dict[str, Any]:
    """The Data page (data office only): every contract and topic with its owner and records in the lake per
    hour, quality results per layer and partition, quarantine, and every release with its manifest."""
    if not viewer.admin:
        raise Forbidden(f"{viewer.principal}: the Data page is the data office's (it shows every topic).")
    from citybrain.scenarios.catalog import catalog

    per_hour = _memo("per_hour", [f for layer in layout.LAYERS for f in layout.files(lake, layer)],
                     lambda fs: _records_per_hour(lake, fs))
    rows = []
    for c in sorted(contracts.values(), key=lambda c: c.topic):
        counts = per_hour.get(layout.contract_of(c.topic), {})
        rows.append({"topic": c.topic, "owner": c.owner, "version": c.version, "zone": c.zone,
                     "records": sum(counts.values()), "per_hour": dict(sorted(counts.items()))})
    lake = store.as_lake(lake)
    quality, failed_checks = _memo("quality", layout.quality_runs(lake)[-20:], _quality)
    quarantine = sorted(str(p.relative_to(lake)) for p in layout.quarantine_runs(lake))
    docs = (layout.gx_data_docs_dir(lake, state_dir) if lake.local else layout.data_docs_dir(lake)) / "index.html"
    return {"contracts": rows, "quality": quality, "failed_checks": failed_checks[-200:], "quarantine": quarantine,
            "releases": catalog(lake), "data_docs": "/quality-docs/index.html" if docs.exists() else None}


def _records_per_hour(lake: Lake, files: list[LakePath]) -> dict[str, Counter[str]]:
    """Contract folder -> records per hour (from each file's Parquet footer, not its rows)."""
    per_hour: dict[str, Counter[str]] = defaultdict(Counter)
    for f in files:
        contract, date, hour = f.relative_to(store.as_lake(lake)).parts[1:4]   # layer, contract, date=, hour=, file
        per_hour[contract][f"{date[5:]}T{hour[5:]}"] += row_count(f) or 0   # an unreadable file: set aside
    return per_hour


def _quality(runs: list[LakePath]) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """The latest verdict per partition, counted per layer, and the checks that failed."""
    partitions: dict[tuple[str, str, str], bool] = {}
    failed = []
    for f in runs:
        for q in store.read_table(f, columns=["layer", "contract", "partition", "check", "column", "success",
                                           "observed", "partition_passed", "checked_at"]).to_pylist():
            if q["partition"]:
                partitions[(q["layer"], q["contract"], q["partition"])] = bool(q["partition_passed"])
            if q["success"] is False:
                failed.append(_jsonable(q))
    layers = sorted({k[0] for k in partitions})
    return ({layer: {"passed": sum(1 for k, ok in partitions.items() if k[0] == layer and ok),
                     "failed": sum(1 for k, ok in partitions.items() if k[0] == layer and not ok)} for layer in layers},
            failed)


def security(lake: Lake, viewer: Viewer, model: Any) -> dict[str, Any]:
    """The Security page (data office only): findings by kind and day, and who may read what."""
    if not viewer.admin:
        raise Forbidden(f"{viewer.principal}: the Security page is the data office's.")
    reports = []
    for f in sorted(layout.reports_dir(lake, "security").glob("date=*/report.json")):
        reports.append(json.loads(f.read_text()))
    findings = [f for r in reports for f in r.get("findings", [])]
    grants = [{"principal": g.principal, "topic": g.name, "pattern": g.pattern, "justification": g.justification}
              for g in model.grants if g.resource_type == "topic" and g.operation == "read"]
    return {"findings": findings[-500:], "by_kind": dict(Counter(f["kind"] for f in findings)),
            "by_day": {r["date"]: r.get("by_severity", {}) for r in reports}, "grants": grants,
            "checks": reports[-1]["checks"] if reports else {}, "audit": audit_trail(lake)}


def audit_trail(lake: Lake, last: int = 200) -> dict[str, Any]:
    """The lake's copy of the audit trails: the latest records, how many per trail, and each broken chain's first
    bad record (``citybrain audit verify --from-lake`` says the same)."""
    records = topic_values(layout.files(lake, "silver", topics.contract_id(topics.AUDIT_EVENTS)))
    return {"records": len(records), "trails": dict(Counter(str(r.get("trail")) for r in records)),
            "breaks": [str(b) for b in verify(records)],
            "recent": [{k: r.get(k) for k in ("trail", "seq", "at", "actor", "action", "target", "outcome")}
                       for r in records[-last:]][::-1]}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
