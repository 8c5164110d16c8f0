"""SLA clocks in the city's working time (工作日): deadlines counted only in working hours, on the city's own
clock, holidays skipped, make-up working days (调休) counted, across a DST change; and the manifest's block
refused with its field and fix when the clock cannot count with it."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citybrain.city.working_time import WorkingHoursError, WorkingTime, deadline, working_hours_problems

SHANGHAI, LOS_ANGELES = ZoneInfo("Asia/Shanghai"), ZoneInfo("America/Los_Angeles")
WEEK = ["mon", "tue", "wed", "thu", "fri"]
#: National Day 2026 as the State Council's holiday notice gives it: 1-7 October off, Sunday 20 September and
#: Saturday 10 October make-up working days (调休).
NATIONAL_DAY = {"days": WEEK, "start": "09:00", "end": "18:00",
                "holidays": [f"2026-10-0{d}" for d in range(1, 8)], "workdays": ["2026-09-20", "2026-10-10"]}
CHINA = WorkingTime.from_block(NATIONAL_DAY, SHANGHAI)
LA = WorkingTime.from_block({"days": WEEK, "start": "08:00", "end": "17:00"}, LOS_ANGELES)


def _sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


def test_a_ticket_received_on_friday_afternoon_is_due_on_monday() -> None:
    # Friday 27 November 2026, 16:00 in Shanghai (08:00 UTC): two hours on Friday, six on Monday.
    due = CHINA.add(_sh(2026, 11, 27, 16, 0), 8)
    assert due == _sh(2026, 11, 30, 15, 0) and due.tzinfo == timezone.utc
    assert CHINA.between(_sh(2026, 11, 27, 16, 0), due) == timedelta(hours=8)


def test_a_ticket_received_at_night_starts_counting_at_the_next_opening() -> None:
    assert CHINA.add(_sh(2026, 11, 24, 22, 30), 1) == _sh(2026, 11, 25, 10, 0)
    assert CHINA.add(_sh(2026, 11, 24, 6, 0), 1) == _sh(2026, 11, 24, 10, 0)


def test_a_deadline_on_the_closing_stays_on_that_day() -> None:
    """Exactly a working day's hours from an opening end at that day's closing, not at the next opening."""
    assert CHINA.add(_sh(2026, 11, 24, 9, 0), 9) == _sh(2026, 11, 24, 18, 0)


def test_three_working_days_skip_the_national_day_holidays_and_count_the_make_up_saturday() -> None:
    # Wednesday 30 September 17:00: one hour that day, then 1-7 October off, Thursday 8 and Friday 9 October,
    # and Saturday 10 October, a make-up working day (调休).
    due = CHINA.add(_sh(2026, 9, 30, 17, 0), 27)
    assert due == _sh(2026, 10, 10, 17, 0)
    without_make_up = WorkingTime.from_block({**NATIONAL_DAY, "workdays": []}, SHANGHAI)
    assert without_make_up.add(_sh(2026, 9, 30, 17, 0), 27) == _sh(2026, 10, 12, 17, 0)
    assert CHINA.works_on(date(2026, 9, 20)) and not CHINA.works_on(date(2026, 10, 5))
    assert CHINA.between(_sh(2026, 10, 1, 0, 0), _sh(2026, 10, 8, 0, 0)) == timedelta()


def test_working_hours_are_read_on_the_citys_clock_across_the_dst_change() -> None:
    """Los Angeles springs forward on Sunday 8 March 2026: Friday's window is 16:00-01:00 UTC, Monday's 15:00-00:00."""
    friday = datetime(2026, 3, 6, 16, 0, tzinfo=LOS_ANGELES)            # 00:00 UTC on Saturday
    due = LA.add(friday, 2)
    assert due == datetime(2026, 3, 9, 9, 0, tzinfo=LOS_ANGELES)        # one hour Friday, one Monday
    assert due.isoformat() == "2026-03-09T16:00:00+00:00"               # PDT: UTC-7, where Friday was UTC-8
    assert LA.between(friday, due) == timedelta(hours=2)
    autumn = datetime(2026, 10, 30, 16, 30, tzinfo=LOS_ANGELES)         # falls back on Sunday 1 November
    assert LA.add(autumn, 1) == datetime(2026, 11, 2, 8, 30, tzinfo=LOS_ANGELES)
    assert LA.add(autumn, 1).isoformat() == "2026-11-02T16:30:00+00:00"


def test_the_calendar_clock_stays_the_default() -> None:
    at = _sh(2026, 11, 27, 16, 0)
    assert deadline({"sla_hours": 8}, at, 8, CHINA) == at + timedelta(hours=8)
    assert deadline({"sla_clock": "calendar"}, at, 8, CHINA) == at + timedelta(hours=8)
    assert deadline({"sla_clock": "working"}, at, 8, CHINA) == _sh(2026, 11, 30, 15, 0)
    assert deadline({"sla_clock": "working"}, at, 8, None) == at + timedelta(hours=8)   # the city declared none


@settings(max_examples=300, deadline=None)
@given(start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31),
                          timezones=st.sampled_from([SHANGHAI, LOS_ANGELES, timezone.utc])),
       minutes=st.integers(min_value=0, max_value=60 * 24 * 30), city=st.sampled_from([CHINA, LA]))
def test_a_deadline_is_the_sla_in_working_time_after_the_start(start: datetime, minutes: int, city: WorkingTime) -> None:
    due = city.add(start, minutes / 60)
    assert due >= start
    assert city.between(start, due) == timedelta(minutes=minutes)
    if minutes:   # and not a moment later: the deadline itself lies in working time
        local = due.astimezone(city.zone)
        assert city.works_on(local.date()) and city.start < local.time() <= city.end


@pytest.mark.parametrize(("block", "field", "fix"), [
    ({"days": WEEK, "start": "9:00", "end": "18:00"}, "working_hours/start", '"09:00"'),
    ({"days": WEEK, "start": "09:00", "end": "24:00"}, "working_hours/end", '"09:00"'),
    ({"days": WEEK, "start": "18:00", "end": "09:00"}, "working_hours/end", "end later than the start"),
    ({"days": WEEK, "start": "09:00", "end": "09:00"}, "working_hours/end", "end later than the start"),
    ({"days": ["mon", "funday"], "start": "09:00", "end": "18:00"}, "working_hours/days/1", "'sun'"),
    ({"days": ["Monday"], "start": "09:00", "end": "18:00"}, "working_hours/days/0", "'mon'"),
    ({"days": [], "start": "09:00", "end": "18:00"}, "working_hours/days", "list day names"),
    ({"days": ["mon", "mon"], "start": "09:00", "end": "18:00"}, "working_hours/days", "once"),
    ({"days": WEEK, "start": "09:00", "end": "18:00", "holidays": ["2026-02-30"]}, "working_hours/holidays/0",
     "2026-10-01"),
    ({"days": WEEK, "start": "09:00", "end": "18:00", "holidays": ["2026-10-10"], "workdays": ["2026-10-10"]},
     "working_hours/workdays", "one list"),
    ({"days": WEEK, "start": "09:00", "end": "18:00", "lunch": "12:00"}, "working_hours/lunch", "remove it"),
])
def test_a_block_the_clock_cannot_count_with_is_refused_naming_its_field_and_fix(
        block: dict[str, object], field: str, fix: str) -> None:
    problems = working_hours_problems(block)
    assert [p[0] for p in problems] == [field]
    assert fix in problems[0][2]
    with pytest.raises(WorkingHoursError, match=f"^{field}: .* Fix: "):
        WorkingTime.from_block(block, SHANGHAI)


def test_a_sound_block_has_no_problems() -> None:
    assert working_hours_problems(NATIONAL_DAY) == []
    assert working_hours_problems("09:00-18:00")[0][0] == "working_hours"


# -- the clock at work: the city's record, dispatch, city events, the pack's check ----------------------------

def _city_record(**extra: object) -> dict[str, object]:
    return {"city_code": "9901", "name": "云州市", "jurisdiction_id": "yunzhou.gov.cn", "timezone": "Asia/Shanghai",
            "pack_version": "1.0.0", "updated_at": "2026-11-22T00:00:00Z", **extra}


def _garbage_rule(**extra: object) -> dict[str, object]:
    return {"rule_id": "garbage.collection", "category": "garbage", "service_code": "garbage.collection",
            "department": "urban_management", "sla_hours": 10, "priority": "normal",
            "effective_from": "2026-11-22T00:00:00Z", **extra}


def test_a_rule_on_the_working_clock_gives_its_work_orders_a_deadline_in_the_citys_working_hours(contracts) -> None:  # type: ignore[no-untyped-def]
    """T0 is Sunday 22 November 2026, 10:00 in Shanghai: ten working hours run Monday 09:00-18:00 and Tuesday
    09:00-10:00; the same rule on the calendar clock is due ten hours later, and a city record without working hours
    leaves every rule on the calendar."""
    from citybrain.contracts.validate import RecordValidator
    from tests.unit.test_fusion import T0, _garbage_request, _pipeline

    city = _city_record(working_hours=NATIONAL_DAY)
    working = _garbage_rule(sla_clock="working")
    assert RecordValidator(contracts["raw.ref.city.v1"])(city) is None
    assert RecordValidator(contracts["raw.ref.routing_rule.v1"])(working) is None
    p = _pipeline()
    p.feed("raw.ref.city.v1", city, "ref")
    p.feed("raw.ref.routing_rule.v1", working, "ref")
    [order] = [r for t, r in p.feed("raw.hotline.service_request.v1", _garbage_request("HL20261122990101", T0), "w1", T0)
               if t.startswith("dispatch.")]
    assert (order["sla_hours"], order["sla_deadline"], order["sla_clock"]) == (10, "2026-11-24T02:00:00Z", "working")
    assert RecordValidator(contracts["dispatch.urban_management.work_order.v1"])(order) is None
    p.feed("raw.ref.routing_rule.v1", _garbage_rule(), "ref")
    [order] = [r for t, r in p.feed("raw.hotline.service_request.v1", _garbage_request("HL20261122990102", T0), "w2", T0)
               if t.startswith("dispatch.")]
    assert order["sla_deadline"] == "2026-11-22T12:00:00Z" and "sla_clock" not in order   # absent: the calendar


def test_a_working_rule_in_a_city_without_working_hours_runs_on_the_calendar_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    from tests.unit.test_fusion import T0, _garbage_request, _pipeline

    p = _pipeline()
    p.feed("raw.ref.city.v1", _city_record(working_hours={**NATIONAL_DAY, "end": "08:00"}), "ref")
    assert p.dispatcher.working is None and "working_hours/end" in caplog.text       # refused, named
    p.feed("raw.ref.routing_rule.v1", _garbage_rule(sla_clock="working"), "ref")
    for n in (1, 2):
        [order] = [r for t, r in p.feed("raw.hotline.service_request.v1", _garbage_request(f"HL2026112299020{n}", T0),
                                        f"c{n}", T0) if t.startswith("dispatch.")]
        assert order["sla_deadline"] == "2026-11-22T12:00:00Z" and "sla_clock" not in order
    assert caplog.text.count("counts its SLA in working time") == 1
    p.feed("raw.ref.city.v1", _city_record(working_hours=NATIONAL_DAY), "ref")
    assert p.dispatcher.working == CHINA
    p.feed("raw.ref.city.v1", _city_record(), "ref")                               # withdrawn: the calendar again
    assert p.dispatcher.working is None


def test_a_city_events_deadline_and_its_work_orders_follow_the_rules_clock() -> None:
    """A flood on Sunday morning under a half-hour rule on the working clock is due on Monday at 09:30."""
    from tests.unit.test_fusion import CITY, T0, _flood, _pipeline

    p = _pipeline()
    p.feed("raw.ref.city.v1", _city_record(working_hours=NATIONAL_DAY), "ref")
    p.feed("raw.ref.routing_rule.v1", {"rule_id": "event.flood", "category": "flood", "department": "water",
                                       "sla_hours": 0.5, "priority": "urgent", "sla_clock": "working",
                                       "effective_from": "2026-11-22T00:00:00Z"}, "ref")
    gauge = next(d.device_id for d in CITY.devices if d.site_type == "underpass")
    out = _flood(p, gauge, T0)
    [event] = [r for t, r in out if t == "city.event.incident.v1"][:1]
    assert event["sla_deadline"] == "2026-11-23T01:30:00Z"
    assert {(r["sla_deadline"], r["sla_clock"]) for t, r in out if t.startswith("dispatch.")} == \
        {("2026-11-23T01:30:00Z", "working")}


def test_a_territorial_order_on_the_working_clock_says_so(contracts) -> None:  # type: ignore[no-untyped-def]
    """An escalating rule on the working clock: the street office's order carries sla_clock working, valid on
    dispatch.territorial.work_order 1.2.0."""
    from citybrain.contracts.validate import RecordValidator
    from citybrain.times import iso
    from tests.unit.test_fusion import CITY, T0, _garbage_request, _pipeline

    p = _pipeline()
    p.feed("raw.ref.city.v1", _city_record(working_hours=NATIONAL_DAY), "ref")
    p.feed("raw.ref.routing_rule.v1", _garbage_rule(sla_clock="working", escalation=["street", "department"]), "ref")
    at = T0 + timedelta(minutes=8)
    out = p.feed("raw.hotline.service_request.v1", _garbage_request(
        "HL20261122990301", T0, "dispatched", updated_datetime=iso(at), escalation_level="street",
        assigned_area_code=CITY.streets[0].code), "t1", at)
    [order] = [r for t, r in out if t == "dispatch.territorial.work_order.v1"]
    assert order["sla_clock"] == "working"
    assert RecordValidator(contracts["dispatch.territorial.work_order.v1"])(order) is None


# -- the "about to breach" warning at 80% of the working time --------------------------------------------------

#: Friday 27 November 2026, 17:00 in Shanghai: eight working hours (09:00-18:00) are one on Friday and seven on
#: Monday, due Monday 16:00; 80% of them (6.4 h) is Monday 14:24, while 80% of the 71 calendar hours to the
#: deadline would be Monday 01:48, hours before anyone could act on the warning.
FRIDAY_5PM = _sh(2026, 11, 27, 17, 0)
DUE = CHINA.add(FRIDAY_5PM, 8)


def _dispatched(rid: str, department: str = "urban_management") -> dict[str, object]:
    from citybrain.times import iso

    return {"event_id": f"{rid}:dispatched:1", "service_request_id": rid, "event_type": "dispatched",
            "occurred_at": iso(FRIDAY_5PM), "department": department, "assigned_department": department,
            "level": "department", "sla_deadline": iso(DUE)}


def _warned(alerts: list[dict[str, object]]) -> list[object]:
    return [a["service_request_id"] for a in alerts if a["kind"] == "about_to_breach"]


def test_a_working_clock_ticket_is_warned_at_80_percent_of_the_working_time_not_in_the_night_before() -> None:
    from citybrain.fusion.dispatch import SlaTracker

    assert DUE == _sh(2026, 11, 30, 16, 0)
    sla = SlaTracker()
    sla.event(_dispatched("HL20261127000501"), CHINA)
    sla.event(_dispatched("HL20261127000502"))                       # the same deadline, counted on the calendar
    assert _warned(sla.alerts(_sh(2026, 11, 30, 1, 47))) == []
    assert _warned(sla.alerts(_sh(2026, 11, 30, 1, 48))) == ["HL20261127000502"]   # Monday 01:48 on the calendar
    assert _warned(sla.alerts(_sh(2026, 11, 30, 14, 23))) == []
    assert _warned(sla.alerts(_sh(2026, 11, 30, 14, 24))) == ["HL20261127000501"]
    assert [a["kind"] for a in sla.alerts(_sh(2026, 11, 30, 16, 1))] == ["breached", "breached"]


def test_the_pipeline_warns_a_ticket_on_its_rules_clock() -> None:
    """Ticket events do not name their clock: the rule the pipeline routed the request by does; a ticket whose
    request it did not see (its lifecycle fused apart) takes the clock its department's rules agree on."""
    from citybrain.access.privacy import Protector
    from citybrain.contracts.model import load_all
    from citybrain.fusion.pipeline import Pipeline
    from citybrain.settings import PROJECT_ROOT
    from tests.unit.test_fusion import _garbage_request, _pipeline

    p = _pipeline()
    p.feed("raw.ref.city.v1", _city_record(working_hours=NATIONAL_DAY), "ref")
    p.feed("raw.ref.routing_rule.v1", _garbage_rule(sla_clock="working"), "ref")
    p.feed("raw.hotline.service_request.v1", _garbage_request("HL20261127000601", FRIDAY_5PM), "r1", FRIDAY_5PM)
    p.feed("raw.hotline.ticket_event.v1", _dispatched("HL20261127000601"), "e1", FRIDAY_5PM)
    p.feed("raw.hotline.ticket_event.v1", _dispatched("HL20261127000602"), "e2", FRIDAY_5PM)  # request unseen
    assert _warned(p.sla.alerts(_sh(2026, 11, 30, 2, 0))) == ["HL20261127000602"]  # its department's rules disagree
    assert _warned(p.sla.alerts(_sh(2026, 11, 30, 14, 24))) == ["HL20261127000601"]

    lifecycle = Pipeline(load_all(PROJECT_ROOT / "schemas"), Protector.ephemeral())   # a ticket-lifecycle share
    lifecycle.feed("raw.ref.city.v1", _city_record(working_hours=NATIONAL_DAY), "ref")
    lifecycle.feed("raw.ref.routing_rule.v1", _garbage_rule(sla_clock="working"), "ref")
    lifecycle.feed("raw.hotline.ticket_event.v1", _dispatched("HL20261127000603"), "e3", FRIDAY_5PM)
    lifecycle.feed("raw.hotline.ticket_event.v1", _dispatched("HL20261127000604", "water"), "e4", FRIDAY_5PM)
    assert _warned(lifecycle.sla.alerts(_sh(2026, 11, 30, 2, 0))) == ["HL20261127000604"]   # no water rule
    assert _warned(lifecycle.sla.alerts(_sh(2026, 11, 30, 14, 24))) == ["HL20261127000603"]


