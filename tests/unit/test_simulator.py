"""The city simulator: deterministic, valid where it should be, faulty where real fleets are,
and its injected incidents leave the evidence its ground truth claims."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest

from citybrain.sim.reference import reference_records
from citybrain.contracts.validate import RecordValidator
from citybrain.fusion.pipeline import Pipeline
from citybrain.access.privacy import Protector
from citybrain.times import iso
from citybrain.sim.engine import GROUND_TRUTH_FORMAT, Simulation
from citybrain.sim.incidents import complaint_peak
from citybrain.sim.model import INCIDENT_KINDS, SimConfig, SimError

START = datetime(2026, 7, 20, 16, 0, tzinfo=timezone.utc)   # 00:00 in Shanghai
CFG = SimConfig(seed=11, start=START, hours=12, scale=0.1)


def run(cfg: SimConfig = CFG) -> tuple[Simulation, list]:  # type: ignore[type-arg]
    sim = Simulation(cfg)
    return sim, [e for _t, batch in sim.ticks() for e in batch]


@pytest.fixture(scope="module")
def day():  # type: ignore[no-untyped-def]
    return run()


def digest(emissions: list) -> str:  # type: ignore[type-arg]
    """A fingerprint of a run's records: each one's contract, producer and value, in the order they leave the city."""
    h = hashlib.sha256()
    for e in emissions:
        h.update(json.dumps([e.contract, e.producer, e.value], sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def test_the_generated_citys_records_stay_the_same_record_for_record(day) -> None:  # type: ignore[no-untyped-def]
    """The simulated 云州市 is the demo's and the tests' city: a change meant for other cities (a pack that stops
    at districts) must leave its records as they were. A change meant for it updates this fingerprint and says
    so in the changelog."""
    _sim, emissions = day
    assert len(emissions) == 50155
    assert digest(emissions) == "3d0dfc861f4a08ffa50709749c0250f46cc6039fa3dadaebc5893370ca53c180"


def test_same_seed_same_records_other_seed_other_records() -> None:
    cfg = SimConfig(seed=3, start=START, hours=2, scale=0.05)
    _, a = run(cfg)
    _, b = run(cfg)
    assert [(e.contract, e.value) for e in a] == [(e.contract, e.value) for e in b]
    _, c = run(SimConfig(seed=4, start=START, hours=2, scale=0.05))
    assert [e.value for e in a] != [e.value for e in c]


def test_every_feed_is_simulated_and_almost_everything_is_valid(day, contracts) -> None:  # type: ignore[no-untyped-def]
    _sim, emissions = day
    by_id = {c.id: RecordValidator(c) for c in contracts.values()}
    raw_contracts = {c.id for c in contracts.values() if c.zone == "raw"}
    assert {e.contract for e in emissions} == raw_contracts
    invalid = Counter((e.contract, by_id[e.contract](e.value).rule) for e in emissions if by_id[e.contract](e.value))
    assert 0 < sum(invalid.values()) < 0.01 * len(emissions)        # spikes beyond range, like real fleets
    assert {rule for _c, rule in invalid} <= {"maximum"}


def test_records_leave_tick_by_tick_never_before_they_happen() -> None:
    sim = Simulation(SimConfig(seed=2, start=START, hours=3, scale=0.05))
    ticks = [(t, batch) for t, batch in sim.ticks()]
    assert [t for t, _ in ticks] == sorted(t for t, _ in ticks)
    for t, batch in ticks:
        for e in batch:
            if e.contract == "raw.hotline.ticket_event":
                assert e.value["occurred_at"].endswith("Z") and e.value["occurred_at"] <= t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_ticket_lifecycles_are_closed_loops(day) -> None:  # type: ignore[no-untyped-def]
    _sim, emissions = day
    steps: dict[str, list[str]] = defaultdict(list)
    states: dict[str, list[dict]] = defaultdict(list)  # type: ignore[type-arg]
    for e in emissions:
        if e.contract == "raw.hotline.ticket_event":
            steps[e.value["service_request_id"]].append(e.value["event_type"])
        elif e.contract == "raw.hotline.service_request":
            states[e.value["service_request_id"]].append(e.value)
    assert len(steps) > 100
    follows = {"received": {"dispatched", "closed"}, "dispatched": {"accepted", "escalated"},
               "escalated": {"accepted", "escalated"}, "accepted": {"handled", "escalated"}, "handled": {"closed"},
               "closed": {"followed_up"}, "followed_up": {"reopened"}, "reopened": {"dispatched"}}
    for tid, kinds in steps.items():
        assert kinds[0] == "received", tid
        assert all(b in follows[a] for a, b in zip(kinds, kinds[1:])), (tid, kinds)
        assert [s["lifecycle_state"] for s in states[tid]] == kinds
        assert all(s["status"] == ("closed" if s["lifecycle_state"] in ("closed", "followed_up") else "open")
                   for s in states[tid] if s["lifecycle_state"] != "handled")
    events = [e.value["event_id"] for e in emissions if e.contract == "raw.hotline.ticket_event"]
    assert len(events) == len(set(events))


def test_tickets_escalate_through_the_levels_of_their_rule_on_each_breach() -> None:
    sim, emissions = run(SimConfig(seed=5, start=START, hours=36, scale=0.05))   # long enough for levels to pass
    rules = {r["service_code"]: r for r in sim.city.routing() if r.get("service_code")}
    events: dict[str, list[dict]] = defaultdict(list)  # type: ignore[type-arg]
    states: dict[str, list[dict]] = defaultdict(list)  # type: ignore[type-arg]
    for e in emissions:
        if e.contract == "raw.hotline.ticket_event":
            events[e.value["service_request_id"]].append(e.value)
        elif e.contract == "raw.hotline.service_request":
            states[e.value["service_request_id"]].append(e.value)
    levels = ["grid", "community", "street", "district", "department"]
    reached = Counter()
    for tid, evs in events.items():
        service = states[tid][0]["service_code"]
        held = [e for e in evs if e["event_type"] in ("dispatched", "escalated")]
        if not held or "reopened" in [e["event_type"] for e in evs]:
            continue
        if not rules[service].get("escalation"):   # straight to the department that answers for the matter
            assert [(e["level"], e["assigned_department"]) for e in held] == [("department", rules[service]["department"])]
            continue
        assert held[0]["level"] == "grid", tid   # every community of the simulated city has grids
        chain = [e["level"] for e in held]
        assert chain == levels[: len(chain)], (tid, chain)
        for lower, upper in zip(held, held[1:]):   # escalated only once the level below let its deadline pass
            assert upper["occurred_at"] >= lower["sla_deadline"], tid
            if upper.get("area_code"):            # and to the area containing the one below
                assert lower["area_code"].startswith(upper["area_code"]), (tid, lower, upper)
        for e in evs:                            # an area office's steps name the level holding the ticket
            if e["event_type"] in ("accepted", "handled") and "department" not in e:
                assert e["level"] == held[-1]["level"] or e["occurred_at"] < held[-1]["occurred_at"]
        reached[chain[-1]] += 1
        assert states[tid][-1]["escalation_level"] in levels
    assert reached["grid"] > reached["community"] > reached["street"] > 0, reached


def test_work_orders_follow_the_hotline_dispatch_level_by_level(contracts) -> None:  # type: ignore[no-untyped-def]
    """The fusion worker's orders mirror the hotline system's decisions: an order for every area office that
    held a ticket, the department's only if the ticket reached it, each valid under its contract."""
    sim, emissions = run(SimConfig(seed=5, start=START, hours=36, scale=0.05))
    pipeline = Pipeline(contracts, Protector.ephemeral())
    for contract, records in reference_records(sim.city, iso(START)).items():
        for r in records:
            pipeline.feed(f"{contract}.v1", r, "ref")
    held: dict[str, set[str]] = defaultdict(set)
    orders: dict[str, set[str]] = defaultdict(set)
    validators = {t: RecordValidator(c) for t, c in contracts.items() if t.startswith("dispatch.")}
    for i, e in enumerate(emissions):
        if e.contract == "raw.hotline.ticket_event" and e.value["event_type"] in ("dispatched", "escalated"):
            if "reopened" not in held[e.value["service_request_id"]]:
                held[e.value["service_request_id"]].add(e.value["level"])
        elif e.contract == "raw.hotline.ticket_event" and e.value["event_type"] == "reopened":
            held[e.value["service_request_id"]].add("reopened")
        if not e.contract.startswith("raw.hotline") and not e.contract.startswith("raw.ref"):
            continue
        for topic, order in pipeline.feed(f"{e.contract}.v1", e.value, f"{e.contract}:{i}", e.at):
            if topic.startswith("dispatch.") and order["source"] == "ticket":
                assert validators[topic](order) is None, (topic, order)
                if order["role"] == "lead" and "-r" not in order["work_order_id"][-3:]:
                    orders[order["source_id"]].add(order.get("level") or "department")
    territorial = [tid for tid, levels in held.items() if levels - {"department", "reopened"}]
    assert len(territorial) > 20
    for tid, levels in held.items():
        assert orders[tid] == levels - {"reopened"}, (tid, levels, orders[tid])


