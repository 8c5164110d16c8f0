"""The operations view as people see it: `citybrain ui` on the demo's day, in headless Chromium (Debian's,
driven by Playwright through its executable path), every page rendered with data, a department kept to its
remit, screenshots saved as test artefacts (``var/test/ui/``)."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from citybrain.access.totp import hotp, secret_bytes, totp
from citybrain.devtools.accounts import demo_account
from citybrain.ingest.producer import ValidatedProducer
from citybrain.settings import credentials_path
from citybrain.devtools.browser import PAGES, browser, login, open_page, serve, wait_until
from citybrain.ui.sessions import SessionStore, sessions_path
from tests.integration.conftest import TEST_ENV

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]   # the first test waits for the demo


@pytest.fixture(scope="module")
def ui(demo, settings):  # type: ignore[no-untyped-def]
    """`citybrain ui` serving the demo's lake, as a data office would start it."""
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    out = settings.state_dir / "ui"
    with serve(TEST_ENV, out / "ui.log") as url:
        yield url, out


@pytest.fixture(scope="module")
def chrome():  # type: ignore[no-untyped-def]
    with browser() as b:
        yield b


def test_the_data_office_sees_all_four_pages_with_the_demos_data(ui, chrome, settings) -> None:  # type: ignore[no-untyped-def]
    url, out = ui
    page, errors, _ms = login(chrome, url, demo_account(settings))
    timings = {}
    for name in PAGES:
        drawn, timings[name] = open_page(page, name)
        assert all(n > 0 for n in drawn.values()), f"{name}: charts without data {drawn}"
        assert page.evaluate(f"window.cb.loaded['{name}']") >= 0, f"{name} failed to render: {errors}"
        page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    assert page.evaluate("document.fonts.check('16px \"Noto Sans CJK SC\"')"), "no CJK font: Chinese would not render"
    assert "城市运行" in page.inner_text("#tabs") and not errors, errors
    assert "北京时间" in page.inner_text("#zone")          # the demo city's zone (raw.ref.city), named on screen
    page.click("#lang")
    page.wait_for_selector("body[data-rendered]")
    assert "City" in page.inner_text("#tabs")
    page.click("#tabs button[data-page=city]")
    page.wait_for_selector("body[data-rendered=city]")
    page.wait_for_timeout(400)
    assert "China Standard Time" in page.inner_text("#zone")
    # On screen the city's clock, in the tooltip the wire's UTC: 2026-11-22 10:05 shown, 2026-11-22T02:05:00Z behind it.
    shown, wire = page.eval_on_selector("#city-events td[title$=Z]", "td => [td.textContent, td.title]")
    assert wire.endswith("Z") and shown == (datetime.fromisoformat(wire.replace("Z", "+00:00")) + timedelta(hours=8)
                                            ).strftime("%Y-%m-%d %H:%M"), (shown, wire)
    page.screenshot(path=str(out / "city-en.png"))
    (out / "timings.json").write_text(json.dumps({"render_ms": timings}, indent=1))


def test_an_incident_appears_on_the_city_page_within_seconds(ui, chrome, settings, contracts) -> None:  # type: ignore[no-untyped-def]
    """Produced to the broker while the page is open: the view's live feed (one consumer) brings it in."""
    url, out = ui
    page, errors, _ms = login(chrome, url, demo_account(settings))
    wait_until(page, "window.cb.live && window.cb.live.startsWith('live')", 20)
    street = page.evaluate("fetch('/api/areas').then((r) => r.json()).then((a) => a.levels.street.features[0].properties)")
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    contract = contracts["city.event.incident.v1"]
    incident = {**contract.examples[0], "event_id": f"CE-ui-test-{tag}", "title": f"{street['label']}积水（测试 {tag}）",
                "status": "open", "street_code": street["name"], "street_name": street["label"],
                "district_code": street["parent"], "detected_at": now, "first_seen": now, "last_seen": now}
    started = time.monotonic()
    with ValidatedProducer(settings, producer_id="test-ui") as producer:
        assert producer.produce_values(contract, [incident]).accepted == 1
    wait_until(page, f"document.querySelector('#city-events').innerText.includes('{tag}')", 15)
    seconds = time.monotonic() - started
    page.screenshot(path=str(out / "city-live.png"))
    assert not errors, errors
    (out / "live.json").write_text(json.dumps({"incident_on_page_s": round(seconds, 2)}))


