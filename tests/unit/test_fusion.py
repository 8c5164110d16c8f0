"""Fusion logic on its own: enrichment, sensor anomalies, one event from many signals, warnings,
dispatch and SLA alerts, deduplication, and scoring against the ground truth."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from citybrain.sim.city import build_city
from citybrain.sim.reference import reference_records
from citybrain.contracts.model import load_all
from citybrain.contracts.validate import RecordValidator
from citybrain.fusion.detect import SensorWatch
from citybrain.fusion.dispatch import RoutingError, SlaTracker
from citybrain.fusion.evaluate import evaluate
from citybrain.fusion.pipeline import EVENT_TOPIC, WARNING_TOPIC, Deduper, Pipeline
from citybrain.fusion.signals import Enricher, Signal
from citybrain.kafka.headers import EVENT_ID_NAMESPACE, event_id
from citybrain.access.privacy import Protector
from citybrain.settings import PROJECT_ROOT
from citybrain.times import iso, parse_time
from citybrain.sim.engine import Simulation
from citybrain.sim.model import SimConfig

CITY = build_city(7)
T0 = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)


def _pipeline() -> Pipeline:
    p = Pipeline(load_all(PROJECT_ROOT / "schemas"), Protector.ephemeral())
    for contract, records in reference_records(CITY, "2026-11-22T00:00:00Z").items():
        for r in records:
            p.feed(f"{contract}.v1", r, "ref")
    return p


def _flooded_gauge(p: Pipeline, device_id: str, start: datetime) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    """Three readings of an underpass gauge above its reference level, five minutes apart."""
    out = []
    for k in range(3):
        at = start + timedelta(minutes=5 * k)
        out += p.feed("raw.sensor.water_level.v1", _reading(device_id, at, currentLevel=0.4, referenceLevel=0.27,
                                                              floodLevelStatus="flooded", siteType="underpass"),
                      f"r{start:%H%M}{k}", at)
    return out


def _reading(device_id: str, at: datetime, **values: object) -> dict:  # type: ignore[type-arg]
    d = next(x for x in CITY.devices if x.device_id == device_id)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"id": f"urn:x:{device_id}:{stamp}", "type": "FloodMonitoring", "dateObserved": stamp,
            "location": {"type": "Point", "coordinates": [d.lon, d.lat]}, "refDevice": device_id, **values}


def test_enricher_resolves_the_street_and_flags_suspect_devices() -> None:
    devices = {r["device_id"]: r for r in reference_records(CITY, "x")["raw.ref.device"]}
    enricher = Enricher(CITY.index, devices)
    d = CITY.devices[0]
    good = enricher.signal("raw.sensor.water_level.v1", _reading(d.device_id, T0), "e1")
    assert good is not None and good.street_code == d.street_code and good.flags == []
    moved = _reading(d.device_id, T0)
    moved["location"] = {"type": "Point", "coordinates": [d.lon + 0.3, d.lat]}
    assert "position_mismatch" in enricher.signal("raw.sensor.water_level.v1", moved, "e2").flags  # type: ignore[union-attr]
    ghost = {**_reading(d.device_id, T0), "refDevice": "wl-9999"}
    assert "unregistered_device" in enricher.signal("raw.sensor.water_level.v1", ghost, "e3").flags  # type: ignore[union-attr]


def test_one_wild_reading_is_not_an_anomaly_two_in_a_row_are() -> None:
    watch = SensorWatch()
    s = lambda at, level: Signal("raw.sensor.water_level.v1", str(at), "reading", "water_level", at,  # noqa: E731
                                 device_id="wl-0001", values={"siteType": "underpass", "floodLevelStatus": "flooded",
                                                              "currentLevel": level, "referenceLevel": 0.27})
    assert watch.check(s(T0, 0.5)) == []
    assert [a.kind for a in watch.check(s(T0 + timedelta(minutes=5), 0.5))] == ["water_high"]


def test_a_gauge_rising_in_heavy_rain_is_a_flood_anomaly_before_it_floods_and_without_the_rain_it_is_not() -> None:
    def rising(watch: SensorWatch, at: datetime) -> list[str]:
        s = Signal("raw.sensor.water_level.v1", str(at), "reading", "water_level", at, district_code="990101",
                   device_id="wl-0001", values={"siteType": "underpass", "floodLevelStatus": "warning",
                                                "currentLevel": 0.2, "referenceLevel": 0.27})
        return [a.kind for a in watch.check(s)]

    def rain(watch: SensorWatch, mm: float, district: str = "990101") -> None:
        watch.check(Signal("raw.sensor.weather.v1", f"w{mm}{district}", "reading", "weather", T0, district_code=district,
                           device_id="ws-0001", values={"precipitation": mm}))

    for setup in (lambda w: None, lambda w: rain(w, 8.0), lambda w: rain(w, 35.0, "990102")):   # dry, light, elsewhere
        watch = SensorWatch()
        setup(watch)
        assert rising(watch, T0 + timedelta(minutes=5)) + rising(watch, T0 + timedelta(minutes=10)) == []
    watch = SensorWatch()
    rain(watch, 35.0)
    assert rising(watch, T0 + timedelta(minutes=5)) == []                       # one reading is not yet a trend
    assert rising(watch, T0 + timedelta(minutes=10)) == ["water_rising_in_rain"]
    assert rising(watch, T0 + timedelta(hours=4)) == []                         # rain three hours gone explains nothing


def test_rain_of_an_earlier_day_read_after_a_later_day_still_explains_that_days_rising_water() -> None:
    """A demo day on the broker before a test's day three days earlier pruned that day's rain as it arrived:
    the gauge's rise was no anomaly, the calls came first, and the early warning was missed."""
    watch = SensorWatch()

    def reading(category: str, at: datetime, **values: object) -> list[str]:
        return [a.kind for a in watch.check(Signal(f"raw.sensor.{category}.v1", f"{category}{at}", "reading", category,
                                                   at, district_code="990101", device_id=f"{category}-1",
                                                   values=values))]

    rising = {"siteType": "underpass", "floodLevelStatus": "warning", "currentLevel": 0.2, "referenceLevel": 0.27}
    reading("weather", T0 + timedelta(days=3), precipitation=40.0)     # a later day first
    reading("weather", T0, precipitation=35.0)
    assert reading("water_level", T0 + timedelta(minutes=5), **rising) == []
    assert reading("water_level", T0 + timedelta(minutes=10), **rising) == ["water_rising_in_rain"]


