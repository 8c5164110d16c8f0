"""Fusion: evidence about the same place and time becomes one city event, and early warnings.

Evidence is grouped by street and family (flood, noise, air, traffic, sensor fault). Waterlogging calls,
an underpass gauge above its reference level and a police report of a waterlogged road in
the same street within a few hours are one flood event with all three as evidence, not
three rows; so are a lane whose traffic has stopped, 110 reports of an accident or an
obstruction and hazard calls in one street, as a traffic event, and an air gauge over the AQI limit
with the street's air-pollution calls, as an air-pollution episode. A case becomes an event once
its evidence is strong enough, is updated when new kinds of evidence arrive, and closes when
the street has been quiet for a while. Where the city has no streets (its pack stops at
districts there), the district takes the street's place: its events and warnings name the
district and no street.

Air spreads: a street's gauge standing out at its first hour over the limit, next to a street whose air case
began the same way and is open, joins that case (one incident, one event id, its footprint the streets in its
evidence), and the streets next to an air event are warned that it may reach them (``air_spreading``).

Early warnings come before the complaints pile up (未诉先办): a sensor family turning
anomalous in a street before its residents call (an air gauge at its first hour over the limit, standing
out from the city's: :mod:`citybrain.fusion.air`), and a complaint category rising in one street
above what is usual there at that hour of the week (:mod:`citybrain.fusion.calls`).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from citybrain.fusion.calls import (CUSUM_RATIO, DEFAULT_FALSE_ALARM_RATE, MIN_EXPECTED_PER_H, PIECE, PIECES,
                                    WINDOWS, Baseline, CallHistory, Cusum, baseline, one_in, say_burst, say_held,
                                    say_trend, threshold)
from citybrain.fusion.air import downwind, say_over_limit, say_spreading, say_wind
from citybrain.fusion.detect import AQI_LIMIT, Anomaly
from citybrain.fusion.signals import Signal
from citybrain.geo import Area
from citybrain.times import iso

log = logging.getLogger(__name__)

#: Which ticket, police and inspection categories are evidence for which family.
TICKET_FAMILY = {"waterlogging": "flood", "noise": "noise", "water_leak": "water_supply",
                 "water_outage": "water_supply", "air_pollution": "air"}
#: Calls that are evidence for a case already open in their street as well: everyday ones (a hazard, a signal out)
#: for a traffic case, a flooded road for a water-supply case (a burst main floods the road it runs under).
TICKET_JOINS = {"safety_hazard": "traffic", "traffic_signal": "traffic", "waterlogging": "water_supply"}
POLICE_FAMILY = {"waterlogged_road": "flood", "traffic_accident": "traffic", "road_obstruction": "traffic"}
INSPECTION_FAMILY = {"waterlogging": "flood", "night_construction": "noise"}
FAMILY_EVENT = {"flood": "flood", "noise": "noise_disturbance", "sensor_fault": "sensor_fault",
                "air": "air_pollution_episode", "traffic": "traffic_congestion", "water_supply": "water_supply"}
FAMILY_WARNING_CATEGORY = {"flood": "waterlogging", "noise": "noise", "air": "air_pollution"}
#: How many gauges of a family warn once their readings are confirmed anomalies (two in a row): a level gauge is
#: engineered for this; noise needs two. Air warns earlier, at a gauge's first hour (``Anomaly.provisional``).
WARN_DEVICES = {"flood": 1, "noise": 2}
TITLES = {"flood": "道路积水/内涝", "noise_disturbance": "噪声扰民", "sensor_fault": "传感器故障",
          "air_pollution_episode": "空气污染", "traffic_congestion": "交通拥堵", "water_supply": "供水管网异常"}
QUIET = timedelta(hours=3)     # a case closes after this long without new evidence
TRAFFIC_NEAR = timedelta(hours=1)   # a 110 report or a call this close to a lane stopping is about it


@dataclass
class Case:
    area_code: str                 # the street, else the district (a city without streets there)
    family: str
    first_seen: datetime
    last_seen: datetime
    district_code: str | None = None
    street_code: str | None = None
    area_name: str | None = None   # the street's name, else the district's
    lon: float | None = None
    lat: float | None = None
    readings: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    tickets: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    #: Event times: each device's first reading, and each call, for the early warning (see ``sensors_first``);
    #: each record, which a traffic case needs near its lane's (see ``strong_enough``).
    device_first: dict[str, datetime] = field(default_factory=dict)
    ticket_times: list[datetime] = field(default_factory=list)
    record_times: list[datetime] = field(default_factory=list)
    published_kinds: int = 0
    event_id: str | None = None
    warned: bool = False
    #: The call categories of the case unusual in its street (:meth:`HotspotDetector.unusual`), and why its own
    #: calls' excess has held (:meth:`HotspotDetector.held`): what calls alone open an event with.
    unusual: set[str] = field(default_factory=set)
    held: str | None = None
    #: An air case's footprint: the streets (else districts) it has spread over, code -> name, its own first; whether
    #: it began with a local exceedance (a gauge standing out, ``Anomaly.provisional``), which a neighbour's joins;
    #: the streets of the footprint warned of, and the streets next to it warned that it may spread to them.
    streets: dict[str, str | None] = field(default_factory=dict)
    published_streets: int = 0
    local: bool = False
    warned_streets: set[str] = field(default_factory=set)
    spread_warned: set[str] = field(default_factory=set)

    @property
    def kinds(self) -> int:
        return sum(1 for x in (self.readings, self.tickets, self.records) if x)

    def calls_before_sensors(self, devices: int) -> int | None:
        """How many calls had been made when ``devices`` gauges had read, in event time (None: fewer gauges)."""
        if len(self.device_first) < devices:
            return None
        enough_at = sorted(self.device_first.values())[devices - 1]
        return sum(1 for t in self.ticket_times if t < enough_at)

    def sensors_first(self, devices: int) -> bool:
        """``devices`` gauges had read before the case's second call was made, in event time: whatever order the
        feeds arrive in (a sensor feed a few minutes behind the hotline, partitions moving between workers),
        the sensors came first if they did."""
        calls = self.calls_before_sensors(devices)
        return calls is not None and calls < 2

    def strong_enough(self) -> bool:
        if self.held:        # calls alone, their excess held for hours (citybrain.fusion.calls)
            return True
        if self.family == "water_supply":
            # A main that bursts cuts the supply and floods the road: two of its symptoms unusual in the street at
            # once, each at the square root of the false-alarm rate, so the two together at the rate. One symptom (a
            # building's leak reported by all its neighbours) stays a warning, as any burst.
            return len(self.unusual) >= 2
        if self.family == "sensor_fault":
            return bool(self.readings)
        if self.family == "flood":
            return len(self.readings) >= 2 or len(self.tickets) >= 3 or len(self.records) >= 2
        if self.family == "noise":
            # One loud gauge is not enough, even with calls: a drifting gauge in a street with the usual
            # noise complaints looks just like that. Two gauges agreeing, or an inspector's finding, is.
            return (len(self.readings) >= 2 and (len(self.devices) >= 2 or bool(self.records))) \
                or (len(self.tickets) >= 3 and bool(self.records))
        if self.family == "air":
            # Three confirmed hours over the limit (each a gauge's hour after another over it), or one and the
            # street's residents calling about the air twice: a station's hour may be a fault, the people breathing
            # it are not.
            return len(self.readings) >= 3 or (bool(self.readings) and len(self.tickets) >= 2)
        if self.family == "traffic":
            # A stopped lane alone may be a detector's fault or a lane closed for works, and a city has everyday
            # accidents and obstructions by the hundred that stop nothing: a lane stopping within TRAFFIC_NEAR of a
            # 110 report or of two calls in its street is an event. Reports hours apart (a busy street's everyday
            # ones keep its case open all day) say nothing about this lane.
            def near(t: datetime) -> bool:
                return any(abs(t - stopped) <= TRAFFIC_NEAR for stopped in self.device_first.values())
            return any(map(near, self.record_times)) or sum(map(near, self.ticket_times)) >= 2
        return len(self.readings) >= 3


def _merge(case: Case, into: Case) -> None:
    """A street's air case, not yet published, into the neighbour's it turned out to be part of."""
    into.first_seen, into.last_seen = min(into.first_seen, case.first_seen), max(into.last_seen, case.last_seen)
    for mine, theirs in ((case.readings, into.readings), (case.devices, into.devices), (case.tickets, into.tickets),
                         (case.records, into.records)):
        theirs += [x for x in mine if x not in theirs]
    into.details += case.details[:max(0, 12 - len(into.details))]
    into.ticket_times += case.ticket_times
    into.record_times += case.record_times
    for device, at in case.device_first.items():
        into.device_first[device] = min(at, into.device_first.get(device, at))
    into.unusual |= case.unusual
    into.held = into.held or case.held
    into.warned_streets |= case.warned_streets


def _street(code: str | None, name: str | None) -> dict[str, Any]:
    """The street fields of an event or warning: no ``street_code`` where the city has no street there (its
    ``district_code`` says where; contracts city.event.incident 1.1.0, alert.early_warning.risk 1.1.0)."""
    return {"street_code": code, "street_name": name} if code else {"street_name": None}


class Fusion:
    """Holds open cases; ``add`` returns the city events and early warnings it causes."""

    def __init__(self, route: Callable[[str], Mapping[str, Any]],
                 deadline: Callable[[Mapping[str, Any], datetime, float], datetime] | None = None,
                 call_false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE) -> None:
        """``route(category)``: the routing rule of a city-event category (department, co-departments, SLA
        hours, priority), asked at every publication so a changed rule takes effect at once. ``deadline(rule, at,
        hours)``: when the SLA runs out on the rule's clock (default: the calendar). ``call_false_alarm_rate``: the
        city's, for the call-driven warnings (:class:`HotspotDetector`)."""
        self.route = route
        self.deadline = deadline or (lambda _rule, at, hours: at + timedelta(hours=hours))
        self.cases: dict[tuple[str, str], Case] = {}
        #: area -> (first seen, last seen) of its latest flood event, which explains the traffic it stopped
        self.flooded: dict[str, tuple[datetime, datetime]] = {}
        self.hotspots = HotspotDetector(call_false_alarm_rate)
        #: area code -> the areas sharing a border with it (the city's areas' geometry: the pipeline sets
        #: :meth:`citybrain.geo.AreaIndex.neighbours` once the areas are known), the way an air case spreads
        self.neighbours: Callable[[str], list[Area]] = lambda _code: []
        #: area code -> (lon, lat) of its centre (:meth:`citybrain.geo.AreaIndex.centre`), and district -> the wind
        #: its weather station measured at a time (:meth:`citybrain.fusion.detect.SensorWatch.wind`), the pipeline's:
        #: the way a plume drifts (without them, to every neighbour)
        self.centre: Callable[[str], tuple[float, float] | None] = lambda _code: None
        self.wind: Callable[[str | None, datetime], tuple[float, float, str] | None] = lambda _district, _at: None

    def add(self, signal: Signal, anomalies: list[Anomaly], now: datetime) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        for a in anomalies:
            if a.provisional:        # judged on a later reading (the hour's median): ``a.signal`` is its own
                out += self._early_sign(a, now)
            else:
                out += self._evidence(a.family, signal, "reading", a.detail, now)
        if signal.kind == "ticket" and signal.state == "received":
            warning = self.hotspots.add(signal, now)      # first: its judgement is evidence for the cases below
            call = (self.hotspots.unusual(signal), self.hotspots.held(signal))
            detail = f"12345 call {signal.values['service_request_id']} ({signal.category})"
            own = TICKET_FAMILY.get(signal.category)
            joined = self._open_for(signal, TICKET_JOINS.get(signal.category))
            if joined and joined != own:     # first: a water-supply event this call opens explains the flooded road;
                # the joined case's own calls, not these, say whether it has held
                out += self._evidence(joined, signal, "ticket", detail, now, (call[0], None))
            if own:
                out += self._evidence(own, signal, "ticket", detail, now, call)
            if warning:
                out.append(("warning", warning))
        elif signal.kind == "police" and signal.state in ("reported", "dispatched"):
            family = POLICE_FAMILY.get(signal.category)
            if family:
                out += self._evidence(family, signal, "record", f"110 report {signal.values['incident_id']}", now)
        elif signal.kind == "inspection" and signal.state in ("found", "assigned"):
            family = INSPECTION_FAMILY.get(signal.category)
            if family:
                out += self._evidence(family, signal, "record", f"inspection {signal.values['inspection_id']}", now)
        return out

    def _evidence(self, family: str, s: Signal, kind: str, detail: str, now: datetime,
                  call: tuple[bool, str | None] = (False, None)) -> list[tuple[str, dict[str, Any]]]:
        """``call``, for a ticket: whether its category is unusual in its street (:meth:`HotspotDetector.unusual`),
        and why its excess has held there (None: it has not)."""
        out: list[tuple[str, dict[str, Any]]] = []
        case = self._case(family, s, now, out)
        if case is None:
            return out
        ident = (s.values.get("service_request_id") or s.values.get("incident_id") or s.values.get("inspection_id")
                 or s.event_id)
        target = {"reading": case.readings, "ticket": case.tickets, "record": case.records}[kind]
        if ident in target:
            return out
        target.append(ident)
        if kind != "reading":
            (case.ticket_times if kind == "ticket" else case.record_times).append(s.at)
        unusual, held = call
        if unusual:
            case.unusual.add(s.category)
        if held and not case.held:
            case.held = held
            case.details.append(held)
        # A stopped lane's every reading is an anomaly: its first one tells the story, its reports and calls the rest.
        repeated = family == "traffic" and kind == "reading" and s.device_id in case.devices
        if s.device_id and s.device_id not in case.devices:
            case.devices.append(s.device_id)
        if kind == "reading" and s.device_id:
            case.device_first[s.device_id] = min(s.at, case.device_first.get(s.device_id, s.at))
        if len(case.details) < 12 and not repeated:
            case.details.append(detail)
        warn_devices = WARN_DEVICES.get(family, 0)
        if kind == "reading" and warn_devices and not case.warned and case.sensors_first(warn_devices):
            case.warned = True
            out.append(("warning", self._sensor_warning(case, detail, now, warn_devices)))
        if case.strong_enough() and (case.event_id is None or case.kinds > case.published_kinds
                                     or len(case.tickets) in (5, 10, 20, 50)
                                     or len(case.streets) > case.published_streets) \
                and not self._flood_explains(case) and not self._main_explains(case):
            out += self._publish(case, now)
        return out

    def _publish(self, case: Case, now: datetime) -> list[tuple[str, dict[str, Any]]]:
        """The case's event, and for an air event a warning to each street next to its footprint, downwind where
        its district's weather station says where the wind blows, not yet warned (one upwind now may be downwind
        when the wind turns)."""
        event = self._event(case, now)
        out: list[tuple[str, dict[str, Any]]] = [("event", event)]
        if case.family != "air":
            return out
        wind = self.wind(case.district_code, case.last_seen)
        for code, name in list(case.streets.items()):
            for area in self.neighbours(code):
                if area.code in case.streets or area.code in case.spread_warned \
                        or not downwind(self.centre(code), self.centre(area.code), wind):
                    continue
                case.spread_warned.add(area.code)
                out.append(("warning", self._spreading_warning(case, event, code, name, area, now, wind)))
        return out

    def _case(self, family: str, s: Signal, now: datetime, out: list[tuple[str, dict[str, Any]]]) -> Case | None:
        """The case of ``family`` in the signal's street (else district) open at the signal's time, opened if there
        is none and stretched to the signal's time; None for a signal with no place. A case whose time the signal
        is hours away from (either way: a backlog read topic by topic is not in time order) closes (its closing
        event into ``out``) and a new one opens."""
        if not s.area_code:
            return None
        key = (s.area_code, family if family != "sensor_fault" else f"sensor_fault:{s.device_id}")
        case = self.cases.get(key)
        if case is not None and not (case.first_seen - QUIET <= s.at <= case.last_seen + QUIET):
            if case.event_id:
                closed = self._event(case, now)
                closed["status"] = "closed"
                out.append(("event", closed))
            self._forget(case)
            case = None
        if case is None:
            case = self.cases[key] = Case(s.area_code, family, s.at, s.at, s.district_code, s.street_code, s.area_name,
                                          s.lon, s.lat, streets={s.area_code: s.area_name})
        case.first_seen, case.last_seen = min(case.first_seen, s.at), max(case.last_seen, s.at)
        return case

    def _forget(self, case: Case) -> None:
        """Drop a closed case under every street of its footprint."""
        for key in [k for k, c in self.cases.items() if c is case] if len(case.streets) > 1 else ():
            del self.cases[key]

    def _early_sign(self, a: Anomaly, now: datetime) -> list[tuple[str, dict[str, Any]]]:
        """An early sign (an air gauge's first hour over the limit, standing out from the city's) in its street's
        case, or in a neighbour's it has spread from: it dates the case and warns when it came before the
        residents' second call, but is no evidence yet (the city event waits for the confirmed anomalies, see
        ``Case.strong_enough``). A street joining a published event's footprint updates the event."""
        s = a.signal
        out: list[tuple[str, dict[str, Any]]] = []
        joined = self._spread(a.family, s)
        case = self._case(a.family, s, now, out)
        if case is None or s.device_id is None:
            return out
        case.local = True
        case.device_first[s.device_id] = min(s.at, case.device_first.get(s.device_id, s.at))
        if len(case.details) < 12:
            case.details.append(a.detail)
        area = s.area_code or ""
        if area not in case.warned_streets and area not in case.spread_warned and case.sensors_first(1):
            case.warned = True
            case.warned_streets.add(area)
            out.append(("warning", self._sensor_warning(case, a.detail, now, 1, a)))
        if joined and case.event_id and case.strong_enough():
            out += self._publish(case, now)
        return out

    def _spread(self, family: str, s: Signal) -> bool:
        """Whether the signal's street joined the open, locally begun case of its family in a neighbouring street
        (its own case, if it has one not yet published, merged into it): a plume drifting over the next street is
        the same incident, not a new one. A regional haze (no gauge standing out) joins nothing."""
        area = s.area_code
        if not area:
            return False
        own = self.cases.get((area, family))
        if own is not None and (own.event_id or len(own.streets) > 1):
            return False        # a street's own event stays its own; a stale one closes first (``_case``)
        for neighbour in self.neighbours(area):
            case = self.cases.get((neighbour.code, family))
            if case is None or case is own or not case.local or not self._open_at(case, s.at):
                continue
            if own is not None and self._open_at(own, s.at):
                _merge(own, case)
            self.cases[(area, family)] = case
            case.streets[area] = s.area_name
            log.debug("%s case %s spreads to %s", family, case.event_id or case.area_code, area)
            return True
        return False

    @staticmethod
    def _open_at(case: Case, at: datetime) -> bool:
        return case.first_seen - QUIET <= at <= case.last_seen + QUIET

    def _open_for(self, s: Signal, family: str | None) -> str | None:
        """``family`` when its case in the signal's street is open at the signal's time, which a call that only
        joins a case (``TICKET_JOINS``) needs; else None."""
        case = self.cases.get((s.area_code or "", family or ""))
        return family if case is not None and case.first_seen - QUIET <= s.at <= case.last_seen + QUIET else None

    def _flood_explains(self, case: Case) -> bool:
        """A traffic case whose first stopped lane stopped within QUIET of a flood event's evidence in its street:
        the water stopped the traffic, and the flood event is the one the departments that clear the road act on
        (the simulated city's ``event.flood`` sends transport and police too); a second event would send them
        twice to the same water, after the flood's close as well as before."""
        flood = self.flooded.get(case.area_code) if case.family == "traffic" else None
        stopped = min(case.device_first.values(), default=None)
        if flood is None or stopped is None or not flood[0] - QUIET <= stopped <= flood[1] + QUIET:
            return False
        log.debug("traffic stopped in %s at %s is the flood's (%s .. %s): no traffic event", case.area_code,
                  iso(stopped), iso(flood[0]), iso(flood[1]))
        return True

    def _main_explains(self, case: Case) -> bool:
        """A flood case without a gauge (calls and reports of a flooded road alone) in a street with a water-supply
        event: the burst main flooded the road, and its event is the one the water department acts on; a flood
        event would send it again, with transport, emergency and police, to the same water."""
        if case.family != "flood" or case.readings or case.event_id is not None:   # a published one stays
            return False
        water = self.cases.get((case.area_code, "water_supply"))
        if water is None or water.event_id is None:
            return False
        log.debug("flooded road in %s is the burst main's (%s): no flood event", case.area_code, water.event_id)
        return True

    def _event(self, case: Case, now: datetime) -> dict[str, Any]:
        category = FAMILY_EVENT[case.family]
        rule = self.route(category)      # first: a category without a rule raises before the case changes
        status = "open" if case.event_id is None else "updated"
        if case.event_id is None:
            case.event_id = f"CE-{case.area_code}-{category}-{case.first_seen:%Y%m%d%H%M}"
        case.published_kinds, case.published_streets = case.kinds, len(case.streets)
        if case.family == "flood":
            self.flooded[case.area_code] = (case.first_seen, case.last_seen)
        department, sla_hours, priority = rule["department"], float(rule["sla_hours"]), rule["priority"]
        co = rule.get("co_departments") or ()
        confidence = {1: 0.6, 2: 0.85, 3: 0.95}[max(1, case.kinds)]
        severity = min(4, 1 + case.kinds + (1 if len(case.tickets) >= 10 else 0))
        spread = f"等{len(case.streets)}个{'街道' if case.street_code else '区县'}" if len(case.streets) > 1 else ""
        # An air case's footprint, the streets it has spread over (contract city.event.incident 1.4.0).
        streets = {"streets": list(case.streets)[:50]} if case.family == "air" else {}
        return {
            "event_id": case.event_id, "category": category,
            "title": f"{case.area_name or case.area_code}{spread}{TITLES[category]}",
            "status": status, "severity": severity, "confidence": confidence, "priority": priority,
            "district_code": case.district_code, **_street(case.street_code, case.area_name),
            "lat": round(case.lat, 3) if case.lat is not None else None,
            "long": round(case.lon, 3) if case.lon is not None else None, "first_seen": iso(case.first_seen), "last_seen": iso(case.last_seen),
            "detected_at": iso(now), "department": department, "co_departments": list(co),
            "sla_deadline": iso(self.deadline(rule, now, sla_hours)),
            "evidence": {"readings": case.readings[:50], "devices": case.devices[:20], "tickets": case.tickets[:50],
                         "records": case.records[:20], **streets},
            "explanation": "; ".join(case.details),
        }

    def _sensor_warning(self, case: Case, detail: str, now: datetime, devices: int,
                        sign: Anomaly | None = None) -> dict[str, Any]:
        """The warning that sensors in the case's street show its family before residents call; an early ``sign``
        (an air gauge's first hour) names its own street (the case may have spread to it) and is said in the
        city's language as well (``summary``)."""
        category = FAMILY_WARNING_CATEGORY[case.family]
        area, district, street, name, first = \
            case.area_code, case.district_code, case.street_code, case.area_name, case.first_seen
        said: dict[str, Any] = {}
        if sign is not None:
            s = sign.signal
            area, district, street, name, first = s.area_code or area, s.district_code, s.street_code, s.area_name, s.at
            said = {"summary": say_over_limit(self.hotspots.language, name or area, s.device_id or "", sign.facts),
                    "summary_language": self.hotspots.language}
        place = name or area
        return {
            "warning_id": f"EW-{area}-{category}-{first:%Y%m%d%H%M}",
            "kind": "sensor_precedes_complaints", "category": category, "district_code": district,
            **_street(street, name), "observed_at": iso(first),
            "detected_at": iso(now), "severity": 3 if case.family == "flood" else 2,
            "explanation": f"{detail}. Sensors in {place} show {category.replace('_', ' ')} before residents "
                           f"call (only {case.calls_before_sensors(devices)} call(s) by then): act before the complaints arrive (未诉先办).",
            **said,
        }

    def _spreading_warning(self, case: Case, event: dict[str, Any], code: str, name: str | None, area: Area,
                           now: datetime, wind: tuple[float, float, str] | None) -> dict[str, Any]:
        """The warning to the street (else district) ``area`` next to the air event's footprint street ``code``
        (downwind of it with ``wind``): the pollution may reach it next."""
        street = area.level == "street"
        district = area.parent_code if street else area.code
        place, source = area.name, name or code
        return {
            "warning_id": f"EW-{area.code}-air_spreading-{case.first_seen:%Y%m%d%H%M}",
            "kind": "air_spreading", "category": FAMILY_WARNING_CATEGORY["air"], "district_code": district,
            **_street(area.code if street else None, area.name if street else None),
            "observed_at": iso(case.last_seen), "detected_at": iso(now), "severity": 2,
            "explanation": f"Air pollution episode {event['event_id']} over {len(case.streets)} street(s) "
                           f"({', '.join(n or c for c, n in case.streets.items())}), its gauges over the AQI limit of "
                           f"{AQI_LIMIT}, is next to {place} in {source}{say_wind('en', wind)}: the pollution may reach "
                           f"{place}. Watch its gauges and its residents' calls, and look for the source (未诉先办).",
            "summary": say_spreading(self.hotspots.language, place, source, event["event_id"], wind),
            "summary_language": self.hotspots.language,
            "spreading_from": {"event_id": event["event_id"], "area_code": code, "area_name": source,
                               **({"wind": {"from_deg": wind[0], "speed_m_s": wind[1], "station": wind[2]}}
                                  if wind else {})},
        }

    def close_quiet(self, now: datetime) -> list[tuple[str, dict[str, Any]]]:
        """Close published cases that have been quiet for ``QUIET``; forget unpublished ones. A case spread over
        several streets closes once."""
        out = []
        closed: set[int] = set()
        for key, case in list(self.cases.items()):
            if now - case.last_seen > QUIET:
                if case.event_id and id(case) not in closed:
                    closed.add(id(case))
                    event = self._event(case, now)
                    event["status"] = "closed"
                    out.append(("event", event))
                del self.cases[key]
        return out


