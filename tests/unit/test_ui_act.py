"""督办 and 吹哨 from the operations view: who may raise which, on what, summoning whom, by which deadlines, and
what reaches the action topics, the summoned departments' pages and the view's audit trail."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from citybrain.city.reporting import Reporting, ReportingError, office_hours
from citybrain.city.working_time import WorkingTime
from citybrain.contracts.validate import RecordValidator
from citybrain.ui import act
from citybrain.ui.server import OperationsView
from tests.unit.test_ui import _trail, _write, platform  # noqa: F401 (the fixture)
from tests.unit.test_ui_orders import TICKET, lake  # noqa: F401 (the fixture)

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Friday 2026-12-04 15:00 in Shanghai.
FRIDAY = datetime(2026, 12, 4, 7, 0, tzinfo=timezone.utc)
DEPARTMENTS = ("water", "police", "urban_management", "hotline_12345", "data_bureau")


@pytest.fixture()
def city(platform, lake: Path) -> Path:  # type: ignore[no-untyped-def]  # noqa: F811
    """The orders' lake with the city's departments and its record (Shanghai, office hours, a declared reporting
    block), and a territorial order: the street office holds ticket HL-street-1."""
    _write(lake, "bronze", "raw.ref.department.v1", [
        {"department_id": d, "name": d, "name_en": d, "updated_at": "2026-12-01T00:00:00Z"} for d in DEPARTMENTS])
    _write(lake, "bronze", "raw.ref.city.v1", [
        {"city_code": "9901", "name": "云中市", "jurisdiction_id": "yunzhong.example", "timezone": "Asia/Shanghai",
         "pack_version": "2026.12.1", "updated_at": "2026-12-01T00:00:00Z",
         "working_hours": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:30"},
         "reporting": {"sign_hours": 2, "report_working_days": {"complex": 4}}}])
    _write(lake, "silver", "dispatch.territorial.work_order.v1", [
        {"work_order_id": "WO-HL-street-1-street", "level": "street", "area_code": "990101001", "department": "water",
         "role": "lead", "source": "ticket", "source_id": "HL-street-1", "category": "water_leak",
         "title": "路面渗水", "priority": "normal", "street_code": "990101001", "district_code": "990101",
         "received_at": "2025-11-22T00:10:00Z", "assigned_at": "2025-11-22T00:12:00Z",
         "sla_deadline": "2025-11-22T02:12:00Z", "sla_hours": 2, "rule_id": "svc.water_leak"}])
    return lake


def _post(client: TestClient, kind: str, **body: Any) -> Any:
    return client.post(f"/api/{kind}", json=body)


#: The test's people (tests/unit/test_ui.py's, and a street office's duty officer at the hotline's department).
PERSON = {"dept-water": "duty.water", "dept-police": "duty.police", "dept-data_bureau": "office.data",
          "dept-hotline_12345": "duty.hotline_12345"}


def _login(client: TestClient, people: Any, principal: str) -> Any:
    return client.post("/api/login", json=people.body(PERSON[principal]))


@pytest.fixture()
def street_office(platform) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A duty officer of the area offices (the hotline's department), who may whistle."""
    from citybrain.access.accounts import DEPARTMENT, AccountStore

    settings, model, people, _contracts = platform
    name = "duty.hotline_12345"
    people.passwords[name] = "duty.hotline_12345-password"
    people.secrets[name] = AccountStore(settings.access_dir).add(
        name, DEPARTMENT, "hotline_12345", people.passwords[name], model.departments.values()).totp_secret