def test_stuck_gauge_is_reported_once_and_a_dry_gauge_is_not() -> None:
    watch = SensorWatch()
    out = []
    for k in range(10):
        sig = Signal("t", str(k), "reading", "air_quality", T0 + timedelta(hours=k), device_id="aq-0001",
                     values={"pm25": 44.2, "pm10": 70.1, "no2": 30.0})
        out += watch.check(sig)
    assert [a.kind for a in out] == ["stuck_value"]
    dry = [watch.check(Signal("t", str(k), "reading", "water_level", T0 + timedelta(minutes=5 * k),
                              device_id="wl-0002", values={"currentLevel": 0.0})) for k in range(20)]
    assert not any(dry)


def test_calls_gauges_and_a_police_report_become_one_flood_event_with_dispatch() -> None:
    p = _pipeline()
    gauge = next(d for d in CITY.devices if d.site_type == "underpass")
    street = CITY.street(gauge.street_code)
    out = _flooded_gauge(p, gauge.device_id, T0)
    for k in range(3):
        at = T0 + timedelta(minutes=20 + k)
        request = {"service_request_id": f"HL2026112200000{k}", "status": "open", "service_code": "water.waterlogging",
                   "service_name": "道路积水", "description": "积水", "requested_datetime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "updated_datetime": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "channel": "phone", "category": "waterlogging",
                   "lifecycle_state": "received", "lat": gauge.lat, "long": gauge.lon}
        out += p.feed("raw.hotline.service_request.v1", request, f"t{k}", at)
    out += p.feed("raw.police.incident_110.v1", {"incident_id": "110-20261122-00001", "reported_at": "2026-11-22T02:30:00Z",
                                                 "category": "waterlogged_road", "lat": gauge.lat, "long": gauge.lon,
                                                 "status": "dispatched"}, "p1", T0 + timedelta(minutes=30))
    events = [r for t, r in out if t == EVENT_TOPIC]
    assert len({e["event_id"] for e in events}) == 1
    last = events[-1]
    assert last["category"] == "flood" and last["street_code"] == street.code and last["confidence"] == 0.95
    assert len(last["evidence"]["tickets"]) == 3 and last["evidence"]["records"] == ["110-20261122-00001"]
    assert last["evidence"]["devices"] == [gauge.device_id]
    warnings = [r for t, r in out if t == WARNING_TOPIC]
    assert [w["kind"] for w in warnings] == ["sensor_precedes_complaints"]
    teams = {t for t, r in out if t.startswith("dispatch.") and r["source"] == "city_event"}
    assert teams == {"dispatch.water.work_order.v1", "dispatch.transport.work_order.v1",
                     "dispatch.emergency.work_order.v1", "dispatch.police.work_order.v1"}
    ticket_orders = [r for t, r in out if t == "dispatch.water.work_order.v1" and r["source"] == "ticket"]
    assert len(ticket_orders) == 3 and all(r["sla_hours"] == 2 for r in ticket_orders)


