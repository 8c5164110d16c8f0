"""The operations view's access: logins, sessions, the rate limit, and a department's remit through every
API route the page uses (a department is refused other departments' data; the data office sees all)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from citybrain import access
from citybrain.access import accounts as accounts_module
from citybrain.access.accounts import DATA_OFFICE, DEPARTMENT, AccountError, AccountStore
from citybrain.access.totp import STEP_S, WINDOW, hotp, secret_bytes, totp
from citybrain.access.trail import AuditTrail
from citybrain.lake.writer import LakeWriter, Row
from citybrain.settings import ADMIN_USER, Settings, credentials_path, load_settings
from citybrain.ui import views
from citybrain.ui.auth import MAX_FAILURES, Authenticator, RateLimited
from citybrain.ui.server import OperationsView
from citybrain.ui.sessions import SessionStore, sessions_path

T0 = 1_763_769_600_000   # 2025-11-22T00:00:00Z
SQUARE = {"type": "Polygon", "coordinates": [[[117.0, 38.0], [117.1, 38.0], [117.1, 38.1], [117.0, 38.1], [117.0, 38.0]]]}


def _write(lake: Path, layer: str, topic: str, records: list[dict[str, Any]]) -> None:
    rows = [Row(topic, 0, o, T0 + o * 1000, None, {}, json.dumps(v, ensure_ascii=False)) for o, v in enumerate(records)]
    LakeWriter(lake, layer).write(topic, 0, rows)


def _trail(settings: Settings, records: list[dict[str, Any]] | None = None) -> AuditTrail:
    """The view's audit trail into a list (the view's own sends to the audit topic, which a unit test has none of)."""
    return AuditTrail("ui", settings.state_dir / "audit", (records if records is not None else []).append)


def _order(dept: str, n: int, source: str = "ticket") -> dict[str, Any]:
    return {"work_order_id": f"WO-HL{n}-{dept}", "department": dept, "role": "lead", "source": source,
            "source_id": f"HL{n}", "title": f"{dept} 工单 {n}", "street_code": "990101001", "street_name": "天宁街道",
            "district_code": "990101", "received_at": "2025-11-22T01:00:00Z", "sla_deadline": "2025-11-22T02:00:00Z"}


@pytest.fixture()
def platform(tmp_path: Path, contracts):  # type: ignore[no-untyped-def]
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var")})
    lake = settings.lake_dir
    _write(lake, "silver", "dispatch.police.work_order.v1", [_order("police", 1), _order("police", 2)])
    _write(lake, "silver", "dispatch.water.work_order.v1",
           [_order("water", 3), {**_order("water", 4, "city_event"), "source_id": "CE-flood-1"}])
    _write(lake, "silver", "city.event.incident.v1", [
        {"event_id": "CE-flood-1", "category": "flood", "title": "天宁街道积水", "status": "open", "severity": 3,
         "street_code": "990101001", "district_code": "990101", "detected_at": "2025-11-22T01:00:00Z",
         "department": "water", "evidence": {"devices": ["wl-0001"]}}])
    _write(lake, "bronze", "raw.ref.admin_area.v1", [
        {"area_code": "990101", "name": "云中区", "level": "district", "geometry": SQUARE, "updated_at": "2025-11-01T00:00:00Z"},
        {"area_code": "990101001", "name": "天宁街道", "level": "street", "parent_code": "990101", "geometry": SQUARE,
         "updated_at": "2025-11-01T00:00:00Z"}])
    model = access.load(access.ACCESS_FILE, contracts)
    return settings, model, _people(settings, model), contracts


@dataclass
class People:
    """The test's operations-view accounts (name -> password and code secret) and a careful client's codes."""

    access_dir: Path
    passwords: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    def code(self, name: str) -> str:
        """A code the view has not taken yet: the earliest step of the window after the last one used."""
        used = SessionStore(sessions_path(self.access_dir)).last_step(name)
        step = int(time.time() // STEP_S) - WINDOW
        return hotp(secret_bytes(self.secrets[name]), step if used is None else max(step, used + 1))

    def body(self, name: str, password: str | None = None) -> dict[str, str]:
        """The JSON of a login as ``name``: the right password (or ``password``) and a fresh code."""
        return {"principal": name, "password": self.passwords[name] if password is None else password,
                "code": self.code(name)}


def _people(settings: Settings, model: access.AccessModel) -> People:
    """A duty officer of the police and of water, and a data-office person; scrypt's cost kept low for speed (its
    real parameters are test_accounts.py's)."""
    people, store = People(settings.access_dir), AccountStore(settings.access_dir)
    for name, role, department in (("duty.police", DEPARTMENT, "police"), ("duty.water", DEPARTMENT, "water"),
                                   ("office.data", DATA_OFFICE, "data_bureau")):
        people.passwords[name] = f"{name}-password-{len(name)}"
        people.secrets[name] = store.add(name, role, department, people.passwords[name],
                                         model.departments.values()).totp_secret
    return people


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts_module, "SCRYPT_N", 2 ** 4)


def _auth(platform, session_s: float = 3600.0, clock: Callable[[], float] = time.time) -> Authenticator:  # type: ignore[no-untyped-def]
    settings, model, _people, contracts = platform
    return Authenticator(settings, model, tuple(c.topic for c in contracts.values()), session_s=session_s, clock=clock)


def _code(people: People, name: str, at: float) -> str:
    return totp(secret_bytes(people.secrets[name]), at)