def _refused(chrome, url: str, name: str, password: str, code: str) -> None:  # type: ignore[no-untyped-def]
    """A login typed into a fresh page is refused on the page, and leaves the page without a session."""
    other = chrome.new_context().new_page()
    other.goto(url + "/")
    other.fill("input[name=principal]", name)
    other.fill("input[name=password]", password)
    other.fill("input[name=code]", code)
    other.click("#login-form button[type=submit]")
    other.wait_for_selector("#login-error:not(:empty)")
    assert "wrong password or wrong one-time code" in other.inner_text("#login-error"), name
    assert other.evaluate("fetch('/api/me').then((r) => r.status)") == 401, name
    other.context.close()


def test_a_department_sees_only_its_remit_in_the_browser(ui, chrome, settings) -> None:  # type: ignore[no-untyped-def]
    url, out = ui
    police = demo_account(settings, "police")
    page, errors, _ms = login(chrome, url, police)
    # The code the page just logged in with is good once: the right password with it again is refused.
    used = SessionStore(sessions_path(settings.access_dir)).last_step(police.name)
    assert used is not None
    _refused(chrome, url, police.name, police.password, hotp(secret_bytes(police.totp_secret), used))
    tabs = page.inner_text("#tabs")
    assert "城市运行" in tabs and "接诉即办" in tabs and "数据底座" not in tabs and "安全态势" not in tabs
    page.screenshot(path=str(out / "city-police.png"))
    # The page's own routes, with the page's session: its orders only, the rest refused.
    orders = page.evaluate("fetch('/api/orders').then((r) => r.json()).then((o) => o.orders)")
    assert orders and {o["department"] for o in orders} == {"police"}
    for route in ("/api/orders?department=water", "/api/data", "/api/security"):
        assert page.evaluate(f"fetch('{route}').then((r) => r.status)") == 403, route
    city = page.evaluate("fetch('/api/city').then((r) => r.json())")
    assert all(e.get("department") in (None, "police") for e in city["events"])
    open_page(page, "hotline")
    page.screenshot(path=str(out / "hotline-police.png"), full_page=True)
    # 考核 rankings (issue 35 item 5): a department gets its own place among the departments only.
    hotline = page.evaluate("fetch('/api/hotline').then((r) => r.json())")
    assert {(r["scope"], r["unit"]) for r in hotline["rankings"]} <= {("department", "police")}, hotline["rankings"]
    assert not errors, errors
    # The broker's super user, with the broker's own password, is refused on the page itself, as is a wrong password.
    super_user = json.loads(credentials_path(settings.kafka_dir).read_text())
    _refused(chrome, url, super_user["admin_user"], super_user["admin_password"], "000000")
    _refused(chrome, url, police.name, "not-the-password", totp(secret_bytes(police.totp_secret), time.time()))
    # Each of these is on the view's audit trail (trail `ui`, sent before the view answered), and every chain holds.
    from citybrain.access.trail import verify
    from citybrain.security.audit_trail import from_topic

    records = from_topic(settings)
    seen = {(r["action"], r["actor"], r["target"], r["outcome"]) for r in records if r["trail"] == "ui"}
    who = police.name
    assert {("login_ok", who, "operations view", "ok"), ("read", who, "orders page", "ok"),
            ("read", who, "orders page", "denied"), ("read", who, "data page", "denied"),
            ("read", who, "security page", "denied"), ("login_failed", who, "operations view", "failed"),
            ("login_failed", super_user["admin_user"], "operations view", "failed")} <= seen, seen
    assert verify(records) == []
    written = json.dumps(records, ensure_ascii=False)
    assert police.password not in written and super_user["admin_password"] not in written