def _waterlogging_calls(p: Pipeline, gauge_id: str, times: list[datetime]) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    gauge = next(d for d in CITY.devices if d.device_id == gauge_id)
    out = []
    for k, at in enumerate(times):
        stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        request = {"service_request_id": f"HL2026112201000{k}", "status": "open", "service_code": "water.waterlogging",
                   "service_name": "道路积水", "description": "积水", "requested_datetime": stamp,
                   "updated_datetime": stamp, "channel": "phone", "category": "waterlogging",
                   "lifecycle_state": "received", "lat": gauge.lat, "long": gauge.lon}
        out += p.feed("raw.hotline.service_request.v1", request, f"c{k}", at)
    return out


@pytest.mark.parametrize("calls_after_gauge_min, warned", [(20, True), (-30, False)])
def test_sensors_ahead_of_the_calls_in_event_time_warn_whatever_order_the_feeds_arrive_in(
        calls_after_gauge_min: int, warned: bool) -> None:
    """The gauge feed arrives after the hotline's (a lagging feed, partitions moving between workers): the
    warning still says whether the gauge read before the calls were made, not whether it arrived first."""
    p = _pipeline()
    gauge = next(d for d in CITY.devices if d.site_type == "underpass")
    calls = [T0 + timedelta(minutes=calls_after_gauge_min + k) for k in range(3)]
    out = _waterlogging_calls(p, gauge.device_id, calls)
    out += _flooded_gauge(p, gauge.device_id, T0)
    warnings = [r for t, r in out if t == WARNING_TOPIC and r["kind"] == "sensor_precedes_complaints"]
    assert bool(warnings) is warned, warnings
    if warned:
        assert "only 0 call(s) by then" in warnings[0]["explanation"]


def _flood(p: Pipeline, gauge_id: str, start: datetime) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    """A flooded underpass gauge and a police report of a waterlogged road beside it."""
    gauge = next(d for d in CITY.devices if d.device_id == gauge_id)
    out = _flooded_gauge(p, gauge_id, start)
    out += p.feed("raw.police.incident_110.v1", {"incident_id": f"110-20261122-{start:%H%M}", "reported_at": iso(start),
                                                 "category": "waterlogged_road", "lat": gauge.lat, "long": gauge.lon,
                                                 "status": "dispatched"}, f"p{start:%H%M}", start + timedelta(minutes=12))
    return out


def test_a_changed_routing_rule_changes_who_gets_a_city_events_work_orders() -> None:
    """Regression: event routing asks the routing rules (reference data), not a constant."""
    p = _pipeline()
    by_street = {d.street_code: d.device_id for d in CITY.devices if d.site_type == "underpass"}
    gauges = list(by_street.values())                  # two gauges in two streets: two cases
    before = {t for t, r in _flood(p, gauges[0], T0) if t.startswith("dispatch.")}
    assert "dispatch.water.work_order.v1" in before and "dispatch.police.work_order.v1" in before
    p.feed("raw.ref.routing_rule.v1", {"rule_id": "event.flood", "category": "flood", "department": "emergency",
                                       "co_departments": ["housing"], "sla_hours": 0.5, "priority": "emergency",
                                       "effective_from": "2026-11-22T00:00:00Z"}, "ref")
    out = _flood(p, gauges[1], T0 + timedelta(hours=1))
    events = [r for t, r in out if t == EVENT_TOPIC]
    assert events and events[0]["department"] == "emergency" and events[0]["co_departments"] == ["housing"]
    assert parse_time(events[0]["sla_deadline"]) - parse_time(events[0]["detected_at"]) == timedelta(minutes=30)
    orders = {t: r for t, r in out if t.startswith("dispatch.") and r["source"] == "city_event"}
    assert set(orders) == {"dispatch.emergency.work_order.v1", "dispatch.housing.work_order.v1"}
    assert orders["dispatch.emergency.work_order.v1"]["role"] == "lead"


def test_a_city_event_without_a_routing_rule_is_refused_with_the_rule_to_publish() -> None:
    contracts = load_all(PROJECT_ROOT / "schemas")
    p = Pipeline(contracts, Protector.ephemeral())
    for contract, records in reference_records(CITY, "2026-11-22T00:00:00Z").items():
        for r in records:
            if contract != "raw.ref.routing_rule" or r["rule_id"] != "event.flood":
                p.feed(f"{contract}.v1", r, "ref")
    gauge = next(d.device_id for d in CITY.devices if d.site_type == "underpass")
    with pytest.raises(RoutingError, match=r"event\.flood.*Fix"):
        _flood(p, gauge, T0)


