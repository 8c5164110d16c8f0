"""Acting from the view: 督办 (urge) on a work order and 吹哨 (whistle) on a ticket or a city event.

Either names the departments summoned and why; the view checks who may act on what, computes the city's
reporting deadlines (:mod:`citybrain.city.reporting`) and returns the record its contract topic takes
(``dispatch.command.urge`` / ``dispatch.command.whistle``). Who may act, decided with the city's way of work:

- the data office, which runs the command centre (``admin`` viewers), may urge and whistle on anything;
- a street office may whistle (街乡吹哨): the city's area offices work their tickets in the hotline's system,
  so the hotline's principal whistles on the tickets the areas hold (``dispatch.territorial.work_order``);
- a department neither urges nor whistles: it is the one summoned (部门报到).

Beyond that, an action reaches only what its issuer may read: a ticket or city event outside the viewer's
remit is refused as if the viewer had asked for its page.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from citybrain.city.reporting import COMPLEXITIES, Reporting, ReportingError, office_hours
from citybrain.city.working_time import WorkingHoursError, WorkingTime
from citybrain.contracts import topics
from citybrain.contracts.departments import DEPARTMENT_ID_RE
from citybrain.lake.layout import Lake
from citybrain.times import iso
from citybrain.ui.auth import Viewer
from citybrain.ui.orders import _rows
from citybrain.ui.views import AREA_OFFICES, BadArgument, Forbidden, NotFound, _latest_by, _register, _silver, names

__all__ = ["ACTIONS", "HOTLINE", "Problem", "action", "city_clock", "may", "record"]

log = logging.getLogger(__name__)

#: The actions, their topics and the targets each takes.
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {"urge": (topics.URGES, ("work_order",)),
                                                   "whistle": (topics.WHISTLES, ("ticket", "city_event"))}
#: The department the city's area offices (street, community, grid) work in: its login whistles for them.
HOTLINE = AREA_OFFICES
#: How long a reason may be, and how short (a word or two says nothing to the department summoned).
REASON = (4, 500)
#: The most departments one action summons.
MAX_DEPARTMENTS = 20
FIELDS = ("target_type", "target_id", "departments", "reason", "complexity")


class Problem(BadArgument):
    """A field of an action the view cannot take: ``field``, the ``rule`` it breaks and the ``fix``."""

    def __init__(self, field: str, rule: str, fix: str) -> None:
        super().__init__(f"{field}: {rule} Fix: {fix}")
        self.field, self.rule, self.fix = field, rule, fix

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "fix": self.fix}


def may(viewer: Viewer, kind: str) -> bool:
    """May ``viewer`` raise an action of ``kind``: the data office both, a street office (the hotline's
    principal) a whistle, a department neither."""
    return viewer.admin or (kind == "whistle" and viewer.department == HOTLINE)


def _checked(kind: str, body: Any) -> dict[str, Any]:
    """The action's fields, each checked; the first problem is raised naming its field, rule and fix."""
    if not isinstance(body, Mapping):
        raise Problem("(body)", f"must be a JSON object, not {type(body).__name__}.",
                      f"send {{{', '.join(repr(f) for f in FIELDS)}}}.")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise Problem(unknown[0], "is not a field of an action.", f"send only {', '.join(FIELDS)}.")
    targets = ACTIONS[kind][1]
    target_type = body.get("target_type", targets[0] if len(targets) == 1 else None)
    if target_type not in targets:
        raise Problem("target_type", f"a {kind} is raised on {' or '.join(targets)}, not {target_type!r}.",
                      f"send target_type {' or '.join(repr(t) for t in targets)}.")
    target_id = body.get("target_id")
    if not isinstance(target_id, str) or not 4 <= len(target_id.strip()) <= 160:
        raise Problem("target_id", f"{str(target_id)[:40]!r} is not a {target_type} id (4 to 160 characters).",
                      f"send the id the {target_type}'s page shows.")
    departments = body.get("departments")
    if not isinstance(departments, list) or not departments or len(departments) > MAX_DEPARTMENTS:
        raise Problem("departments", f"must list 1 to {MAX_DEPARTMENTS} departments, not {str(departments)[:60]!r}.",
                      "name each department summoned by its id (raw.ref.department), e.g. [\"water\"].")
    for i, d in enumerate(departments):
        if not isinstance(d, str) or not DEPARTMENT_ID_RE.match(d):
            raise Problem(f"departments/{i}", f"{str(d)[:40]!r} is not a department id (lower snake case).",
                          "pick the department from the list the form offers.")
    if len(set(departments)) != len(departments):
        raise Problem("departments", "names a department twice.", "name each department summoned once.")
    reason = body.get("reason")
    if not isinstance(reason, str) or not REASON[0] <= len(reason.strip()) <= REASON[1]:
        raise Problem("reason", f"must say why in {REASON[0]} to {REASON[1]} characters "
                      f"(got {len(reason.strip()) if isinstance(reason, str) else type(reason).__name__}).",
                      "write what the departments must do and why, without the caller's personal data.")
    complexity = body.get("complexity", "simple")
    if complexity not in COMPLEXITIES:
        raise Problem("complexity", f"{str(complexity)[:20]!r} is not one of {list(COMPLEXITIES)}.",
                      "send simple (report within the city's 3 working days by default) or complex (5).")
    return {"target_type": target_type, "target_id": target_id.strip(), "departments": departments,
            "reason": reason.strip(), "complexity": complexity}