class CityCalls:
    """The city's recent calls by category (call id -> time), the baseline the trending-hotspot detector judges
    a street against. Keyed by call, so a call learnt twice (from a share of this worker and from another
    worker's publication, or again after its district moved) counts once.

    Keyed by area, the pipelines of one worker share one of these, and ``outbox`` (when kept) collects the calls
    they add, which the worker publishes on its group's city-calls topic for the other workers to ``learn``."""

    def __init__(self, outbox: bool = False) -> None:
        self.by_category: dict[str, dict[str, datetime]] = {}
        self.outbox: list[tuple[str, str, datetime]] | None = [] if outbox else None

    def add(self, category: str, ident: str, at: datetime) -> dict[str, datetime]:
        """A call a pipeline of this worker read; the category's calls."""
        calls = self.by_category.setdefault(category, {})
        if ident not in calls and self.outbox is not None:
            self.outbox.append((category, ident, at))
        calls[ident] = at
        return calls

    def learn(self, category: str, ident: str, at: datetime, horizon: timedelta) -> None:
        """A call another worker read (forgotten at once when older than ``horizon`` before it: no judgement
        here needs it)."""
        calls = self.by_category.setdefault(category, {})
        calls[ident] = at
        if len(calls) % 256 == 0:
            forget(calls, at - horizon)

    def drain(self) -> list[tuple[str, str, datetime]]:
        """The calls added since the last drain (category, call id, time)."""
        out = self.outbox or []
        if self.outbox is not None:
            self.outbox = []
        return out


