"""The City page's drill-down: one area's figures, its way up and its children, district → street → community → grid.

An area is found by its code among the city's reference data (``raw.ref.admin_area`` and the grids'
``raw.ref.grid``), and what lies in it by the areas' parent links, never by a code's digits: a city's codes
need not nest (LA-CD13 is not inside LA-BASIN by its spelling). A record lies in the deepest area it can be
placed in: an event or a device by its position (down to its grid) where that agrees with the street or
district it names, a work order by the grid its area office held it in, else its community, street or district.

Each area's figures are what the City page's cards show: open city events, early warnings, tickets received on
the data's last day (the city's clock), overdue work orders, and the hotline's three rates over the area's
tickets, each with the number it rests on (:func:`citybrain.ui.kpis.ticket_rates`, counted as
``respond_on_receipt_kpis`` counts a district's). Cut to the viewer as everywhere in the view: a department
counts its own work orders and the tickets dispatched to it, and drills down only into the areas its orders
lie in (its remit on the map); another area is refused as another department's ticket is.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import date
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from citybrain.contracts import topics
from citybrain.geo import Area, AreaIndex
from citybrain.lake import layout
from citybrain.lake.layout import Lake
from citybrain.lake.store import LakePath
from citybrain.scenarios.datasets import TICKET_STATES, Dataset, build
from citybrain.times import parse_time
from citybrain.ui.auth import Viewer
from citybrain.ui.kpis import ticket_rates
from citybrain.ui.orders import _rows
from citybrain.ui.views import (BadArgument, Forbidden, NotFound, _area, _event_row, _latest_by, _memo, _register,
                                _with_area, faulty, orders_topic, sensors, the_city, visible_events, visible_warnings,
                                work_orders)

__all__ = ["CITY", "TICKET_PLACES", "area", "figures", "hierarchy", "way_up"]

#: The code of the whole city: the top of every area's way up, the district's parent.
CITY = ""
#: An area code as the platform takes them (raw.ref.admin_area's pattern).
CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: The most events one answer lists (the newest first).
MAX_EVENTS = 100
COUNTS = ("open_events", "warnings", "tickets_today", "overdue")

#: Each ticket's closed loop (as ``respond_on_receipt_kpis`` has it) with the deepest area its work orders place it in:
#: the grid its area office held it in, else its community, street or district.
TICKET_PLACES = Dataset(
    name="ticket_places",
    title="Each ticket's closed loop and area",
    description="Per dispatched ticket: its lead department, whether it was handled by its deadline, resolved, and "
                "the follow-up call's satisfaction, with the deepest area its work orders name. The operations view's "
                "drill-down counts an area's three rates from it; not published.",
    owner="hotline_12345",
    inputs={"ticket_events": "bronze/raw.hotline.ticket_event", "work_orders": "silver/dispatch.*.work_order"},
    key=("rid",),
    fields={"rid": "the ticket (service_request_id)", "department": "department dispatched to (lead)",
            "area_code": "the deepest area its work orders name", "on_time": "handled by its deadline",
            "resolved": "the caller confirmed it resolved", "satisfaction": "the follow-up call's answer, null if none"},
    sql="""
WITH """ + TICKET_STATES + """,
place AS (
  SELECT j(value, 'source_id') AS rid,
         coalesce(max(j(value, 'area_code')) FILTER (WHERE j(value, 'level') = 'grid'), max(j(value, 'community_code')),
                  max(j(value, 'street_code')), max(j(value, 'district_code'))) AS area_code
  FROM {work_orders} WHERE j(value, 'source') = 'ticket' GROUP BY 1)
SELECT t.rid, t.department, place.area_code, coalesce(t.handled <= t.deadline, false) AS on_time, t.resolved,
       t.satisfaction
FROM t LEFT JOIN place USING (rid)
WHERE t.dispatched IS NOT NULL AND t.department IS NOT NULL
""")


def hierarchy(areas: Mapping[str, Mapping[str, Any]], grids: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every area of the city by code, from its ``raw.ref.admin_area`` and ``raw.ref.grid`` records: name, level,
    geometry, withdrawn or not, and ``parent``, the area one level up; :data:`CITY` for a district, whose
    ``parent_code`` names the city itself (its code, padded), and for an area whose parent is no area of the city."""
    out = {code: {"code": code, "name": a.get("name"), "name_en": a.get("name_en"), "level": a.get("level"),
                  "parent": a.get("parent_code"), "geometry": a.get("geometry"),
                  "withdrawn": a.get("status") == "withdrawn"} for code, a in areas.items()}
    for code, g in grids.items():
        out.setdefault(code, {"code": code, "name": g.get("name"), "name_en": None, "level": "grid",
                              "parent": g.get("community_code"), "geometry": g.get("geometry"),
                              "withdrawn": g.get("status") == "withdrawn"})
    for a in out.values():
        if a["level"] == "district" or a["parent"] not in out:
            a["parent"] = CITY
    return out