def test_ground_truth_lists_every_incident_with_what_should_be_detected(day) -> None:  # type: ignore[no-untyped-def]
    sim, _ = day
    truth = sim.ground_truth("run-1")
    assert truth["format"] == GROUND_TRUTH_FORMAT
    assert [i["kind"] for i in truth["incidents"]] == list(INCIDENT_KINDS)
    for incident in truth["incidents"]:
        assert incident["start"] < incident["end"] and incident["expected"], incident["incident_id"]
    assert truth["sensor_faults"], "fleet faults are part of the ground truth"


def test_flood_sensors_rise_before_the_complaints_peak_and_only_at_the_incident_street(day) -> None:  # type: ignore[no-untyped-def]
    sim, emissions = day
    flood = sim.incident("underpass_flood")
    truth = flood.truth()  # type: ignore[union-attr]
    evidence = truth["evidence"]
    assert evidence["first_flooded_reading"] < evidence["complaint_peak"]
    assert len(evidence["tickets"]) >= 5 and len(evidence["police_incidents"]) == 4
    flooded_underpasses = {e.value["refDevice"] for e in emissions if e.contract == "raw.sensor.water_level"
                           and e.value.get("siteType") == "underpass" and e.value.get("floodLevelStatus") == "flooded"
                           and e.value["currentLevel"] < 50}
    assert flooded_underpasses and flooded_underpasses <= set(truth["devices"])


