"""The Work orders page: every order the viewer may follow, filtered and searched, and one ticket's lifecycle.

A department follows its own orders (``dispatch.<department>.work_order``); the data office every
department's. What a ticket's timeline holds follows the viewer's grants as everywhere in the view: its
work orders (the department's getting each, with its deadline and whether it came by escalation) for
everyone who holds one, the hotline's lifecycle steps (``raw.hotline.ticket_event``: received,
dispatched and escalated per level with each level's deadline, accepted, handled, closed, the follow-up
call with its satisfaction, reopened) and the SLA alerts (``alert.sla.ticket``) only with a grant on
their topic, and the city events whose evidence names the ticket only with a grant on the city events.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from citybrain.city.reporting import STAGES as REPLY_STEPS
from citybrain.contracts import topics
from citybrain.lake import layout
from citybrain.lake.layout import Lake
from citybrain.lake.store import LakePath
from citybrain.times import iso, parse_time
from citybrain.ui.auth import Viewer
from citybrain.ui.views import (STAGES, BadArgument, Forbidden, NotFound, _area, _event_row, _latest_by, _memo,
                                _records, _silver, _stages, _with_area, names, work_orders)

#: The most orders one answer lists (the newest first); ``total`` says how many matched.
MAX_LISTED = 500
#: A city event's states, which the orders it gave rise to show.
EVENT_STATES = ("open", "updated", "closed")
#: States in which an order is done with: it cannot run overdue any more.
DONE = frozenset({"handled", "closed", "followed_up"})
#: The longest search text and ticket id taken.
MAX_TEXT = 160
FILTERS = ("area", "department", "status", "overdue", "q")
#: A department id as raw.ref.department spells it (it names a lake folder, so nothing else is taken).
DEPARTMENT = re.compile(r"[a-z][a-z0-9_]{1,40}")


def _ticket_events(files: list[LakePath]) -> dict[str, list[dict[str, Any]]]:
    """Ticket id -> its lifecycle steps, in lake order."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in _records(files):
        if v.get("service_request_id"):
            out[str(v["service_request_id"])].append(v)
    return dict(out)


def _lifecycle(lake: Lake) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Each ticket's stage and its steps (``raw.hotline.ticket_event``)."""
    files = layout.files(lake, "bronze", layout.contract_of(topics.TICKET_EVENTS))
    return _memo("stages", files, _stages), _memo("ticket_events", files, _ticket_events)


def _above(code: str, areas: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The area and every area above it, by the areas' parent links (never by a code's digits)."""
    seen: set[str] = set()
    while code and code not in seen:
        seen.add(code)
        code = str((areas.get(code) or {}).get("parent") or "")
    return seen


def _checked(query: Mapping[str, str]) -> dict[str, str]:
    """The page's filters, each checked; an unknown status or a too long text is refused (400)."""
    got = {k: str(query.get(k) or "").strip() for k in FILTERS}
    for k, v in got.items():
        if len(v) > MAX_TEXT:
            raise BadArgument(f"{k}={v[:20]!r}…: at most {MAX_TEXT} characters; search with a shorter text")
    if got["status"] and got["status"] not in (*STAGES, *EVENT_STATES):
        raise BadArgument(f"status={got['status']!r} is not a state of a ticket or city event; use one of "
                          f"{', '.join((*STAGES, *EVENT_STATES))}")
    if got["department"] and not DEPARTMENT.fullmatch(got["department"]):
        raise BadArgument(f"department={got['department'][:40]!r} is not a department id (raw.ref.department: "
                          "lower-case letters, digits and _); pick one from the list")
    if got["overdue"] not in ("", "0", "1", "true", "false"):
        raise BadArgument(f"overdue={got['overdue']!r}: use 1 (only overdue orders) or leave it out")
    return got


