"""Traffic in fusion: a lane whose speed collapses against its own normal, 110 accident and obstruction reports
and hazard calls fused into one traffic event routed by ``event.traffic_congestion``; the simulated city's
ordinary traffic raises none (issue 37, the invisible accident)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from citybrain.access.privacy import Protector
from citybrain.contracts.model import Contract, load_all
from citybrain.contracts.validate import RecordValidator
from citybrain.fusion.detect import Anomaly, SensorWatch
from citybrain.fusion.pipeline import EVENT_TOPIC, Pipeline
from citybrain.fusion.signals import Signal
from citybrain.kafka.headers import EVENT_ID_NAMESPACE
from citybrain.settings import PROJECT_ROOT
from citybrain.sim.city import build_city
from citybrain.sim.engine import Simulation
from citybrain.sim.model import SimConfig
from citybrain.sim.reference import reference_records
from citybrain.times import iso

CITY = build_city(7)
#: An arterial's gauge, and an accident on it at 17:30 in the city (Asia/Shanghai) on a Thursday: evening rush.
GAUGE = next(d for d in CITY.devices if d.device_type == "traffic_flow" and d.site_type == "arterial")
ACCIDENT = datetime(2026, 12, 3, 9, 30, tzinfo=timezone.utc)
Record = tuple[datetime, str, dict[str, Any]]          # (time, topic, value)
Outputs = list[tuple[str, dict[str, Any]]]


def _pipeline(contracts: dict[str, Contract]) -> Pipeline:
    p = Pipeline(contracts, Protector.ephemeral())
    for contract, records in reference_records(CITY, "2026-12-01T00:00:00Z").items():
        for r in records:
            p.feed(f"{contract}.v1", r, "ref")
    return p


def _lane(at: datetime, speed: float, occupancy: float) -> Record:
    """A TrafficFlowObserved of the gauge's lane over the five minutes to ``at``, as the city's gateways send it."""
    return (at, "raw.sensor.traffic_flow.v1", {
        "id": f"urn:ngsi-ld:TrafficFlowObserved:{GAUGE.device_id}:{iso(at)}", "type": "TrafficFlowObserved",
        "dateObservedFrom": iso(at - timedelta(minutes=5)), "dateObservedTo": iso(at),
        "location": {"type": "Point", "coordinates": [GAUGE.lon, GAUGE.lat]}, "refDevice": GAUGE.device_id,
        "refRoadSegment": GAUGE.segment_id, "laneDirection": "forward", "intensity": round(speed * occupancy * 4),
        "occupancy": occupancy, "averageVehicleSpeed": speed, "averageVehicleLength": 4.8, "congested": speed < 30,
        "vehicleType": "anyVehicle"})


def _report(minutes: int, n: int, category: str) -> Record:
    """A 110 report beside the gauge ``minutes`` after the accident."""
    at = ACCIDENT + timedelta(minutes=minutes)
    summary = {"traffic_accident": "三车追尾，占用两条车道", "road_obstruction": "事故车辆及散落物阻断道路"}[category]
    return (at, "raw.police.incident_110.v1", {
        "incident_id": f"110-{at:%Y%m%d}-{n:05d}", "reported_at": iso(at), "category": category, "severity": 2,
        "lat": round(GAUGE.lat + 0.0004, 6), "long": round(GAUGE.lon - 0.0003, 6), "status": "dispatched",
        "summary": summary, "unit_id": "交警一大队"})


def _call(at: datetime, n: int, service: tuple[str, str, str] = ("emergency.hazard", "safety_hazard", "安全隐患"),
          description: str = "路口车辆相撞，油污和碎片散落路面，车辆排长队") -> Record:
    """A 12345 call from beside the gauge; ``service``: its code, category and name."""
    code, category, name = service
    return (at, "raw.hotline.service_request.v1", {
        "service_request_id": f"HL{at:%Y%m%d}{n:08d}", "status": "open", "service_code": code, "service_name": name,
        "description": description, "requested_datetime": iso(at), "updated_datetime": iso(at), "channel": "phone",
        "category": category, "lifecycle_state": "received", "lat": round(GAUGE.lat - 0.0005, 6),
        "long": round(GAUGE.lon + 0.0004, 6)})


def _feed(p: Pipeline, contracts: dict[str, Contract], records: list[Record]) -> Outputs:
    """Feed ``records`` in time order, each checked against its contract first."""
    out: Outputs = []
    for at, topic, value in sorted(records, key=lambda r: r[0]):
        assert RecordValidator(contracts[topic])(value) is None, value
        out += p.feed(topic, value, uuid.uuid5(EVENT_ID_NAMESPACE, json.dumps(value)).hex, at)
    return out


def _accident(lane: bool = True, reports: bool = True, calls: bool = True) -> list[Record]:
    """The analyst's accident of issue 37: the arterial at 52-58 km/h in the two hours before, then 5-7 km/h with the
    lane 90 % occupied for 70 minutes, two 110 reports and three hazard calls; its speed back after."""
    records = []
    for k in range(-24, 30):
        stopped = 0 < k <= 14
        if lane or not stopped:
            records.append(_lane(ACCIDENT + timedelta(minutes=5 * k), *((5.0 + k % 3, 0.9) if stopped else
                                                                         (52.0 + k % 7, 0.3 + 0.01 * (k % 5)))))
    if reports:
        records += [_report(4, 1, "traffic_accident"), _report(11, 2, "road_obstruction")]
    if calls:
        records += [_call(ACCIDENT + timedelta(minutes=m), m) for m in (9, 16, 27)]
    return records


def test_an_accident_stopping_an_arterial_at_evening_rush_is_one_traffic_event_sent_to_transport(
        contracts: dict[str, Contract]) -> None:
    """Issue 37's first miss: the collapse, the two 110 reports and the three hazard calls produced nothing."""
    p = _pipeline(contracts)
    out = _feed(p, contracts, _accident())
    out += p.sweep(ACCIDENT + timedelta(hours=5))      # the street quiet for three hours: the event closes
    events = [r for t, r in out if t == EVENT_TOPIC]
    assert {(e["event_id"], e["category"], e["street_code"]) for e in events} == \
        {(f"CE-{GAUGE.street_code}-traffic_congestion-202612030934", "traffic_congestion", GAUGE.street_code)}
    first, last = events[0], events[-1]
    assert first["status"] == "open" and first["detected_at"] == "2026-12-03T09:45:00Z"   # the third stopped reading
    assert last["status"] == "closed" and last["last_seen"] == "2026-12-03T10:40:00Z"
    assert (last["department"], last["co_departments"], last["priority"]) == ("transport", ["police"], "urgent")
    assert last["evidence"]["devices"] == [GAUGE.device_id] and len(last["evidence"]["readings"]) == 12
    assert last["evidence"]["records"] == ["110-20261203-00001", "110-20261203-00002"]
    assert len(last["evidence"]["tickets"]) == 3 and last["confidence"] == 0.95
    assert last["explanation"] == (
        "110 report 110-20261203-00001; 12345 call HL2026120300000009 (safety_hazard); 110 report 110-20261203-00002; "
        f"traffic gauge {GAUGE.device_id} reads 5 km/h with the lane occupied 90% of the time, 3 readings in a row, "
        "where its normal over the last 3 h is 55 km/h: traffic has stopped (9% of normal); "
        "12345 call HL2026120300000016 (safety_hazard); 12345 call HL2026120300000027 (safety_hazard)")
    orders = {(t, r["role"]) for t, r in out if t.startswith("dispatch.") and r["source"] == "city_event"}
    assert orders == {("dispatch.transport.work_order.v1", "lead"), ("dispatch.police.work_order.v1", "support")}
    by_topic = {c.topic: RecordValidator(c) for c in contracts.values()}
    assert [(t, by_topic[t](r)) for t, r in out if by_topic[t](r)] == []