def test_feed_message_takes_the_event_id_header_else_the_contracts_rule_and_moves_stream_time() -> None:
    contracts = load_all(PROJECT_ROOT / "schemas")
    p = _pipeline()
    gauge = next(d for d in CITY.devices if d.site_type == "underpass")
    value = _reading(gauge.device_id, T0, currentLevel=0.1, referenceLevel=0.27)
    payload = json.dumps(value).encode()
    p.feed_message("raw.sensor.water_level.v1", {"event-id": b"given-id"}, payload, T0, partition=3)
    assert "given-id" in p.dedupe.seen and p.clock.watermark() == T0
    later = T0 + timedelta(minutes=5)
    p.feed_message("raw.sensor.water_level.v1", {}, payload, later, partition=3)
    assert event_id(contracts["raw.sensor.water_level.v1"], value, payload.decode()) in p.dedupe.seen
    p.feed_message("raw.ref.device.v1", {}, json.dumps({**p.enricher.devices[gauge.device_id], "status": "maintenance"}).encode(),
                   T0 + timedelta(days=1))
    assert p.clock.watermark() == later                 # a register's record does not move stream time
    assert p.enricher.devices[gauge.device_id]["status"] == "maintenance"


def test_sla_tracker_warns_before_and_alerts_after_the_deadline_until_handled() -> None:
    sla = SlaTracker()
    sla.event({"service_request_id": "HL1", "event_type": "dispatched", "occurred_at": "2026-11-22T00:00:00Z",
               "department": "water", "sla_deadline": "2026-11-22T10:00:00Z"})
    sla.event({"service_request_id": "HL2", "event_type": "dispatched", "occurred_at": "2026-11-22T00:00:00Z",
               "department": "water", "sla_deadline": "2026-11-22T10:00:00Z"})
    sla.event({"service_request_id": "HL2", "event_type": "handled", "occurred_at": "2026-11-22T01:00:00Z"})
    assert sla.alerts(datetime(2026, 11, 22, 7, tzinfo=timezone.utc)) == []
    assert [a["kind"] for a in sla.alerts(datetime(2026, 11, 22, 8, 30, tzinfo=timezone.utc))] == ["about_to_breach"]
    late = sla.alerts(datetime(2026, 11, 22, 11, tzinfo=timezone.utc))
    assert [(a["kind"], a["service_request_id"], a["overdue_min"]) for a in late] == [("breached", "HL1", 60)]
    assert sla.alerts(datetime(2026, 11, 22, 12, tzinfo=timezone.utc)) == []


def _garbage_request(rid: str, at: datetime, state: str = "received", **extra: object) -> dict:  # type: ignore[type-arg]
    street = CITY.streets[0]
    lon, lat = street.centre
    return {"service_request_id": rid, "status": "open", "service_code": "garbage.collection", "service_name": "垃圾清运不及时",
            "description": "垃圾没人收", "requested_datetime": iso(at), "updated_datetime": iso(at), "channel": "phone",
            "category": "garbage", "lifecycle_state": state, "lat": lat, "long": lon, **extra}


def test_a_rule_for_one_area_wins_over_the_city_wide_rule() -> None:
    p = _pipeline()
    street = CITY.streets[0]
    p.feed("raw.ref.routing_rule.v1", {"rule_id": "garbage.one-street", "category": "garbage", "service_code": "garbage.collection",
                                       "area_code": street.code, "department": "housing", "sla_hours": 10, "priority": "normal",
                                       "effective_from": "2026-11-22T00:00:00Z"}, "ref")
    out = p.feed("raw.hotline.service_request.v1", _garbage_request("HL20261122990002", T0), "r4", T0)
    [order] = [r for t, r in out if t.startswith("dispatch.")]
    assert order["department"] == "housing" and order["rule_id"] == "garbage.one-street" and order["sla_hours"] == 10
    elsewhere = CITY.streets[-1]
    out = p.feed("raw.hotline.service_request.v1", {**_garbage_request("HL20261122990003", T0, partner="app"),
                                                    "lat": elsewhere.centre[1], "long": elsewhere.centre[0]}, "r5", T0)
    assert [r["department"] for t, r in out if t.startswith("dispatch.")] == ["urban_management"]