def test_report_deadline_counts_working_days_over_a_weekend_holiday_and_make_up_day() -> None:
    """Raised on a Friday afternoon, 3 working days run Monday to Wednesday; a Monday holiday pushes it to Thursday,
    a Saturday make-up working day pulls it back to Tuesday. Sign and contact run on the calendar."""
    week = WorkingTime.from_block({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"},
                                  SHANGHAI)
    due = Reporting().deadlines(FRIDAY, "simple", week)
    assert due["sign"] == datetime(2026, 12, 4, 8, 0, tzinfo=timezone.utc)
    assert due["contact"] == datetime(2026, 12, 5, 7, 0, tzinfo=timezone.utc)   # a Saturday: the calendar's
    assert due["report"] == datetime(2026, 12, 9, 10, 0, tzinfo=timezone.utc)   # Wednesday 18:00 in Shanghai
    holiday = WorkingTime.from_block({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00",
                                      "holidays": ["2026-12-07"]}, SHANGHAI)
    assert Reporting().deadlines(FRIDAY, "simple", holiday)["report"] == datetime(2026, 12, 10, 10, 0, tzinfo=timezone.utc)
    make_up = WorkingTime.from_block({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00",
                                      "workdays": ["2026-12-05"]}, SHANGHAI)
    assert Reporting().deadlines(FRIDAY, "simple", make_up)["report"] == datetime(2026, 12, 8, 10, 0, tzinfo=timezone.utc)
    # complex: 5 working days, the next Friday; a city without working hours works Monday to Friday 09:00-18:00
    assert Reporting().deadlines(FRIDAY, "complex", office_hours(SHANGHAI))["report"] == \
        datetime(2026, 12, 11, 10, 0, tzinfo=timezone.utc)


def test_the_city_declares_its_reporting_deadlines_and_a_bad_one_is_named() -> None:
    declared = Reporting.from_city({"reporting": {"sign_hours": 2, "report_working_days": {"complex": 4}}})
    assert (declared.sign_hours, declared.contact_hours, declared.days("simple"), declared.days("complex")) == (2, 24, 3, 4)
    assert Reporting.from_city(None) == Reporting()
    with pytest.raises(ReportingError, match="reporting/sign_hours is 0"):
        Reporting.from_city({"reporting": {"sign_hours": 0}})
    with pytest.raises(ReportingError, match="complexity 'urgent'"):
        Reporting().days("urgent")


def test_who_may_act_the_data_office_urges_and_whistles_a_street_office_whistles_a_department_neither(
        platform) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from citybrain.ui.auth import Viewer

    office = Viewer("dept-data_bureau", "data_bureau", True, frozenset())
    street = Viewer("dept-hotline_12345", "hotline_12345", False, frozenset())
    water = Viewer("dept-water", "water", False, frozenset())
    assert act.may(office, "urge") and act.may(office, "whistle")
    assert act.may(street, "whistle") and not act.may(street, "urge")
    assert not act.may(water, "urge") and not act.may(water, "whistle")


@pytest.mark.parametrize("body, field", [
    ({"target_id": "WO-HL1-police", "departments": ["police"], "reason": "x"}, "reason"),
    ({"target_id": "WO-HL1-police", "departments": [], "reason": "超期未签收"}, "departments"),
    ({"target_id": "WO-HL1-police", "departments": ["Police!"], "reason": "超期未签收"}, "departments/0"),
    ({"target_id": "WO-HL1-police", "departments": ["police", "police"], "reason": "超期未签收"}, "departments"),
    ({"target_id": "WO-HL1-police", "departments": ["police"], "reason": "超期未签收", "complexity": "urgent"}, "complexity"),
    ({"target_type": "ticket", "target_id": "HL1", "departments": ["police"], "reason": "超期未签收"}, "target_type"),
    ({"target_id": "WO-HL1-police", "departments": ["police"], "reason": "超期未签收", "caller": "x"}, "caller"),
    ({"target_id": "WO-HL1-police", "departments": ["fire_brigade"], "reason": "超期未签收"}, "departments/0"),
    ({"target_id": "WO-HL1-police", "departments": ["hotline_12345"], "reason": "超期未签收"}, "departments/0"),
])
def test_an_action_the_view_cannot_take_is_refused_naming_the_field_rule_and_fix(
        platform, city: Path, body: dict[str, Any], field: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Each body breaks one rule; an unknown department (fire_brigade) and the hotline (it dispatches, it is not
    summoned) are refused like a malformed one."""
    from citybrain.ui.auth import Viewer

    office = Viewer("dept-data_bureau", "data_bureau", True, frozenset())
    with pytest.raises(act.Problem) as refused:
        act.action(city, office, "urge", body, FRIDAY)
    assert refused.value.field == field and refused.value.rule and refused.value.fix


def test_urge_and_whistle_through_the_view_reach_the_topics_the_summoned_departments_and_the_audit_trail(
        platform, city: Path, street_office: None) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    settings, model, store, contracts = platform
    settings = settings.model_copy(update={"ui_cache_s": 0.0})
    sent: list[tuple[str, dict[str, Any]]] = []
    records: list[dict[str, Any]] = []

    async def scenario() -> None:
        ui = OperationsView(settings, contracts, model, _trail(settings, records), send=lambda t, r: sent.append((t, r)))
        async with TestClient(TestServer(ui.app())) as client:
            # a department cannot urge, nor whistle
            await _login(client, store, "dept-water")
            refused = await _post(client, "urge", target_id=f"WO-{TICKET}-water", departments=["police"], reason="请协同处置")
            assert refused.status == 403 and "may not urge" in (await refused.json())["detail"]
            assert (await _post(client, "whistle", target_type="ticket", target_id=TICKET, departments=["police"],
                                reason="请协同处置")).status == 403
            await client.post("/api/logout", json={})
            # the data office urges the water bureau's order; a form post (CSRF) is refused before anything
            await _login(client, store, "dept-data_bureau")
            form = await client.post("/api/urge", data="target_id=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert form.status == 415
            bad = await _post(client, "urge", target_id=f"WO-{TICKET}-water", departments=["fire_brigade"], reason="超期未签收")
            assert bad.status == 400 and (await bad.json())["problems"][0]["field"] == "departments/0"
            assert (await _post(client, "urge", target_id="WO-nobody-water", departments=["water"],
                                reason="超期未签收")).status == 404
            urged = await _post(client, "urge", target_id=f"WO-{TICKET}-water", departments=["water"],
                                reason="超期未签收，请立即处理", complexity="complex")
            assert urged.status == 201
            await client.post("/api/logout", json={})
            # a street office follows the orders the areas hold, whistles on such a ticket, not on one it does not
            # hold, nor on a city event, and never urges
            await _login(client, store, "dept-hotline_12345")
            held = await (await client.get("/api/orders")).json()
            assert [o["work_order_id"] for o in held["orders"]] == ["WO-HL-street-1-street"]
            assert (await client.get("/api/ticket?id=HL-street-1")).status == 200
            assert (await _post(client, "urge", target_id=f"WO-{TICKET}-water", departments=["water"],
                                reason="超期未签收")).status == 403
            outside = await _post(client, "whistle", target_type="ticket", target_id=TICKET, departments=["police"],
                                  reason="需要公安到场")
            assert outside.status == 403 and "area offices hold" in (await outside.json())["detail"]
            assert (await _post(client, "whistle", target_type="city_event", target_id="CE-flood-1",
                                departments=["water"], reason="积水需要水务到场")).status == 403
            whistled = await _post(client, "whistle", target_type="ticket", target_id="HL-street-1",
                                   departments=["water", "urban_management"], reason="路面渗水，街道无法单独解决")
            assert whistled.status == 201
            await client.post("/api/logout", json={})
            # the summoned water bureau sees both on its page; the police, not summoned, sees neither
            await _login(client, store, "dept-water")
            mine = await (await client.get("/api/actions")).json()
            assert sorted(a["kind"] for a in mine["actions"]) == ["urge", "whistle"]
            await client.post("/api/logout", json={})
            await _login(client, store, "dept-police")
            assert (await (await client.get("/api/actions")).json())["actions"] == []

    asyncio.run(scenario())
    assert [t for t, _r in sent] == ["dispatch.command.urge.v1", "dispatch.command.whistle.v1"]
    for topic, record in sent:
        assert RecordValidator(contracts[topic])(record) is None, record
    urge, whistle = sent[0][1], sent[1][1]
    assert (urge["ticket_id"], urge["departments"], urge["issued_by"]) == (TICKET, ["water"], "office.data")
    issued = datetime.fromisoformat(urge["issued_at"].replace("Z", "+00:00"))
    assert (datetime.fromisoformat(urge["sign_deadline"].replace("Z", "+00:00")) - issued).total_seconds() == 2 * 3600
    assert urge["report_deadline"].endswith("T09:30:00Z")   # 17:30 in Shanghai, the city's closing
    assert (whistle["issuer_department"], whistle["street_code"]) == ("hotline_12345", "990101001")
    audited = [(r["action"], r["actor"], r["outcome"]) for r in records if r["action"] in ("urge", "whistle")]
    assert ("urge", "duty.water", "denied") in audited and ("urge", "office.data", "ok") in audited
    assert ("whistle", "duty.hotline_12345", "denied") in audited and ("whistle", "duty.hotline_12345", "ok") in audited
    assert ("urge", "office.data", "failed") in audited   # the unknown department
    ok = next(r for r in records if r["action"] == "whistle" and r["outcome"] == "ok")
    assert RecordValidator(contracts["audit.trail.event.v1"])(ok) is None, ok   # the audit topic takes it
    assert ok["details"]["reason"] == "路面渗水，街道无法单独解决" and ok["details"]["departments"] == ["water", "urban_management"]


def test_an_action_the_broker_did_not_take_says_so_and_is_audited_failed(
        platform, city: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    settings, model, store, contracts = platform
    records: list[dict[str, Any]] = []

    def down(_topic: str, _record: dict[str, Any]) -> None:
        raise ConnectionError("no broker")

    async def scenario() -> None:
        ui = OperationsView(settings, contracts, model, _trail(settings, records), send=down)
        async with TestClient(TestServer(ui.app())) as client:
            await _login(client, store, "dept-data_bureau")
            answer = await _post(client, "urge", target_id=f"WO-{TICKET}-water", departments=["water"], reason="超期未签收")
            assert answer.status == 503 and "nothing was summoned" in (await answer.json())["detail"]

    asyncio.run(scenario())
    assert [(r["action"], r["outcome"]) for r in records if r["action"] == "urge"] == [("urge", "failed")]


def test_a_city_record_whose_deadlines_cannot_be_used_falls_back_to_the_defaults_and_says_so(
        platform, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A record from before the pack's checks (sign_hours 0, a working day without a closing time): the view still
    acts, on the defaults and office hours, and the log names the fix."""
    lake = platform[0].lake_dir
    _write(lake, "bronze", "raw.ref.city.v1", [
        {"city_code": "9901", "name": "云中市", "jurisdiction_id": "yunzhong.example", "timezone": "Asia/Shanghai",
         "pack_version": "2026.12.1", "updated_at": "2026-12-01T00:00:00Z",
         "working_hours": {"days": ["mon"], "start": "09:00"}, "reporting": {"sign_hours": 0}}])
    reporting, working = act.city_clock(lake)
    assert reporting == Reporting() and working == office_hours(SHANGHAI)
    assert "working hours cannot be counted" in caplog.text and "reporting deadlines cannot be used" in caplog.text


def test_a_summoned_department_answers_step_by_step_once_each_and_the_command_centre_sees_it(
        platform, city: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """部门报到: the water bureau, urged, signs, makes contact and reports (with its note), in order and once each; the
    police, not summoned, and the data office, which follows the answers, may not answer; every reply the view sends
    is one its contract takes, and each is on the audit trail."""
    settings, model, store, contracts = platform
    settings = settings.model_copy(update={"ui_cache_s": 0.0})
    sent: list[tuple[str, dict[str, Any]]] = []
    records: list[dict[str, Any]] = []

    async def scenario() -> None:
        ui = OperationsView(settings, contracts, model, _trail(settings, records), send=lambda t, r: sent.append((t, r)))
        async with TestClient(TestServer(ui.app())) as client:
            await _login(client, store, "dept-data_bureau")
            urged = await (await _post(client, "urge", target_id=f"WO-{TICKET}-water", departments=["water"],
                                       reason="超期未签收，请立即处理")).json()
            assert (await _post(client, "reply", action_id=urged["action_id"], step="sign")).status == 403
            await client.post("/api/logout", json={})
            await _login(client, store, "dept-police")
            refused = await _post(client, "reply", action_id=urged["action_id"], step="sign")
            assert refused.status == 403 and "summons water, not police" in (await refused.json())["detail"]
            await client.post("/api/logout", json={})
            await _login(client, store, "dept-water")
            row = (await (await client.get("/api/actions")).json())["actions"][0]
            assert (row["action_id"], row["next"], row["replies"], row["late"]) == (urged["action_id"], "sign", {}, {})
            early = await _post(client, "reply", action_id=urged["action_id"], step="contact")
            assert early.status == 400 and (await early.json())["problems"][0]["fix"] == "answer sign first."
            assert (await _post(client, "reply", action_id="URGE-20261204070000-00000000", step="sign")).status == 404
            assert (await _post(client, "reply", action_id=urged["action_id"], step="sign")).status == 201
            again = await _post(client, "reply", action_id=urged["action_id"], step="sign")
            assert again.status == 400 and "answered sign" in (await again.json())["detail"]
            assert (await _post(client, "reply", action_id=urged["action_id"], step="contact", note="已电话联系街道")).status == 201
            bare = await _post(client, "reply", action_id=urged["action_id"], step="report")
            assert bare.status == 400 and (await bare.json())["problems"][0]["field"] == "note"
            assert (await _post(client, "reply", action_id=urged["action_id"], step="report",
                                note="已派员维修，管道修复")).status == 201
            row = (await (await client.get("/api/actions")).json())["actions"][0]
            assert row["next"] is None and sorted(row["replies"]["water"]) == ["contact", "report", "sign"]
            await client.post("/api/logout", json={})
            await _login(client, store, "dept-data_bureau")
            row = (await (await client.get("/api/actions")).json())["actions"][0]
            assert row["next"] is None and row["overdue"] is None and row["replies"]["water"]["report"]["note"] == "已派员维修，管道修复"

    asyncio.run(scenario())
    replies = [r for t, r in sent if t == "dispatch.command.reply.v1"]
    assert [(r["step"], r["department"], r["on_time"]) for r in replies] == [
        ("sign", "water", True), ("contact", "water", True), ("report", "water", True)]
    for record in replies:
        assert RecordValidator(contracts["dispatch.command.reply.v1"])(record) is None, record
    audited = [(r["actor"], r["outcome"]) for r in records if r["action"] == "reply"]
    assert audited.count(("duty.water", "ok")) == 3 and ("duty.police", "denied") in audited
    assert ("office.data", "denied") in audited and ("duty.water", "failed") in audited


def test_a_step_is_late_for_each_department_that_owes_it_past_its_deadline() -> None:
    """Water signed in time and owes contact, whose deadline has passed; the police never signed."""
    action = {"departments": ["water", "police"], "sign_deadline": "2026-12-04T08:00:00Z",
              "contact_deadline": "2026-12-05T07:00:00Z", "report_deadline": "2026-12-09T09:30:00Z"}
    answered = {"water": {"sign": {"replied_at": "2026-12-04T07:30:00Z", "on_time": True}}}
    from citybrain.ui.orders import late_steps

    assert late_steps(action, answered, datetime(2026, 12, 4, 7, 45, tzinfo=timezone.utc)) == {}
    assert late_steps(action, answered, datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc)) == {"sign": ["police"]}
    assert late_steps(action, answered, datetime(2026, 12, 6, tzinfo=timezone.utc)) == {"sign": ["police"],
                                                                                        "contact": ["water"]}


def test_the_hotline_page_counts_each_departments_summons_and_its_answers_on_time(
        platform, city: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """An urge on water's order and a whistle for water and the police, all deadlines past: water answered the urge's
    sign in time and the whistle's sign late, the police nothing; each department's steps due and on time."""
    from citybrain.ui.auth import Viewer
    from citybrain.ui.orders import action_counts

    due = {"sign_deadline": "2026-12-04T08:00:00Z", "contact_deadline": "2026-12-05T07:00:00Z",
           "report_deadline": "2026-12-09T09:30:00Z"}
    _write(city, "silver", "dispatch.command.urge.v1", [
        {"action_id": "URGE-20261204070000-aaaaaaaa", "kind": "urge", "departments": ["water"], **due}])
    _write(city, "silver", "dispatch.command.whistle.v1", [
        {"action_id": "WHISTLE-20261204070000-bbbbbbbb", "kind": "whistle", "departments": ["water", "police"], **due}])
    _write(city, "silver", "dispatch.command.reply.v1", [
        {"action_id": "URGE-20261204070000-aaaaaaaa", "department": "water", "step": "sign", "on_time": True},
        {"action_id": "WHISTLE-20261204070000-bbbbbbbb", "department": "water", "step": "sign", "on_time": False}])
    office = Viewer("office.data", "data_bureau", True, frozenset())
    counts = action_counts(city, office, datetime(2026, 12, 10, tzinfo=timezone.utc))
    assert counts == {"water": {"summoned": 2, "urged": 1, "due": 6, "on_time": 1, "on_time_rate": round(1 / 6, 4)},
                      "police": {"summoned": 1, "urged": 0, "due": 3, "on_time": 0, "on_time_rate": 0.0}}
    early = action_counts(city, office, datetime(2026, 12, 4, 7, 30, tzinfo=timezone.utc))
    assert early["water"]["due"] == 2 and early["police"] == {"summoned": 1, "urged": 0, "due": 0, "on_time": 0,
                                                              "on_time_rate": None}   # only what was answered is due
    police = Viewer("duty.police", "police", False, frozenset({"dispatch.command.urge.v1", "dispatch.command.whistle.v1",
                                                               "dispatch.command.reply.v1"}))
    assert list(action_counts(city, police, datetime(2026, 12, 10, tzinfo=timezone.utc))) == ["police"]