def test_night_construction_raises_noise_at_the_site_at_night(day) -> None:  # type: ignore[no-untyped-def]
    sim, emissions = day
    incident = sim.incident("night_construction_noise")
    window = incident.nights[0]  # type: ignore[union-attr]
    site = [e.value["LAeq"] for e in emissions if e.contract == "raw.sensor.noise_level"
            and e.value["refDevice"] in incident.devices  # type: ignore[union-attr]
            and window[0].isoformat()[:16] <= e.value["dateObservedTo"][:16] < window[1].isoformat()[:16]
            and e.value["LAeq"] < 160]
    assert site and sum(site) / len(site) > 60     # a quiet night at a site is about 46 dB(A)


def test_broken_sensor_repeats_one_value(day) -> None:  # type: ignore[no-untyped-def]
    sim, emissions = day
    incident = sim.incident("broken_sensor")
    device = incident.devices[0]  # type: ignore[union-attr]
    after = [e.value["pm25"] for e in emissions if e.contract == "raw.sensor.air_quality"
             and e.value["refDevice"] == device and e.incident]
    assert len(after) >= 3 and len(set(after)) == 1


def test_spoofed_and_flooding_gateways_are_visible_in_producer_and_position(day) -> None:  # type: ignore[no-untyped-def]
    sim, emissions = day
    spoof = sim.incident("spoofed_device")
    victim = sim.city.devices[[d.device_id for d in sim.city.devices].index(spoof.devices[0])]  # type: ignore[union-attr]
    fakes = [e for e in emissions if e.producer == spoof.PRODUCER and e.value["refDevice"] == victim.device_id]  # type: ignore[union-attr]
    assert fakes and all(abs(e.value["location"]["coordinates"][0] - victim.lon) > 0.1 for e in fakes)
    replays = [e.value for e in emissions if e.producer == spoof.PRODUCER and e.value["refDevice"] == spoof.devices[2]]  # type: ignore[union-attr]
    genuine = [e.value for e in emissions if e.producer != spoof.PRODUCER and e.value.get("refDevice") == spoof.devices[2]]  # type: ignore[union-attr]
    assert replays and all(r in genuine for r in replays)
    flood = sim.incident("gateway_flood")
    per_tick = Counter(e.at for e in emissions if e.producer == flood.producer)  # type: ignore[union-attr]
    usual = min(per_tick.values())
    assert max(per_tick.values()) >= 40 * usual


def test_complaint_peak_is_the_busiest_hour() -> None:
    base = datetime(2026, 7, 21, 0, 0, tzinfo=timezone.utc)
    times = [base.replace(minute=m) for m in (0, 50)] + [base.replace(hour=3, minute=m) for m in (1, 10, 20, 30)]
    assert complaint_peak(times) == base.replace(hour=3, minute=31)


def test_bad_options_name_the_option_and_the_fix() -> None:
    with pytest.raises(SimError, match="--interval-min 7"):
        Simulation(SimConfig(interval_min=7))
    with pytest.raises(SimError, match="unknown incident kind"):
        Simulation(SimConfig(incidents=("alien_landing",)))
    with pytest.raises(SimError, match="--scale"):
        Simulation(SimConfig(scale=0))