def test_a_person_logs_in_with_their_password_and_code_and_sees_their_departments_remit(platform) -> None:  # type: ignore[no-untyped-def]
    people = platform[2]
    auth = _auth(platform)
    now = time.time()
    assert auth.login("duty.police", "not-it", _code(people, "duty.police", now), "127.0.0.1") is None
    assert auth.login("nobody", people.passwords["duty.police"], "123456", "127.0.0.1") is None
    assert auth.login("duty.water", people.passwords["duty.police"], _code(people, "duty.water", now), "127.0.0.1") is None
    token = auth.login("duty.police", people.passwords["duty.police"], _code(people, "duty.police", now), "127.0.0.1")
    viewer = auth.session(token)
    assert viewer is not None and viewer.principal == "duty.police" and viewer.department == "police"
    assert not viewer.admin and viewer.role == DEPARTMENT
    assert viewer.may_read("dispatch.police.work_order.v1") and not viewer.may_read("dispatch.water.work_order.v1")
    assert not viewer.may_read("city.event.incident.v1")
    assert auth.session("forged-token") is None
    auth.logout(token)
    assert auth.session(token) is None
    office = auth.session(auth.login("office.data", people.passwords["office.data"], _code(people, "office.data", now),
                                     "127.0.0.1"))
    assert office is not None and office.admin and office.topics == auth.viewer_of("data_bureau").topics   # type: ignore[union-attr]


def test_a_wrong_expired_or_reused_code_is_refused_with_the_right_password(platform) -> None:  # type: ignore[no-untyped-def]
    people, now = platform[2], [1_796_000_000.0]
    auth = _auth(platform, clock=lambda: now[0])
    right = people.passwords["duty.police"]
    code = _code(people, "duty.police", now[0])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    refused = [wrong, "", _code(people, "duty.police", now[0] - 2 * STEP_S),       # expired
               _code(people, "duty.police", now[0] + 2 * STEP_S),                   # not yet
               _code(people, "duty.water", now[0])]                                  # another's secret
    for i, bad in enumerate(refused):   # each from an address of its own: the rate limit is another test's
        assert auth.login("duty.police", right, bad, f"10.0.0.{i}") is None, bad
    assert auth.login("duty.police", right, code, "127.0.0.1")
    assert auth.login("duty.police", right, code, "127.0.0.2") is None                     # used once already
    assert auth.login("duty.police", right, _code(people, "duty.police", now[0] - STEP_S), "127.0.0.3") is None  # earlier
    now[0] += STEP_S
    assert auth.login("duty.police", right, _code(people, "duty.police", now[0]), "127.0.0.1")   # the next step's: good
    assert auth.login("duty.police", right, _code(people, "duty.police", now[0] + STEP_S), "127.0.0.4")  # a step ahead
    assert [r["principal"] for r in auth.refused] == ["duty.police"] * 7


def test_the_super_user_and_a_departments_shared_principal_cannot_log_in(platform) -> None:  # type: ignore[no-untyped-def]
    """Regression: the view took the broker super user's password and the departments' shared ones (issue 33)."""
    settings, model, people, _contracts = platform
    store, auth, now = AccountStore(settings.access_dir), _auth(platform), time.time()
    shared = access.CredentialStore(settings.access_dir).password("dept-police")   # the department's broker password
    assert auth.login("dept-police", shared, "000000", "127.0.0.1") is None
    (settings.kafka_dir / "config").mkdir(parents=True)
    credentials_path(settings.kafka_dir).write_text(json.dumps({"admin_user": ADMIN_USER, "admin_password": "root-pw"}))
    assert auth.login(ADMIN_USER, "root-pw", "000000", "127.0.0.1") is None
    with pytest.raises(AccountError, match="people log in as themselves"):
        store.add(ADMIN_USER, DATA_OFFICE, "data_bureau", "a-long-enough-password", model.departments.values())
    # Written into the account file by hand, with a known password and secret: still refused.
    forged = json.loads(store.path.read_text())
    forged[ADMIN_USER] = {**forged["office.data"], "name": ADMIN_USER}
    store.path.write_text(json.dumps(forged))
    assert auth.login(ADMIN_USER, people.passwords["office.data"], _code(people, "office.data", now), "127.0.0.1") is None


def test_a_session_survives_a_restart_of_the_view_and_keeps_no_token_on_disk(platform) -> None:  # type: ignore[no-untyped-def]
    settings, _model, people, _contracts = platform
    token = _auth(platform).login("duty.police", people.passwords["duty.police"], people.code("duty.police"), "127.0.0.1")
    assert token is not None
    again = _auth(platform)   # a new process: the session store is read from disk
    viewer = again.session(token)
    assert viewer is not None and viewer.principal == "duty.police"
    assert token.encode() not in sessions_path(settings.access_dir).read_bytes()
    assert oct(sessions_path(settings.access_dir).stat().st_mode & 0o777) == "0o600"
    again.logout(token)
    assert _auth(platform).session(token) is None


def test_a_session_ends_when_the_password_code_secret_role_or_account_changes(platform) -> None:  # type: ignore[no-untyped-def]
    """Regression: sessions outlived a password rotation (issue 33)."""
    settings, model, people, _contracts = platform
    now = [1_796_000_000.0]
    store, auth, departments = AccountStore(settings.access_dir), _auth(platform, clock=lambda: now[0]), model.departments.values()

    def logged_in() -> str:
        now[0] += STEP_S   # each login a step of its own: a code is good once
        token = auth.login("duty.police", people.passwords["duty.police"], _code(people, "duty.police", now[0]), "127.0.0.1")
        assert token is not None and auth.session(token) is not None
        return token

    token = logged_in()
    store.set_password("duty.police", "a-brand-new-password")
    assert auth.session(token) is None and auth.sessions.get(token) is None   # ended, not merely refused
    people.passwords["duty.police"] = "a-brand-new-password"
    token = logged_in()
    people.secrets["duty.police"] = store.reset_totp("duty.police").totp_secret
    assert auth.session(token) is None
    token = logged_in()
    store.set_role("duty.police", DEPARTMENT, "water", departments)
    assert auth.session(token) is None
    token = logged_in()
    assert auth.session(token).department == "water"   # type: ignore[union-attr]
    store.set_role("duty.police", DATA_OFFICE, "data_bureau", departments)
    assert auth.session(token) is None
    token = logged_in()
    store.remove("duty.police")
    assert auth.session(token) is None


