"""Air pollution in fusion (issue 37, item 2): a gauge's first hour over the AQI limit warns before residents call,
when it stands out from the city's gauges that hour; a regional haze warns no street; the city event still waits
for the second hour."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.fusion.pipeline import EVENT_TOPIC, WARNING_TOPIC
from citybrain.geo import AreaIndex, bearing_deg
from citybrain.sim.city import build_city
from citybrain.sim.reference import reference_records
from citybrain.times import iso
from tests.unit.test_fusion_traffic import Outputs, Record, _feed, _pipeline

CITY = build_city(7)
AIR = [d for d in CITY.devices if d.device_type == "air_quality"]
#: The plume's first gauge, and the city's others (their background, a clean day's AQI 60-80).
GAUGE = AIR[0]
OTHERS = [d for d in AIR if d.street_code != GAUGE.street_code][:20]
#: A Thursday afternoon in the city (Asia/Shanghai).
T0 = datetime(2026, 12, 3, 6, 0, tzinfo=timezone.utc)


def _air(at: datetime, device: Any, aqi: int) -> Record:
    """An AirQualityObserved of an hourly station, as the city's gateways send it."""
    pm25 = round(aqi * 0.6, 1)
    level = "moderately_polluted" if aqi > 150 else "good"
    return (at, "raw.sensor.air_quality.v1", {
        "id": f"urn:ngsi-ld:AirQualityObserved:{device.device_id}:{iso(at)}", "type": "AirQualityObserved",
        "dateObserved": iso(at), "location": {"type": "Point", "coordinates": [device.lon, device.lat]},
        "refDevice": device.device_id, "pm25": pm25, "pm10": round(pm25 * 1.6, 1), "airQualityIndex": aqi,
        "airQualityLevel": level, "temperature": 12.0, "relativeHumidity": 0.5})


def _hour(at: datetime, plume: dict[Any, int], background: int = 70) -> list[Record]:
    """One hour's readings: the plume's gauges first (before the city's median is known), then the others (no two
    hours in a row alike, or they would be stuck)."""
    return [_air(at, d, aqi) for d, aqi in plume.items()] + \
        [_air(at, d, background + (k + at.hour) % 7) for k, d in enumerate(OTHERS) if d not in plume]


def test_an_air_gauges_first_hour_over_the_limit_warns_at_once_naming_gauge_reading_and_limit(
        contracts: dict[str, Contract]) -> None:
    """Issue 37: the gauges led the first call by 72 minutes and the platform said nothing; a station's first hourly
    AQI over 150 is now a warning at that reading's time, said in the city's language; the event waits for more."""
    p = _pipeline(contracts)
    out = _feed(p, contracts, _hour(T0, {GAUGE: 70}) + _hour(T0 + timedelta(hours=1), {GAUGE: 182}))
    warnings = [r for t, r in out if t == WARNING_TOPIC]
    assert [(w["kind"], w["category"], w["street_code"], w["observed_at"]) for w in warnings] == \
        [("sensor_precedes_complaints", "air_pollution", GAUGE.street_code, "2026-12-03T07:00:00Z")]
    w = warnings[0]
    assert w["detected_at"] == "2026-12-03T07:00:00Z" and w["summary_language"] == "zh"
    assert GAUGE.device_id in w["summary"] and "182" in w["summary"] and "150" in w["summary"]
    assert w["summary"].startswith(CITY.street(GAUGE.street_code).name)
    assert f"air gauge {GAUGE.device_id} reads an hourly AQI of 182, over the limit of 150" in w["explanation"]
    assert "2.5 times the median of the city's gauges that hour (72)" in w["explanation"]
    assert RecordValidator(next(c for c in contracts.values() if c.topic == WARNING_TOPIC))(w) is None
    assert not [r for t, r in out if t == EVENT_TOPIC]          # one hour warns; it sends nobody out


