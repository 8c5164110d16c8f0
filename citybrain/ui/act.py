"""Acting from the view: 督办 (urge) on a work order and 吹哨 (whistle) on a ticket or a city event.

Either names the departments summoned and why; the view checks who may act on what, computes the city's
reporting deadlines (:mod:`citybrain.city.reporting`) and returns the record its contract topic takes
(``dispatch.command.urge`` / ``dispatch.command.whistle``). Who may act, decided with the city's way of work:

- the data office, which runs the command centre (``admin`` viewers), may urge and whistle on anything;
- a street office may whistle (街乡吹哨): the city's area offices work their tickets in the hotline's system,
  so the hotline's principal whistles on the tickets the areas hold (``dispatch.territorial.work_order``);
- a department neither urges nor whistles: it is the one summoned (部门报到), and answers each action that names
  it step by step (:func:`reply`: 签收, 联系, 反馈, on ``dispatch.command.reply``).

Beyond that, an action reaches only what its issuer may read: a ticket or city event outside the viewer's
remit is refused as if the viewer had asked for its page.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from citybrain.city.reporting import COMPLEXITIES, Reporting, ReportingError, office_hours
from citybrain.city.working_time import WorkingHoursError, WorkingTime
from citybrain.contracts import topics
from citybrain.contracts.departments import DEPARTMENT_ID_RE
from citybrain.lake.layout import Lake
from citybrain.times import iso, parse_time
from citybrain.ui.auth import Viewer
from citybrain.ui.orders import REPLY_STEPS, _rows, raised_actions, replies
from citybrain.ui.views import AREA_OFFICES, BadArgument, Forbidden, NotFound, _latest_by, _register, _silver, names

__all__ = ["ACTIONS", "HOTLINE", "Problem", "action", "city_clock", "may", "record", "reply"]

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
REPLY_FIELDS = ("action_id", "step", "note")
#: How long a reply's note may be; a report's must say something (as an action's reason must).
NOTE = (4, 500)
ACTION_ID = re.compile(r"(URGE|WHISTLE)-[0-9]{14}-[a-f0-9]{8}")


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


def _object_of(body: Any, fields: tuple[str, ...], what: str) -> None:
    """Refuse a body that is not a JSON object of ``fields`` only (``what`` it is, for the message)."""
    if not isinstance(body, Mapping):
        raise Problem("(body)", f"must be a JSON object, not {type(body).__name__}.",
                      f"send {{{', '.join(repr(f) for f in fields)}}}.")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise Problem(unknown[0], f"is not a field of {what}.", f"send only {', '.join(fields)}.")


def _checked(kind: str, body: Any) -> dict[str, Any]:
    """The action's fields, each checked; the first problem is raised naming its field, rule and fix."""
    _object_of(body, FIELDS, "an action")
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


def _checked_reply(body: Any) -> dict[str, Any]:
    """A reply's fields, each checked; the first problem is raised naming its field, rule and fix."""
    _object_of(body, REPLY_FIELDS, "a reply")
    action_id = body.get("action_id")
    if not isinstance(action_id, str) or not ACTION_ID.fullmatch(action_id.strip()):
        raise Problem("action_id", f"{str(action_id)[:40]!r} is not the id of an urge or a whistle "
                      "(URGE- or WHISTLE-, 14 digits, 8 hex digits).", "answer from the action's row on the Work orders page.")
    step = body.get("step")
    if step not in REPLY_STEPS:
        raise Problem("step", f"{str(step)[:20]!r} is not one of {list(REPLY_STEPS)}.",
                      "send sign (签收), contact (联系) or report (反馈).")
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise Problem("note", f"must be text, not {type(note).__name__}.", "send the note as a string, or leave it out.")
    note = (note or "").strip() or None
    if note is not None and len(note) > NOTE[1]:
        raise Problem("note", f"is {len(note)} characters; at most {NOTE[1]}.", "say what was done in fewer words.")
    if step == "report" and (note is None or len(note) < NOTE[0]):
        raise Problem("note", f"a report (反馈) says what the department did, in {NOTE[0]} to {NOTE[1]} characters.",
                      "write what was done and what is left, without the caller's personal data.")
    return {"action_id": action_id.strip(), "step": step, "note": note}


def reply(lake: Lake, viewer: Viewer, body: Any, at: datetime,
          live: Sequence[tuple[str, dict[str, Any]]] = ()) -> tuple[str, dict[str, Any]]:
    """The (topic, record) of a department's answer to an urge or a whistle that summons it (部门报到): each step
    once and in order (签收, 联系, 反馈), a report with its note. Refused (Forbidden) to the data office and the
    street offices, which follow the answers rather than give them, and to a department the action does not name;
    (NotFound) for an action nobody raised; (Problem) for a field it cannot take or a step out of turn."""
    if viewer.admin or not viewer.department or viewer.department == HOTLINE:
        raise Forbidden(f"{viewer.principal}: the departments an urge or a whistle summons answer it (部门报到); "
                        "the command centre and the street offices follow their answers on the Work orders page.")
    checked = _checked_reply(body)
    found = raised_actions(lake, viewer, live).get(checked["action_id"])
    if found is None:
        raise NotFound(f"no urge or whistle {checked['action_id']!r} summons {viewer.department}; answer one listed "
                       "on your Work orders page")
    if viewer.department not in (found.get("departments") or []):
        raise Forbidden(f"{viewer.principal}: {checked['action_id']} summons {', '.join(found.get('departments') or [])}, "
                        f"not {viewer.department}; a department answers the actions that name it.")
    done = replies(lake, viewer, live).get(checked["action_id"], {}).get(viewer.department, {})
    step = checked["step"]
    if step in done:
        raise Problem("step", f"{viewer.department} answered {step} on {checked['action_id']} at "
                      f"{done[step].get('replied_at')}; each step is answered once.",
                      f"answer the next step ({next((s for s in REPLY_STEPS if s not in done), 'none: all answered')}).")
    before = next((s for s in REPLY_STEPS[:REPLY_STEPS.index(step)] if s not in done), None)
    if before:
        raise Problem("step", f"{step} comes after {before}, which {viewer.department} has not answered.",
                      f"answer {before} first.")
    deadline = found.get(f"{step}_deadline")
    return topics.REPLIES, {
        "reply_id": f"REPLY-{at.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}", "action_id": checked["action_id"],
        "kind": found.get("kind"), "department": viewer.department, "step": step, "note": checked["note"],
        "replied_by": viewer.principal, "replied_at": iso(at), "deadline": deadline,
        "on_time": bool(deadline) and at <= parse_time(str(deadline))}