def test_the_areas_get_their_orders_level_by_level_and_the_department_on_escalation() -> None:
    """属地管理: a ticket under an escalating rule is the street's first (territorial order, the level's own
    hours), the department's only once the street lets it pass; a gateway ticket, which nobody escalates, and
    a reopened one are the department's at once."""
    p = _pipeline()
    street = CITY.streets[0]
    p.feed("raw.ref.routing_rule.v1", {"rule_id": "garbage.one-street", "category": "garbage", "service_code": "garbage.collection",
                                       "area_code": street.code, "department": "housing", "sla_hours": 10, "priority": "normal",
                                       "escalation": ["street", "department"], "level_hours": {"street": 7},
                                       "effective_from": "2026-11-22T00:00:00Z"}, "ref")
    rid = "HL20261122990004"
    orders = lambda out: [(t, r) for t, r in out if t.startswith("dispatch.")]  # noqa: E731
    assert orders(p.feed("raw.hotline.service_request.v1", _garbage_request(rid, T0), "a1", T0)) == []
    held = dict(escalation_level="street", assigned_area_code=street.code)
    at = T0 + timedelta(minutes=10)
    [(topic, order)] = orders(p.feed("raw.hotline.service_request.v1", _garbage_request(
        rid, T0, "dispatched", updated_datetime=iso(at), **held), "a2", at))
    assert topic == "dispatch.territorial.work_order.v1"
    assert (order["work_order_id"], order["level"], order["area_code"], order["department"]) == \
        (f"WO-{rid}-street", "street", street.code, "housing")
    assert order["assigned_at"] == iso(at) and order["sla_hours"] == 7 and order["sla_deadline"] == iso(at + timedelta(hours=7))
    assert orders(p.feed("raw.hotline.service_request.v1", _garbage_request(
        rid, T0, "accepted", updated_datetime=iso(at), **held), "a3", at)) == []
    up = at + timedelta(hours=7, minutes=2)
    [(topic, order)] = orders(p.feed("raw.hotline.service_request.v1", _garbage_request(
        rid, T0, "escalated", updated_datetime=iso(up), escalation_level="department"), "a4", up))
    assert topic == "dispatch.housing.work_order.v1" and order["work_order_id"] == f"WO-{rid}-housing"
    assert order["escalated"] is True and order["sla_hours"] == 5 and order["received_at"] == iso(T0)
    again = up + timedelta(days=1)
    [(topic, order)] = orders(p.feed("raw.hotline.service_request.v1", _garbage_request(
        rid, T0, "dispatched", updated_datetime=iso(again), escalation_level="department", reopen_count=1), "a5", again))
    assert order["work_order_id"] == f"WO-{rid}-housing-r1" and order["escalated"] is False
    [(topic, order)] = orders(p.feed("raw.hotline.service_request.v1", _garbage_request("HL20261122990005", T0, partner="app"),
                                     "a6", T0))
    assert topic == "dispatch.housing.work_order.v1" and order["sla_hours"] == 10


def test_the_levels_of_an_escalation_share_the_sla_unless_level_hours_name_them() -> None:
    from citybrain.city.routing import chain

    rule = {"sla_hours": 48, "escalation": ["grid", "community", "street", "district", "department"]}
    areas = {"grid": "99010100100101", "community": "990101001001", "street": "990101001", "district": "990101"}
    assert [(lv.level, lv.area_code, lv.hours) for lv in chain(rule, areas)] == [
        ("grid", "99010100100101", 9.6), ("community", "990101001001", 9.6), ("street", "990101001", 9.6),
        ("district", "990101", 9.6), ("department", None, 9.6)]
    no_grid = {k: v for k, v in areas.items() if k != "grid"}       # a community without grids starts at the community
    assert [lv.level for lv in chain(rule, no_grid)] == ["community", "street", "district", "department"]
    named = chain({**rule, "escalation": ["street"], "level_hours": {"street": 7}}, areas)
    assert [(lv.level, lv.hours) for lv in named] == [("street", 7.0), ("department", 24.0)]   # department always last
    assert [lv.level for lv in chain({"sla_hours": 12}, areas)] == ["department"]


def test_sla_tracker_follows_an_escalated_ticket_level_by_level() -> None:
    sla = SlaTracker()
    sla.event({"service_request_id": "HL3", "event_type": "dispatched", "occurred_at": "2026-11-22T00:00:00Z",
               "department": "hotline_12345", "assigned_department": "urban_management", "level": "grid",
               "area_code": "99010100100101", "sla_deadline": "2026-11-22T10:00:00Z"})
    [grid] = [a for a in sla.alerts(datetime(2026, 11, 22, 10, 5, tzinfo=timezone.utc)) if a["kind"] == "breached"]
    assert (grid["level"], grid["area_code"], grid["department"]) == ("grid", "99010100100101", "urban_management")
    sla.event({"service_request_id": "HL3", "event_type": "escalated", "occurred_at": "2026-11-22T10:06:00Z",
               "department": "hotline_12345", "assigned_department": "urban_management", "level": "community",
               "area_code": "990101001001", "sla_deadline": "2026-11-22T20:06:00Z"})
    assert [a["kind"] for a in sla.alerts(datetime(2026, 11, 22, 18, 30, tzinfo=timezone.utc))] == ["about_to_breach"]
    [community] = sla.alerts(datetime(2026, 11, 22, 21, tzinfo=timezone.utc))
    assert community["level"] == "community" and community["alert_id"] != grid["alert_id"]
    sla.event({"service_request_id": "HL3", "event_type": "escalated", "occurred_at": "2026-11-22T21:00:00Z",
               "assigned_department": "urban_management", "level": "street", "area_code": "990101001",
               "sla_deadline": "2026-11-23T07:00:00Z"})
    sla.event({"service_request_id": "HL3", "event_type": "handled", "occurred_at": "2026-11-22T22:00:00Z",
               "level": "street", "area_code": "990101001"})
    assert sla.alerts(datetime(2026, 11, 23, 12, tzinfo=timezone.utc)) == []   # the street handled it in time


