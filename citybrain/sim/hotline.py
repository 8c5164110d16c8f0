"""The 12345 hotline: calls arriving through the day and each ticket's closed loop.

A ticket is received, classified and dispatched to the responsible department (or answered
at once when it is only a question), accepted, handled (sometimes after its SLA deadline),
closed, followed up with a satisfaction rating, and sometimes reopened. Every step is a
``raw.hotline.ticket_event`` and a new state of the ``raw.hotline.service_request``.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

from citybrain.contracts.topics import SERVICE_REQUESTS, TICKET_EVENTS, contract_id
from citybrain.city.catalogue import Service
from citybrain.city.model import City, Street
from citybrain.city.routing import Level, Routing, chain, escalates
from citybrain.city.working_time import deadline as sla_deadline
from citybrain.geo import bbox, point_in_geometry
from citybrain.sim.clock import activity, is_weekend, local_hour
from citybrain.times import iso
from citybrain.sim.model import REFERENCE_POPULATION, Effects, Emission, SimConfig
from citybrain.sim.people import People

PRODUCER = "hotline-12345.crm"
CHANNELS = [("phone", 62), ("wechat", 12), ("app", 10), ("mini_program", 8), ("web", 5), ("email", 1), ("sms", 1),
            ("government_portal", 1)]
#: How slow each department is relative to its SLA (share of SLA a typical ticket takes).
PACE = {"housing": 0.55, "urban_management": 0.4, "police": 0.3, "water": 0.35, "transport": 0.5,
        "civil_affairs": 0.35, "environment": 0.45, "market_regulation": 0.45, "health": 0.4, "emergency": 0.3,
        "hotline_12345": 0.1}
STATUS_NOTES = {
    "received": "已受理", "dispatched": "已派发至{dept}", "escalated": "超时未办结，升级至{dept}",
    "accepted": "{dept}已签收", "handled": "{dept}已办结",
    "closed": "工单已办结", "followed_up": "已回访", "reopened": "市民不满意，工单重启",
}
#: The share of tickets an area's office handles itself before its deadline (the rest it lets escalate).
HANDLED_AT = {"grid": 0.55, "community": 0.45, "street": 0.5, "district": 0.5}


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, normal approximation above 30)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def random_point(rng: random.Random, street: Street, near: tuple[float, float] | None = None,
                 radius_deg: float = 0.003) -> tuple[float, float]:
    """A point inside the street (a Polygon or, as real boundaries often are, a MultiPolygon), near ``near``
    when given."""
    x0, y0, x1, y1 = bbox(street.geometry)
    for _ in range(50):
        if near:
            lon, lat = near[0] + rng.uniform(-radius_deg, radius_deg), near[1] + rng.uniform(-radius_deg, radius_deg)
        else:
            lon, lat = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if point_in_geometry(lon, lat, street.geometry):
            return round(lon, 6), round(lat, 6)
    return street.centre


class TicketDesk:
    """Creates tickets tick by tick and schedules the rest of each ticket's life."""

    def __init__(self, city: City, cfg: SimConfig, rng: random.Random, effects: Effects, start: datetime) -> None:
        self.city, self.cfg, self.rng, self.effects = city, cfg, rng, effects
        self.people = People(rng, city)
        self.interval = timedelta(minutes=cfg.interval_min)
        self.streets = city.streets
        self.street_weights = [s.population for s in city.streets]
        total = sum(s.daily_share for s in city.services)
        self.share = {s.service_code: s.daily_share / total for s in city.services}
        self.by_code = {s.service_code: s for s in city.services}
        day = [start + timedelta(minutes=m) for m in range(0, 24 * 60, 10)]
        self.profile_mean = {p: sum(activity(t, p, city.tz) for t in day) / len(day) for p in ("day", "evening", "night", "flat")}
        self.seq = 0
        month = start.astimezone(city.tz).month
        self.heating_season = month in (11, 12, 1, 2, 3)
        self.created: dict[str, int] = {}
        self.routing = Routing(city.routing())

    def tick(self, t: datetime) -> list[tuple[datetime, Emission]]:
        """New tickets received during the tick ending at ``t``, with their whole future."""
        out: list[tuple[datetime, Emission]] = []
        per_hour = (self.cfg.tickets_per_day * self.cfg.scale * self.city.population / REFERENCE_POPULATION / 24
                    * (0.85 if is_weekend(t, self.city.tz) else 1.0))
        hours = self.cfg.interval_min / 60
        for service in self.city.services:
            share = self.share[service.service_code]
            if service.category == "heating" and not self.heating_season:
                share *= 0.05
            lam = per_hour * share * activity(t, service.profile, self.city.tz) / self.profile_mean[service.profile] * hours
            for _ in range(poisson(self.rng, lam)):
                street = self.rng.choices(self.streets, weights=self.street_weights)[0]
                out += self._ticket(t, service, street, None, None)
        for street_code, code, rate, incident, near in self.effects.ticket_rates:
            for _ in range(poisson(self.rng, rate(t) * hours)):
                out += self._ticket(t, self.by_code[code], self.city.street(street_code), near, incident)
        return out

    def _ticket(self, t: datetime, service: Service, street: Street, near: tuple[float, float] | None,
                incident: str | None) -> list[tuple[datetime, Emission]]:
        rng = self.rng
        self.seq += 1
        received = t - timedelta(seconds=rng.uniform(0, self.interval.total_seconds()))
        local_day = received.astimezone(self.city.tz)
        ticket_id = f"HL{local_day:%Y%m%d}{self.cfg.seed % 100:02d}{self.seq:06d}"   # the seed keeps worlds apart
        lon, lat = random_point(rng, street, near)
        district = self.city.district(street.district_code)
        place = rng.choice(street.communities) if near is None else self._place_near(street, near)
        anonymous = rng.random() < 0.06
        state: dict[str, Any] = {
            "service_request_id": ticket_id, "status": "open", "service_code": service.service_code,
            "service_name": service.service_name,
            "description": rng.choice(service.templates).format(place=place, hour=int(local_hour(received, self.city.tz)) or 23),
            "requested_datetime": iso(received), "updated_datetime": iso(received),
            "address": self.people.address(street) if near is None
            else f"{district.name}{'' if street.is_district else street.name}{place}附近",
            "zipcode": street.zipcode, "lat": lat, "long": lon,
            "channel": rng.choices([c for c, _ in CHANNELS], weights=[w for _, w in CHANNELS])[0],
            "anonymous": anonymous, "category": service.category, "priority": service.priority,
            "lifecycle_state": "received", "reopen_count": 0,
        }
        if not anonymous:
            state["caller_name"] = self.people.caller_name()
            state["caller_phone"] = self.people.mobile()
        self.created[service.category] = self.created.get(service.category, 0) + 1
        return self._life(ticket_id, service, state, received, incident, self.city.areas_at(lon, lat, street.code))

    def _place_near(self, street: Street, near: tuple[float, float]) -> str:
        from citybrain.geo import haversine_m

        pois = [p for p in self.city.pois if p.street_code == street.code]
        if not pois:
            return street.name
        return min(pois, key=lambda p: haversine_m(p.lon, p.lat, *near)).name

    def _life(self, ticket_id: str, service: Service, state: dict[str, Any], received: datetime,
              incident: str | None, areas: dict[str, str]) -> list[tuple[datetime, Emission]]:
        """The ticket's closed loop. Under a routing rule that escalates through the city's areas it goes to
        the first level its position has and on up, level by level, until one handles it (``_levels``)."""
        rng = self.rng
        out: list[tuple[datetime, Emission]] = []
        steps: dict[str, int] = {}

        def step(kind: str, at: datetime, dept: str | None, **extra: Any) -> None:
            """One lifecycle step; ``dept`` None: taken by the area office ``extra`` names."""
            steps[kind] = steps.get(kind, 0) + 1
            event: dict[str, Any] = {"event_id": f"{ticket_id}:{kind}:{steps[kind]}", "service_request_id": ticket_id,
                                     "event_type": kind, "occurred_at": iso(at)}
            if dept is not None:
                event["department"] = dept
            if kind in ("dispatched", "accepted", "handled"):
                event["operator_id"] = f"op-{rng.randint(1000, 9999)}"
            event.update(extra)
            state["lifecycle_state"] = kind
            state["updated_datetime"] = iso(at)
            state["status_notes"] = STATUS_NOTES[kind].format(dept=self._holder(extra.get("area_code"),
                                                                            extra.get("assigned_department") or dept))
            out.append((at, Emission(contract_id(TICKET_EVENTS), event, PRODUCER, at, incident)))
            out.append((at, Emission(contract_id(SERVICE_REQUESTS), dict(state), PRODUCER, at, incident)))

        step("received", received, "hotline_12345", operator_id=f"op-{rng.randint(1000, 9999)}")
        now = received
        if service.department == "hotline_12345":   # a question answered on the call
            now += timedelta(minutes=rng.uniform(3, 15))
            state["status"] = "closed"
            step("closed", now, "hotline_12345", resolved=True, note="电话中已解答")
            if rng.random() < 0.3:
                self._follow_up(step, state, now, True, False)
            return out
        rule = self.routing.ticket_rule(service.service_code, service.category,
                                        (areas.get("community"), areas.get("street"), areas["district"]))
        dept = rule["department"] if rule else service.department
        for round_ in range(2):
            now += timedelta(minutes=rng.uniform(5, 40) if service.priority == "normal" else rng.uniform(2, 10))
            promised = sla_deadline(rule or {}, now, service.sla_hours, self.city.working)
            state.update(dispatch_department=dept, expected_datetime=iso(promised), status="open")
            levels = chain(rule, areas) if rule and round_ == 0 and escalates(rule) else \
                [Level("department", None, service.sla_hours)]
            now, resolved = self._levels(step, state, levels, dept, service, now, rule or {})
            overdue = now > promised
            now += timedelta(minutes=rng.uniform(10, 60))
            state["status"] = "closed"
            step("closed", now, "hotline_12345", resolved=resolved)
            if rng.random() > 0.72:
                return out
            satisfaction = self._follow_up(step, state, now, resolved, overdue)
            if satisfaction != "dissatisfied" or round_ == 1 or rng.random() > 0.35:
                return out
            now = self._followed_at + timedelta(minutes=rng.uniform(5, 60))
            state["reopen_count"] += 1
            state["status"] = "open"
            step("reopened", now, "hotline_12345", reason="市民反映问题未解决")
        return out

    def _levels(self, step, state: dict[str, Any], levels: list[Level], dept: str, service: Service,  # type: ignore[no-untyped-def]
                now: datetime, rule: dict[str, Any]) -> tuple[datetime, bool]:
        """Dispatch to the first of ``levels`` and escalate on each breach until a level handles the ticket:
        an area's office within its hours (``HANDLED_AT``), else the department at its own pace. Each level's
        hours run on ``rule``'s SLA clock (the calendar, or the city's working time).
        Returns when it was handled and whether the caller's problem was resolved."""
        rng = self.rng
        for i, lv in enumerate(levels):
            deadline = sla_deadline(rule, now, lv.hours, self.city.working)
            kind = "dispatched" if i == 0 else "escalated"
            holder: dict[str, Any] = {"level": lv.level}
            if lv.area_code:
                holder["area_code"] = lv.area_code
                state.update(escalation_level=lv.level, assigned_area_code=lv.area_code,
                             agency_responsible=self.city.area_name(lv.area_code))
            else:
                state.pop("assigned_area_code", None)
                state.update(escalation_level="department", agency_responsible=self.city.departments[dept][0])
            step(kind, now, "hotline_12345", sla_deadline=iso(deadline), assigned_department=dept,
                 note=STATUS_NOTES[kind].format(dept=self._holder(lv.area_code, dept)), **holder)
            if lv.level == "department":
                now = self._working(now + timedelta(minutes=rng.uniform(10, 120)), service)
                step("accepted", now, dept)
                pace = PACE.get(dept, 0.4) * math.exp(rng.gauss(0, 0.7))
                now = max(now + timedelta(minutes=5), now + timedelta(hours=lv.hours * pace))
                resolved = rng.random() < 0.88
                step("handled", now, dept, resolved=resolved)
                return now, resolved
            span = deadline - now
            if rng.random() < HANDLED_AT[lv.level]:
                accepted = now + span * rng.uniform(0.05, 0.3)
                step("accepted", accepted, None, **holder)
                now = accepted + span * rng.uniform(0.1, 0.6)
                resolved = rng.random() < 0.85
                step("handled", now, None, resolved=resolved, **holder)
                return now, resolved
            if rng.random() < 0.6:
                step("accepted", now + span * rng.uniform(0.05, 0.3), None, **holder)
            now = deadline + timedelta(minutes=rng.uniform(1, 10))
        raise AssertionError("a ticket's levels end with its department")   # chain() always ends there

    def _holder(self, area_code: str | None, dept: str | None) -> str:
        """The name of who holds a ticket: an area's office, else a department."""
        return self.city.area_name(area_code) if area_code else self.city.departments[dept or "hotline_12345"][0]

    def _follow_up(self, step, state: dict[str, Any], after: datetime, resolved: bool, overdue: bool) -> str:  # type: ignore[no-untyped-def]
        rng = self.rng
        at = after + timedelta(hours=rng.uniform(1, 24))
        if not 8 <= local_hour(at, self.city.tz) < 21:
            at += timedelta(hours=11)
        if resolved and not overdue:
            weights = (76, 19, 5)
        elif resolved:
            weights = (45, 30, 25)
        else:
            weights = (10, 30, 60)
        satisfaction = rng.choices(["satisfied", "basically_satisfied", "dissatisfied"], weights=weights)[0]
        state["follow_up_datetime"] = iso(at)
        state["satisfaction"] = satisfaction
        step("followed_up", at, "hotline_12345", satisfaction=satisfaction, resolved=resolved)
        self._followed_at = at
        return satisfaction

    def _working(self, t: datetime, service: Service) -> datetime:
        """Non-urgent work waits for the morning."""
        if service.priority != "normal":
            return t
        h = local_hour(t, self.city.tz)
        if h >= 20:
            return t + timedelta(hours=24 - h + 8.5)
        if h < 8:
            return t + timedelta(hours=8.5 - h)
        return t