def test_a_ticket_found_by_search_shows_its_whole_lifecycle_and_a_department_only_its_own(ui, chrome, settings) -> None:  # type: ignore[no-untyped-def]
    """Issue 35, item 3: the Work orders page finds a ticket by its id and shows its lifecycle (received, dispatched with
    its deadline, handled, followed up) on the city's clock, the UTC in each time's tooltip; departments and areas by
    name, their codes on hover; the Hotline page's rates with the tickets they rest on; a department lists its own
    orders only and is refused another's ticket."""
    url, out = ui
    page, errors, _ms = login(chrome, url, demo_account(settings))
    open_page(page, "hotline")
    assert "件" in page.inner_text("#hotline-rates") and "件" in page.inner_text("#hotline-summary")
    # 考核 rankings (issue 35 item 5): the demo's hotline_rankings release, by district, each rate with its tickets.
    assert page.eval_on_selector_all("#hotline-rankings tr[data-i]", "trs => trs.length") > 0
    assert "件" in page.inner_text("#hotline-rankings") and page.input_value("#hotline-ranking-scope") == "district"
    listed = page.evaluate("fetch('/api/orders?status=followed_up').then((r) => r.json())")
    ticket = next(o for o in listed["orders"] if o["source"] == "ticket")
    page.click("#tabs button[data-page=orders]")
    page.wait_for_selector("body[data-rendered=orders]")
    page.fill("#orders-q", ticket["source_id"])
    page.click("#orders-form button[type=submit]")
    wait_until(page, f"document.querySelector('#orders-list').innerText.includes('{ticket['work_order_id']}')", 15)
    page.click("#orders-list tr[data-i='0']")
    wait_until(page, f"document.body.dataset.ticket === '{ticket['source_id']}'", 15)
    steps = page.eval_on_selector_all("#ticket ol.timeline li", "lis => lis.map((li) => li.className)")
    assert {"step-received", "step-dispatched", "step-handled", "step-followed_up", "step-work_order"} <= set(steps), steps
    shown, wire = page.eval_on_selector("#ticket li.step-received time", "el => [el.textContent, el.title]")
    assert shown == (datetime.fromisoformat(wire.replace("Z", "+00:00")) + timedelta(hours=8)).strftime("%Y-%m-%d %H:%M")
    department = page.eval_on_selector("#orders-list tr[data-i='0'] td:nth-child(3)", "td => [td.textContent, td.title]")
    assert department[1] == ticket["department"] and department[0] != ticket["department"], department   # a name
    page.screenshot(path=str(out / "orders.png"), full_page=True)
    assert not errors, errors
    police, errors, _ms = login(chrome, url, demo_account(settings, "police"))
    police.click("#tabs button[data-page=orders]")
    police.wait_for_selector("body[data-rendered=orders]")
    codes = police.eval_on_selector_all("#orders-list td:nth-child(3)", "tds => tds.map((td) => td.title)")
    assert codes and set(codes) == {"police"}, codes
    if ticket["department"] != "police":
        assert police.evaluate(f"fetch('/api/ticket?id={ticket['work_order_id']}').then((r) => r.status)") == 403
    police.screenshot(path=str(out / "orders-police.png"), full_page=True)
    assert not errors, errors


def _click_area(page, code: str, feature: dict) -> None:  # type: ignore[no-untyped-def]
    """Click the area ``code`` on the City page's map, at a point inside its polygon, and wait for its page."""
    from shapely.geometry import shape

    inside = shape(feature["geometry"]).representative_point()
    x, y = page.evaluate(f"window.cb.charts['chart-map'].convertToPixel({{geoIndex: 0}}, [{inside.x}, {inside.y}])")
    box = page.locator("#chart-map").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    wait_until(page, f"document.body.dataset.rendered === 'city' && document.body.dataset.area === {json.dumps(code)}", 20)
    page.wait_for_timeout(400)   # ECharts draws the new area's map in