def forget(calls: dict[str, datetime], horizon: datetime) -> None:
    for ident in [i for i, t in calls.items() if t < horizon]:
        del calls[ident]


class HotspotDetector:
    """A complaint category rising in one street above what is usual there at this hour of the week
    (集中性、趋势性风险): a burst judged against the street's baseline by the negative-binomial tail, a sustained
    rise by a CUSUM, both at the city's false-alarm rate (:mod:`citybrain.fusion.calls`). The baseline's prior is
    the street's population share of the rest of the city's calls of that category now; where the city has no
    streets, a district is judged the same way, with its share of the districts' population."""

    WINDOW = max(*WINDOWS, PIECES * PIECE)     # the longest look back: the pieces of a held excess
    LATE = timedelta(hours=1)                  # how far behind the newest call a call may still arrive
    IGNORED = frozenset({"consultation"})      # questions are not risks
    QUIET = timedelta(hours=12)                # one warning per street and category in this long

    def __init__(self, false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE, language: str = "zh") -> None:
        """``false_alarm_rate``: the chance per call that a street at its usual rate is warned of (the city's
        setting, ``CITYBRAIN_CALL_FALSE_ALARM_RATE``); ``language``: the city's (its ``raw.ref.city`` record's
        first), in which each warning's ``summary`` is written."""
        if not 0 < false_alarm_rate < 1:
            raise ValueError(f"false_alarm_rate {false_alarm_rate!r} is not a probability: give a chance per call "
                             "between 0 and 1 exclusive (default 2e-4)")
        self.false_alarm_rate = false_alarm_rate
        self.language = language
        self.population: dict[str, int] = {}            # street -> residents
        self.district_population: dict[str, int] = {}   # district -> residents, for a city without streets there
        self.recent: dict[tuple[str, str], deque[datetime]] = {}
        self.city = CityCalls()
        self.history = CallHistory()
        self.trends: dict[tuple[str, str], Cusum] = {}
        self.warned: dict[tuple[str, str], datetime] = {}
        #: (area, category) -> the latest call judged beyond chance (a burst or the CUSUM over its alarm level),
        #: warned or not (one warning per ``QUIET``), and the latest call whose windows' chance at the usual rate is
        #: below the square root of the false-alarm rate: what fusion's cases read (:meth:`held`, :meth:`unusual`)
        self.alarm: dict[tuple[str, str], datetime] = {}
        self.unusual_at: dict[tuple[str, str], datetime] = {}

    def add(self, s: Signal, now: datetime) -> dict[str, Any] | None:
        area = s.area_code
        if not area or s.category in self.IGNORED:
            return None
        key = (area, s.category)
        times = self.recent.setdefault(key, deque())
        times.append(s.at)
        self.history.add(area, s.category, s.at)
        city = self.city.add(s.category, str(s.values.get("service_request_id") or s.event_id), s.at)
        # Calls arrive out of order (feeds behind one another; in keyed mode the partitions sharing ``city``
        # are at different stream times; a backlog holding an earlier day after a later one): each call is
        # judged on the windows that end with it, and forgets only what is older than a call up to LATE behind
        # it still needs. Never pruned against the newest call seen, which dropped an earlier day's calls as
        # they came.
        horizon = s.at - self.WINDOW - self.LATE
        kept = [t for t in times if t >= horizon]
        if len(kept) != len(times):
            times.clear()
            times.extend(kept)
        forget(city, horizon)
        share = self._share(s)
        judged = [self._window(s, key, s.at, window, times, city, share) for window in WINDOWS]
        observed, usual, window, chance = min(judged, key=lambda j: j[3])
        per_hour = judged[0][1].expected / (WINDOWS[0].total_seconds() / 3600)   # usual at this hour
        trend = self.trends.setdefault(key, Cusum())
        score = trend.add(s.at, per_hour, threshold(self.false_alarm_rate))
        burst, rising = chance < self.false_alarm_rate / len(WINDOWS), score >= threshold(self.false_alarm_rate)
        if burst or rising:
            self.alarm[key] = s.at
        if chance < math.sqrt(self.false_alarm_rate) / len(WINDOWS):
            self.unusual_at[key] = s.at
        last = self.warned.get(key)
        if last and abs(s.at - last) < self.QUIET:
            return None
        if burst:
            warning = self._burst(s, observed, usual, window, chance, times, now)
        elif rising:
            warning = self._trend(s, trend, per_hour, now)
        else:
            return None
        self.warned[key] = s.at
        return warning

    def _share(self, s: Signal) -> float:
        """The street's share of the city's residents (a district's of the districts', where the city has no
        streets); without populations on the reference topic, every street seen so far counts the same."""
        population = self.population if s.street_code else self.district_population
        total = sum(population.values())
        return population.get(s.area_code or "", 0) / total if total else 1 / len({k[0] for k in self.recent})

    def _window(self, s: Signal, key: tuple[str, str], end: datetime, window: timedelta, times: deque[datetime],
                city: dict[str, datetime], share: float) -> tuple[int, Baseline, timedelta, float]:
        """(calls in the street in the ``window`` to ``end``, its baseline, the window, the chance at the usual
        rate of those calls other than ``s``: the call being judged is not counted against itself)."""
        since = end - window
        observed = sum(1 for t in times if since <= t <= end)
        others = sum(1 for t in city.values() if since <= t <= end) - observed
        hours = window.total_seconds() / 3600
        prior = max(MIN_EXPECTED_PER_H * hours, others * share / max(1e-9, 1 - share))
        usual = baseline(prior, others, *self.history.weeks_before(key[0], key[1], end, window))
        return observed, usual, window, usual.chance_of_at_least(observed - (since <= s.at <= end))

    def alarmed(self, s: Signal) -> bool:
        """Whether the call ``s`` (after :meth:`add`) was judged beyond chance in its street, warned or not."""
        return self.alarm.get((s.area_code or "", s.category)) == s.at

    def unusual(self, s: Signal) -> bool:
        """Whether the call ``s`` (after :meth:`add`) came in a window whose chance at the usual rate is below the
        square root of the false-alarm rate: not enough for a warning, enough to corroborate another symptom."""
        return self.unusual_at.get((s.area_code or "", s.category)) == s.at

    def held(self, s: Signal) -> str | None:
        """Why the excess of ``s``'s category in its street has held (:mod:`citybrain.fusion.calls`: at a call
        judged beyond chance, each of the last ``PIECES`` pieces of ``PIECE`` beyond chance at the square root of
        the city's false-alarm rate), else None. Call after :meth:`add`."""
        key = (s.area_code or "", s.category)
        if not self.alarmed(s):
            return None
        times, city, share = self.recent[key], self.city.by_category.get(s.category, {}), self._share(s)
        level = math.sqrt(self.false_alarm_rate)
        pieces = []
        for k in reversed(range(PIECES)):       # the piece k pieces before this call's; an earlier piece ends just
            end = s.at - k * PIECE - (timedelta(microseconds=1) if k else timedelta(0))   # before the next begins
            observed, usual, _window, chance = self._window(s, key, end, PIECE, times, city, share)
            if chance >= level:
                return None
            pieces.append((observed, usual))
        return say_held(s.area_name or s.area_code or "", s.category.replace("_", " "), pieces, s.at, level)

    def _head(self, s: Signal, observed_at: datetime, now: datetime) -> dict[str, Any]:
        area = s.area_code or ""
        return {"warning_id": f"EW-{area}-{s.category}-{s.at:%Y%m%d%H%M}", "kind": "trending_hotspot",
                "category": s.category, "district_code": s.district_code, **_street(s.street_code, s.street_name),
                "observed_at": iso(observed_at), "detected_at": iso(now), "severity": 2}

    def _burst(self, s: Signal, observed: int, usual: Baseline, window: timedelta, chance: float,
               times: deque[datetime], now: datetime) -> dict[str, Any]:
        place = s.area_name or s.area_code or ""
        return {
            **self._head(s, min(t for t in times if s.at - window <= t <= s.at), now),
            "explanation": f"{say_burst('en', place, s.category, observed, usual, window)} The chance of so many at "
                           f"the usual rate is {one_in(chance)}, below the city's false-alarm rate of "
                           f"{one_in(self.false_alarm_rate)} calls: a concentrated and rising complaint risk "
                           "(集中性、趋势性风险).",
            "summary": say_burst(self.language, place, _what(s, self.language), observed, usual, window),
            "summary_language": self.language,
            "baseline": {"method": "burst", "observed": observed, "expected": round(usual.expected, 2),
                         "spread": round(usual.spread, 2), "window_minutes": int(window.total_seconds() // 60),
                         "weeks_of_history": usual.weeks, "chance": float(f"{chance:.3g}"),
                         "false_alarm_rate": self.false_alarm_rate},
        }

    def _trend(self, s: Signal, trend: Cusum, per_hour: float, now: datetime) -> dict[str, Any]:
        place = s.area_name or s.area_code or ""
        end = trend.last or s.at          # the trend's newest call (this one may be late)
        since = min(trend.since or end, end)
        hours = (end - since).total_seconds() / 3600
        return {
            **self._head(s, min(trend.evident or since, end), now),
            "explanation": f"{say_trend('en', place, s.category, trend.calls, since, end, per_hour)} A CUSUM for "
                           f"{CUSUM_RATIO:g} times the usual rate reached {trend.score:.1f}, over its alarm level "
                           f"{threshold(self.false_alarm_rate):.1f} (the city's false-alarm rate of "
                           f"{one_in(self.false_alarm_rate)} calls): a trending complaint risk (趋势性风险).",
            "summary": say_trend(self.language, place, _what(s, self.language), trend.calls, since, end, per_hour),
            "summary_language": self.language,
            "baseline": {"method": "cusum", "observed": trend.calls, "expected": round(per_hour * hours, 2),
                         "spread": round(math.sqrt(per_hour * hours), 2),
                         "window_minutes": int((end - since).total_seconds() // 60),
                         "weeks_of_history": self.history.weeks_before(s.area_code or "", s.category, s.at,
                                                                       WINDOWS[-1])[0],
                         "false_alarm_rate": self.false_alarm_rate},
        }


def _what(s: Signal, language: str) -> str:
    """The calls' category as the summary names it: the service's own name in Chinese, else the category."""
    name = s.values.get("service_name")
    return str(name) if language.split("-")[0] == "zh" and name else s.category.replace("_", " ")
