"""City events from calls alone (citybrain.fusion.fuse with citybrain.fusion.calls): a burst main gives a water-supply
event with its calls as evidence, a noise rise held for hours at a new site gives a noise event before any inspector
comes, and a short burst, however large, stays a warning; every event category has its routing rule in the simulated
city and the example packs; `citybrain dev evaluate --replay` judges calls at the city's false-alarm rate."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from citybrain.city.catalogue import routing_rules
from citybrain.fusion.fuse import FAMILY_EVENT, Fusion
from citybrain.fusion.signals import Signal
from citybrain.settings import PROJECT_ROOT, get_settings

MONDAY_6PM = datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)     # 18:00 in Asia/Shanghai
STREETS = [f"9901010{k:02d}" for k in range(20)]
HOT = "990101099"
RULES = {str(r["category"]): r for r in routing_rules("2026-01-01") if str(r["rule_id"]).startswith("event.")}


def _call(street: str, at: datetime, n: int, category: str = "noise") -> Signal:
    return Signal("raw.hotline.service_request.v1", f"e{n}", "ticket", category, at, district_code=street[:6],
                  street_code=street, street_name="望江街道" if street == HOT else street, state="received",
                  values={"service_request_id": f"HL{n:08d}", "service_name": category})


def _background(start: datetime, hours: float, per_hour: float, first: int, category: str = "noise") -> list[Signal]:
    """The rest of the city: ``per_hour`` calls of ``category`` an hour, evenly spaced, taking the 20 streets in turn."""
    gap = timedelta(hours=1) / per_hour
    return [_call(STREETS[k % len(STREETS)], start + k * gap, first + k, category)
            for k in range(int(hours * per_hour))]


def _fuse(calls: list[Signal]) -> list[tuple[Signal, str, dict[str, Any]]]:
    fusion = Fusion(route=lambda category: RULES[category])
    fusion.hotspots.population = {s: 1000 for s in [*STREETS, HOT]}
    return [(s, kind, record) for s in sorted(calls, key=lambda s: s.at) for kind, record in fusion.add(s, [], s.at)]


def _events(out: list[tuple[Signal, str, dict[str, Any]]]) -> list[tuple[Signal, dict[str, Any]]]:
    return [(s, r) for s, kind, r in out if kind == "event" and r["street_code"] == HOT]


def _burst(start: datetime, categories: list[str], first: int, minutes: int = 40) -> list[Signal]:
    gap = timedelta(minutes=minutes) / len(categories)
    return [_call(HOT, start + k * gap, first + k, c) for k, c in enumerate(categories)]


BACKGROUND = [*_background(MONDAY_6PM - timedelta(hours=6), 12, 3, 0, "water_leak"),
              *_background(MONDAY_6PM - timedelta(hours=6), 12, 2, 100, "water_outage"),
              *_background(MONDAY_6PM - timedelta(hours=6), 12, 1, 200, "waterlogging")]


def test_a_burst_main_gives_one_water_supply_event_with_its_calls_routed_by_event_water_supply() -> None:
    """17 calls in 40 minutes in one street: no water, a leak, a flooded road (the issue's water-main burst). Its five
    flooded-road calls made a flood event of their own as well, which sent the water department a second time."""
    burst = _burst(MONDAY_6PM, ["water_leak", "water_outage", "waterlogging"] * 5 + ["water_leak", "water_outage"], 1000)
    events = _events(_fuse(BACKGROUND + burst))
    assert events, "no water-supply event"
    assert {e["category"] for _s, e in events} == {"water_supply"}      # the flooded road is the main's: no flood event
    opened_at, first = events[0]
    assert first["status"] == "open" and first["department"] == "water" and first["co_departments"] == ["transport"]
    assert first["title"] == "望江街道供水管网异常" and first["priority"] == "urgent"
    assert burst.index(opened_at) <= 8, opened_at                       # at the ninth call, 19 minutes in
    last = events[-1][1]
    ids = {c.values["service_request_id"] for c in burst}
    assert set(last["evidence"]["tickets"]) <= ids and len(last["evidence"]["tickets"]) >= 10
    assert {c.category for c in burst if c.values["service_request_id"] in last["evidence"]["tickets"]} == \
        {"water_leak", "water_outage", "waterlogging"}                  # the flooded road's calls joined it
    assert {e["event_id"] for _s, e in events} == {first["event_id"]}    # one event, updated


def test_one_symptom_however_many_callers_is_a_warning_and_no_water_supply_event() -> None:
    """A building's leak reported by 17 neighbours in 40 minutes is beyond chance but one symptom: the call is routed
    as a ticket and warned of, and no city event sends the water company out a second time."""
    burst = _burst(MONDAY_6PM, ["water_leak"] * 17, 1000)
    out = _fuse(BACKGROUND + burst)
    assert [r["category"] for _s, kind, r in out if kind == "warning" and r.get("street_code") == HOT] == ["water_leak"]
    assert _events(out) == []


def test_a_street_calling_leaks_and_no_water_at_the_citys_usual_rate_all_day_opens_no_event() -> None:
    """Both symptoms every day in every street: the street under test calls each at the rate of the others (one leak
    and one no-water call every two hours or so, at the same times), and no water-supply event opens."""
    usual = [_call(HOT, MONDAY_6PM - timedelta(hours=6) + timedelta(minutes=k * 130), 5000 + 2 * k + j, c)
             for k in range(11) for j, c in enumerate(("water_leak", "water_outage"))]
    out = _fuse(BACKGROUND + usual)
    assert [r for _s, kind, r in out if kind == "event"] == []


NOISE_BACKGROUND = _background(MONDAY_6PM - timedelta(hours=6), 22, 2, 0)


def test_a_noise_rise_held_for_hours_at_a_new_site_opens_a_noise_event_from_calls_alone() -> None:
    """27 calls over 10.5 hours and no gauge or inspector there: a noise event once the excess has held in three
    80-minute pieces in a row (hours, not the first calls), with the calls as evidence and the held excess in its explanation."""
    gap = timedelta(hours=10.5) / 26
    trend = [_call(HOT, MONDAY_6PM + k * gap, 1000 + k) for k in range(27)]
    events = _events(_fuse(NOISE_BACKGROUND + trend))
    assert events and events[0][1]["category"] == "noise_disturbance" and events[0][1]["status"] == "open"
    opened_at = events[0][0]
    assert timedelta(hours=2, minutes=40) <= opened_at.at - trend[0].at < timedelta(hours=5), opened_at.at
    assert events[0][1]["department"] == "urban_management"
    assert "an excess held" in events[0][1]["explanation"]
    assert events[0][1]["evidence"]["tickets"][0] == trend[0].values["service_request_id"]


@pytest.mark.parametrize("after", [timedelta(0), timedelta(minutes=70), timedelta(minutes=100),
                                   timedelta(minutes=150), timedelta(hours=3)])
def test_a_short_burst_however_large_opens_no_event_even_with_a_call_after_it(after: timedelta) -> None:
    """17 noise calls in 40 minutes and one more call ``after`` it: the CUSUM remembers the burst for hours and two
    halves of four hours would each hold part of it, but no 80-minute piece of the three is free of an excess only
    if the calls go on; a warning, no event (a noise event needs gauges, an inspector or an excess held)."""
    burst = _burst(MONDAY_6PM, ["noise"] * 17, 1000)
    stray = [_call(HOT, burst[-1].at + after, 2000)] if after else []
    out = _fuse(NOISE_BACKGROUND + burst + stray)
    assert [r["kind"] for _s, kind, r in out if kind == "warning" and r.get("street_code") == HOT] == ["trending_hotspot"]
    assert _events(out) == []


def test_a_burst_that_goes_on_for_hours_opens_the_event_a_short_one_does_not() -> None:
    """The same 17-call burst, then a call every 20 minutes for three hours: the excess held, an event."""
    burst = _burst(MONDAY_6PM, ["noise"] * 17, 1000)
    more = [_call(HOT, burst[-1].at + timedelta(minutes=20) * (k + 1), 2000 + k) for k in range(9)]
    events = _events(_fuse(NOISE_BACKGROUND + burst + more))
    assert events and events[0][0] in more


@pytest.mark.parametrize("category", sorted(set(FAMILY_EVENT.values())))
def test_every_event_category_fusion_raises_has_a_rule_in_the_simulated_city_and_each_example_pack(category: str) -> None:
    """A city event without its ``event.<category>`` rule is dead-lettered: the simulated city's catalogue and every
    example pack route each category fusion raises, to departments the pack declares."""
    assert category in RULES
    for pack in sorted((PROJECT_ROOT / "examples" / "citypacks").iterdir()):
        if not pack.is_dir():
            continue
        rules = [json.loads(line) for line in (pack / "routing.jsonl").read_text().splitlines() if line.strip()]
        rule = next((r for r in rules if r["rule_id"] == f"event.{category}"), None)
        assert rule is not None and rule["category"] == category, (pack.name, category)
        departments = {json.loads(line)["department_id"] for line in (pack / "departments.jsonl").read_text().splitlines()
                       if line.strip()}
        assert {rule["department"], *rule.get("co_departments", [])} <= departments, (pack.name, rule)


def test_evaluate_replay_judges_calls_at_the_citys_false_alarm_rate(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`citybrain dev evaluate --replay` recomputed the day at the default rate whatever the city set: a city that
    asks for more warnings (1 in 11 calls) gets them in its replay too, each naming that rate."""
    from citybrain.cli import app
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import SimConfig

    sim = Simulation(SimConfig(seed=7, start=datetime(2026, 11, 22, 16, tzinfo=timezone.utc), hours=8, scale=0.25,
                               incidents=("complaint_hotspot",)))
    truth = tmp_path / "ground_truth.json"
    truth.write_text(json.dumps(sim.ground_truth("rate-test")))
    monkeypatch.setenv("CITYBRAIN_STATE_DIR", str(tmp_path / "state"))
    scores = {}
    for rate in ("0.0002", "0.09"):
        monkeypatch.setenv("CITYBRAIN_CALL_FALSE_ALARM_RATE", rate)
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["dev", "evaluate", "--replay", "--ground-truth", str(truth), "--json"])
        assert result.exit_code in (0, 1), result.output
        scores[rate] = json.loads(result.stdout)
    get_settings.cache_clear()
    assert "false-alarm rate 0.09 " in scores["0.09"]["source"] and "0.0002" in scores["0.0002"]["source"]
    assert scores["0.09"]["warnings"] > scores["0.0002"]["warnings"], scores
