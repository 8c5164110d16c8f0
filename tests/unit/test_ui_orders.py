"""The operations view's Work orders page: the list's filters and search, one ticket's lifecycle as a timeline with
the city event it is linked to, and each viewer kept to its remit (a department follows its own orders only)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from citybrain.access.accounts import DATA_OFFICE
from citybrain.lake.writer import LakeWriter, Row
from citybrain.ui import orders
from citybrain.ui.server import OperationsView
from citybrain.ui.views import BadArgument, Forbidden, NotFound
from tests.unit.test_ui import T0, _auth, _cheap_scrypt, _order, _trail, _write, platform  # noqa: F401 (the fixtures)

TICKET = "HL20251122000101"


def _write_beside(lake: Path, layer: str, topic: str, records: list[dict[str, Any]]) -> None:
    """Records on partition 1, beside what the fixture wrote on partition 0."""
    LakeWriter(lake, layer).write(topic, 1, [Row(topic, 1, o, T0 + o * 1000, None, {}, json.dumps(v, ensure_ascii=False))
                                             for o, v in enumerate(records)])


def _steps(rid: str, *steps: tuple[str, str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"event_id": f"{rid}:{kind}:{i}", "service_request_id": rid, "event_type": kind, "occurred_at": at, **extra}
            for i, (kind, at, extra) in enumerate(steps, 1)]


@pytest.fixture()
def lake(platform) -> Path:  # type: ignore[no-untyped-def]   # noqa: F811
    """The fixture's orders and a ticket that escalated from its community to its street and then to the water
    bureau, was handled, closed and followed up; an SLA alert of the community's lapse; a city event naming the
    ticket in its evidence; a Los Angeles-style order whose codes do not nest by their spelling."""
    lake = platform[0].lake_dir
    _write(lake, "bronze", "raw.hotline.ticket_event.v1", _steps(
        TICKET,
        ("received", "2025-11-22T00:10:00Z", {"department": "hotline_12345"}),
        ("dispatched", "2025-11-22T00:12:00Z", {"department": "hotline_12345", "level": "community",
                                                "area_code": "990101001001", "assigned_department": "water",
                                                "sla_deadline": "2025-11-22T00:42:00Z"}),
        ("escalated", "2025-11-22T00:42:00Z", {"department": "hotline_12345", "level": "street", "area_code": "990101001",
                                               "assigned_department": "water", "sla_deadline": "2025-11-22T01:12:00Z",
                                               "note": "社区超时未办结，升级至街道"}),
        ("escalated", "2025-11-22T01:12:00Z", {"department": "hotline_12345", "level": "department",
                                               "assigned_department": "water", "sla_deadline": "2025-11-22T05:12:00Z"}),
        ("accepted", "2025-11-22T01:20:00Z", {"department": "water"}),
        ("handled", "2025-11-22T02:30:00Z", {"department": "water", "resolved": True}),
        ("closed", "2025-11-22T02:40:00Z", {"department": "hotline_12345"}),
        ("followed_up", "2025-11-22T03:40:00Z", {"department": "hotline_12345", "satisfaction": "basically_satisfied",
                                                 "resolved": True})) + _steps(
        "HL3", ("received", "2025-11-22T00:50:00Z", {}),
        ("dispatched", "2025-11-22T00:55:00Z", {"department": "hotline_12345", "level": "department",
                                                "assigned_department": "water", "sla_deadline": "2025-11-22T02:00:00Z"})))
    _write(lake, "silver", "alert.sla.ticket.v1", [
        {"alert_id": f"SLA-{TICKET}-community", "kind": "breached", "service_request_id": TICKET, "department": "water",
         "dispatched_at": "2025-11-22T00:12:00Z", "sla_deadline": "2025-11-22T00:42:00Z",
         "detected_at": "2025-11-22T00:43:00Z", "overdue_min": 1, "level": "community", "area_code": "990101001001"}])
    _write_beside(lake, "silver", "dispatch.water.work_order.v1", [
        {**_order("water", 9), "work_order_id": f"WO-{TICKET}-water", "source_id": TICKET, "title": "小区门口水管爆裂", "category": "water_leak", "community_code": "990101001001",
         "received_at": "2025-11-22T00:10:00Z", "assigned_at": "2025-11-22T01:12:00Z", "escalated": True,
         "sla_deadline": "2025-11-22T05:12:00Z"}])
    _write(lake, "silver", "dispatch.data_bureau.work_order.v1", [
        {**_order("data_bureau", 10), "work_order_id": "WO-LA-0001-data_bureau", "source_id": "LA-0001",
         "title": "Graffiti removal", "street_code": "LA-CD13", "district_code": None, "community_code": "LA-NC-ECHO",
         "street_name": None, "received_at": "2025-11-22T04:00:00Z", "sla_deadline": "2025-11-25T04:00:00Z"}])
    _write_beside(lake, "bronze", "raw.ref.admin_area.v1", [
        {"area_code": "LA-BASIN", "name": "Central Basin", "level": "district", "parent_code": "US-CA-LA",
         "updated_at": "2026-12-07T00:00:00Z"},
        {"area_code": "LA-CD13", "name": "Council District 13", "level": "street", "parent_code": "LA-BASIN",
         "updated_at": "2026-12-07T00:00:00Z"},
        {"area_code": "LA-NC-ECHO", "name": "Echo Park", "level": "community", "parent_code": "LA-CD13",
         "updated_at": "2026-12-07T00:00:00Z"}])
    _write_beside(lake, "silver", "city.event.incident.v1", [
        {"event_id": "CE-990101001-water_leak-1", "category": "flood", "title": "天宁街道水管爆裂", "status": "closed",
         "severity": 2, "street_code": "990101001", "district_code": "990101", "detected_at": "2025-11-22T00:20:00Z",
         "department": "water", "evidence": {"readings": [], "devices": [], "tickets": [TICKET], "records": []}}])
    return lake


def _ids(found: dict[str, Any]) -> list[str]:
    return [o["work_order_id"] for o in found["orders"]]


def test_the_data_office_filters_orders_by_area_department_status_and_overdue_and_searches_them(
        platform, lake: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    office = _auth(platform).viewer_of("data_bureau", DATA_OFFICE)
    every = orders.order_list(lake, office, {})
    assert every["total"] == 6 and every["lifecycle"] is True
    assert _ids(every)[0] == "WO-LA-0001-data_bureau"                      # the newest received first
    assert every["as_of"] == "2025-11-22T04:00:00Z"
    assert set(every["departments"]) == {"data_bureau", "police", "water"}
    by_id = {o["work_order_id"]: o for o in every["orders"]}
    assert by_id[f"WO-{TICKET}-water"]["status"] == "followed_up" and not by_id[f"WO-{TICKET}-water"]["overdue"]
    assert by_id["WO-HL3-water"]["status"] == "dispatched" and by_id["WO-HL3-water"]["overdue"]   # 02:00 < 04:00
    assert by_id["WO-HL1-police"]["status"] is None          # no lifecycle in the lake for it
    assert by_id["WO-HL4-water"]["status"] == "open"         # a city event's order: the event's state
    # An area finds the orders of the areas below it by their parents, whatever their codes spell.
    assert _ids(orders.order_list(lake, office, {"area": "LA-BASIN"})) == ["WO-LA-0001-data_bureau"]
    assert _ids(orders.order_list(lake, office, {"area": "990101001001"})) == [f"WO-{TICKET}-water"]
    assert orders.order_list(lake, office, {"area": "990101"})["total"] == 5
    assert set(_ids(orders.order_list(lake, office, {"department": "water"}))) == {
        f"WO-{TICKET}-water", "WO-HL3-water", "WO-HL4-water"}
    assert _ids(orders.order_list(lake, office, {"status": "dispatched"})) == ["WO-HL3-water"]
    assert set(_ids(orders.order_list(lake, office, {"overdue": "1"}))) == {"WO-HL3-water", "WO-HL1-police",
                                                                           "WO-HL2-police", "WO-HL4-water"}
    assert _ids(orders.order_list(lake, office, {"q": TICKET})) == [f"WO-{TICKET}-water"]
    assert _ids(orders.order_list(lake, office, {"q": "水管爆裂"})) == [f"WO-{TICKET}-water"]
    assert _ids(orders.order_list(lake, office, {"q": "graffiti"})) == ["WO-LA-0001-data_bureau"]
    with pytest.raises(BadArgument, match="not a state"):
        orders.order_list(lake, office, {"status": "lost"})
    with pytest.raises(BadArgument, match="not a department id"):
        orders.order_list(lake, office, {"department": "*"})          # a glob would have listed every department
    with pytest.raises(BadArgument, match="at most 160"):
        orders.order_list(lake, office, {"q": "水" * 161})


def test_a_tickets_timeline_holds_each_levels_deadline_its_handling_follow_up_and_linked_event(
        platform, lake: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    office = _auth(platform).viewer_of("data_bureau", DATA_OFFICE)
    found = orders.ticket(lake, office, TICKET)
    assert orders.ticket(lake, office, f"WO-{TICKET}-water") == found     # by its order's id too
    assert (found["id"], found["status"], found["overdue"], found["community_code"]) == (
        TICKET, "followed_up", False, "990101001001")
    steps = [(s["step"], s.get("level"), s.get("deadline")) for s in found["timeline"]]
    assert steps == [("received", None, None),
                     ("dispatched", "community", "2025-11-22T00:42:00Z"),
                     ("escalated", "street", "2025-11-22T01:12:00Z"),
                     ("breached", "community", "2025-11-22T00:42:00Z"),
                     ("escalated", "department", "2025-11-22T05:12:00Z"),
                     ("work_order", "department", "2025-11-22T05:12:00Z"),
                     ("accepted", None, None), ("handled", None, None), ("closed", None, None), ("followed_up", None, None)]
    by_step = {(s["step"], s.get("level")): s for s in found["timeline"]}
    assert by_step["dispatched", "community"]["area_code"] == "990101001001"
    assert by_step["escalated", "street"]["note"].startswith("社区超时") and by_step["escalated", "street"]["department"] == "water"
    by_step = {s["step"]: s for s in found["timeline"]}
    assert by_step["work_order"]["escalated"] is True and by_step["handled"]["resolved"] is True
    assert by_step["followed_up"]["satisfaction"] == "basically_satisfied"
    assert [e["event_id"] for e in found["events"]] == ["CE-990101001-water_leak-1"]
    with pytest.raises(NotFound, match="no work order of any department"):
        orders.ticket(lake, office, "HL-nobody")
    with pytest.raises(BadArgument):
        orders.ticket(lake, office, "")


def test_a_department_follows_its_own_orders_only_and_sees_no_more_of_a_ticket_than_its_grants(
        platform, lake: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """dept-water reads its dispatch topic but neither the hotline's ticket events, the SLA alerts nor the city events
    (infra/access.yaml): its ticket page holds its own order, no lifecycle, no linked event; another's ticket is
    refused the same as an unknown one, so a department learns nothing of what it does not hold."""
    auth = _auth(platform)
    water, police = auth.viewer_of("water"), auth.viewer_of("police")
    listed = orders.order_list(lake, water, {})
    assert {o["department"] for o in listed["orders"]} == {"water"} and listed["lifecycle"] is False
    assert {o["status"] for o in listed["orders"]} == {None}
    with pytest.raises(Forbidden, match="only its own work orders"):
        orders.order_list(lake, water, {"department": "police"})
    found = orders.ticket(lake, water, TICKET)
    assert [s["step"] for s in found["timeline"]] == ["work_order"] and found["events"] == []
    assert "note" not in str(found) and found["lifecycle"] is False
    for other in (TICKET, "HL-nobody"):
        with pytest.raises(Forbidden, match="holds no work order"):
            orders.ticket(lake, police, other)


def test_the_work_order_routes_answer_400_403_404_and_go_on_the_audit_trail_naming_the_ticket(
        platform, lake: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    settings, model, store, contracts = platform
    settings = settings.model_copy(update={"ui_cache_s": 0.0})
    records: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with TestClient(TestServer(OperationsView(settings, contracts, model, _trail(settings, records)).app())) as client:
            assert (await client.get(f"/api/ticket?id={TICKET}")).status == 401
            await client.post("/api/login", json=store.body("duty.water"))
            listed = await (await client.get("/api/orders?q=水管&overdue=0")).json()
            assert [o["work_order_id"] for o in listed["orders"]] == [f"WO-{TICKET}-water"]
            assert (await client.get("/api/orders?status=lost")).status == 400
            assert (await client.get("/api/orders?department=police")).status == 403
            page = await client.get(f"/api/ticket?id={TICKET}")
            assert page.status == 200 and (await page.json())["id"] == TICKET
            assert (await client.get("/api/ticket?id=WO-HL1-police")).status == 403
            await client.post("/api/logout", json={})
            await client.post("/api/login", json=store.body("office.data"))
            assert (await client.get("/api/ticket?id=HL-nobody")).status == 404
            water = await (await client.get("/api/orders?department=water&status=followed_up")).json()
            assert [o["work_order_id"] for o in water["orders"]] == [f"WO-{TICKET}-water"]

    asyncio.run(scenario())
    reads = [(r["actor"], r["target"], r["outcome"], r["details"].get("ticket")) for r in records if r["action"] == "read"]
    assert ("duty.water", "ticket page", "ok", TICKET) in reads
    assert ("duty.water", "ticket page", "denied", "WO-HL1-police") in reads
    assert ("duty.water", "orders page", "denied", None) in reads


def test_the_pages_script_finds_every_element_it_names_and_every_word_in_both_languages() -> None:
    """app.js draws into elements by id and words by key: a missing one fails only in a browser, as an empty page
    or an untranslated key. Every ``$("id")`` is in index.html and every ``t("key")`` and ``data-t`` word in
    Chinese and English."""
    import re

    from citybrain.ui.server import STATIC

    script, page = (STATIC / "app.js").read_text(), (STATIC / "index.html").read_text()
    ids = set(re.findall(r'\$\("([a-z0-9-]+)"\)', script)) | set(re.findall(r'"(orders-[a-z]+)"', script))
    assert "orders-list" in ids and "ticket" in ids
    assert sorted(i for i in ids if f'id="{i}"' not in page) == []
    words = dict(re.findall(r"\n  (zh|en): \{(.*?)\n  \},", script, re.S))
    keys = {lang: set(re.findall(r'(?:^|,)\s*([a-z_]+): "', body, re.M)) for lang, body in words.items()}
    used = set(re.findall(r'\bt\("([a-z_]+)"\)', script)) | set(re.findall(r'data-t="([a-z_]+)"', page))
    assert {"shown_of", "timeline", "pick_ticket", "only_overdue"} <= used
    assert sorted(used - keys["zh"]) == [] and sorted(used - keys["en"]) == [] and keys["zh"] == keys["en"]