def _summonable(lake: Lake, departments: list[str]) -> None:
    """Every department summoned is one of the city's (raw.ref.department) that takes work orders (not the
    hotline, which answers on the call and dispatches rather than reports)."""
    known = set(names(lake)["departments"]) - {HOTLINE}
    for i, d in enumerate(departments):
        if d not in known:
            raise Problem(f"departments/{i}", f"{d!r} is not a department of the city's reference data that takes "
                          "work orders.", f"summon one of {', '.join(sorted(known)) or '(none imported yet)'}.")


def _target(lake: Lake, viewer: Viewer, kind: str, target_type: str, target_id: str) -> dict[str, Any]:
    """What the action is on, as the viewer may read it: title, ticket and areas. Raises NotFound for an id
    nobody has, Forbidden for one outside the viewer's remit."""
    if target_type == "city_event":
        if not viewer.may_read(topics.CITY_EVENTS):
            raise Forbidden(f"{viewer.principal} is not granted read on {topics.CITY_EVENTS}, so a city event is "
                            "outside its remit: whistle on one of the tickets it holds, or ask the command centre.")
        found = _latest_by(_silver(lake, topics.CITY_EVENTS), "event_id").get(target_id)
        if found is None:
            raise NotFound(f"no city event has id {target_id!r}; open it from the City page's events")
        return {"title": found.get("title") or found.get("category") or target_id, "ticket_id": None,
                "district_code": found.get("district_code"), "street_code": found.get("street_code")}
    rows = _rows(lake, viewer)[0]   # the street office's: the orders of the tickets the areas hold
    key = "work_order_id" if target_type == "work_order" else "source_id"
    hit = next((r for r in rows if r.get(key) == target_id and (target_type == "work_order" or r.get("source") == "ticket")),
               None)
    if hit is None:
        if viewer.admin:
            raise NotFound(f"no {target_type.replace('_', ' ')} has id {target_id!r}; find it on the Work orders page")
        raise Forbidden(f"{viewer.principal} may {kind} only on tickets the city's area offices hold "
                        f"({topics.TERRITORIAL_WORK_ORDERS}); {target_id!r} is not one of them.")
    return {"title": hit.get("title") or target_id, "ticket_id": hit.get("source_id") if hit.get("source") == "ticket"
            else None, "district_code": hit.get("district_code"), "street_code": hit.get("street_code")}


def city_clock(lake: Lake) -> tuple[Reporting, WorkingTime]:
    """The city's reporting deadlines and the working days they count (its latest ``raw.ref.city`` record; the
    defaults and Monday to Friday in UTC before a city is imported)."""
    cities = _register(lake, topics.REF_CITY, "city_code")
    city = max(cities.values(), key=lambda c: str(c.get("updated_at", "")), default={})
    try:
        zone = ZoneInfo(str(city.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    try:
        working = WorkingTime.from_block(city["working_hours"], zone) if city.get("working_hours") else office_hours(zone)
    except WorkingHoursError as e:
        log.error("city %s's working hours cannot be counted in (%s); reports fall due by Monday-to-Friday office "
                  "hours. Fix: correct the pack's manifest (`citybrain city check`) and import it again",
                  city.get("city_code"), e)
        working = office_hours(zone)
    try:
        return Reporting.from_city(city), working
    except ReportingError as e:
        log.error("city %s's reporting deadlines cannot be used (%s); the defaults apply (1 h, 24 h, 3 or 5 working "
                  "days). Fix: correct the pack's manifest and import it again", city.get("city_code"), e)
        return Reporting(), working


def record(kind: str, viewer: Viewer, checked: Mapping[str, Any], target: Mapping[str, Any], at: datetime,
           reporting: Reporting, working: WorkingTime) -> dict[str, Any]:
    """The action's record for its contract topic: who, when, why, on what, whom it summons and by when."""
    due = reporting.deadlines(at, checked["complexity"], working)
    return {"action_id": f"{kind.upper()}-{at.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}", "kind": kind,
            "target_type": checked["target_type"], "target_id": checked["target_id"],
            "ticket_id": target.get("ticket_id"), "title": str(target.get("title"))[:200],
            "district_code": target.get("district_code"), "street_code": target.get("street_code"),
            "departments": list(checked["departments"]), "reason": checked["reason"],
            "complexity": checked["complexity"], "issued_by": viewer.principal,
            "issuer_department": viewer.department, "issued_at": iso(at),
            **{f"{stage}_deadline": iso(when) for stage, when in due.items()}}


def action(lake: Lake, viewer: Viewer, kind: str, body: Any, at: datetime) -> tuple[str, dict[str, Any]]:
    """The (topic, record) of an action ``viewer`` raises from the view: refused (Forbidden) to a role that may not
    raise it or on a target outside its remit, (Problem) for a field it cannot take, (NotFound) for an unknown
    target."""
    if kind not in ACTIONS:
        raise NotFound(f"no action {kind!r}; the view's actions are {', '.join(ACTIONS)}")
    if not may(viewer, kind):
        who = "a department" if viewer.department and viewer.department != HOTLINE else viewer.principal
        raise Forbidden(f"{viewer.principal}: {who} may not {kind}. 督办 is the command centre's (the data office); "
                        "吹哨 a street office's (the hotline's system) or the command centre's.")
    checked = _checked(kind, body)
    _summonable(lake, checked["departments"])
    target = _target(lake, viewer, kind, checked["target_type"], checked["target_id"])
    reporting, working = city_clock(lake)
    return ACTIONS[kind][0], record(kind, viewer, checked, target, at, reporting, working)