def _rows(lake: Lake, viewer: Viewer, department: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """The viewer's orders (their latest states) with each one's area, state and whether it is overdue, and the
    time the data reaches (the newest order's receipt: overdue is judged against the data, not the wall clock)."""
    orders = list(_latest_by(work_orders(lake, viewer, department), "work_order_id").values())
    stage_of = _lifecycle(lake)[0] if viewer.may_read(topics.TICKET_EVENTS) else {}
    event_of = (_latest_by(_silver(lake, topics.CITY_EVENTS), "event_id") if viewer.may_read(topics.CITY_EVENTS)
                else {})
    newest = max((parse_time(o["received_at"]) for o in orders if o.get("received_at")), default=None)
    rows = []
    for o in orders:
        source_id = str(o.get("source_id") or "")
        status = (stage_of.get(source_id) if o.get("source") == "ticket"
                  else (event_of.get(source_id) or {}).get("status"))
        deadline = o.get("sla_deadline")
        late = bool(newest and deadline and parse_time(deadline) < newest and status not in DONE and status != "closed")
        rows.append({k: o.get(k) for k in ("work_order_id", "source", "source_id", "department", "role", "title",
                                           "category", "priority", "community_code", "street_code", "street_name",
                                           "district_code", "received_at", "assigned_at", "sla_deadline", "escalated")}
                    | {"area_code": _area(o) or None, "status": status, "overdue": late})
    return rows, iso(newest) if newest else None


def order_list(lake: Lake, viewer: Viewer, query: Mapping[str, str]) -> dict[str, Any]:
    """The viewer's work orders matching the filters (area: the area or any below it; department: the data
    office's choice; status; overdue; q: a ticket, order or event id or text of the title), newest first."""
    f = _checked(query)
    rows, as_of = _rows(lake, viewer, f["department"] or None)
    areas = names(lake)["areas"]
    text = f["q"].casefold()
    found = [r for r in rows
             if (not f["area"] or any(f["area"] in _above(str(r.get(k) or ""), areas)
                                      for k in ("community_code", "street_code", "district_code")))
             and (not f["status"] or r["status"] == f["status"])
             and (f["overdue"] not in ("1", "true") or r["overdue"])
             and (not text or any(text in str(r.get(k) or "").casefold()
                                  for k in ("work_order_id", "source_id", "title", "category", "street_name")))]
    found.sort(key=lambda r: str(r.get("received_at") or ""), reverse=True)
    return {"orders": found[:MAX_LISTED], "total": len(found), "as_of": as_of,
            "statuses": sorted({r["status"] for r in rows if r["status"]}),
            "departments": sorted({str(r["department"]) for r in rows if r.get("department")}),
            "lifecycle": viewer.may_read(topics.TICKET_EVENTS)}


def ticket(lake: Lake, viewer: Viewer, ident: str) -> dict[str, Any]:
    """One ticket (or city event) as the viewer may follow it, found by its id or one of its work orders' ids:
    its orders, its lifecycle as a timeline, the city events it is linked to."""
    ident = ident.strip()
    if not ident or len(ident) > MAX_TEXT:
        raise BadArgument(f"id={ident[:20]!r}: name a ticket, work order or city event id (1 to {MAX_TEXT} characters)")
    rows, as_of = _rows(lake, viewer)
    hit = next((r for r in rows if ident in (r["work_order_id"], r["source_id"])), None)
    if hit is None:
        if viewer.admin:
            raise NotFound(f"no work order of any department is for {ident!r}; search the Work orders page by text")
        raise Forbidden(f"{viewer.principal} holds no work order for {ident!r}: a department follows its own orders "
                        f"(dispatch.{viewer.department}.work_order) only")
    source_id = hit["source_id"]
    mine = sorted((r for r in rows if r["source_id"] == source_id), key=lambda r: str(r.get("assigned_at") or r.get("received_at")))
    timeline: list[dict[str, Any]] = []
    if hit["source"] == "ticket" and viewer.may_read(topics.TICKET_EVENTS):
        for e in _lifecycle(lake)[1].get(source_id, []):
            step = {"at": e.get("occurred_at"), "step": e.get("event_type"), "level": e.get("level"),
                    "area_code": e.get("area_code"), "department": e.get("assigned_department") or e.get("department"),
                    "deadline": e.get("sla_deadline")}
            step |= {k: e[k] for k in ("satisfaction", "resolved", "note", "reason") if e.get(k) is not None}
            timeline.append(step)
    if hit["source"] == "ticket" and viewer.may_read(topics.SLA_ALERTS):
        for a in _silver(lake, topics.SLA_ALERTS):
            if a.get("service_request_id") == source_id:
                timeline.append({"at": a.get("detected_at"), "step": a.get("kind"), "level": a.get("level"),
                                 "area_code": a.get("area_code"), "department": a.get("department"),
                                 "deadline": a.get("sla_deadline"), "overdue_min": a.get("overdue_min")})
    raised = [a for topic in ACTION_TOPICS if viewer.may_read(topic)   # the urges and whistles raised on it
              for a in _latest_by(_silver(lake, topic), "action_id").values()
              if source_id in (a.get("ticket_id"), a.get("target_id")) or a.get("target_id") in {r["work_order_id"] for r in mine}]
    timeline += [{"at": a.get("issued_at"), "step": a.get("kind"), "level": "department",
                  "department": ", ".join(a.get("departments") or []), "deadline": a.get("report_deadline"),
                  "action_id": a.get("action_id"), "reason": a.get("reason")} for a in raised]
    answered = replies(lake, viewer)   # and the departments' replies to them (报到)
    timeline += [{"at": r.get("replied_at"), "step": f"reply_{step}", "level": "department", "department": department,
                  "deadline": r.get("deadline"), "action_id": a.get("action_id"), "on_time": r.get("on_time"),
                  "note": r.get("note")}
                 for a in raised for department, steps in answered.get(str(a.get("action_id")), {}).items()
                 for step, r in steps.items()]
    # The orders after the steps that made them: an escalation and the order it gave carry the same time.
    timeline += [{"at": r.get("assigned_at") or r.get("received_at"), "step": "work_order", "level": "department",
                  "department": r["department"], "deadline": r.get("sla_deadline"), "work_order_id": r["work_order_id"],
                  "role": r.get("role"), "escalated": bool(r.get("escalated"))} for r in mine]
    timeline.sort(key=lambda s: (s.get("at") is None, parse_time(s["at"]) if s.get("at") else None))
    events = []
    if viewer.may_read(topics.CITY_EVENTS):
        linked = _latest_by(_silver(lake, topics.CITY_EVENTS), "event_id").values()
        events = [_with_area(_event_row(e), lake) for e in linked
                  if e.get("event_id") == source_id or source_id in ((e.get("evidence") or {}).get("tickets") or [])]
    first = mine[0]
    return {"id": source_id, "source": hit["source"], "title": first.get("title"), "category": first.get("category"),
            "priority": first.get("priority"), "area_code": first.get("area_code"),
            "community_code": first.get("community_code"), "received_at": first.get("received_at"),
            "status": hit["status"], "overdue": any(r["overdue"] for r in mine), "as_of": as_of, "orders": mine,
            "timeline": timeline, "events": events, "lifecycle": viewer.may_read(topics.TICKET_EVENTS)}


#: The topics of the actions raised from the view (督办, 吹哨).
ACTION_TOPICS = (topics.URGES, topics.WHISTLES)


def raised_actions(lake: Lake, viewer: Viewer, live: Sequence[tuple[str, dict[str, Any]]] = ()) -> dict[str, dict[str, Any]]:
    """Every urge and whistle the viewer may read, by action id (the lake's and the live feed's)."""
    found: dict[str, dict[str, Any]] = {}
    for topic in ACTION_TOPICS:
        if viewer.may_read(topic):
            for r in _silver(lake, topic) + [v for t, v in live if t == topic]:
                found[str(r.get("action_id"))] = r
    return found


def replies(lake: Lake, viewer: Viewer, live: Sequence[tuple[str, dict[str, Any]]] = ()) -> dict[
        str, dict[str, dict[str, dict[str, Any]]]]:
    """The departments' replies (``dispatch.command.reply``) the viewer may read: action id -> department -> step ->
    its first reply (a step is answered once; a repeat sent by a double click is not a second answer)."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    if viewer.may_read(topics.REPLIES):
        for r in _silver(lake, topics.REPLIES) + [v for t, v in live if t == topics.REPLIES]:
            out[str(r.get("action_id"))][str(r.get("department"))].setdefault(str(r.get("step")), r)
    return out


def action_counts(lake: Lake, viewer: Viewer, now: datetime) -> dict[str, dict[str, Any]]:
    """Per department summoned (a department: itself only), what the 考核 counts of the urges and whistles: how
    many actions summoned it (``summoned``; ``urged``: of them urges on its orders), the steps it owed by ``now``
    (``due``: answered, or past their deadline unanswered), those answered by their deadline (``on_time``) and
    their share (``on_time_rate``; null while nothing was due)."""
    out: dict[str, dict[str, Any]] = {}
    answered = replies(lake, viewer)
    for action in raised_actions(lake, viewer).values():
        got = answered.get(str(action.get("action_id")), {})
        for department in action.get("departments") or []:
            if not viewer.admin and department != viewer.department:
                continue
            c = out.setdefault(department, {"summoned": 0, "urged": 0, "due": 0, "on_time": 0})
            c["summoned"] += 1
            c["urged"] += action.get("kind") == "urge"
            for step in REPLY_STEPS:
                reply = got.get(department, {}).get(step)
                deadline = action.get(f"{step}_deadline")
                if reply is not None or (deadline and parse_time(deadline) < now):
                    c["due"] += 1
                    c["on_time"] += bool(reply and reply.get("on_time"))
    for c in out.values():
        c["on_time_rate"] = round(c["on_time"] / c["due"], 4) if c["due"] else None
    return out


def late_steps(action: Mapping[str, Any], answered: Mapping[str, Mapping[str, Any]], now: datetime) -> dict[str, list[str]]:
    """Step -> the departments late on it: each summoned department's next step unanswered (签收, then 联系, then
    反馈), when that step's deadline has passed."""
    late: dict[str, list[str]] = {}
    for department in action.get("departments") or []:
        step = next((s for s in REPLY_STEPS if s not in answered.get(department, {})), None)
        if step and action.get(f"{step}_deadline") and parse_time(action[f"{step}_deadline"]) < now:
            late.setdefault(step, []).append(department)
    return late