def test_a_click_on_a_district_drills_down_to_a_grid_with_the_areas_cards_and_back_up(ui, chrome, settings) -> None:  # type: ignore[no-untyped-def]
    """Issue 35, item 2: district → street → community → grid by clicks on the map, each with its own cards (open
    events, warnings, tickets today, overdue, the three rates with what they rest on), breadcrumbs from the city down,
    events and sensors cut to the area; the breadcrumbs lead back up; a department is refused an area where it
    holds no order."""
    from shapely.geometry import Point, shape

    url, out = ui
    page, errors, _ms = login(chrome, url, demo_account(settings))
    areas = page.evaluate("fetch('/api/areas').then((r) => r.json())")
    features = {f["properties"]["name"]: f for fc in areas["levels"].values() for f in fc["features"]}
    grid = areas["levels"]["grid"]["features"][0]["properties"]["name"]            # the demo's pack has grids
    way = [grid]
    while features[way[-1]]["properties"]["parent"] in features:
        way.append(features[way[-1]]["properties"]["parent"])
    district, street, community, _grid = way[::-1]
    assert [features[c]["properties"].get("parent") for c in (street, community, grid)] == [district, street, community]
    page.select_option("#city-sensor", "")   # no device dots over the areas while clicking them
    for depth, code in enumerate((district, street, community, grid), 1):
        _click_area(page, code, features[code])
        here = page.evaluate("window.cb.areaPage")
        assert [a["code"] for a in here["path"]] == ["", *way[::-1][:depth]], here["path"]
        assert page.eval_on_selector_all("#city-crumbs button", "bs => bs.length") == depth
        cards = page.eval_on_selector_all("#city-kpis .card", "cs => cs.map((c) => c.innerText)")
        assert len(cards) == 7 and all("件" in c for c in cards[4:]), cards            # each rate with its tickets
        if code == street:
            assert {e["area_code"] for e in here["events"]} <= {street}, here["events"]
    assert page.evaluate("window.cb.areaPage.children") == []
    polygon = shape(features[grid]["geometry"])
    assert all(polygon.buffer(1e-6).contains(Point(d["long"], d["lat"])) for d in here["devices"]), here["devices"]
    page.select_option("#city-sensor", index=1)
    page.wait_for_timeout(400)
    page.screenshot(path=str(out / "city-drill-grid.png"))
    page.click("#city-crumbs button[data-code='']")
    wait_until(page, "document.body.dataset.rendered === 'city' && document.body.dataset.area === ''", 20)
    assert len(page.evaluate("window.cb.areaPage.children")) == len(areas["levels"]["district"]["features"])
    assert not errors, errors
    police, errors, _ms = login(chrome, url, demo_account(settings, "police"))
    children = police.evaluate("window.cb.areaPage.children")
    for child in children:
        status = police.evaluate(f"fetch('/api/area?code={child['code']}').then((r) => r.status)")
        assert status == (200 if child["in_remit"] else 403), (child, status)
    assert not errors, errors