def test_deduper_drops_repeats_within_its_window_only() -> None:
    d = Deduper(window=timedelta(hours=1))
    assert not d.is_duplicate("a", T0) and d.is_duplicate("a", T0 + timedelta(minutes=5))
    assert not d.is_duplicate("b", T0 + timedelta(hours=2))      # pushes "a" out of the window
    assert not d.is_duplicate("a", T0 + timedelta(hours=2))


@pytest.fixture(scope="module")
def fused(contracts) -> list[tuple[str, dict]]:  # type: ignore[no-untyped-def,type-arg]
    """What fusion makes of twelve hours of the simulated city, pseudonyms under a fixed test key."""
    sim = Simulation(SimConfig(seed=11, start=datetime(2026, 7, 20, 16, tzinfo=timezone.utc), hours=12, scale=0.1))
    p, produced = Pipeline(contracts, Protector(b"citybrain-unit-test-key-0123456789")), []
    for t, batch in sim.ticks():
        for e in batch:
            topic = f"{e.contract}.v1"
            produced += p.feed(topic, e.value, uuid.uuid5(EVENT_ID_NAMESPACE, json.dumps(e.value)).hex, t)
    return produced


def test_outputs_satisfy_their_contracts(contracts, fused) -> None:  # type: ignore[no-untyped-def]
    by_topic = {c.topic: RecordValidator(c) for c in contracts.values()}
    produced = fused
    topics = {t for t, _ in produced}
    assert {EVENT_TOPIC, WARNING_TOPIC} <= topics and any(t.startswith("dispatch.") for t in topics)
    for topic, record in produced:
        assert topic in by_topic, f"no contract for {topic}"
        problem = by_topic[topic](record)
        assert problem is None, (topic, problem, record)


def test_the_generated_citys_events_warnings_and_orders_stay_the_same(fused) -> None:  # type: ignore[no-untyped-def]
    """Fusing by district where a city has no streets leaves a city with streets as it was: the same events, warnings
    and work orders with the same ids, street_code filled. A change meant for it updates this fingerprint (last: the
    call-driven warnings judged against a baseline, 2026-12-07: the same warnings, as early or earlier, with their
    baseline and summary)."""
    h = hashlib.sha256()
    for topic, record in fused:
        h.update(json.dumps([topic, record], sort_keys=True, ensure_ascii=False).encode())
    assert len(fused) == 1648 and all(r.get("street_code") for t, r in fused if t in (EVENT_TOPIC, WARNING_TOPIC))
    assert h.hexdigest() == "725e2ab8ed28efa469de11cf62768048d9fdb1f0d3881487917499bff6c2d30b"


def test_evaluation_counts_hits_misses_false_alarms_and_lead_time() -> None:
    truth = {"incidents": [{"incident_id": "I1", "start": "2026-11-22T05:00:00Z", "end": "2026-11-22T08:00:00Z",
                            "evidence": {"complaint_peak": "2026-11-22T07:00:00Z"},
                            "expected": [{"output": "city.event", "category": "flood", "street_code": "S1"},
                                         {"output": "alert.early_warning", "category": "waterlogging", "street_code": "S1"},
                                         {"output": "alert.security", "kind": "device_spoofing"}]}],
             "sensor_faults": []}
    events = [{"event_id": "E1", "category": "flood", "street_code": "S1", "first_seen": "2026-11-22T05:30:00Z",
               "detected_at": "2026-11-22T06:00:00Z"},
              {"event_id": "E2", "category": "flood", "street_code": "S9", "first_seen": "2026-11-22T05:30:00Z",
               "detected_at": "2026-11-22T06:00:00Z"}]
    result = evaluate(truth, events, [])
    assert (result["precision"], result["recall"], result["median_lead_time_min"]) == (0.5, 0.5, None)
    warnings = [{"warning_id": "W1", "category": "waterlogging", "street_code": "S1", "observed_at": "2026-11-22T05:40:00Z",
                 "detected_at": "2026-11-22T06:15:00Z"}]
    result = evaluate(truth, events, warnings)
    assert (result["recall"], result["median_lead_time_min"]) == (1.0, 45.0)
    assert len(result["not_scored_here"]) == 1


def test_dispatch_contract_files_match_their_template() -> None:
    from citybrain.contracts.dispatch import dispatch_contract_text, dispatch_departments
    from citybrain.settings import PROJECT_ROOT

    for dept in dispatch_departments():
        path = PROJECT_ROOT / "schemas" / f"dispatch.{dept}.work_order.v1.yaml"
        assert path.read_text(encoding="utf-8") == dispatch_contract_text(dept), path.name


