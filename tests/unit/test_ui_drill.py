"""The City page's drill-down (issue 35 item 2): an area's figures, its way up and its children, district → street →
community → grid, by the areas' parent links whatever the city's codes spell, and a department kept to the areas of
its own work orders (refused another area on the API, and the refusal audited)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from citybrain.access.accounts import DATA_OFFICE
from citybrain.ui import drill, views
from citybrain.ui.server import OperationsView
from tests.unit.test_ui import _auth, _order, _trail, _write, platform  # noqa: F401 (the fixture)
from tests.unit.test_ui_orders import _steps, _write_beside


def _box(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]]}


AT = "2026-12-07T00:00:00Z"
#: A Los Angeles-style city whose codes say nothing of their nesting (LA-CD13 is not inside LA-BASIN by its spelling).
#: A district's parent is the city's code, as `city import` writes it (990101 above has none, as older lakes have).
LA = [("LA-BASIN", "Central Basin", "district", "US-CA-LA", _box(-118.4, 34.0, -118.2, 34.2)),
      ("LA-CD13", "Council District 13", "street", "LA-BASIN", _box(-118.3, 34.0, -118.2, 34.1)),
      ("LA-NC-ECHO", "Echo Park", "community", "LA-CD13", _box(-118.26, 34.06, -118.24, 34.08)),
      ("LA-VALLEY", "Valley", "district", "US-CA-LA", _box(-118.6, 34.2, -118.4, 34.4)),
      ("LA-CD04", "Council District 4", "street", "LA-VALLEY", _box(-118.6, 34.2, -118.4, 34.4)),
      # Six digits, then three and three: by its digits in district 990102, by its parent link in street 990101001.
      ("990102001001", "错位社区", "community", "990101001", _box(117.0, 38.0, 117.05, 38.05)),
      ("990102", "云东区", "district", "990100", _box(117.2, 38.0, 117.3, 38.1))]
GRID = "LA-G-7"


def _order_at(dept: str, rid: str, **extra: Any) -> dict[str, Any]:
    return {**_order(dept, 0), "work_order_id": f"WO-{rid}-{dept}", "source_id": rid, "title": f"{rid} 工单",
            "street_code": "LA-CD13", "street_name": None, "district_code": "LA-BASIN", "community_code": "LA-NC-ECHO",
            "received_at": "2025-11-22T03:00:00Z", "sla_deadline": "2025-11-22T05:00:00Z", **extra}


@pytest.fixture()
def lake(platform) -> Path:  # type: ignore[no-untyped-def]  # noqa: F811
    """Beside the fixture's 990101 city: LA's areas and a grid in Echo Park; ticket LA1 (water) held by the grid's
    office, handled on time and followed up satisfied; LA2 (water) in Echo Park, dispatched and overdue; LA3 (police)
    in the Valley; an open city event and a water gauge in the grid, a warning in LA-CD13, an event naming LA-CD13
    whose position lies in the Valley; an event placed in the misleadingly coded community 990102001001 by its
    position."""
    lake = platform[0].lake_dir
    _write_beside(lake, "bronze", "raw.ref.admin_area.v1", [
        {"area_code": c, "name": n, "level": lv, "parent_code": p, "geometry": g, "updated_at": AT,
         **({"population": 1000} if lv != "grid" else {})} for c, n, lv, p, g in LA])
    _write(lake, "bronze", "raw.ref.grid.v1", [
        {"grid_code": GRID, "name": "Echo Park grid 7", "community_code": "LA-NC-ECHO", "grid_workers": ["gw-7-1"],
         "geometry": _box(-118.26, 34.07, -118.25, 34.08), "updated_at": AT}])
    _write_beside(lake, "silver", "dispatch.water.work_order.v1", [
        _order_at("water", "LA1", sla_deadline="2025-11-22T05:00:00Z"),
        _order_at("water", "LA2", received_at="2025-11-22T02:00:00Z", sla_deadline="2025-11-22T02:30:00Z")])
    _write(lake, "silver", "dispatch.police.work_order.v1", [
        _order_at("police", "LA3", street_code="LA-CD04", district_code="LA-VALLEY", community_code="LA-CD04",
                  received_at="2025-11-22T04:30:00Z", sla_deadline="2025-11-23T04:30:00Z")])
    _write(lake, "silver", "dispatch.territorial.work_order.v1", [
        {**_order_at("water", "LA1"), "work_order_id": "WO-LA1-grid", "level": "grid", "area_code": GRID,
         "assigned_at": "2025-11-22T03:01:00Z"}])
    _write(lake, "bronze", "raw.hotline.ticket_event.v1", _steps(
        "LA1", ("received", "2025-11-22T03:00:00Z", {}),
        ("dispatched", "2025-11-22T03:01:00Z", {"assigned_department": "water", "level": "grid", "area_code": GRID,
                                                "sla_deadline": "2025-11-22T05:00:00Z"}),
        ("handled", "2025-11-22T04:00:00Z", {"department": "water", "resolved": True}),
        ("followed_up", "2025-11-22T04:20:00Z", {"satisfaction": "satisfied", "resolved": True})) + _steps(
        "LA2", ("received", "2025-11-22T02:00:00Z", {}),
        ("dispatched", "2025-11-22T02:01:00Z", {"assigned_department": "water", "level": "department",
                                                "sla_deadline": "2025-11-22T02:30:00Z"})))
    _write_beside(lake, "silver", "city.event.incident.v1", [
        {"event_id": "CE-LA-1", "category": "flood", "title": "Echo Park flooding", "status": "open", "severity": 2,
         "street_code": "LA-CD13", "district_code": "LA-BASIN", "lat": 34.075, "long": -118.255,
         "detected_at": "2025-11-22T03:10:00Z", "department": "water", "evidence": {}},
        {"event_id": "CE-LA-2", "category": "noise", "title": "Echo Park noise, positioned in the Valley",
         "status": "open", "severity": 1, "street_code": "LA-CD13", "district_code": "LA-BASIN", "lat": 34.3,
         "long": -118.5, "detected_at": "2025-11-22T03:05:00Z", "department": "environment", "evidence": {}},
        {"event_id": "CE-990101001-noise-1", "category": "noise", "title": "错位社区噪声", "status": "open", "severity": 1,
         "street_code": "990101001", "district_code": "990101", "lat": 38.02, "long": 117.02,
         "detected_at": "2025-11-22T03:20:00Z", "department": "environment", "evidence": {}}])
    _write(lake, "silver", "alert.early_warning.risk.v1", [
        {"warning_id": "EW-LA-1", "kind": "trending_hotspot", "category": "waterlogging", "street_code": "LA-CD13",
         "district_code": "LA-BASIN", "detected_at": "2025-11-22T03:15:00Z"}])
    _write(lake, "bronze", "raw.ref.device.v1", [
        {"device_id": "wl-9001", "device_type": "water_level", "owner_department": "water", "lat": 34.075,
         "long": -118.255, "street_code": "LA-CD13", "status": "active", "updated_at": AT}])
    _write(lake, "bronze", "raw.sensor.water_level.v1", [
        {"id": "urn:ngsi-ld:WaterLevelObserved:wl-9001", "refDevice": "urn:ngsi-ld:Device:wl-9001",
         "dateObserved": "2025-11-22T04:00:00Z", "currentLevel": 1.2}])
    return lake


def _kpis(found: dict[str, Any]) -> tuple[int, int, int, int]:
    k = found["area"]["kpis"]
    return k["open_events"], k["warnings"], k["tickets_today"], k["overdue"]


def test_an_area_rolls_up_by_its_parent_links_down_to_the_grid_whatever_its_codes_spell(
        platform, lake: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    office = _auth(platform).viewer_of("data_bureau", DATA_OFFICE)
    top = drill.area(lake, office, "")
    assert [c["code"] for c in top["children"]] == ["990101", "990102", "LA-BASIN", "LA-VALLEY"]
    assert top["path"] == [{"code": "", "name": None, "name_en": None, "level": "city"}]
    basin = drill.area(lake, office, "LA-BASIN")
    assert [c["code"] for c in basin["children"]] == ["LA-CD13"]
    assert _kpis(basin) == (2, 1, 2, 1)   # two events, LA-CD13's warning, LA1 and LA2 today, LA2 overdue
    # An event stays in the street it names when its position says another: a position is trusted only inside it.
    assert drill.area(lake, office, "LA-VALLEY")["area"]["kpis"]["open_events"] == 0
    assert [e["event_id"] for e in drill.area(lake, office, "LA-CD13")["events"]] == ["CE-LA-1", "CE-LA-2"]
    rates = basin["area"]["kpis"]["rates"]
    assert (rates["tickets"], rates["handled_on_time_rate"], rates["handled_on_time_rate_n"]) == (2, 0.5, 2)
    assert (rates["satisfaction_rate"], rates["satisfaction_rate_n"]) == (1.0, 1)    # only LA1 was followed up
    echo = drill.area(lake, office, "LA-NC-ECHO")
    assert [c["code"] for c in echo["children"]] == [GRID] and echo["children"][0]["level"] == "grid"
    grid = drill.area(lake, office, GRID)
    assert [p["code"] for p in grid["path"]] == ["", "LA-BASIN", "LA-CD13", "LA-NC-ECHO", GRID]
    assert _kpis(grid) == (1, 0, 1, 0) and grid["area"]["kpis"]["rates"]["tickets"] == 1   # LA1, held by the grid
    assert [e["event_id"] for e in grid["events"]] == ["CE-LA-1"]
    assert [d["device_id"] for d in grid["devices"]] == ["wl-9001"]
    assert drill.area(lake, office, "LA-VALLEY")["devices"] == []
    # 990102001001 lies in street 990101001 by its parent, not in district 990102 as its digits would say.
    assert drill.area(lake, office, "990102")["area"]["kpis"]["open_events"] == 0
    assert "990102001001" in [c["code"] for c in drill.area(lake, office, "990101001")["children"]]
    assert [e["event_id"] for e in drill.area(lake, office, "990102001001")["events"]] == ["CE-990101001-noise-1"]
    # The map draws the grid level from the grids' own register.
    assert [f["properties"]["name"] for f in views.areas(lake)["levels"]["grid"]["features"]] == [GRID]
    with pytest.raises(views.NotFound, match="LA-NOWHERE"):
        drill.area(lake, office, "LA-NOWHERE")
    with pytest.raises(views.BadArgument, match="not an area code"):
        drill.area(lake, office, "LA BASIN/../*")


def test_a_department_drills_into_the_areas_of_its_own_orders_only_and_counts_its_own_tickets(
        platform, lake: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    auth = _auth(platform)
    police, water = auth.viewer_of("police"), auth.viewer_of("water")
    top = drill.area(lake, police, "")
    assert {c["code"]: c["in_remit"] for c in top["children"]} == {
        "990101": True, "990102": False, "LA-BASIN": False, "LA-VALLEY": True}
    assert _kpis(drill.area(lake, police, "LA-VALLEY")) == (0, 0, 1, 0)
    with pytest.raises(views.Forbidden, match="holds no work order in area 'LA-BASIN'"):
        drill.area(lake, police, "LA-BASIN")
    with pytest.raises(views.Forbidden):
        drill.area(lake, police, GRID)
    echo = drill.area(lake, water, "LA-NC-ECHO")   # no grant on the city events: its own city-event orders only
    assert echo["events"] == [] and _kpis(echo) == (0, 0, 2, 1)
    assert echo["area"]["kpis"]["rates"]["tickets"] == 2                            # the tickets dispatched to it
    assert drill.area(lake, water, "LA-CD13")["area"]["kpis"]["warnings"] == 1      # granted the early warnings
    assert drill.area(lake, police, "990101")["area"]["kpis"]["rates"]["tickets"] == 0   # the water's are not its


def test_the_area_route_refuses_another_remit_with_403_and_audits_each_area_read(
        platform, lake: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    settings, model, store, contracts = platform
    settings = settings.model_copy(update={"ui_cache_s": 0.0})
    records: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with TestClient(TestServer(OperationsView(settings, contracts, model, _trail(settings, records)).app())) as client:
            assert (await client.get("/api/area?code=LA-VALLEY")).status == 401
            await client.post("/api/login", json=store.body("duty.police"))
            assert (await client.get("/api/area")).status == 200
            valley = await client.get("/api/area?code=LA-VALLEY")
            assert valley.status == 200 and (await valley.json())["area"]["kpis"]["tickets_today"] == 1
            assert (await client.get("/api/area?code=LA-BASIN")).status == 403
            assert (await client.get("/api/area?code=LA-NOWHERE")).status == 404
            assert (await client.get("/api/area?code=%2A")).status == 400

    asyncio.run(scenario())
    reads = [(r["actor"], r["target"], r["outcome"], r["details"].get("area")) for r in records if r["action"] == "read"]
    assert reads == [("duty.police", "area page", "ok", "LA-VALLEY"), ("duty.police", "area page", "denied", "LA-BASIN")]


def test_figures_are_reused_per_remit_until_the_lake_or_the_live_records_change(
        platform, lake: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    auth = _auth(platform)
    office, police = auth.viewer_of("data_bureau", DATA_OFFICE), auth.viewer_of("police")
    computed: list[str | None] = []
    real = drill._figures
    monkeypatch.setattr(drill, "_figures", lambda lk, v, live: computed.append(v.department) or real(lk, v, live))
    first = drill.area(lake, office, "")
    assert drill.area(lake, office, "LA-BASIN") and drill.area(lake, office, "") == first
    assert computed == ["data_bureau"]                                # one pass for the data office's three reads
    drill.area(lake, police, "")
    assert computed == ["data_bureau", "police"]                      # another remit: its own pass
    event = {"event_id": "CE-LA-9", "category": "flood", "title": "new", "status": "open", "severity": 2,
             "street_code": "LA-CD04", "district_code": "LA-VALLEY", "lat": 34.3, "long": -118.5,
             "detected_at": "2025-11-22T04:40:00Z", "department": "water", "evidence": {}}
    live = drill.area(lake, office, "LA-VALLEY", [("city.event.incident.v1", event)])
    assert live["area"]["kpis"]["open_events"] == 1 and len(computed) == 3   # a live record: computed again
    _write(lake, "silver", "alert.early_warning.risk.v1", [
        {"warning_id": "EW-LA-2", "kind": "trending_hotspot", "category": "noise", "street_code": "LA-CD04",
         "district_code": "LA-VALLEY", "detected_at": "2025-11-22T04:45:00Z"}])
    assert drill.area(lake, office, "LA-VALLEY")["area"]["kpis"]["warnings"] == 1 and len(computed) == 4   # a new file