def test_a_whistle_raised_reaches_the_summoned_departments_view_and_a_department_cannot_urge(
        ui, chrome, settings) -> None:  # type: ignore[no-untyped-def]
    """Issue 35, item 4: the data office blows the whistle from a ticket's page (the dialog, its departments by
    name), the record carries the city's deadlines (sign within 1 h, report at a working day's close), and the
    department summoned sees it on its Work orders page; a street office (the hotline's login) whistles on a ticket
    its area holds through the same JSON route; a department is refused an urge (403), and a form post (CSRF) 415.
    The department summoned signs for it from its row (部门报到) and the data office sees the answer."""
    url, out = ui
    office = demo_account(settings)
    page, errors, _ms = login(chrome, url, office)
    listed = page.evaluate("fetch('/api/orders').then((r) => r.json())")
    ticket = next(o for o in listed["orders"] if o["source"] == "ticket" and o["department"] != "police")
    summoned = "police"
    page.click("#tabs button[data-page=orders]")
    page.wait_for_selector("body[data-rendered=orders]")
    page.fill("#orders-q", ticket["source_id"])
    page.click("#orders-form button[type=submit]")
    wait_until(page, f"document.querySelector('#orders-list').innerText.includes('{ticket['work_order_id']}')", 15)
    page.click("#orders-list tr[data-i='0']")
    wait_until(page, f"document.body.dataset.ticket === '{ticket['source_id']}'", 15)
    page.click("#ticket button.act[data-kind=whistle]")
    page.wait_for_selector("#act-dialog[open]")
    assert page.eval_on_selector(f"#act-departments input[value={summoned}]", "i => i.parentElement.title") == summoned
    page.check(f"#act-departments input[value={summoned}]")
    page.fill("#act-reason", "浏览器测试：需要公安到场协同处置")
    page.screenshot(path=str(out / "whistle-dialog.png"))
    page.click("#act-send")
    action = wait_until(page, "document.body.dataset.action", 15)
    record = page.evaluate("cb.lastAction")
    assert record["action_id"] == action and record["departments"] == [summoned]
    assert record["issued_by"] == office.name and record["target_id"] == ticket["source_id"]
    issued = datetime.fromisoformat(record["issued_at"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(record["sign_deadline"].replace("Z", "+00:00")) - issued == timedelta(hours=1)
    report = datetime.fromisoformat(record["report_deadline"].replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=8)))
    assert report.weekday() < 5 and timedelta(days=3) <= report - issued <= timedelta(days=8), report
    wait_until(page, f"document.querySelector('#actions-list').innerText.includes({json.dumps(record['title'][:10])})", 15)
    page.screenshot(path=str(out / "whistle-raised.png"), full_page=True)
    assert not errors, errors
    # The department summoned sees it on its Work orders page, deadlines on the city's clock.
    police, errors, _ms = login(chrome, url, demo_account(settings, "police"))
    police.click("#tabs button[data-page=orders]")
    police.wait_for_selector("body[data-rendered=orders]")
    wait_until(police, f"(cb.actions || {{actions: []}}).actions.some((a) => a.action_id === '{action}')", 15)
    assert "浏览器测试" in police.inner_text("#actions-list")
    police.screenshot(path=str(out / "whistle-police.png"), full_page=True)
    # The police answer it (部门报到): sign from the row's button; the row then offers contact, and the data office's
    # list shows the answer, on time.
    police.click(f"#actions-list button.reply[data-action='{action}'][data-step=sign]")
    police.wait_for_selector("#reply-dialog[open]")
    police.fill("#reply-note", "已签收，派员前往")
    police.click("#reply-send")
    replied = wait_until(police, "document.body.dataset.reply", 15)
    police.wait_for_selector(f"#actions-list button.reply[data-action='{action}'][data-step=contact]", timeout=15_000)
    police.screenshot(path=str(out / "reply-police.png"), full_page=True)
    answers = page.evaluate("fetch('/api/actions').then((r) => r.json())")["actions"]
    signed = next(a for a in answers if a["action_id"] == action)["replies"]["police"]["sign"]
    assert (signed["reply_id"], signed["on_time"], signed["replied_by"]) == (replied, True, "duty.police"), signed
    # A department may not urge, and no other site can post a form to the view.
    body = json.dumps({"target_id": ticket["work_order_id"], "departments": [summoned], "reason": "部门不能督办"})
    status = police.evaluate(f"fetch('/api/urge', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, "
                             f"body: {json.dumps(body)}}}).then((r) => r.status)")
    assert status == 403
    form = police.evaluate("fetch('/api/whistle', {method: 'POST', headers: {'Content-Type': "
                           "'application/x-www-form-urlencoded'}, body: 'target_id=x'}).then((r) => r.status)")
    assert form == 415
    assert not errors, errors
    # A street office (the hotline's login) follows the orders the city's areas hold (属地) and whistles on one of
    # their tickets from its page; it has no urge button. The police, summoned, see it on their open page (live).
    hotline, errors, _ms = login(chrome, url, demo_account(settings, "hotline_12345"))
    hotline.click("#tabs button[data-page=orders]")
    hotline.wait_for_selector("body[data-rendered=orders]")
    held = hotline.evaluate("fetch('/api/orders').then((r) => r.json())")
    assert held["orders"], "the demo's hotline escalates through the city's areas: they should hold orders"
    street = next(o for o in held["orders"] if o["source"] == "ticket")
    hotline.fill("#orders-q", street["source_id"])
    hotline.click("#orders-form button[type=submit]")
    wait_until(hotline, f"document.querySelector('#orders-list').innerText.includes('{street['work_order_id']}')", 15)
    hotline.click("#orders-list tr[data-i='0']")
    wait_until(hotline, f"document.body.dataset.ticket === '{street['source_id']}'", 15)
    assert hotline.eval_on_selector_all("#ticket button.act[data-kind=urge]", "bs => bs.length") == 0
    hotline.click("#ticket button.act[data-kind=whistle]")
    hotline.wait_for_selector("#act-dialog[open]")
    hotline.check(f"#act-departments input[value={summoned}]")
    hotline.fill("#act-reason", "街道吹哨：需要公安报到")
    hotline.click("#act-send")
    raised = wait_until(hotline, "document.body.dataset.action", 15)
    assert hotline.evaluate("cb.lastAction.issuer_department") == "hotline_12345"
    hotline.screenshot(path=str(out / "whistle-street.png"), full_page=True)
    wait_until(police, f"cb.actions.actions.some((a) => a.action_id === '{raised}')", 15)
    assert "街道吹哨" in police.inner_text("#actions-list")
    assert not errors, errors