def test_a_session_ends_when_its_departments_grants_change_the_data_offices_included(platform, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Regression: the view read the access model once at start and each session froze its topics (issue 33)."""
    settings, _model, people, contracts = platform
    path = tmp_path / "config" / "access.yaml"
    path.parent.mkdir()
    path.write_text(access.ACCESS_FILE.read_text())
    auth = Authenticator(settings, access.load(path, contracts, settings.city_dir), tuple(c.topic for c in contracts.values()),
                         reload=lambda: access.load(path, contracts, settings.city_dir))
    police = auth.login("duty.police", people.passwords["duty.police"], people.code("duty.police"), "127.0.0.1")
    office = auth.login("office.data", people.passwords["office.data"], people.code("office.data"), "127.0.0.1")
    before = auth.session(office)
    assert before is not None and "dispatch.police.work_order.v1" not in before.topics
    grant = "      - {read: dispatch.data_bureau.work_order.v1}\n"
    assert grant in path.read_text()
    path.write_text(path.read_text().replace(grant, grant + "      - {read: dispatch.police.work_order.v1}\n"))
    assert auth.session(office) is None          # the data office's grants changed: its person logs in again
    assert auth.session(police) is not None      # the police's did not
    office = auth.login("office.data", people.passwords["office.data"], people.code("office.data"), "127.0.0.1")
    assert "dispatch.police.work_order.v1" in auth.session(office).topics   # type: ignore[union-attr]
    good = path.read_text()
    path.write_text(good + "  dept-broken: [\n")   # a file that no longer loads: the last good model stays, as on the broker
    assert auth.session(police) is not None and auth.session(office) is not None
    block = ("  dept-police:\n    department: police\n    grants:\n      - {read: dispatch.command.urge.v1}\n"
             "      - {read: dispatch.command.whistle.v1}\n      - {read: dispatch.command.reply.v1}\n"
             "      - {read: dispatch.police.work_order.v1}\n")
    assert block in good
    path.write_text(good.replace(block, ""))   # the department's principal gone from the access model
    assert auth.session(police) is None
    assert auth.login("duty.police", people.passwords["duty.police"], people.code("duty.police"), "127.0.0.1") is None


def test_sessions_expire(platform) -> None:  # type: ignore[no-untyped-def]
    people, now = platform[2], [1_796_000_000.0]
    auth = _auth(platform, session_s=600.0, clock=lambda: now[0])
    token = auth.login("duty.police", people.passwords["duty.police"], _code(people, "duty.police", now[0]), "127.0.0.1")
    now[0] += 599
    assert auth.session(token) is not None
    now[0] += 2
    assert auth.session(token) is None and auth.sessions.get(token or "") is None


def test_failed_logins_are_rate_limited_and_passwords_and_codes_never_logged(platform, caplog) -> None:  # type: ignore[no-untyped-def]
    people = platform[2]
    auth = _auth(platform)
    right = people.passwords["duty.police"]
    with caplog.at_level(logging.DEBUG):
        for i in range(MAX_FAILURES):
            assert auth.login("duty.police", f"guess-{i}", "000000", "10.0.0.9") is None
        code = people.code("duty.police")
        with pytest.raises(RateLimited):
            auth.login("duty.police", right, code, "10.0.0.9")       # even the right password waits
        assert auth.login("duty.police", right, code, "127.0.0.1")    # the limit is per user and address
    logged = caplog.text
    assert "guess-" not in logged and right not in logged and code not in logged and "duty.police" in logged
    # The Security page lists the refusals: who, from where, whether rate-limited; never a password.
    assert [r["rate_limited"] for r in auth.refused] == [False] * MAX_FAILURES + [True]
    assert "guess-" not in str(list(auth.refused)) and right not in str(list(auth.refused))


def test_a_department_sees_its_own_orders_and_the_events_routed_to_it_only(platform) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(platform)
    police, water = auth.viewer_of("police"), auth.viewer_of("water")
    lake = platform[0].lake_dir
    assert {o["department"] for o in views.work_orders(lake, police)} == {"police"}
    with pytest.raises(views.Forbidden, match="only its own work orders"):
        views.work_orders(lake, police, "water")
    assert views.city(lake, police)["events"] == []             # no event routed to the police
    assert [e["work_order_id"] for e in views.city(lake, water)["events"]] == ["WO-HL4-water"]
    for page in (lambda v: views.data(lake, v, {}), lambda v: views.security(lake, v, platform[1])):
        with pytest.raises(views.Forbidden):
            page(police)
    office = auth.viewer_of("data_bureau", DATA_OFFICE)
    assert office.admin
    assert {o["department"] for o in views.work_orders(lake, office)} == {"police", "water"}
    assert [e["event_id"] for e in views.city(lake, office)["events"]] == ["CE-flood-1"]


def test_the_city_page_counts_a_district_only_citys_events_warnings_and_orders_in_their_district(
        platform) -> None:  # type: ignore[no-untyped-def]
    """A city whose pack stops at districts: its events, warnings and work orders name a district and no street, and
    the City page counts them in that district (it dropped them, keyed by an empty street)."""
    lake = platform[0].lake_dir
    rows = [Row("city.event.incident.v1", 1, 0, T0, None, {}, json.dumps(
        {"event_id": "CE-110101-flood-1", "category": "flood", "title": "东城区道路积水/内涝", "status": "open",
         "district_code": "110101", "street_name": None, "detected_at": "2025-11-22T01:30:00Z",
         "department": "water", "evidence": {"devices": ["wl-0001"]}}, ensure_ascii=False))]
    LakeWriter(lake, "silver").write("city.event.incident.v1", 1, rows)
    _write(lake, "silver", "alert.early_warning.risk.v1", [
        {"warning_id": "EW-110101-waterlogging-1", "kind": "trending_hotspot", "category": "waterlogging",
         "district_code": "110101", "street_name": None, "detected_at": "2025-11-22T01:20:00Z"}])
    _write(lake, "silver", "dispatch.housing.work_order.v1",
           [{**_order("housing", 5), "street_code": None, "street_name": None, "district_code": "110101"}])
    auth = _auth(platform)
    office = views.city(lake, auth.viewer_of("data_bureau", DATA_OFFICE))
    assert office["by_area"]["110101"] == {"events": 1, "recent": 1, "warnings": 1}
    assert office["by_area"]["990101001"] == {"events": 1, "recent": 1}          # a street stays a street
    housing = views.city(lake, auth.viewer_of("housing"))
    assert housing["by_area"] == {"110101": {"orders": 1}}


def test_the_city_pages_events_name_their_deepest_area_a_street_else_a_district(platform) -> None:  # type: ignore[no-untyped-def]
    """The events table shows each event's area: a district's event has no street_name, so its district's name from
    the city's areas (the column was empty); a street's event its street, named by the areas where it names none."""
    lake = platform[0].lake_dir
    _write(lake, "bronze", "raw.ref.admin_area.v1", [
        {"area_code": "110101", "name": "东城区", "level": "district", "geometry": SQUARE,
         "updated_at": "2025-11-01T00:00:00Z"}])
    _write(lake, "silver", "city.event.incident.v1", [
        {"event_id": "CE-110101-flood-1", "category": "flood", "title": "东城区道路积水/内涝", "status": "open",
         "district_code": "110101", "street_name": None, "detected_at": "2025-11-22T01:30:00Z", "department": "water"},
        {"event_id": "CE-990101001-noise-1", "category": "noise", "title": "噪声扰民", "status": "open",
         "district_code": "990101", "street_code": "990101001", "street_name": "天宁街道（街道）",
         "detected_at": "2025-11-22T01:40:00Z", "department": "environment"}])
    events = views.city(lake, _auth(platform).viewer_of("data_bureau", DATA_OFFICE))["events"]
    assert {e["event_id"]: (e["area_code"], e["area_name"]) for e in events} == {
        "CE-990101001-noise-1": ("990101001", "天宁街道（街道）"),     # the event's own street name
        "CE-110101-flood-1": ("110101", "东城区"),
        "CE-flood-1": ("990101001", "天宁街道")}                      # no street_name: the street's, from the areas


def test_every_api_route_keeps_a_department_to_its_remit(platform, contracts) -> None:  # type: ignore[no-untyped-def]
    settings, model, store, _contracts = platform
    settings = settings.model_copy(update={"ui_cache_s": 0.0})

    async def scenario() -> None:
        ui = OperationsView(settings, contracts, model, _trail(settings))
        async with TestClient(TestServer(ui.app())) as client:
            for route in ("/api/me", "/api/areas", "/api/city", "/api/hotline", "/api/orders", "/api/data", "/api/broker",
                          "/api/security", "/api/live", "/quality-docs/index.html"):
                assert (await client.get(route)).status == 401, route
            bad = await client.post("/api/login", json=store.body("duty.police", "wrong"))
            assert bad.status == 401
            no_code = await client.post("/api/login", json={"principal": "duty.police",
                                                             "password": store.passwords["duty.police"]})
            assert no_code.status == 400 and "code" in (await no_code.json())["detail"]
            ok = await client.post("/api/login", json=store.body("duty.police"))
            assert ok.status == 200 and "HttpOnly" in ok.headers["Set-Cookie"]
            assert store.passwords["duty.police"] not in await ok.text()
            orders = (await (await client.get("/api/orders")).json())["orders"]
            assert orders and {o["department"] for o in orders} == {"police"}
            for route in ("/api/orders?department=water", "/api/data", "/api/broker", "/api/security",
                          "/quality-docs/index.html"):
                r = await client.get(route)
                assert r.status == 403, route
            city = await (await client.get("/api/city")).json()
            assert city["events"] == [] and "water" not in json.dumps(city, ensure_ascii=False)
            hotline = await (await client.get("/api/hotline")).json()
            assert hotline["stages"] == {} and hotline["orders"] == 2
            areas = await (await client.get("/api/areas")).json()
            assert {f["properties"]["label"] for f in areas["levels"]["street"]["features"]} == {"天宁街道"}
            await client.post("/api/logout", json={})
            assert (await client.get("/api/city")).status == 401

    asyncio.run(scenario())


def test_the_live_feed_gives_each_page_only_what_its_viewer_may_read(platform) -> None:  # type: ignore[no-untyped-def]
    from citybrain.ui.live import LiveFeed

    auth = _auth(platform)
    feed = LiveFeed(platform[0], ["city.event.incident.v1", "dispatch.police.work_order.v1", "dispatch.water.work_order.v1"])

    async def scenario() -> None:
        police, office = feed.subscribe(auth.viewer_of("police")), feed.subscribe(auth.viewer_of("data_bureau", DATA_OFFICE))
        feed.publish("city.event.incident.v1", {"event_id": "CE-1"})
        feed.publish("dispatch.water.work_order.v1", _order("water", 9))
        feed.publish("dispatch.police.work_order.v1", _order("police", 8))
        assert [police.get_nowait()[1]["work_order_id"] for _ in range(police.qsize())] == ["WO-HL8-police"]
        assert office.qsize() == 3
        assert [t for t, _v in feed.seen_by(auth.viewer_of("police"))] == ["dispatch.police.work_order.v1"]

    asyncio.run(scenario())


def test_an_open_live_stream_ends_when_its_session_does(platform, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A page left open keeps no feed once its person's password (or grants) changed: the stream ends."""
    from citybrain.ui import server

    settings, model, people, contracts = platform
    monkeypatch.setattr(server, "LIVE_RECHECK_S", 0.0)

    async def events(stream: Any, until: str) -> list[str]:
        lines = []
        while True:
            line = (await asyncio.wait_for(stream.content.readline(), 10)).decode()
            if not line:       # the server ended the stream
                return lines + ["(end)"]
            lines.append(line.strip())
            if line.startswith(until):
                return lines

    async def scenario() -> list[str]:
        ui = OperationsView(settings, contracts, model, _trail(settings))
        async with TestClient(TestServer(ui.app())) as client:
            await client.post("/api/login", json=people.body("duty.police"))
            stream = await client.get("/api/live")
            assert stream.status == 200 and "event: hello" in await events(stream, "event: hello")
            ui.live.publish("dispatch.police.work_order.v1", _order("police", 8))
            assert "event: record" in await events(stream, "event: record")
            AccountStore(settings.access_dir).set_password("duty.police", "a-brand-new-password")
            ui.live.publish("dispatch.police.work_order.v1", _order("police", 9))
            return await events(stream, "never")

    after = asyncio.run(scenario())
    assert after[-1] == "(end)" and sum(line.startswith("event: record") for line in after) <= 1, after


def test_with_the_lake_on_object_storage_the_data_docs_are_served_from_its_copy(platform, contracts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow.fs as pafs

    from citybrain.lake.store import LakePath

    settings, model, store, _contracts = platform
    lake = LakePath(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "remote-lake", "subtree://")
    (lake / "quality" / "data_docs" / "index.html").write_text("<html>质量报告</html>")
    (tmp_path / "secret.txt").write_text("not for the view")

    async def scenario() -> None:
        ui = OperationsView(settings, contracts, model, _trail(settings))
        ui.lake = lake   # as CITYBRAIN_LAKE_URI=s3://... would give
        async with TestClient(TestServer(ui.app())) as client:
            await client.post("/api/login", json=store.body("office.data"))
            page = await client.get("/quality-docs/index.html")
            assert page.status == 200 and page.content_type == "text/html" and "质量报告" in await page.text()
            for bad in ("/quality-docs/missing.html", "/quality-docs/../../secret.txt", "/quality-docs/%2E%2E/%2E%2E/secret.txt"):
                assert (await client.get(bad)).status == 404, bad
            data = await (await client.get("/api/data")).json()
            assert data["data_docs"] == "/quality-docs/index.html"

    asyncio.run(scenario())


def test_the_page_learns_the_citys_zone_to_show_times_in_and_utc_until_a_city_is_imported(platform) -> None:  # type: ignore[no-untyped-def]
    """Times stay UTC on the wire; /api/me names the zone of the city's latest raw.ref.city record for the screen."""
    settings, model, store, contracts = platform
    settings = settings.model_copy(update={"ui_cache_s": 0.0})

    async def me(client: TestClient) -> dict[str, Any]:
        response = await client.get("/api/me")
        assert response.status == 200
        return await response.json()   # type: ignore[no-any-return]

    async def scenario() -> None:
        async with TestClient(TestServer(OperationsView(settings, contracts, model, _trail(settings)).app())) as client:
            await client.post("/api/login", json=store.body("duty.police"))
            before = await me(client)
            assert before["principal"] == "duty.police" and before["city"]["timezone"] == "UTC"
            _write(settings.lake_dir, "bronze", "raw.ref.city.v1", [
                {"city_code": "9901", "name": "云州市", "jurisdiction_id": "yunzhou.gov.cn", "timezone": "Asia/Shanghai",
                 "pack_version": "1.0.0", "updated_at": "2025-11-01T00:00:00Z"},
                {"city_code": "0644", "name": "Los Angeles", "jurisdiction_id": "lacity.org",
                 "timezone": "America/Los_Angeles", "pack_version": "2026.1.0", "updated_at": "2025-11-20T00:00:00Z"}])
            city = (await me(client))["city"]
            assert city == {"name": "Los Angeles", "name_en": None, "timezone": "America/Los_Angeles"}
            assert (await (await client.get("/api/areas")).json())["city"] == city
            orders = (await (await client.get("/api/orders")).json())["orders"]
            assert orders[0]["sla_deadline"] == "2025-11-22T02:00:00Z"       # the wire's UTC, for the page to convert

    asyncio.run(scenario())


SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def test_every_answer_of_the_view_carries_the_security_headers_and_a_csp_the_page_keeps_to(platform) -> None:  # type: ignore[no-untyped-def]
    """Regression: the view sent no CSP, X-Frame-Options or HSTS (issue 33). The page's CSP allows no inline script
    or style, so the page must have none, and everything it loads must be its own."""
    import re

    from citybrain.ui.server import STATIC

    settings, model, _store, contracts = platform
    page = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page) and "<style" not in page and " style=" not in page
    assert not re.search(r"\bon[a-z]+=", page)
    for text in (page, (STATIC / "app.js").read_text(), (STATIC / "style.css").read_text()):
        assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//", text)   # nothing from another origin

    async def scenario(settings: Any) -> dict[str, dict[str, str]]:
        async with TestClient(TestServer(OperationsView(settings, contracts, model, _trail(settings)).app())) as client:
            return {route: dict((await client.get(route)).headers) for route in
                    ("/", "/static/app.js", "/vendor/echarts.min.js", "/api/me", "/quality-docs/index.html", "/nowhere")}

    answers = asyncio.run(scenario(settings))
    for route, headers in answers.items():
        assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, route
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], route
        assert "Strict-Transport-Security" not in headers, route
    csp = answers["/"]["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "unsafe-eval" not in csp
    assert answers["/quality-docs/index.html"]["Content-Security-Policy"].startswith("sandbox allow-scripts")
    behind_proxy = asyncio.run(scenario(settings.model_copy(update={"http_behind_tls_proxy": True})))
    assert behind_proxy["/"]["Strict-Transport-Security"].startswith("max-age=")


def test_login_and_logout_take_json_only(platform) -> None:  # type: ignore[no-untyped-def]
    """Regression: /api/login took a text/plain body, which another site's form can send (login CSRF, issue 33)."""
    settings, model, store, contracts = platform
    right = json.dumps(store.body("duty.police"))

    async def scenario() -> None:
        async with TestClient(TestServer(OperationsView(settings, contracts, model, _trail(settings)).app())) as client:
            for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
                r = await client.post("/api/login", data=right, headers={"Content-Type": ctype})
                assert r.status == 415 and "application/json" in (await r.json())["detail"], ctype
                assert "Set-Cookie" not in r.headers
            assert (await client.post("/api/login", data=right, headers={"Content-Type": "application/json"})).status == 200
            assert (await client.post("/api/logout", data="", headers={"Content-Type": "text/plain"})).status == 415
            assert (await client.get("/api/me")).status == 200     # the refused logout logged nobody out

    asyncio.run(scenario())


def test_a_failing_page_answers_a_trace_id_and_neither_the_error_nor_a_path(platform, caplog) -> None:  # type: ignore[no-untyped-def]
    """Regression: a 500 body named the exception and an absolute lake path (issue 33)."""
    settings, model, store, contracts = platform
    ui = OperationsView(settings, contracts, model, _trail(settings))
    secret = f"{settings.lake_dir}/silver/hotline/part-0.parquet"

    def broken(*_args: Any) -> Any:
        raise PermissionError(f"[Errno 13] Permission denied: '{secret}'")

    ui._compute = broken   # type: ignore[method-assign]

    async def scenario() -> tuple[int, dict[str, str], str]:
        async with TestClient(TestServer(ui.app())) as client:
            await client.post("/api/login", json=store.body("duty.police"))
            r = await client.get("/api/hotline")
            return r.status, dict(r.headers), await r.text()

    with caplog.at_level(logging.ERROR, logger="citybrain.ui.server"):
        status, headers, text = asyncio.run(scenario())
    body = json.loads(text)
    assert status == 500 and "PermissionError" not in text and secret not in text and "/" not in body["detail"].split("(")[0]
    trace = headers["X-CityBrain-Trace-Id"]
    assert body["trace_id"] == trace and trace in body["detail"]
    assert trace in caplog.text and secret in caplog.text   # the log line says what failed, under the same id


def test_made_up_user_names_keep_the_limiter_bounded_and_a_real_lockout_holds(platform, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Regression: each made-up user name added a limiter entry for good (3,000 names: 3,002 entries, issue 33)."""
    from citybrain.ui import auth as auth_module

    right = platform[2].passwords["duty.police"]
    auth = _auth(platform)
    for i in range(MAX_FAILURES):
        auth.login("duty.police", f"guess-{i}", "000000", "10.0.0.9")
    for n in range(10_000):   # one address: held back after MAX_ADDRESS_FAILURES, whatever the names
        try:
            auth.login(f"made-up-{n:05d}", "x", "000000", "203.0.113.7")
        except RateLimited:
            pass
    assert auth.tracked() <= auth_module.MAX_ADDRESS_FAILURES + 3
    with pytest.raises(RateLimited):
        auth.login(f"made-up-{10_001}", "x", "000000", "203.0.113.7")
    for n in range(10_000):   # spread over addresses: the table stays within its size
        auth.login(f"made-up-{n:05d}", "x", "000000", f"198.51.{n // 100}.{n % 100}")
    assert auth.tracked() <= 2 * auth_module.MAX_TRACKED + 1
    with pytest.raises(RateLimited):
        auth.login("duty.police", right, platform[2].code("duty.police"), "10.0.0.9")   # the lockout outlived the flood
    monkeypatch.setattr(auth_module, "MAX_TRACKED", 100)
    small = _auth(platform)
    for n in range(10_000):
        small.login(f"made-up-{n:05d}", "x", "000000", f"198.51.{n // 100}.{n % 100}")
    assert small.tracked() == 200   # single failures and addresses, 100 of each kept; nobody held back


def test_made_up_page_arguments_keep_the_page_cache_bounded(platform) -> None:  # type: ignore[no-untyped-def]
    from aiohttp.test_utils import make_mocked_request

    from citybrain.ui.server import CACHE_ENTRIES

    settings, model, _store, contracts = platform
    ui = OperationsView(settings, contracts, model, _trail(settings))
    police = ui.auth.viewer_of("police")
    ui.viewer = lambda _request: police   # type: ignore[method-assign]
    ui._compute = lambda *_args: []   # type: ignore[method-assign]
    handler = ui._page("orders")

    async def scenario() -> None:
        for n in range(3 * CACHE_ENTRIES):
            await handler(make_mocked_request("GET", f"/api/orders?department=made-up-{n}"))

    asyncio.run(scenario())
    assert len(ui._cache) == CACHE_ENTRIES


def test_an_expiring_lru_forgets_the_oldest_and_the_stale() -> None:
    from citybrain.gateway.hardening import ExpiringLru

    now = [0.0]
    table: ExpiringLru[str, int] = ExpiringLru(2, ttl_s=10.0, clock=lambda: now[0])
    table.put("a", 1)
    table.put("b", 2)
    assert table.get("a") == 1      # a is now the most recently used
    table.put("c", 3)
    assert table.get("b") is None and table.get("a") == 1 and len(table) == 2
    now[0] = 10.0
    assert table.get("a") is None and table.get("c") is None and len(table) == 0
    with pytest.raises(ValueError, match="max_size 0"):
        ExpiringLru(0, 1.0)


def test_the_views_metrics_count_logins_and_page_times_and_name_no_one(platform) -> None:  # type: ignore[no-untyped-def]
    """/metrics is unauthenticated (Prometheus scrapes it): logins by outcome, pages by name, never a principal."""
    from prometheus_client.parser import text_string_to_metric_families

    settings, model, store, contracts = platform
    password = store.passwords["duty.police"]

    async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        answer = await client.get("/metrics")
        assert answer.status == 200
        text = await answer.text()
        assert "duty.police" not in text and password not in text and "127.0.0.1" not in text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    async def scenario() -> None:
        async with TestClient(TestServer(OperationsView(settings, contracts, model, _trail(settings)).app())) as client:
            before = await scrape(client)
            await client.post("/api/login", json=store.body("duty.police", "wrong"))
            await client.post("/api/login", json=store.body("duty.police"))
            await client.get("/api/orders")
            await client.get("/api/orders")   # the second from the cache
            after = await scrape(client)

        def moved(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)
        assert moved("citybrain_ui_logins_total", outcome="refused") == 1
        assert moved("citybrain_ui_logins_total", outcome="ok") == 1
        assert moved("citybrain_ui_page_seconds_count", page="orders", cached="no") == 1
        assert moved("citybrain_ui_page_seconds_count", page="orders", cached="yes") == 1
        assert moved("citybrain_http_requests_total", service="ui", route="/api/login", method="POST", status="4xx") == 1

    asyncio.run(scenario())


def test_a_unit_test_that_hands_the_view_no_trail_fails_before_reaching_a_broker(platform) -> None:  # type: ignore[no-untyped-def]
    """The view's default trail sends to the audit topic; in the unit tests (tests/unit/conftest.py) asking for it
    fails, so no test's records land on a broker that happens to listen here."""
    settings, model, _store, contracts = platform
    with pytest.raises(AssertionError, match="unit tests reach no broker"):
        OperationsView(settings, contracts, model)


def test_logins_logouts_and_data_pages_read_go_on_the_views_audit_trail(platform, contracts) -> None:  # type: ignore[no-untyped-def]
    """Each login (succeeded, failed, rate-limited), logout and data page read, from the page cache too, is one
    chained record; no password."""
    from citybrain.access.trail import verify

    settings, model, store, _contracts = platform
    records: list[dict[str, Any]] = []

    async def scenario() -> None:
        ui = OperationsView(settings, contracts, model, _trail(settings, records))
        async with TestClient(TestServer(ui.app())) as client:
            await client.post("/api/login", json=store.body("duty.police", "wrong"))
            await client.post("/api/login", json=store.body("duty.police"))
            await client.get("/api/orders")
            await client.get("/api/orders")                    # the second from the page cache: read all the same
            await client.get("/api/orders?department=water")   # another's remit: refused, and recorded so
            await client.get("/api/city")          # the overview: not a data page
            await client.post("/api/logout", json={})
            for i in range(MAX_FAILURES + 1):
                await client.post("/api/login", json=store.body("duty.water", f"guess-{i}"))

    asyncio.run(scenario())
    seen = [(r["action"], r["actor"], r["outcome"]) for r in records]
    assert seen[:6] == [("login_failed", "duty.police", "failed"), ("login_ok", "duty.police", "ok"),
                        ("read", "duty.police", "ok"), ("read", "duty.police", "ok"), ("read", "duty.police", "denied"),
                        ("logout", "duty.police", "ok")]
    assert records[4]["target"] == "orders page" and records[4]["details"] == {"department": "water"}
    assert seen[6:] == [("login_failed", "duty.water", "failed")] * MAX_FAILURES + [("login_failed", "duty.water", "denied")]
    assert records[2]["target"] == "orders page" and records[-1]["details"]["rate_limited"] is True
    assert verify(records) == []
    assert not any(p in json.dumps(records) for p in store.passwords.values())


def _kpi(department: str, district: str, tickets: int, on_time: float, resolved: float, satisfied: float | None,
         followed_up: int) -> dict[str, Any]:
    """One respond_on_receipt_kpis row of 2025-11-22, as the dataset's SQL writes it."""
    return {"department": department, "district_code": district, "day": "2025-11-22", "tickets": tickets,
            "response_min_median": 12.5, "handled_on_time_rate": on_time, "resolution_rate": resolved,
            "satisfaction_rate": satisfied, "followed_up": followed_up, "overdue": 0, "reopened": 0}


def test_the_three_rates_of_several_districts_are_shares_of_all_their_tickets_not_means_of_shares(platform) -> None:  # type: ignore[no-untyped-def]
    """Regression (issue 35): the Hotline page averaged the districts' rates, so a district of 10 tickets weighed as
    much as one of 1,000. Each rate is pooled over the tickets it rests on (satisfaction over the callers followed
    up) and handed on with that number."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from citybrain.scenarios.datasets import DATASETS
    from citybrain.scenarios.release import publish

    lake = platform[0].lake_dir
    rows = [_kpi("water", "990101", 1000, 0.95, 0.90, 0.80, 500),   # the big district
            _kpi("water", "990102", 10, 0.10, 0.10, 0.00, 10),       # a small one, doing badly
            _kpi("police", "990102", 30, 0.50, 0.60, None, 0)]      # nobody followed up yet
    dataset = DATASETS["respond_on_receipt_kpis"]
    publish(lake, dataset.name, pa.Table.from_pylist(rows), dataset.contract(), {"passed": True}, [],
            now=datetime(2025, 11, 22, 3, tzinfo=timezone.utc))
    auth = _auth(platform)
    rates = views.hotline(lake, auth.viewer_of("data_bureau", DATA_OFFICE))["rates"]
    assert rates["all"] == {"tickets": 1040, "handled_on_time_rate": round((950 + 1 + 15) / 1040, 4),
                            "handled_on_time_rate_n": 1040, "resolution_rate": round((900 + 1 + 18) / 1040, 4),
                            "resolution_rate_n": 1040, "satisfaction_rate": round(400 / 510, 4), "satisfaction_rate_n": 510}
    by_district = {g["district_code"]: g for g in rates["district"]}
    assert by_district["990101"]["resolution_rate"] == 0.9 and by_district["990101"]["tickets"] == 1000
    assert by_district["990102"]["resolution_rate"] == round((1 + 18) / 40, 4)   # not (0.10 + 0.60) / 2
    assert by_district["990102"]["satisfaction_rate"] == 0.0 and by_district["990102"]["satisfaction_rate_n"] == 10
    assert [(g["day"], g["tickets"]) for g in rates["day"]] == [("2025-11-22", 1040)]
    assert {g["department"]: g["tickets"] for g in rates["department"]} == {"police": 30, "water": 1010}
    police = views.hotline(lake, auth.viewer_of("police"))["rates"]      # a department: its own rows only
    assert police["all"]["tickets"] == 30 and police["all"]["satisfaction_rate"] is None
    assert police["all"]["satisfaction_rate_n"] == 0


def test_the_hotline_page_ranks_as_the_release_does_and_a_department_sees_its_own_place_only(platform) -> None:  # type: ignore[no-untyped-def]
    """考核 rankings (issue 35 item 5): the page draws the released hotline_rankings, the dataset the 考核 publishes,
    so the two never differ; a department gets its own row among the departments, not the others' nor the areas'."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from citybrain.scenarios.datasets import DATASETS
    from citybrain.scenarios.release import publish

    lake = platform[0].lake_dir
    weights = {"weight_response": 0.3, "weight_resolution": 0.4, "weight_satisfaction": 0.3}
    rows = [{"scope": scope, "unit": unit, "tickets": n, "handled_on_time_rate": 1.0, "resolution_rate": 1.0,
             "satisfaction_rate": None, "followed_up": 0, "score": score, "rank": rank, **weights}
            for scope, unit, n, score, rank in (("department", "water", 12, 90.0, 1), ("department", "police", 3, 40.0, 2),
                                                ("district", "990101", 15, 80.0, 1), ("street", "990101001", 15, 80.0, 1))]
    dataset = DATASETS["hotline_rankings"]
    publish(lake, dataset.name, pa.Table.from_pylist(rows), dataset.contract(), {"passed": True}, [],
            now=datetime(2025, 11, 22, 3, tzinfo=timezone.utc))
    auth = _auth(platform)
    office = views.hotline(lake, auth.viewer_of("data_bureau", DATA_OFFICE))["rankings"]
    assert [(r["scope"], r["unit"], r["rank"]) for r in office] == [
        ("department", "water", 1), ("department", "police", 2), ("district", "990101", 1), ("street", "990101001", 1)]
    police = views.hotline(lake, auth.viewer_of("police"))["rankings"]
    assert [(r["unit"], r["rank"], r["tickets"]) for r in police] == [("police", 2, 3)]


def test_a_release_without_follow_up_counts_weighs_its_satisfaction_by_its_tickets() -> None:
    """respond_on_receipt_kpis released before 2026-12-07 has no followed_up: satisfaction is weighted by tickets."""
    from citybrain.ui.kpis import pooled

    old = [{"tickets": 300, "satisfaction_rate": 1.0}, {"tickets": 100, "satisfaction_rate": 0.0}]
    assert pooled(old)["satisfaction_rate"] == 0.75 and pooled(old)["satisfaction_rate_n"] == 400
    assert pooled([])["resolution_rate"] is None and pooled([])["tickets"] == 0


def test_the_page_gets_the_names_of_every_area_grid_and_department_of_any_code_scheme(platform) -> None:  # type: ignore[no-untyped-def]
    """Regression (issue 35): departments showed as role ids (`civil_affairs`) and areas as codes. /api/areas hands
    the page every area's and department's names by code from the reference data (Los Angeles' pack: codes that
    do not nest by their digits; a grid from raw.ref.grid; a withdrawn department an older ticket still names)."""
    from citybrain.city.pack_import import reference_records
    from tests.unit.test_gateway_us311 import los_angeles

    settings, model, store, contracts = platform
    lake = settings.lake_dir
    la = reference_records(los_angeles(), "2026-12-07T00:00:00Z")
    for topic in ("raw.ref.admin_area.v1", "raw.ref.department.v1"):
        _write(lake, "bronze", topic, [r for _where, r in la[topic]])
    _write(lake, "bronze", "raw.ref.grid.v1", [
        {"grid_code": "99010100100101", "name": "第1网格", "community_code": "990101001001", "geometry": SQUARE,
         "updated_at": "2026-01-01T00:00:00Z"}])
    _write(lake, "bronze", "raw.ref.department.v1", [
        {"department_id": "civil_affairs", "name": "市民政局", "name_en": "Civil Affairs Bureau", "remit": ["elderly_care"],
         "status": "withdrawn", "updated_at": "2026-01-01T00:00:00Z"}])
    found = views.names(lake)
    assert found["areas"]["LA-CD13"] == {"name": "Council District 13", "name_en": None, "level": "street",
                                         "parent": "LA-BASIN"}
    assert found["areas"]["990101001"]["name"] == "天宁街道"              # the fixture's own areas stay
    assert found["areas"]["99010100100101"] == {"name": "第1网格", "name_en": None, "level": "grid",
                                                "parent": "990101001001"}
    assert found["departments"]["urban_management"]["name"] == "LA Sanitation and Environment"
    assert found["departments"]["civil_affairs"] == {"name": "市民政局", "name_en": "Civil Affairs Bureau"}

    async def scenario() -> dict[str, Any]:
        async with TestClient(TestServer(OperationsView(settings, contracts, model, _trail(settings)).app())) as client:
            await client.post("/api/login", json=store.body("duty.police"))
            return await (await client.get("/api/areas")).json()   # type: ignore[no-any-return]

    served = asyncio.run(scenario())["names"]      # public reference data: a department gets every name
    assert served["departments"]["civil_affairs"]["name"] == "市民政局" and served["areas"]["LA-SFV"]["level"] == "district"


def test_the_hotlines_overdue_rows_name_the_area_by_its_code_for_the_page_to_name(platform) -> None:  # type: ignore[no-untyped-def]
    """A department's overdue orders carry their deepest area's code (street, else district), which the page
    turns into its name; the code stays for the tooltip."""
    lake = platform[0].lake_dir
    more = [{**_order("police", 6), "street_code": None, "street_name": None, "district_code": "110101",
             "sla_deadline": "2025-11-22T02:30:00Z"},     # a district's order, and one received after the deadlines
            {**_order("police", 7), "received_at": "2025-11-22T03:00:00Z", "sla_deadline": "2025-11-22T05:00:00Z"}]
    LakeWriter(lake, "silver").write("dispatch.police.work_order.v1", 1, [
        Row("dispatch.police.work_order.v1", 1, o, T0, None, {}, json.dumps(v, ensure_ascii=False)) for o, v in enumerate(more)])
    overdue = views.hotline(lake, _auth(platform).viewer_of("police"))["overdue"]
    assert {(r["work_order_id"], r["area_code"]) for r in overdue} == {
        ("WO-HL1-police", "990101001"), ("WO-HL2-police", "990101001"), ("WO-HL6-police", "110101")}