def test_a_regional_haze_over_the_limit_everywhere_warns_no_street(contracts: dict[str, Contract]) -> None:
    """The simulated city's hazy evenings put dozens of gauges over 150 together, each at its site's usual share of
    the city's level: a regional episode for the city's heavy-pollution plan, not a street's early warning."""
    p = _pipeline(contracts)
    out = _feed(p, contracts, _hour(T0, {GAUGE: 150}, background=140) +
                _hour(T0 + timedelta(hours=1), {GAUGE: 205}, background=150))
    assert not [r for t, r in out if t == WARNING_TOPIC]


def test_a_gauge_is_judged_against_its_own_usual_share_of_the_city(contracts: dict[str, Contract]) -> None:
    """A gauge by an arterial reads above the city every hour: at 160, 2.2 times the city's median, it is at its
    usual share (1.6 times) and its site, not a source, warns no one; a clean site's gauge (0.7 times) at 160 is
    1.7 times the median, less than a gauge without history needs, and warns: 2.5 times its usual."""
    def warned(usual: int, background: int) -> list[dict[str, Any]]:
        p = _pipeline(contracts)
        hours = [{GAUGE: usual}] * 3 + [{GAUGE: 160}]
        out = _feed(p, contracts, [r for k, plume in enumerate(hours)
                                   for r in _hour(T0 + timedelta(hours=k), plume, background=background)])
        return [r for t, r in out if t == WARNING_TOPIC]
    assert warned(115, 70) == []
    clean = warned(65, 90)
    assert [w["observed_at"] for w in clean] == ["2026-12-03T09:00:00Z"]
    assert "1.7 times the median of the city's gauges that hour (94), where it usually reads 0.7 times it" in \
        clean[0]["explanation"] and "（平时约0.7倍）" in clean[0]["summary"]


def test_a_plume_arriving_first_in_its_hour_is_judged_against_the_whole_city(contracts: dict[str, Contract]) -> None:
    """Gauges arrive in their gateways' order, a plume's streets' together: the first dozen of the hour may all be
    the plume, whose median is the plume's. The hour is judged once half the city's gauges have reported."""
    p = _pipeline(contracts)
    plume = [GAUGE, *[d for d in AIR if d.street_code != GAUGE.street_code][:9]]
    city = [d for d in AIR if d not in plume][:40]
    out = _feed(p, contracts, [_air(T0, d, 70 + k % 7) for k, d in enumerate(plume + city)] +
                [_air(T0 + timedelta(hours=1), d, 185) for d in plume] +
                [_air(T0 + timedelta(hours=1), d, 71 + k % 7) for k, d in enumerate(city)])
    warned = {w["street_code"] for t, w in out if t == WARNING_TOPIC and w["kind"] == "sensor_precedes_complaints"}
    assert GAUGE.street_code in warned


def test_a_city_with_few_gauges_judges_their_first_hour_on_the_limit_alone(contracts: dict[str, Contract]) -> None:
    """Under twelve gauges an hour, no median tells a plume from a haze: the gauge over 150 warns once the next hour
    begins (its peers are in), dated by its own reading."""
    p = _pipeline(contracts)
    few = {GAUGE: 170, **{d: 70 for d in OTHERS[:3]}}
    out = _feed(p, contracts, [_air(T0, d, aqi) for d, aqi in few.items()])
    assert not [r for t, r in out if t == WARNING_TOPIC]
    out = _feed(p, contracts, [_air(T0 + timedelta(hours=1), OTHERS[0], 70)])
    warnings = [r for t, r in out if t == WARNING_TOPIC]
    assert [w["observed_at"] for w in warnings] == ["2026-12-03T06:00:00Z"]
    assert "times the median" not in warnings[0]["explanation"]