def test_hourly_metrics_close_after_their_window_and_count_every_call_and_reading() -> None:
    from citybrain.fusion.metrics import Metrics

    m = Metrics()
    for k in range(12):
        at = T0 + timedelta(minutes=5 * k)
        m.add(Signal("t", f"r{k}", "reading", "noise", at, district_code="990101", device_id=f"nz-{k % 3}",
                     values={"LAeq": 50.0 + k}))
        m.add(Signal("t", f"t{k}", "ticket", "noise", at, district_code="990101", state="received"))
    m.add(Signal("t", "x", "reading", "noise", T0, district_code="990101", device_id="nz-9", values={"LAeq": 99.0},
                 flags=["position_mismatch"]))                        # suspect devices are not counted
    assert m.close(T0 + timedelta(minutes=70)) == []                  # within the lateness allowance
    hourly = {r["source"]: r for r in m.close(T0 + timedelta(minutes=80)) if r["window"] == "hour"}
    assert hourly["ticket"]["count"] == 12
    assert (hourly["reading"]["count"], hourly["reading"]["mean"], hourly["reading"]["max"],
            hourly["reading"]["devices"]) == (12, 55.5, 61.0, 3)
    assert [r["window"] for r in m.close(T0 + timedelta(days=1, hours=1))] == ["day", "day"]


def test_heavy_rain_at_the_districts_station_is_named_in_the_flood_evidence_and_light_rain_is_not() -> None:
    p = _pipeline()
    gauge = next(d for d in CITY.devices if d.device_type == "water_level" and d.site_type == "underpass")
    district = next(s.district_code for s in CITY.streets if s.code == gauge.street_code)
    station = next(d for d in CITY.devices_of("weather")
                   if next(s.district_code for s in CITY.streets if s.code == d.street_code) == district)

    def rain(mm: float, at: datetime) -> None:
        stamp = iso(at)
        p.feed("raw.sensor.weather.v1", {"id": f"urn:ngsi-ld:WeatherObserved:{station.device_id}:{stamp}",
                                         "type": "WeatherObserved", "dateObserved": stamp, "refDevice": station.device_id,
                                         "precipitation": mm}, f"w{stamp}{mm}", at)

    rain(4.0, T0)                                   # drizzle is remembered, but is not heavy rain
    assert p.watch.heavy_rain(district, T0 + timedelta(minutes=30)) is None
    rain(38.0, T0 + timedelta(hours=1))
    out = _flooded_gauge(p, gauge.device_id, T0 + timedelta(hours=1, minutes=10))
    warning = next(r for kind, r in out if kind == WARNING_TOPIC)
    assert f"38 mm of rain in the hour to 03:00 UTC at weather station {station.device_id}" in warning["explanation"]
    # a gauge of another district flooding in the same hour is not explained by this district's rain
    other = next(d for d in CITY.devices if d.device_type == "water_level" and d.site_type == "underpass"
                 and next(s.district_code for s in CITY.streets if s.code == d.street_code) != district)
    out = _flooded_gauge(p, other.device_id, T0 + timedelta(hours=1, minutes=11))   # (other event ids)
    assert "rain" not in next(r for kind, r in out if kind == WARNING_TOPIC)["explanation"]


def test_a_vendors_reading_without_a_position_or_a_device_id_is_placed_by_what_it_has() -> None:
    """The models make location and refDevice optional: a reading placed by its registered device, one by
    its own position (stationID instead of refDevice), text attributes kept out of the measures."""
    devices = {r["device_id"]: r for r in reference_records(CITY, "x")["raw.ref.device"]}
    enricher = Enricher(CITY.index, devices)
    d = next(x for x in CITY.devices if x.device_type == "water_level")
    no_place = {k: v for k, v in _reading(d.device_id, T0, currentLevel=0.1).items() if k != "location"}
    s = enricher.signal("raw.sensor.water_level.v1", no_place, "e1")
    assert s is not None and (s.lon, s.lat, s.street_code, s.flags) == (d.lon, d.lat, d.street_code, [])
    vendor = {"id": "urn:ngsi-ld:FloodMonitoring:x", "type": "FloodMonitoring", "observationDateTime": iso(T0),
              "stationID": "HZ-7781", "location": {"type": "Point", "coordinates": [d.lon, d.lat]},
              "currentLevel": 0.2, "address": {"streetAddress": "x"}, "source": "https://example.org"}
    s = enricher.signal("raw.sensor.water_level.v1", vendor, "e2")
    assert s is not None and s.at == T0 and s.device_id == "HZ-7781" and s.street_code == d.street_code
    assert s.values == {"currentLevel": 0.2} and "unregistered_device" in s.flags