def test_the_big_screen_cycles_the_pages_at_1920_by_1080_and_keeps_the_citys_clock(ui, chrome, settings) -> None:  # type: ignore[no-untyped-def]
    """Issue 35, item 6: the command centre's wall (?screen=1) at 1920×1080: no tabs, buttons or forms, the city's
    clock ticking in the header, and the pages the data office may see shown one after another (every 5 s here),
    each drawn afresh; a department's screen cycles its own pages only."""
    url, out = ui
    page, errors, _ms = login(chrome, url, demo_account(settings))
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.click("#screen")
    page.wait_for_selector("body.screen[data-rendered=city]", timeout=30_000)
    page.goto(url + "/?screen=1&every=5#city")
    page.wait_for_selector("body.screen[data-rendered=city]", timeout=30_000)
    assert not page.is_visible("#tabs button") and not page.is_visible("#logout") and page.is_visible("#screen-exit")
    first = page.inner_text("#screen-clock")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d .+", first), first
    page.wait_for_timeout(400)
    page.screenshot(path=str(out / "screen-city.png"))
    seen = ["city"]
    for _ in range(3):   # hotline, orders, data
        wait_until(page, f"document.body.dataset.rendered && document.body.dataset.rendered !== '{seen[-1]}'", 20)
        seen.append(page.evaluate("document.body.dataset.rendered"))
        page.wait_for_timeout(400)
        page.screenshot(path=str(out / f"screen-{seen[-1]}.png"))
    assert seen == ["city", "hotline", "orders", "data"], seen
    assert page.inner_text("#screen-clock") != first   # the clock ticks
    assert not errors, errors
    police, errors, _ms = login(chrome, url, demo_account(settings, "police"))
    police.goto(url + "/?screen=1&every=5#city")
    police.wait_for_selector("body.screen[data-rendered=city]", timeout=30_000)
    shown = ["city"]
    for _ in range(3):   # hotline, orders, city again: the data page is the data office's
        wait_until(police, f"document.body.dataset.rendered && document.body.dataset.rendered !== '{shown[-1]}'", 20)
        shown.append(police.evaluate("document.body.dataset.rendered"))
    assert shown == ["city", "hotline", "orders", "city"], shown
    assert not errors, errors
