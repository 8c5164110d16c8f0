"""Dispatch (派单) and SLA tracking: work orders to departments, alerts before deadlines pass."""

from __future__ import annotations

import heapq
import logging

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from citybrain.city.routing import AREA_LEVELS, Routing, escalates, level_hours
from citybrain.city.working_time import WorkingTime, deadline
from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.errors import InputError
from citybrain.access.privacy import Protector
from citybrain.times import iso, parse_time

log = logging.getLogger(__name__)

#: Share of the SLA after which an unhandled ticket is "about to breach" (of the working time to the deadline
#: when the ticket's rule counts its SLA in the city's working time).
WARN_AT = 0.8


class RoutingError(InputError, LookupError):
    """No routing rule says who acts on a city-event category; the message names the rule to publish."""


class Dispatcher:
    """Routes tickets and city events with the routing rules (``raw.ref.routing_rule`` records)."""

    def __init__(self, protector: Protector, hotline: Contract, rules: dict[str, dict[str, Any]] | None = None) -> None:
        """``protector`` pseudonymises callers as ``hotline`` (the requests' contract, whose x-protect
        rules say what of the caller may leave the raw zone) marks their fields."""
        self.protector = protector
        self.hotline = hotline
        self.routing = Routing((rules or {}).values())
        #: The city's working time (its ``raw.ref.city`` record's ``working_hours``), which the SLA of a rule
        #: with ``sla_clock: working`` counts in; None: the city declares none, and every SLA runs on the calendar.
        self.working: WorkingTime | None = None
        self._unclocked: set[str] = set()
        #: The SLA clock of each ticket routed here while the city declares working hours, by service request id
        #: (ticket events do not say it: their rule does); forgotten when the ticket is closed.
        self._ticket_clocks: dict[str, str] = {}

    def update_rule(self, rule: dict[str, Any]) -> None:
        """Take a rule as the reference topic has it now; a withdrawn rule routes nothing any more."""
        self.routing.update(rule)

    def event_rule(self, category: str) -> dict[str, Any]:
        """The routing rule of a city-event category, as the reference data has it now."""
        rule = self.routing.by_event.get(category)
        if rule is None:
            raise RoutingError(
                f"no routing rule for city-event category {category!r} on raw.ref.routing_rule.v1 (rule_id "
                f"`event.{category}`), so nobody would be dispatched to it. Fix: publish the rule with its department, "
                f"sla_hours and priority (the city's reference data: `citybrain simulate` publishes the simulated city's).")
        return rule

    def ticket_orders(self, request: dict[str, Any], place: tuple[str | None, ...]) -> list[tuple[str, dict[str, Any]]]:
        """Work orders caused by one state of a hotline request, under the rule of the smallest area of its
        position that has one, else the city-wide rule.

        A ticket whose rule goes to its department at once gets its orders (the responsible department's
        and any co-departments') on receipt. One whose rule escalates through the city's areas (属地管理) is
        dispatched by the hotline's system, and each update that says a new level holds it
        (``lifecycle_state`` dispatched or escalated, ``escalation_level``) gets that level's order: an area
        office's on the territorial topic, the departments' when it reaches them. Nobody escalates a request
        received through the Open311 gateway (``partner``): it goes to its department on receipt. A reopened
        ticket dispatched again is a new order (``-r<n>``). ``place``: (district code, street code, street
        name[, community code]) of the request's position."""
        district_code, street_code, street_name = place[:3]
        community_code = place[3] if len(place) > 3 else None
        rule = self.routing.ticket_rule(request["service_code"], request.get("category"),
                                        (community_code, street_code, district_code))
        if rule is None:
            return []
        if self.working is not None:
            self._ticket_clocks[request["service_request_id"]] = rule.get("sla_clock", "calendar")
        state, level = request.get("lifecycle_state") or "received", request.get("escalation_level")
        held_by_areas = escalates(rule) and not request.get("partner")
        received = parse_time(request["requested_datetime"])
        base = {
            "source": "ticket", "source_id": request["service_request_id"], "category": rule["category"],
            "service_code": request["service_code"], "title": request["service_name"],
            "priority": request.get("priority") or rule["priority"], "district_code": district_code,
            "street_code": street_code, "street_name": street_name, "received_at": iso(received),
            "rule_id": rule["rule_id"], "caller_ref": self._caller_ref(request), **self._clock_field(rule),
        }
        if community_code:
            base["community_code"] = community_code
        if state == "received":
            if held_by_areas:
                return []   # the hotline's system dispatches it to the first of its levels
            return self._department_orders(request, rule, base, received, float(rule["sla_hours"]), escalated=False)
        if state not in ("dispatched", "escalated") or not level:
            return []
        at = parse_time(request.get("updated_datetime") or request["requested_datetime"])
        again = f"-r{request['reopen_count']}" if request.get("reopen_count") else ""
        if level in AREA_LEVELS:
            if not request.get("assigned_area_code"):
                return []
            hours = level_hours(rule, level)
            return [(topics.TERRITORIAL_WORK_ORDERS, {
                **base, "work_order_id": f"WO-{request['service_request_id']}-{level}{again}", "level": level,
                "area_code": request["assigned_area_code"], "department": rule["department"], "role": "lead",
                "assigned_at": iso(at), "sla_deadline": iso(self.sla_deadline(rule, at, hours)), "sla_hours": hours})]
        if state == "dispatched" and not again and not held_by_areas:
            return []   # its orders went out on receipt
        return self._department_orders(request, rule, base, at, level_hours(rule, "department") if held_by_areas
                                       else float(rule["sla_hours"]), escalated=state == "escalated", suffix=again)

    def sla_deadline(self, rule: Mapping[str, Any], at: datetime, hours: float) -> datetime:
        """When ``hours`` of ``rule``'s SLA from ``at`` run out, on the rule's clock: the calendar, or the city's
        working time (``sla_clock: working``; the calendar, said once per rule, while the city declares none)."""
        if rule.get("sla_clock") == "working" and self.working is None and rule["rule_id"] not in self._unclocked:
            self._unclocked.add(rule["rule_id"])
            log.warning("rule %s counts its SLA in working time, but the city's raw.ref.city record declares no "
                        "working_hours: its deadlines run on the calendar. Fix: add working_hours to the pack's "
                        "manifest and import it again (`citybrain city check` names this too)", rule["rule_id"])
        return deadline(rule, at, hours, self.working)

    def _clock_field(self, rule: Mapping[str, Any]) -> dict[str, str]:
        """A work order's ``sla_clock``: ``working`` when its deadline counts the city's working time; left out on
        the calendar (absent and ``calendar`` say the same, so the simulated city's orders stay as they were)."""
        return {"sla_clock": "working"} if rule.get("sla_clock") == "working" and self.working is not None else {}

    def ticket_clock(self, event: Mapping[str, Any]) -> WorkingTime | None:
        """The city's working time when a ticket event's deadline counts in it, None when it runs on the calendar.
        The clock is its rule's: the rule this dispatcher routed the ticket by, else (a ticket whose request this
        pipeline did not see: the ticket lifecycle is fused apart from the requests when the city is shared out
        by area) the one the rules of its department all agree on. A closed ticket is forgotten."""
        rid = event["service_request_id"]
        clock = self._ticket_clocks.pop(rid, None) if event.get("event_type") == "closed" else \
            self._ticket_clocks.get(rid)
        if self.working is None:
            return None
        if clock is None:
            department = event.get("assigned_department") or event.get("department")
            clocks = {r.get("sla_clock", "calendar") for table in (self.routing.by_service, self.routing.by_area,
                                                                   self.routing.by_category)
                      for r in table.values() if r.get("department") == department}
            clock = clocks.pop() if len(clocks) == 1 else "calendar"
        return self.working if clock == "working" else None

    def _department_orders(self, request: dict[str, Any], rule: dict[str, Any], base: dict[str, Any], at: datetime,
                           hours: float, escalated: bool, suffix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """The orders of the responsible department and its co-departments, assigned ``at`` for ``hours`` on the
        rule's SLA clock."""
        order = {**base, "assigned_at": iso(at), "sla_deadline": iso(self.sla_deadline(rule, at, hours)), "sla_hours": hours,
                 "escalated": escalated}
        return [(topics.work_orders(d), {**order, "work_order_id": f"WO-{request['service_request_id']}-{d}{suffix}",
                                     "department": d, "role": "lead" if d == rule["department"] else "support"})
                for d in [rule["department"], *rule.get("co_departments", [])]
                if d != "hotline_12345"]   # questions are answered on the call, not dispatched

    def _caller_ref(self, request: dict[str, Any]) -> str | None:
        """The caller's pseudonym (phone, else e-mail), as the contract's x-protect allows; name, address
        and description stay in the raw zone."""
        refs = self.protector.protect(self.hotline, request, None)
        return refs.get("caller_phone_ref") or refs.get("caller_email_ref")

    def event_orders(self, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Work orders for a new city event: every department that must act on it (联动处置)."""
        if event["status"] != "open":
            return []
        base = {
            "source": "city_event", "source_id": event["event_id"], "category": event["category"],
            "title": event["title"], "priority": event["priority"], "district_code": event["district_code"],
            "street_code": event.get("street_code"), "street_name": event["street_name"],
            "received_at": event["detected_at"], "assigned_at": event["detected_at"],
            "sla_deadline": event["sla_deadline"], "rule_id": f"event.{event['category']}",
            **self._clock_field(self.routing.by_event.get(event["category"]) or {}),
        }
        return [(topics.work_orders(d), {**base, "work_order_id": f"WO-{event['event_id']}-{d}", "department": d,
                                     "role": "lead" if d == event["department"] else "support"})
                for d in [event["department"], *event["co_departments"]]]


@dataclass
class Open:
    department: str
    dispatched: datetime
    deadline: datetime
    warned: bool = False
    level: str | None = None
    area_code: str | None = None
    #: The city's working time when the deadline counts in it (the warning then comes at WARN_AT of the working
    #: time to the deadline); None: the calendar.
    working: WorkingTime | None = None

    def warn_at(self) -> datetime:
        """When the ticket is "about to breach": WARN_AT of the time to its deadline, on its SLA clock."""
        if self.working is None:
            return self.dispatched + (self.deadline - self.dispatched) * WARN_AT
        left = self.working.between(self.dispatched, self.deadline)
        return self.working.add(self.dispatched, left.total_seconds() * WARN_AT / 3600)


class SlaTracker:
    """Follows each ticket from ``dispatched`` to ``handled``; says when an SLA is at risk or broken.

    A ticket escalated through the city's areas (``escalated`` events) is followed level by level: each
    level's deadline is watched on its own, and the alerts name the level and area that let it pass.
    Due checks wait in a heap by time, so a sweep costs the alerts it raises, not the number of
    open tickets (tens of thousands after a few days)."""

    def __init__(self) -> None:
        self.open: dict[str, Open] = {}
        self._due: list[tuple[datetime, int, str, str, Open]] = []
        self._seq = 0

    def event(self, e: dict[str, Any], working: WorkingTime | None = None) -> None:
        """Follow one ticket event; ``working``: the city's working time when the ticket's SLA counts in it
        (its rule's ``sla_clock: working``), which puts the "about to breach" warning at WARN_AT of that time."""
        rid, kind = e["service_request_id"], e["event_type"]
        if kind in ("dispatched", "escalated") and e.get("sla_deadline"):
            o = Open(e.get("assigned_department") or e.get("department") or "hotline_12345", parse_time(e["occurred_at"]),
                     parse_time(e["sla_deadline"]), level=e.get("level"), area_code=e.get("area_code"), working=working)
            self.open[rid] = o
            for due, check in ((o.warn_at(), "warn"), (o.deadline, "breach")):
                self._seq += 1
                heapq.heappush(self._due, (due, self._seq, check, rid, o))
        elif kind in ("handled", "closed") and rid in self.open:
            del self.open[rid]

    def alerts(self, now: datetime) -> list[dict[str, Any]]:
        out = []
        while self._due and self._due[0][0] <= now:
            _due, _seq, check, rid, o = heapq.heappop(self._due)
            if self.open.get(rid) is not o:
                continue   # handled, closed, dispatched or escalated again since
            if check == "breach":
                del self.open[rid]   # nothing more to say about it until it is escalated
                out.append(self._alert(rid, o, "breached", now))
            elif not o.warned and now < o.deadline:
                o.warned = True
                out.append(self._alert(rid, o, "about_to_breach", now))
        return out

    def _alert(self, rid: str, o: Open, kind: str, now: datetime) -> dict[str, Any]:
        alert = {"alert_id": f"SLA-{rid}-{o.level + '-' if o.level else ''}{kind}", "kind": kind,
                 "service_request_id": rid, "department": o.department, "dispatched_at": iso(o.dispatched),
                 "sla_deadline": iso(o.deadline), "detected_at": iso(now),
                 "overdue_min": max(0, round((now - o.deadline).total_seconds() / 60))}
        if o.level:
            alert["level"] = o.level
        if o.area_code:
            alert["area_code"] = o.area_code
        return alert