def actions(lake: Lake, viewer: Viewer, live: Sequence[tuple[str, dict[str, Any]]] = ()) -> dict[str, Any]:
    """The urges and whistles the viewer follows, newest first: a department those that summon it, the hotline
    (the street offices) those it raised too, the data office all; each with every summoned department's replies
    (``replies``: department -> step -> its reply), the departments late on each step (``late``: the step each
    owes next, past its deadline, judged against the wall clock: an action is live, not replayed), ``overdue``
    the first step anyone is late on, and ``next``, the step the viewer's department owes (none if not summoned)."""
    found = raised_actions(lake, viewer, live)
    mine = [r for r in found.values() if viewer.admin or viewer.department in (r.get("departments") or [])
            or r.get("issuer_department") == viewer.department]
    answered = replies(lake, viewer, live)
    now = datetime.now(timezone.utc)
    rows = []
    for r in sorted(mine, key=lambda r: str(r.get("issued_at")), reverse=True)[:MAX_LISTED]:
        got = answered.get(str(r.get("action_id")), {})
        late = late_steps(r, got, now)
        owed = (next((s for s in REPLY_STEPS if s not in got.get(viewer.department or "", {})), None)
                if viewer.department in (r.get("departments") or []) else None)
        rows.append({**r, "replies": {d: dict(steps) for d, steps in got.items()}, "late": late,
                     "overdue": next((s for s in REPLY_STEPS if s in late), None), "next": owed})
    return {"actions": rows, "total": len(mine)}