@pytest.mark.parametrize("lane, reports, calls", [(True, False, False), (False, True, True)],
                         ids=["a stopped lane alone", "reports and calls alone"])
def test_a_stopped_lane_or_reports_alone_are_no_traffic_event(
        contracts: dict[str, Contract], lane: bool, reports: bool, calls: bool) -> None:
    """A lane alone may be a detector's fault or works; a city's everyday accidents stop nothing."""
    out = _feed(_pipeline(contracts), contracts, _accident(lane, reports, calls))
    assert [r["category"] for t, r in out if t == EVENT_TOPIC] == []


def test_a_report_hours_before_the_lane_stopped_is_not_about_it(contracts: dict[str, Contract]) -> None:
    """A busy street's everyday accidents keep its traffic case open all day: only a report within an hour of the
    lane stopping makes it an event."""
    out = _feed(_pipeline(contracts), contracts, _accident(reports=False, calls=False) + [
        _report(-150, 1, "traffic_accident"), _report(150, 2, "road_obstruction")])
    assert [r["category"] for t, r in out if t == EVENT_TOPIC] == []


def test_hazard_calls_join_a_stopped_lanes_case_but_open_none(contracts: dict[str, Contract]) -> None:
    """Two hazard calls after the lane stopped make it an event; hazard calls where no traffic case is open (before
    the lane stopped, or five hours before) are not traffic."""
    earlier = ACCIDENT - timedelta(hours=5)
    quiet = [_call(earlier + timedelta(minutes=m), 900 + m) for m in (1, 2, 3)]
    out = _feed(_pipeline(contracts), contracts, quiet + _accident(reports=False))
    events = [r for t, r in out if t == EVENT_TOPIC]
    assert events and {e["category"] for e in events} == {"traffic_congestion"}
    assert events[0]["detected_at"] == iso(ACCIDENT + timedelta(minutes=27))   # the second call after the collapse
    assert events[-1]["evidence"]["records"] == [] and len(events[-1]["evidence"]["tickets"]) == 2


