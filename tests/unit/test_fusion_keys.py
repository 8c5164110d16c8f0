"""The area key that splits fusion across workers (``citybrain.fusion.keys``): every correlation fusion makes stays
within one key (a device's readings, a ticket and its lifecycle, a place's evidence), and a simulated day split
over three pipelines by that key detects what one pipeline detects."""

from __future__ import annotations

from datetime import datetime, timezone

from citybrain.sim.city import build_city
from citybrain.sim.reference import reference_records
from citybrain.contracts.model import load_all
from citybrain.fusion.evaluate import evaluate
from citybrain.fusion.keys import AreaKeys, share_of
from citybrain.devtools.replay import replay_detections
from citybrain.access.privacy import Protector
from citybrain.settings import PROJECT_ROOT
from citybrain.sim.engine import Simulation
from citybrain.sim.model import SimConfig

CITY = build_city(7)


def _keys() -> AreaKeys:
    keys = AreaKeys()
    for contract, records in reference_records(CITY, "2026-11-22T00:00:00Z").items():
        for r in records:
            keys.reference(f"{contract}.v1", r)
    return keys


def _district_at(keys: AreaKeys, lon: float, lat: float) -> str:
    found = keys.enricher.index.resolve(lon, lat)   # type: ignore[union-attr]
    assert found is not None
    return found.district.code


def test_a_reading_goes_with_its_device_even_when_it_says_it_is_elsewhere() -> None:
    keys = _keys()
    gauge, far = CITY.devices[0], CITY.devices[-1]
    home = keys.key("raw.sensor.water_level.v1", {"refDevice": gauge.device_id, "dateObserved": "2026-11-22T01:00:00Z",
                                                  "location": {"type": "Point", "coordinates": [gauge.lon, gauge.lat]}})
    spoofed = keys.key("raw.sensor.water_level.v1", {"refDevice": gauge.device_id, "dateObserved": "2026-11-22T01:05:00Z",
                                                     "location": {"type": "Point", "coordinates": [far.lon, far.lat]}})
    assert home == spoofed == _district_at(keys, gauge.lon, gauge.lat)
    unregistered = keys.key("raw.sensor.water_level.v1", {"refDevice": "wl-none", "dateObserved": "2026-11-22T01:00:00Z",
                                                          "location": {"type": "Point", "coordinates": [far.lon, far.lat]}})
    assert unregistered == _district_at(keys, far.lon, far.lat)


def test_reference_data_published_again_keeps_the_index_and_a_moved_device_takes_its_new_district() -> None:
    keys = _keys()
    reading = lambda device: {"refDevice": device.device_id, "dateObserved": "2026-11-22T01:00:00Z"}  # noqa: E731
    gauge, far = CITY.devices[0], CITY.devices[-1]
    home = keys.key("raw.sensor.water_level.v1", reading(gauge))
    index = keys.enricher.index
    for contract, records in reference_records(CITY, "2026-11-23T00:00:00Z").items():   # the same city, a day on
        for r in records:
            keys.reference(f"{contract}.v1", r)
    assert keys.key("raw.sensor.water_level.v1", reading(gauge)) == home and keys.enricher.index is index
    moved = {**next(r for r in reference_records(CITY, "x")["raw.ref.device"] if r["device_id"] == gauge.device_id),
             "lat": far.lat, "long": far.lon}
    keys.reference("raw.ref.device.v1", moved)
    assert keys.key("raw.sensor.water_level.v1", reading(gauge)) == _district_at(keys, far.lon, far.lat) != home
    area = reference_records(CITY, "x")["raw.ref.admin_area"][0]
    keys.reference("raw.ref.admin_area.v1", {**area, "name": area["name"] + "（新）"})
    keys.key("raw.sensor.water_level.v1", reading(gauge))
    assert keys.enricher.index is not index                       # a real change rebuilds it


def test_a_ticket_event_goes_with_its_ticket_and_what_has_no_place_has_no_key() -> None:
    keys = _keys()
    place = CITY.devices[3]
    ticket = {"service_request_id": "HL1", "service_code": "water.waterlogging", "category": "waterlogging",
              "requested_datetime": "2026-11-22T01:00:00Z", "lat": place.lat, "long": place.lon}
    district = keys.key("raw.hotline.service_request.v1", ticket)
    assert district == _district_at(keys, place.lon, place.lat)
    assert keys.key("raw.hotline.ticket_event.v1", {"service_request_id": "HL1", "event_type": "accepted"}) == district
    assert keys.key("raw.hotline.ticket_event.v1", {"service_request_id": "HL-unknown"}) is None
    outside = {**ticket, "service_request_id": "HL2", "lat": 0.0, "long": 0.0}
    assert keys.key("raw.hotline.service_request.v1", outside) is None
    assert keys.key("raw.hotline.service_request.v1", {"service_request_id": "HL3"}) is None   # unreadable: no key
    assert share_of(None, 4) == 0 and share_of(district, 1) == 0
    assert {share_of(d.code, 3) for d in CITY.districts} == {0, 1, 2}   # the districts spread over the shares
    assert share_of(district, 3) == share_of(str(district), 3)          # stable, not Python's salted hash


def test_a_day_split_by_district_over_three_pipelines_detects_what_one_does() -> None:
    contracts = {c.topic: c for c in load_all(PROJECT_ROOT / "schemas").values()}
    start = datetime(2026, 11, 22, 16, tzinfo=timezone.utc)
    sim = Simulation(SimConfig(seed=7, start=start, hours=24, scale=0.1,
                               incidents=("underpass_flood", "night_construction_noise", "complaint_hotspot")))
    truth = sim.ground_truth("split-test")
    protector = Protector.ephemeral()
    one = replay_detections(truth, contracts, protector, shards=1)
    three = replay_detections(truth, contracts, protector, shards=3)
    scores = [evaluate(truth, events, warnings) for events, warnings in (one, three)]
    assert scores[0]["detections"] > 0 and scores[0]["recall"] > 0
    for name in ("precision", "recall", "median_lead_time_min", "events", "warnings"):
        assert scores[1][name] == scores[0][name], (name, scores)
    assert sorted(e["event_id"] for e in three[0]) == sorted(e["event_id"] for e in one[0])