def _areas(lake: Lake) -> dict[str, dict[str, Any]]:
    return hierarchy(_register(lake, topics.REF_AREAS, "area_code"), _register(lake, topics.REF_GRIDS, "grid_code"))


def _index(lake: Lake, areas: Mapping[str, Mapping[str, Any]]) -> AreaIndex:
    """The areas' polygons, grids included, to place a position in; rebuilt when the reference data changes."""
    files = [f for topic in (topics.REF_AREAS, topics.REF_GRIDS)
             for f in layout.files(lake, "bronze", layout.contract_of(topic))]
    return _memo("drill:index", files, lambda _fs: AreaIndex(
        Area(a["code"], str(a["name"]), str(a["level"]), a["parent"] or None, a["geometry"])
        for a in areas.values() if a["geometry"] and not a["withdrawn"]))


def way_up(code: str, areas: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The area and every area above it by their parent links (:func:`hierarchy`), nearest first, ending with the
    city; a code the city does not know is on its own way up, then the city."""
    way: list[str] = []
    while code and code not in way:
        way.append(code)
        code = str((areas.get(code) or {}).get("parent") or CITY)
    return way + [CITY]


def _place(record: Mapping[str, Any], areas: Mapping[str, Mapping[str, Any]], index: AreaIndex) -> str:
    """The deepest area a record lies in: by its position where that lies inside the area its codes name (a
    position near a border must not move it to the next street), else by those codes."""
    named = next((str(record[k]) for k in ("area_code", "community_code") if record.get(k)), "") or _area(dict(record))
    lat, lon = record.get("lat"), record.get("long")
    if lat is not None and lon is not None:
        found = index.resolve(float(lon), float(lat))
        deepest = found and (found.grid or found.community or found.street or found.district)
        if deepest and (not named or named in way_up(deepest.code, areas)):
            return deepest.code
    return named


def _tickets(lake: Lake) -> list[dict[str, Any]]:
    """Each ticket's closed loop and area (:data:`TICKET_PLACES`); none before the lake holds tickets."""
    files = [f for pattern in TICKET_PLACES.inputs.values() for f in layout.files(lake, *pattern.split("/", 1))]

    def compute(_files: list[LakePath]) -> list[dict[str, Any]]:
        try:
            return build(lake, TICKET_PLACES)[0].to_pylist()
        except LookupError:   # no ticket or work order in the lake yet: no rates to show
            return []
    return _memo("drill:tickets", files, compute)


def _local_day(at: str | None, zone: ZoneInfo) -> date | None:
    return parse_time(at).astimezone(zone).date() if at else None


def _zone(lake: Lake) -> ZoneInfo:
    try:
        return ZoneInfo(the_city(lake)["timezone"])
    except (ZoneInfoNotFoundError, ValueError):   # a zone this system does not know: the wire's UTC
        return ZoneInfo("UTC")


Figures = tuple[dict[str, dict[str, Any]], set[str], list[tuple[dict[str, Any], list[str]]], list[dict[str, Any]]]


def figures(lake: Lake, viewer: Viewer, live: Sequence[tuple[str, dict[str, Any]]] = ()) -> Figures:
    """Every area's figures for the viewer in one pass over its records, each counted in its area and every area
    above it; with the areas the viewer's work orders lie in (its remit), its events with their way up, and
    its devices with theirs (``way`` on each).

    Reused while the lake's files and the live records are unchanged, for every viewer of the same remit (the
    same department, role and topics): an area clicked, the way back up and the next person of the department
    to log in read it again (about a second on a month's lake), and the view's start-up computes the data
    office's. The result is shared: callers copy what they change."""
    files = layout.files(lake, "bronze") + layout.files(lake, "silver")
    whose = f"{viewer.admin}:{viewer.department}:{viewer.role}:{','.join(sorted(viewer.topics))}"
    seen = json.dumps(list(live), sort_keys=True, default=str, ensure_ascii=False)
    return _memo(f"drill:figures:{whose}", files, lambda _fs: _figures(lake, viewer, live), also=seen)


def _figures(lake: Lake, viewer: Viewer, live: Sequence[tuple[str, dict[str, Any]]]) -> Figures:
    areas = _areas(lake)
    index = _index(lake, areas)
    counts: dict[str, dict[str, Any]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    orders = list(_latest_by(work_orders(lake, viewer) + [v for t, v in live if t == orders_topic(
        viewer.department or "")], "work_order_id").values())
    rows = {r["work_order_id"]: r for r in _rows(lake, viewer)[0]}
    zone = _zone(lake)
    last_day = max((d for d in (_local_day(o.get("received_at"), zone) for o in orders) if d), default=None)
    remit: set[str] = set()
    today: dict[str, set[str]] = defaultdict(set)
    overdue: dict[str, set[str]] = defaultdict(set)
    for o in orders:
        way = way_up(_place(o, areas, index), areas)
        remit.update(way)
        for code in way:
            if o.get("source") == "ticket" and last_day and _local_day(o.get("received_at"), zone) == last_day:
                today[code].add(str(o.get("source_id")))
            if (rows.get(o["work_order_id"]) or {}).get("overdue"):
                overdue[code].add(str(o["work_order_id"]))
    events = [(e, way_up(_place(e, areas, index), areas)) for e in visible_events(lake, viewer, orders, live)]
    for e, way in events:
        for code in way:
            counts[code]["open_events"] += e.get("status") != "closed"
    for w in visible_warnings(lake, viewer, live):
        for code in way_up(_place(w, areas, index), areas):
            counts[code]["warnings"] += 1
    for code, found in today.items():
        counts[code]["tickets_today"] = len(found)
    for code, found in overdue.items():
        counts[code]["overdue"] = len(found)
    tickets: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in _tickets(lake):
        if viewer.admin or t.get("department") == viewer.department:
            for code in way_up(str(t.get("area_code") or ""), areas):
                tickets[code].append(t)
    for code in set(counts) | set(tickets):
        counts[code]["rates"] = ticket_rates(tickets.get(code, ()))
    devices = [d | {"way": way_up(_place(d, areas, index), areas)}
               for d in sensors(lake, viewer, faulty([e for e, _way in events]))]
    return dict(counts), remit, events, devices


def _card(code: str, areas: Mapping[str, Mapping[str, Any]], counts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    a = areas.get(code) or {}
    empty = dict.fromkeys(COUNTS, 0) | {"rates": ticket_rates(())}
    return {"code": code, "name": a.get("name"), "name_en": a.get("name_en"), "level": a.get("level") or "city",
            "kpis": counts.get(code) or empty}


def area(lake: Lake, viewer: Viewer, code: str, live: Sequence[tuple[str, dict[str, Any]]] = ()) -> dict[str, Any]:
    """One area (``code``; "" for the whole city) as the viewer may see it: its figures, its way up (the
    breadcrumbs, the city first), its children with theirs (``in_remit``: the viewer may drill into it), the
    events in it (newest first) and the devices in it."""
    code = code.strip()
    if code and not CODE.fullmatch(code):
        raise BadArgument(f"code={code[:70]!r} is not an area code (raw.ref.admin_area: a letter or digit, then at "
                          "most 63 letters, digits or _.:-); pick an area on the map")
    areas = _areas(lake)
    if code and code not in areas:
        raise NotFound(f"no district, street, community or grid of the city has the code {code!r}; pick one on the map")
    counts, remit, events, devices = figures(lake, viewer, live)
    if code and not viewer.admin and code not in remit:
        raise Forbidden(f"{viewer.principal} holds no work order in area {code!r}: a department drills down into the "
                        f"areas of its own work orders (dispatch.{viewer.department}.work_order) only")
    children = sorted(c for c, a in areas.items() if a["parent"] == code and not a["withdrawn"]
                      and (code or a["level"] == "district"))
    city = the_city(lake)
    here = _card(code, areas, counts) | ({"name": city["name"], "name_en": city["name_en"]} if not code else {})
    return {"area": here | {"parent": areas[code]["parent"] if code else None},
            "path": [{k: v for k, v in _card(c, areas, {}).items() if k != "kpis"} | (
                     {"name": city["name"], "name_en": city["name_en"]} if not c else {})
                     for c in reversed(way_up(code, areas))],
            "children": [_card(c, areas, counts) | {"in_remit": viewer.admin or c in remit} for c in children],
            "events": [_with_area(_event_row(e), lake) for e, way in events if code in way][:MAX_EVENTS],
            "devices": [{k: v for k, v in d.items() if k != "way"} for d in devices if code in d["way"]]}