def _signal(at: datetime, speed: float, occupancy: float, device: str = "tf-1") -> Signal:
    return Signal("raw.sensor.traffic_flow.v1", f"{device}{at}", "reading", "traffic_flow", at, device_id=device,
                  values={"averageVehicleSpeed": speed, "occupancy": occupancy})


def _collapses(watch: SensorWatch, readings: list[tuple[float, float]], device: str = "tf-1",
               start: datetime = ACCIDENT) -> list[int]:
    """The indexes of ``readings`` (speed, occupancy), five minutes apart, that are a speed collapse."""
    return [k for k, (speed, occupancy) in enumerate(readings)
            if [a.kind for a in watch.check(_signal(start + timedelta(minutes=5 * k), speed, occupancy, device))]
            == ["speed_collapse"]]


def test_a_collapse_is_judged_against_the_lanes_own_normal_for_three_readings_with_the_lane_occupied() -> None:
    watch = SensorWatch()
    arterial = [(55.0, 0.3)] * 12
    side_street = [(25.0, 0.3)] * 12
    # 15 km/h is a collapse on the arterial and 12 km/h is not on the side street (48 % of its normal)
    assert _collapses(watch, arterial + [(15.0, 0.8)] * 4, "tf-a") == [14, 15]
    assert _collapses(watch, side_street + [(12.0, 0.8)] * 4, "tf-s") == []
    assert _collapses(watch, side_street + [(6.0, 0.9)] * 4, "tf-s2") == [14, 15]
    # slow with the lane empty is no queue (a gauge at night, a lane closed); two stopped readings are a red light
    assert _collapses(watch, arterial + [(8.0, 0.2)] * 4, "tf-e") == []
    assert _collapses(watch, arterial + [(8.0, 0.9)] * 2 + [(50.0, 0.3)] + [(8.0, 0.9)] * 2, "tf-r") == []
    # a gauge heard stopped from its first reading has that for its normal; one back after three hours is new
    assert _collapses(watch, [(6.0, 0.9)] * 8, "tf-n") == []
    assert _collapses(watch, [(6.0, 0.9)] * 4, "tf-a", ACCIDENT + timedelta(hours=5)) == []