def _call(at: datetime, n: int, device: Any = GAUGE) -> Record:
    """A 12345 air-pollution call from beside ``device``."""
    return (at, "raw.hotline.service_request.v1", {
        "service_request_id": f"HL{at:%Y%m%d}{n:08d}", "status": "open", "service_code": "environment.air",
        "service_name": "空气污染异味", "description": "附近工厂排放刺鼻气味，烟很大。", "requested_datetime": iso(at),
        "updated_datetime": iso(at), "channel": "phone", "category": "air_pollution", "lifecycle_state": "received",
        "lat": round(device.lat - 0.0004, 6), "long": round(device.lon + 0.0003, 6)})


def test_the_streets_air_pollution_calls_are_the_air_events_evidence(contracts: dict[str, Contract]) -> None:
    """Issue 37: none of the plume's complaint calls were attached to its events. A gauge's second hour over the
    limit with two calls of the street is the air-pollution episode, the calls in its evidence, sent to environment."""
    p = _pipeline(contracts)
    records = _hour(T0, {GAUGE: 70}) + _hour(T0 + timedelta(hours=1), {GAUGE: 182}) + \
        _hour(T0 + timedelta(hours=2), {GAUGE: 190}) + \
        [_call(T0 + timedelta(hours=1, minutes=m), m) for m in (25, 48)]
    out = _feed(p, contracts, records)
    warnings = [r for t, r in out if t == WARNING_TOPIC and r["kind"] == "sensor_precedes_complaints"]
    assert [w["observed_at"] for w in warnings] == ["2026-12-03T07:00:00Z"]
    events = [r for t, r in out if t == EVENT_TOPIC]
    assert [(e["event_id"], e["status"], e["detected_at"]) for e in events] == \
        [(f"CE-{GAUGE.street_code}-air_pollution_episode-202612030700", "open", "2026-12-03T08:00:00Z")]
    e = events[0]
    assert e["evidence"]["tickets"] == ["HL2026120300000025", "HL2026120300000048"]
    assert e["evidence"]["devices"] == [GAUGE.device_id] and len(e["evidence"]["readings"]) == 1
    assert (e["department"], e["first_seen"], e["confidence"]) == ("environment", "2026-12-03T07:00:00Z", 0.85)
    assert "12345 call HL2026120300000025 (air_pollution)" in e["explanation"]


def test_residents_calling_before_the_gauge_get_no_sensor_first_warning(contracts: dict[str, Contract]) -> None:
    """Two air-pollution calls before the gauge's first hour over the limit: the complaints came first, and a
    warning that the sensors did would be false; the calls and the gauge are still one case."""
    p = _pipeline(contracts)
    records = _hour(T0, {GAUGE: 70}) + [_call(T0 + timedelta(minutes=m), m) for m in (20, 40)] + \
        _hour(T0 + timedelta(hours=1), {GAUGE: 182}) + _hour(T0 + timedelta(hours=2), {GAUGE: 190})
    out = _feed(p, contracts, records)
    assert not [r for t, r in out if t == WARNING_TOPIC and r["kind"] == "sensor_precedes_complaints"]
    events = [r for t, r in out if t == EVENT_TOPIC]
    assert [e["evidence"]["tickets"] for e in events] == [["HL2026120300000020", "HL2026120300000040"]]


#: Three neighbouring streets in a row, A (the first gauge's), B next to it and C next to B but not to A, and a gauge
#: in each: the plume of issue 37, moving over them in six hours.
_INDEX = AreaIndex.from_records(reference_records(CITY, "x")["raw.ref.admin_area"])
_NEXT = {s.code: {a.code for a in _INDEX.neighbours(s.code)} for s in CITY.streets}
A = GAUGE.street_code
B, C = next((b, c) for b in sorted(_NEXT[A]) for c in sorted(_NEXT[b]) if c != A and c not in _NEXT[A])
GA, GB, GC = GAUGE, *(next(d for d in AIR if d.street_code == x) for x in (B, C))