def test_the_packs_working_hours_reach_the_city_record_export_back_and_are_checked(tmp_path, contracts) -> None:  # type: ignore[no-untyped-def]
    from citybrain.city.pack_check import check_pack
    from citybrain.city.pack_export import pack_of_records
    from citybrain.city.pack_import import contract_problems, reference_records
    from tests.unit.test_city_pack import small_city

    pack = small_city()
    pack.manifest["working_hours"] = NATIONAL_DAY
    pack.routing[0]["sla_clock"] = "working"
    pack.services[0]["sla_clock"] = "working"
    pack.write(tmp_path / "ok")
    assert check_pack(tmp_path / "ok")[1] == [] and contract_problems(pack, contracts) == []
    records = reference_records(pack, "2026-12-01T00:00:00Z")
    assert records["raw.ref.city.v1"][0][1]["working_hours"] == NATIONAL_DAY
    assert records["raw.ref.service.v1"][0][1]["sla_clock"] == "working"
    exported = pack_of_records(lambda topic: [r for _w, r in records[topic]])
    assert exported.manifest == pack.manifest
    assert {s["service_code"]: s.get("sla_clock") for s in exported.services} == \
        {s["service_code"]: s.get("sla_clock") for s in pack.services}
    assert "working_hours" not in reference_records(small_city(), "2026-12-01T00:00:00Z")["raw.ref.city.v1"][0][1]

    pack.manifest["working_hours"] = {**NATIONAL_DAY, "start": "18:00", "end": "09:00", "days": ["mon", "funday"]}
    pack.write(tmp_path / "bad")
    problems = [str(p) for p in check_pack(tmp_path / "bad")[1]]
    assert len(problems) == 2 and all(p.startswith("manifest.json: [working-hours] working_hours/") for p in problems)
    assert "working_hours/days/1: 'funday' is not a day name" in problems[0] and "Fix: Use one of" in problems[0]
    assert "working_hours/end: 09:00 is not after start 18:00" in problems[1]

    del pack.manifest["working_hours"]
    pack.routing[1]["sla_clock"] = "business"
    pack.write(tmp_path / "none")
    found = {(p.file, p.where, p.rule) for p in check_pack(tmp_path / "none")[1]}
    assert found == {("routing.jsonl", "line 1", "no-working-hours"), ("routing.jsonl", "line 2", "enum"),
                     ("services.jsonl", "line 1", "no-working-hours")}