def test_a_rush_hour_slowing_over_an_hour_is_no_collapse() -> None:
    """A lane slowing to 40 % of its speed and 75 % occupied over 70 minutes, harder than the simulated city's
    busiest lanes at rush hour, is no collapse."""
    watch = SensorWatch()
    slowing = [(58.0 - 35.0 * min(1.0, k / 14), 0.3 + 0.45 * min(1.0, k / 14)) for k in range(40)]
    assert _collapses(watch, [(58.0, 0.3)] * 12 + slowing) == []


@pytest.mark.parametrize("flood_before_min, categories", [(30, {"flood"}), (330, {"flood", "traffic_congestion"})])
def test_traffic_a_flood_stopped_is_the_floods_event_not_a_second_one(
        contracts: dict[str, Contract], flood_before_min: int, categories: set[str]) -> None:
    """The simulated flood cuts its street's road capacity and its lanes stop: with an everyday 110 report near, that
    made a second event, for traffic, which the ground truth counts as a false alarm. A lane stopping more than
    three hours after the flood's last evidence is traffic's own again."""
    waterlogging = ("water.waterlogging", "waterlogging", "道路积水")
    floods = [_call(ACCIDENT - timedelta(minutes=flood_before_min - k), 500 + k, waterlogging, "路面积水没过脚踝")
              for k in (0, 5, 10)]
    out = _feed(_pipeline(contracts), contracts, _accident(calls=False) + floods)
    assert {r["category"] for t, r in out if t == EVENT_TOPIC} == categories


@pytest.fixture(scope="module")
def ordinary_day() -> tuple[Outputs, list[str], Counter[str]]:
    """A weekday of the simulated city without incidents, all its devices and calls: its traffic gauges,
    110 reports and calls fed to the pipeline in process, what it raised, the traffic anomalies the watch found, and
    what it counted."""
    sim = Simulation(SimConfig(seed=7, start=datetime(2026, 12, 2, 16, tzinfo=timezone.utc), hours=24, scale=1,
                               incidents=()))
    p = Pipeline(load_all(PROJECT_ROOT / "schemas"), Protector.ephemeral())
    anomalies: list[str] = []
    check = p.watch.check

    def watched(s: Signal) -> list[Anomaly]:
        found = check(s)
        anomalies.extend(f"{s.device_id} {iso(s.at)}: {a.detail}" for a in found if a.family == "traffic")
        return found

    p.watch.check = watched  # type: ignore[method-assign]
    out: Outputs = []
    fed = {"raw.sensor.traffic_flow", "raw.police.incident_110", "raw.hotline.service_request"}
    for t, batch in sim.ticks():
        for e in batch:
            if e.contract in fed or e.contract.startswith("raw.ref."):
                out += p.feed(f"{e.contract}.v1", e.value, uuid.uuid5(EVENT_ID_NAMESPACE, json.dumps(e.value)).hex, t)
    return out, anomalies, p.counts


def test_an_ordinary_simulated_weekdays_traffic_raises_no_traffic_event(
        ordinary_day: tuple[Outputs, list[str], Counter[str]]) -> None:
    """Two rush hours, the fleet's stuck, drifting, late and spiking gauges, the day's everyday 110 accidents and
    hazard calls: no lane collapses and no traffic event is raised."""
    out, anomalies, counts = ordinary_day
    assert counts["reading"] > 80_000 and counts["police"] > 1_500    # 289 lanes and the city's reports, all day
    assert anomalies == []
    assert [r["event_id"] for t, r in out if t == EVENT_TOPIC and r["category"] == "traffic_congestion"] == []