def test_maintenance_is_announced_in_the_registry_and_the_device_is_silent_meanwhile() -> None:
    sim = Simulation(SimConfig(seed=7, start=START, hours=24, scale=0.3, incidents=()))
    emissions = [e for _t, batch in sim.ticks() for e in batch]
    windows = {f["device_id"]: (f["start"], f["end"]) for f in sim.fleet.faults if f["fault"] == "maintenance"}
    assert windows
    updates = [e.value for e in emissions if e.contract == "raw.ref.device" and e.value["status"] == "maintenance"]
    assert {u["device_id"] for u in updates} <= set(windows) and updates
    for device, (start, end) in windows.items():
        during = [e for e in emissions if e.value.get("refDevice") == device and e.producer.startswith("gw.")
                  and start < e.value.get("dateObserved", e.value.get("dateObservedTo", "")) < end]
        assert not during, device


def test_a_city_from_an_imported_pack_is_not_published_again_by_the_simulator() -> None:
    """With ``city_from_pack`` the pack is the source of areas, departments, rules and devices."""
    from citybrain.city.pack_import import PACK_CONTRACTS

    def first_tick(**options: object) -> set[str]:
        sim = Simulation(SimConfig(hours=1, scale=0.05, incidents=(), **options))  # type: ignore[arg-type]
        _t, emissions = next(iter(sim.ticks()))
        return {e.contract for e in emissions}

    assert set(PACK_CONTRACTS) <= first_tick()
    from_pack = first_tick(city_from_pack=True)
    assert not set(PACK_CONTRACTS) & from_pack and {"raw.ref.road_segment", "raw.ref.poi"} <= from_pack


def test_any_city_pack_is_simulated_with_its_own_areas_services_and_departments(contracts) -> None:  # type: ignore[no-untyped-def]
    """The example pack 临江市 (examples/citypacks/linjiang): its feeds are valid, name its own places and
    services, never 云州市's, and the incidents its places allow are injected there."""
    import json

    from citybrain.settings import PROJECT_ROOT

    sim = Simulation(SimConfig(seed=5, start=START, hours=12, city_pack=str(PROJECT_ROOT / "examples/citypacks/linjiang")))
    emissions = [e for _t, batch in sim.ticks() for e in batch]
    by_id = {c.id: RecordValidator(c) for c in contracts.values()}
    invalid = Counter(by_id[e.contract](e.value).rule for e in emissions if by_id[e.contract](e.value))
    assert sum(invalid.values()) < 0.01 * len(emissions) and set(invalid) <= {"maximum"}
    streets = {s.code for s in sim.city.streets}
    assert sim.city.name == "临江市" and len(streets) == 6
    tickets = [e.value for e in emissions if e.contract == "raw.hotline.service_request"]
    assert tickets and {t["service_code"] for t in tickets} <= {s.service_code for s in sim.city.services}
    assert all(t["address"] is None or t["address"].startswith("临江市") or t["address"].startswith(("西城区", "中心区", "东港区"))
               for t in tickets if t.get("address"))
    text = json.dumps([e.value for e in emissions], ensure_ascii=False)
    assert "云州" not in text and "yunzhou" not in text.lower()
    assert not any(e.contract == "raw.civil_affairs.elderly_care" for e in emissions)   # 临江市 lists no civil affairs
    placed = {i.kind: i.street_code for i in sim.incidents}
    assert placed["underpass_flood"] == "980101001" and placed["night_construction_noise"] == "980102002"
    city_records = [e.value for e in emissions if e.contract == "raw.ref.city"]
    assert [(c["jurisdiction_id"], c["timezone"]) for c in city_records] == [("linjiang.gov.cn", "Asia/Urumqi")]
    # every district of 临江市 has streets: its records are what they were before districts could stand in for them
    # (but for its routing rule event.water_supply and the remits that name it, 2026-12-07)
    assert digest(emissions) == "e958d71caf736ccae07dedc84627247056ea52ea48b308852b329798c845679f"


def test_an_incident_the_city_cannot_host_is_left_out_and_the_ground_truth_says_why() -> None:
    from citybrain.sim.city import build_city

    city = build_city(7)
    city.pois[:] = [p for p in city.pois if p.category != "underpass"]
    sim = Simulation(SimConfig(hours=2, scale=0.05, start=START), city=city)
    assert sim.incident("underpass_flood") is None
    assert "underpass" in sim.ground_truth("x")["incidents_not_simulated"]["underpass_flood"]


def test_a_pack_citys_day_runs_on_its_own_clock() -> None:
    """临江市 is in Asia/Urumqi (UTC+6): its simulated day starts at its midnight, 18:00 UTC, and the ground truth says so."""
    from citybrain.settings import PROJECT_ROOT

    sim = Simulation(SimConfig(hours=1, scale=0.05, incidents=(), city_pack=str(PROJECT_ROOT / "examples/citypacks/linjiang")))
    assert (sim.start.hour, sim.start.minute) == (18, 0)
    assert sim.ground_truth("x")["timezone"] == "Asia/Urumqi"
    assert Simulation(SimConfig(hours=1, scale=0.05, incidents=())).start.hour == 16      # 云州市: Asia/Shanghai