def test_a_plume_over_three_neighbouring_streets_is_one_event_growing_and_warns_the_streets_in_its_path(
        contracts: dict[str, Contract]) -> None:
    """Issue 37: a plume moving over three neighbouring streets in six hours became three unrelated events. It is one
    event now, its footprint the streets in its evidence, each street warned as the plume moves: A's gauge first,
    then its neighbours (B among them) told the plume may reach them, naming the street it comes from."""
    p = _pipeline(contracts)
    hours = [{}, {GA: 180}, {GA: 190}, {GA: 185, GB: 175}, {GA: 160, GB: 182, GC: 170}, {GB: 165, GC: 178},
             {GC: 172}]
    records = [r for k, plume in enumerate(hours) for r in _hour(T0 + timedelta(hours=k), plume)] + \
        [_call(T0 + timedelta(hours=1, minutes=m), m) for m in (30, 50)] + \
        [_call(T0 + timedelta(hours=4, minutes=20), 420, GC)]
    out = _feed(p, contracts, records)
    out += p.sweep(T0 + timedelta(hours=12))
    validate = {c.topic: RecordValidator(c) for c in contracts.values()}
    assert all(validate[t](r) is None for t, r in out if t in (EVENT_TOPIC, WARNING_TOPIC)), out
    events = [r for t, r in out if t == EVENT_TOPIC]
    assert {e["event_id"] for e in events} == {f"CE-{A}-air_pollution_episode-202612030700"}
    assert [e["evidence"]["streets"] for e in events] == [[A], [A, B], [A, B, C], [A, B, C]]
    assert [e["status"] for e in events] == ["open", "updated", "updated", "closed"]
    last = events[-1]
    assert last["evidence"]["devices"] == [GA.device_id, GB.device_id, GC.device_id]
    assert last["evidence"]["tickets"] == ["HL2026120300000030", "HL2026120300000050", "HL2026120300000420"]
    assert last["title"].startswith(f"{CITY.street(A).name}等3个街道")
    warnings = [r for t, r in out if t == WARNING_TOPIC]
    first = [w for w in warnings if w["kind"] == "sensor_precedes_complaints"]
    assert [(w["street_code"], w["observed_at"]) for w in first] == [(A, "2026-12-03T07:00:00Z")]
    spreading = {w["street_code"]: w for w in warnings if w["kind"] == "air_spreading"}
    assert set(spreading) == (_NEXT[A] | _NEXT[B] | _NEXT[C]) - {A}    # B and C warned before the plume came
    assert spreading[B]["spreading_from"] == {"event_id": events[0]["event_id"], "area_code": A,
                                              "area_name": CITY.street(A).name}
    assert spreading[B]["detected_at"] == "2026-12-03T08:00:00Z"          # when the event opened
    assert spreading[C]["spreading_from"]["area_code"] == B and spreading[C]["detected_at"] == "2026-12-03T09:00:00Z"
    assert spreading[C]["summary"].startswith(f"相邻的{CITY.street(B).name}正发生空气污染事件")


def test_a_haze_over_neighbouring_streets_joins_no_case(contracts: dict[str, Contract]) -> None:
    """Neighbouring streets over the limit with the whole city (no gauge standing out) stay their own cases: a
    regional haze chained street to street would be one city-wide event from gauges that each said nothing."""
    p = _pipeline(contracts)
    hours = [{GA: 150, GB: 150}, {GA: 205, GB: 200}, {GA: 210, GB: 208}, {GA: 206, GB: 204}, {GA: 207, GB: 203}]
    out = _feed(p, contracts, [r for k, plume in enumerate(hours)
                               for r in _hour(T0 + timedelta(hours=k), plume, background=150)])
    events = [r for t, r in out if t == EVENT_TOPIC and r["category"] == "air_pollution_episode"]
    assert {A, B} <= {e["street_code"] for e in events}
    assert all(e["evidence"]["streets"] == [e["street_code"]] for e in events)
    assert not [r for t, r in out if t == WARNING_TOPIC and r["kind"] == "sensor_precedes_complaints"]