def test_weather_stations_report_every_hour_the_rain_that_fills_the_gauges(contracts) -> None:  # type: ignore[no-untyped-def]
    sim = Simulation(SimConfig(seed=5, start=T0, hours=4, scale=0.02, incidents=("underpass_flood",)))
    check = RecordValidator(contracts["raw.sensor.weather.v1"])
    readings = [e.value for _t, batch in sim.ticks() for e in batch if e.contract == "raw.sensor.weather"]
    assert len(readings) == 3 * len(CITY.devices_of("weather"))     # 03:00, 04:00, 05:00 (the run ends at 06:00)
    assert all(check(r) is None for r in readings)
    storm = sim.weather.storms[0]
    wet = {d.device_id for d in CITY.devices_of("weather")
           if next(s.district_code for s in CITY.streets if s.code == d.street_code) in storm.districts}
    assert wet and max(r["precipitation"] for r in readings if r["refDevice"] in wet) >= 20
    assert max((r["precipitation"] for r in readings if r["refDevice"] not in wet), default=0) < 20


def test_a_street_trending_up_is_a_hotspot_whatever_day_the_detector_saw_before() -> None:
    """The hotspot windows were pruned against the newest call seen: a day read after a later one (a demo day on
    the broker before a test's day) had each of its calls dropped as it came, and no street trended."""
    from citybrain.fusion.fuse import HotspotDetector

    def call(detector: HotspotDetector, street: str, at: datetime) -> dict | None:  # type: ignore[type-arg]
        return detector.add(Signal("raw.hotline.service_request.v1", f"{street}{at}", "ticket", "waterlogging", at,
                                   district_code="990101", street_code=street, street_name=street), at)

    def rising(detector: HotspotDetector, day: datetime) -> list[dict]:  # type: ignore[type-arg]
        out = []
        for k in range(12):                  # the rest of the city: a call every half hour, in six streets
            out.append(call(detector, f"9901010{k % 6:02d}", day + timedelta(minutes=30 * k)))
        for k in range(12):                  # one street: twelve calls in the last hour
            out.append(call(detector, "990101099", day + timedelta(hours=5, minutes=10 + 4 * k)))
        return [w for w in out if w]

    in_order = rising(HotspotDetector(), T0)
    assert [w["street_code"] for w in in_order] == ["990101099"], in_order
    later_first = HotspotDetector()
    rising(later_first, T0 + timedelta(days=2))
    assert [w["street_code"] for w in rising(later_first, T0)] == ["990101099"]
    # The same calls arriving up to LATE behind the street's newest are still counted.
    shuffled = HotspotDetector()
    for k in range(12):
        call(shuffled, f"9901010{k % 6:02d}", T0 + timedelta(minutes=30 * k))
    late = [call(shuffled, "990101099", T0 + timedelta(hours=5, minutes=10 + 4 * k)) for k in (11, *range(11))]
    assert [w["street_code"] for w in late if w] == ["990101099"]


def test_two_workers_telling_each_other_their_calls_judge_a_street_as_one_worker_does() -> None:
    """Keyed by area, each worker holds some districts; the city-wide baseline comes from the calls the other
    workers publish (CityCalls.drain -> learn). Without it a worker judges against its own districts only."""
    from citybrain.fusion.fuse import CityCalls, HotspotDetector

    def call(street: str, at: datetime, n: int) -> Signal:
        return Signal("raw.hotline.service_request.v1", f"e{n}", "ticket", "waterlogging", at, district_code=street[:6],
                      street_code=street, street_name=street, values={"service_request_id": f"HL{n:06d}"})

    # Busy districts 990102/990103 call all day (each street about 7 calls an hour); in 990101 one street (of two)
    # gets twelve calls in an hour.
    calls = [call(f"99010{2 + k % 2}00{k % 4}", T0 + timedelta(minutes=k), k) for k in range(72 * 5)]
    calls += [call("990101001", T0 + timedelta(hours=5, minutes=10 + 4 * k), 1000 + k) for k in range(12)]
    calls += [call("990101002", T0 + timedelta(hours=k), 2000 + k) for k in range(6)]
    calls.sort(key=lambda s: s.at)

    def run(workers: int, tell: bool) -> list[str]:
        detectors = [HotspotDetector() for _ in range(workers)]
        for d in detectors:
            d.city = CityCalls(outbox=True)
            d.population = {s.street_code: 1000 for s in calls}
        warned = []
        for s in calls:
            mine = detectors[0 if s.district_code == "990101" or workers == 1 else 1]
            warning = mine.add(s, s.at)
            warned += [warning["street_code"]] if warning else []
            for sender in detectors:
                for category, ident, at in sender.city.drain():
                    for other in detectors:
                        if other is not sender and tell:
                            other.city.learn(category, ident, at, HotspotDetector.WINDOW + HotspotDetector.LATE)
        return warned

    one = run(1, tell=True)
    assert one == []                       # against the whole busy city, twelve calls in one street are usual
    assert run(2, tell=True) == one
    assert run(2, tell=False) == ["990101001"]   # the worker of 990101 alone sees a hotspot that is not one