def test_a_pack_city_on_the_working_clock_is_simulated_with_its_hotlines_deadlines_in_working_hours(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """临江市 with working hours and its rules on the working clock: the simulated hotline system's deadlines (each
    level's, and the caller's promise) count working hours, as the fusion worker's orders do."""
    import shutil

    from citybrain.city.routing import level_hours
    from citybrain.settings import PROJECT_ROOT
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import SimConfig
    from citybrain.times import parse_time

    pack = tmp_path / "linjiang"
    shutil.copytree(PROJECT_ROOT / "examples" / "citypacks" / "linjiang", pack)
    manifest = json.loads((pack / "manifest.json").read_text())
    manifest["working_hours"] = {"days": WEEK, "start": "09:30", "end": "18:00"}
    (pack / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))
    rules = [json.loads(line) for line in (pack / "routing.jsonl").read_text().splitlines()]
    (pack / "routing.jsonl").write_text("".join(json.dumps({**r, "sla_clock": "working"}, ensure_ascii=False) + "\n"
                                                for r in rules))
    sim = Simulation(SimConfig(seed=5, start=datetime(2026, 11, 27, 0, 0, tzinfo=timezone.utc), hours=24, scale=0.2,
                               incidents=(), city_pack=str(pack)))
    working = sim.city.working
    assert working is not None and working.zone == ZoneInfo("Asia/Urumqi")
    emitted = [e for _t, batch in sim.ticks() for e in batch]
    service_of = {e.value["service_request_id"]: e.value["service_code"] for e in emitted
                  if e.contract == "raw.hotline.service_request"}
    held = [e.value for e in emitted
            if e.contract == "raw.hotline.ticket_event" and e.value["event_type"] in ("dispatched", "escalated")]
    assert len(held) > 10
    by_service = {r["service_code"]: r for r in rules if "service_code" in r}
    longer = 0
    for e in held:
        at, due = parse_time(e["occurred_at"]), parse_time(e["sla_deadline"])
        rule = by_service[service_of[e["service_request_id"]]]
        hours = {level_hours(rule, e["level"]), float(rule["sla_hours"])}     # the level's share, or the whole SLA
        assert working.between(at, due) in {timedelta(hours=h) for h in hours}, (e, hours)
        longer += due - at > working.between(at, due)                         # nights and the weekend skipped
    assert longer > len(held) / 2