def test_with_a_wind_measured_only_the_streets_downwind_are_warned(contracts: dict[str, Contract]) -> None:
    """Issue 37: downwind streets were never warned. With the district's weather station measuring a wind blowing
    from A towards B, B is warned when A's event opens and A's neighbours upwind are not (they may be later, if the
    wind turns); the warning names the wind. In a calm, every neighbour is in the plume's path."""
    centre = {code: _INDEX.centre(code) for code in _NEXT[A] | {A}}
    def bearing(code: str) -> float:
        return bearing_deg(*centre[A], *centre[code])  # type: ignore[misc]
    towards_b = bearing(B)
    upwind = {n for n in _NEXT[A] if abs((bearing(n) - towards_b + 180) % 360 - 180) > 90}
    assert upwind, "the test needs a neighbour of A upwind of it"
    station = next(d for d in CITY.devices_of("weather") if CITY.street(d.street_code).district_code ==
                   CITY.street(A).district_code)

    def weather(at: datetime, speed: float) -> Record:
        return (at, "raw.sensor.weather.v1", {
            "id": f"urn:ngsi-ld:WeatherObserved:{station.device_id}:{iso(at)}", "type": "WeatherObserved",
            "dateObserved": iso(at), "location": {"type": "Point", "coordinates": [station.lon, station.lat]},
            "refDevice": station.device_id, "precipitation": 0.0, "temperature": 12.0, "relativeHumidity": 0.5,
            "windSpeed": speed, "windDirection": round((towards_b + 180) % 360)})

    def opened(speed: float) -> dict[str, dict[str, Any]]:
        p = _pipeline(contracts)
        plume: list[dict[Any, int]] = [{}, {GA: 180}, {GA: 190}]
        records = [r for k, aqi in enumerate(plume) for r in _hour(T0 + timedelta(hours=k), aqi)]
        records += [weather(T0 + timedelta(hours=k), speed) for k in range(3)] + \
            [_call(T0 + timedelta(hours=1, minutes=m), m) for m in (30, 50)]
        out = _feed(p, contracts, records)
        return {r["street_code"]: r for t, r in out if t == WARNING_TOPIC and r["kind"] == "air_spreading"}

    windy = opened(3.2)
    assert B in windy and not upwind & set(windy)
    assert windy[B]["spreading_from"]["wind"] == {"from_deg": round((towards_b + 180) % 360), "speed_m_s": 3.2,
                                                  "station": station.device_id}
    assert "下风向" in windy[B]["summary"] and "风速3.2米/秒" in windy[B]["summary"]
    assert set(opened(0.8)) == _NEXT[A]          # calm: every neighbour


def test_a_street_whose_residents_called_first_brings_its_calls_into_the_event_it_joins(
        contracts: dict[str, Contract]) -> None:
    """B's residents call about the air before B's gauge passes the limit (B's own case, not yet an event); when
    the gauge stands out next to A's event, B's case is part of A's: one event, B's call among its evidence."""
    p = _pipeline(contracts)
    hours = [{}, {GA: 180}, {GA: 190}, {GA: 185, GB: 175}, {GA: 170, GB: 180}]
    records = [r for k, plume in enumerate(hours) for r in _hour(T0 + timedelta(hours=k), plume)] + \
        [_call(T0 + timedelta(hours=1, minutes=m), m) for m in (30, 50)] + \
        [_call(T0 + timedelta(hours=2, minutes=30), 230, GB)]
    out = _feed(p, contracts, records)
    events = [r for t, r in out if t == EVENT_TOPIC and r["category"] == "air_pollution_episode"]
    assert {e["event_id"] for e in events} == {f"CE-{A}-air_pollution_episode-202612030700"}
    assert events[-1]["evidence"]["streets"] == [A, B]
    assert events[-1]["evidence"]["tickets"] == ["HL2026120300000030", "HL2026120300000050", "HL2026120300000230"]
