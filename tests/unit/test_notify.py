"""Subscriptions as code, checked against the grants; notifications shaped as NGSI-LD says; retries, redirects not
followed; the notifier's loop over each subscription (scripted consumers, a real HTTP endpoint on 127.0.0.1): paused
and resumed without loss, refusals and unreadable records dead-lettered; dead letters replayed, and not twice."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest
import yaml
from aiohttp import web
from kafka.structs import TopicPartition
from typer.testing import CliRunner

from citybrain import access
from citybrain.contracts.validate import RecordValidator
from citybrain.ingest.producer import ProduceSummary
from citybrain.notify import replay
from citybrain.notify.ngsi import entity_of, notification
from citybrain.notify.notifier import MAX_ATTEMPTS, REFUSED, UNREADABLE, Delivery, dead_letter, deliver, status_path
from citybrain.notify.subscriptions import SUBSCRIPTIONS_FILE, Subscription, SubscriptionError, load_subscriptions
from citybrain.settings import get_settings, load_settings
from tests.unit.test_follow import Record, ScriptedConsumer

GOOD = {"id": "water-desk", "principal": "dept-water", "topic": "dispatch.water.work_order.v1",
        "endpoint": "http://127.0.0.1:8700/notify"}


def _load(tmp_path: Path, contracts, *entries: dict[str, Any]) -> list[Subscription]:  # type: ignore[no-untyped-def]
    path = tmp_path / "subscriptions.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "subscriptions": list(entries)}), encoding="utf-8")
    return load_subscriptions(path, contracts, access.load(access.ACCESS_FILE, contracts))


def test_the_shipped_file_and_a_good_subscription_load(tmp_path: Path, contracts) -> None:  # type: ignore[no-untyped-def]
    assert load_subscriptions(SUBSCRIPTIONS_FILE, contracts, access.load(access.ACCESS_FILE, contracts)) == []
    (sub,) = _load(tmp_path, contracts, GOOD)
    assert (sub.urn, sub.group, sub.accept, sub.format) == (
        "urn:ngsi-ld:Subscription:water-desk", "dept-water.notify.water-desk", "application/ld+json", "normalized")


@pytest.mark.parametrize("change, words", [
    ({"principal": "dept-police"}, "dept-police may not read dispatch.water.work_order.v1"),   # not entitled
    ({"principal": "dept-nobody"}, "`principal` 'dept-nobody'"),
    ({"topic": "raw.hotline.service_request.v1"}, "not a notifiable contract topic"),   # the restricted raw zone
    ({"endpoint": "ftp://example.org/x"}, "not an http(s) URL"),
    ({"accept": "text/xml"}, "`accept` is one of"),
    ({"id": "Water Desk"}, "`id` 'Water Desk'"),
    ({"colour": "red"}, "unknown key(s) colour"),
])
def test_a_subscription_the_rules_forbid_is_refused_by_name(tmp_path: Path, contracts, change: dict[str, Any],  # type: ignore[no-untyped-def]
                                                            words: str) -> None:
    with pytest.raises(SubscriptionError, match="Fix|one of") as err:
        _load(tmp_path, contracts, {**GOOD, **change})
    assert words in str(err.value)


def test_two_subscriptions_with_one_id_are_refused(tmp_path: Path, contracts) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SubscriptionError, match="must be unique"):
        _load(tmp_path, contracts, GOOD, GOOD)


def test_a_record_becomes_a_normalized_or_concise_ngsi_ld_entity_in_a_notification(contracts) -> None:  # type: ignore[no-untyped-def]
    event = {**contracts["city.event.incident.v1"].examples[0], "lat": 38.7, "long": 117.45}
    entity = entity_of("city.event.incident.v1", event, "CE-1", "normalized")
    assert entity["id"] == "urn:ngsi-ld:CityEvent:CE-1" and entity["type"] == "CityEvent"
    assert entity["location"] == {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [117.45, 38.7]}}
    assert entity["category"] == {"type": "Property", "value": event["category"]} and "lat" not in entity
    concise = entity_of("city.event.incident.v1", event, "CE-1", "concise")
    assert concise["category"] == event["category"] and concise["location"]["type"] == "Point"
    sub = Subscription("desk", "dept-emergency", "city.event.incident.v1", "http://x/n")
    a, b = notification(sub, sub.topic, event, "CE-1"), notification(sub, sub.topic, event, "CE-1")
    assert a["id"] == b["id"] and a["type"] == "Notification" and a["subscriptionId"] == sub.urn and "@context" in a
    assert "@context" not in notification(Subscription("d", "p", sub.topic, "http://x", "application/json"),
                                          sub.topic, event, "CE-1")


def test_an_urge_or_a_whistle_is_its_own_entity_type_not_a_work_order() -> None:
    assert entity_of("dispatch.command.urge.v1", {}, "U-1", "concise")["type"] == "Urge"
    assert entity_of("dispatch.command.whistle.v1", {}, "W-1", "concise")["type"] == "Whistle"
    assert entity_of("dispatch.water.work_order.v1", {}, "WO-1", "concise")["type"] == "WorkOrder"


def _serve(statuses: list[int]):  # type: ignore[no-untyped-def]
    """An endpoint answering ``statuses`` in turn (then 204), and the list of what it was sent."""
    seen: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.Response(status=statuses.pop(0) if statuses else 204)

    app = web.Application()
    app.router.add_post("/n", handler)
    return app, seen


async def _start(app: web.Application) -> tuple[web.AppRunner, Subscription]:
    """The endpoint served on a free port of 127.0.0.1, and a subscription to it."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, Subscription("d", "p", "dispatch.water.work_order.v1", f"http://127.0.0.1:{port}/n")


@pytest.mark.parametrize("statuses, delivered, attempts", [
    ([503, 429, 500], True, 4),                 # retried until taken
    ([500] * MAX_ATTEMPTS, False, MAX_ATTEMPTS),  # every try failed
    ([400], False, 1),                          # a refusal is not retried
])
def test_retries_follow_the_status(statuses: list[int], delivered: bool, attempts: int) -> None:
    async def run():  # type: ignore[no-untyped-def]
        app, seen = _serve(list(statuses))
        runner, sub = await _start(app)
        try:
            async with aiohttp.ClientSession() as session:
                result = await deliver(session, sub, {"id": "n1"}, Delivery(), base_s=0.001)
                return result, len(seen)
        finally:
            await runner.cleanup()

    outcome, sent = asyncio.run(run())
    assert (outcome.delivered, outcome.attempts, sent) == (delivered, attempts, attempts)
    assert bool(outcome.error) == (not delivered) and outcome.refused == (statuses == [400])


def test_no_answer_at_all_is_retried_and_named() -> None:
    sub = Subscription("d", "p", "dispatch.water.work_order.v1", "http://127.0.0.1:9/n")   # nothing listens on 9

    async def run():  # type: ignore[no-untyped-def]
        async with aiohttp.ClientSession() as session:
            return await deliver(session, sub, {"id": "n"}, Delivery(), base_s=0.001)

    outcome = asyncio.run(run())
    assert (outcome.delivered, outcome.attempts, outcome.status, outcome.refused) == (False, MAX_ATTEMPTS, 0, False)
    assert outcome.error


class _DeadLetters:
    """The notifier's dead-letter producer, without a broker: it takes every letter its contract allows, as the
    real one does, and refuses the others."""

    letters: list[dict[str, Any]] = []

    def __init__(self, settings, producer_id: str) -> None:  # type: ignore[no-untyped-def]
        pass

    def __enter__(self) -> _DeadLetters:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def produce(self, contract, records):  # type: ignore[no-untyped-def]
        check = RecordValidator(contract)
        refused = [(r.source, rejection) for r in records for rejection in [check(r.value)] if rejection is not None]
        self.letters.extend(r.value for r in records if check(r.value) is None)
        return ProduceSummary(contract.topic, read=len(records), accepted=len(records) - len(refused),
                              dead_lettered=len(refused), rejections=refused)


class PausableConsumer(ScriptedConsumer):
    """A scripted consumer that also pauses, resumes and seeks as kafka-python's does; ``values`` replaces the
    value of the records at those offsets."""

    def __init__(self, ends: dict[TopicPartition, int], value: bytes, values: dict[int, bytes] | None = None) -> None:
        super().__init__(ends, group=True, value=value)
        self.values = values or {}
        self.stopped: set[TopicPartition] = set()

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        held, self.held = self.held, self.held - self.stopped
        try:
            polled = super().poll(timeout_ms, max_records)
        finally:
            self.held = held
        return {tp: [Record(r.topic, r.partition, r.offset, r.timestamp, value=self.values.get(r.offset, r.value),
                            headers=r.headers) for r in records] for tp, records in polled.items()}

    def pause(self, *tps: TopicPartition) -> None:
        self.stopped |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.stopped -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.stopped)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset


TOPIC = "dispatch.water.work_order.v1"
TP = TopicPartition(TOPIC, 0)


def _notifier(tmp_path: Path, contracts, monkeypatch, endpoints: dict[str, str], records: int,  # type: ignore[no-untyped-def]
              values: dict[int, bytes] | None = None):
    """A notifier of one subscription per endpoint (``id: url``), each topic holding ``records`` work orders
    (event ids e0, e1, ...; ``values`` replaces some) for it to read from a scripted consumer; and those
    consumers by subscription id."""
    from citybrain.ingest import producer
    from citybrain.kafka import clients
    from citybrain.notify.notifier import Notifier

    order = json.dumps(contracts[TOPIC].examples[0]).encode()
    subs = [Subscription(sid, "dept-water", TOPIC, url) for sid, url in endpoints.items()]
    consumers = {s.id: PausableConsumer({TP: records}, order, values) for s in subs}
    monkeypatch.setattr(clients, "consumer", lambda settings, *topics, group_id, **config:
                        consumers[group_id.rsplit(".", 1)[1]])
    monkeypatch.setattr(producer, "ValidatedProducer", _DeadLetters)
    monkeypatch.setattr(_DeadLetters, "letters", [])
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    return Notifier(settings, contracts, subs, {"dept-water": "pw"}, retry_base_s=0.001, pause_max_s=0.05), consumers


TAKEN = web.AppKey("taken", list)


def _taken(app: web.Application) -> list[str]:
    """The event ids of the notifications the endpoint took (answered 2xx), in the order it took them."""
    return [n["data"][0]["id"].rsplit(":", 1)[1] for n in app[TAKEN]]


def _serve_until(down: list[int]) -> web.Application:
    """An endpoint answering ``down[0]`` to everything until ``down`` is emptied, then 204; ``app[TAKEN]`` is
    what it took."""
    async def handler(request: web.Request) -> web.Response:
        note = await request.json()
        if down:
            return web.Response(status=down[0])
        request.app[TAKEN].append(note)
        return web.Response(status=204)

    app = web.Application()
    app[TAKEN] = []
    app.router.add_post("/n", handler)
    return app


def test_an_endpoint_down_for_a_while_then_back_gets_every_record_once_in_order_and_none_is_dead_lettered(  # type: ignore[no-untyped-def]
        tmp_path: Path, contracts, monkeypatch) -> None:
    """Regression guard of issue 32: a failing endpoint's records were dead-lettered after one round of tries."""
    async def run():  # type: ignore[no-untyped-def]
        down = [503]
        app = _serve_until(down)
        runner, sub = await _start(app)
        notifier, consumers = _notifier(tmp_path, contracts, monkeypatch, {"desk": sub.endpoint}, records=4)
        seen_paused: list[tuple[dict[str, Any], list[Any]]] = []

        async def watch() -> None:   # what the status says while the endpoint is down, then bring it back
            while not seen_paused:
                st = notifier.status()["subscriptions"]["desk"]
                if st["paused"] and st["waiting"] == 4:
                    seen_paused.append((st, list(consumers["desk"].commits)))
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)   # several tries while paused, each failing
            down.clear()

        watcher = asyncio.create_task(watch())
        try:
            state = await asyncio.wait_for(notifier.run(idle_exit_s=0.3), 30)
            return state, consumers["desk"], notifier, _taken(app), seen_paused
        finally:
            watcher.cancel()
            await runner.cleanup()

    state, consumer, notifier, taken, seen_paused = asyncio.run(run())
    desk = state["desk"]
    assert taken == ["e0", "e1", "e2", "e3"] and (desk.delivered, desk.dead_lettered) == (4, 0)
    assert _DeadLetters.letters == [] and consumer.commits[-1] == {TP: 4} and not desk.paused
    (paused, commits_then), = seen_paused
    assert paused["status"] == "failed" and paused["paused_since"] and paused["last_error"] == "HTTP 503"
    assert commits_then == []   # nothing committed past the first record not taken
    status = json.loads(status_path(notifier.settings).read_text())["subscriptions"]["desk"]
    assert (status["paused"], status["waiting"], status["status"], status["delivered"]) == (False, 0, "active", 4)


def test_a_redirect_is_a_failure_and_is_not_followed(tmp_path: Path, contracts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Regression guard: aiohttp followed a 302 (turning the POST into a GET) and the notification counted as
    delivered although the endpoint never took it."""
    async def run():  # type: ignore[no-untyped-def]
        followed: list[str] = []

        async def moved(request: web.Request) -> web.Response:
            raise web.HTTPFound("/elsewhere")

        async def elsewhere(request: web.Request) -> web.Response:
            followed.append(request.method)
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/n", moved)
        app.router.add_route("*", "/elsewhere", elsewhere)
        runner, sub = await _start(app)
        notifier, consumers = _notifier(tmp_path, contracts, monkeypatch, {"desk": sub.endpoint}, records=2)
        asyncio.get_running_loop().call_later(0.6, notifier.stopping.set)
        try:
            return await notifier.run(), consumers["desk"], notifier.status()["subscriptions"]["desk"], followed
        finally:
            await runner.cleanup()

    state, consumer, status, followed = asyncio.run(run())
    assert followed == [] and state["desk"].delivered == 0 and state["desk"].retries == 0
    assert status["paused"] and "HTTP 302 redirect to" in status["last_error"] and "not followed" in status["last_error"]
    assert consumer.commits == [] and _DeadLetters.letters == []


def test_a_record_refused_for_good_is_dead_lettered_alone_and_the_next_is_delivered(  # type: ignore[no-untyped-def]
        tmp_path: Path, contracts, monkeypatch) -> None:
    async def run():  # type: ignore[no-untyped-def]
        app, seen = _serve([400, 429])   # e0 refused for good; e1 taken on its second try
        runner, sub = await _start(app)
        notifier, consumers = _notifier(tmp_path, contracts, monkeypatch, {"desk": sub.endpoint}, records=3)
        try:
            state = await asyncio.wait_for(notifier.run(idle_exit_s=0.3), 30)
            return state, consumers["desk"], notifier.status()["subscriptions"]["desk"], seen
        finally:
            await runner.cleanup()

    state, consumer, status, seen = asyncio.run(run())
    (letter,) = _DeadLetters.letters
    assert (letter["reason"], letter["offset"], letter["event_id"], letter["attempts"], letter["last_status"]) == (
        REFUSED, 0, "e0", 1, 400)
    assert json.loads(letter["notification_text"])["id"] == letter["notification_id"] == seen[0]["id"]
    assert [n["data"][0]["id"].rsplit(":", 1)[1] for n in seen] == ["e0", "e1", "e1", "e2"]
    assert (state["desk"].delivered, state["desk"].dead_lettered, state["desk"].reasons) == (2, 1, {REFUSED: 1})
    assert (status["paused"], status["waiting"]) == (False, 0) and consumer.commits[-1] == {TP: 3}


def test_an_unreadable_record_is_dead_lettered_with_its_rule_and_the_rest_delivered(  # type: ignore[no-untyped-def]
        tmp_path: Path, contracts, monkeypatch) -> None:
    """Regression guard: a record that was not JSON stopped the notifier at every start (a crash loop)."""
    async def run():  # type: ignore[no-untyped-def]
        app = _serve_until([])
        runner, sub = await _start(app)
        notifier, consumers = _notifier(tmp_path, contracts, monkeypatch, {"desk": sub.endpoint}, records=4,
                                        values={1: b"{not json", 2: b'{"x": 1}'})
        try:
            state = await asyncio.wait_for(notifier.run(idle_exit_s=0.3), 30)
            return state, consumers["desk"], _taken(app)
        finally:
            await runner.cleanup()

    state, consumer, taken = asyncio.run(run())
    assert taken == ["e0", "e3"] and consumer.commits[-1] == {TP: 4}
    assert [(x["offset"], x["reason"], x["event_id"]) for x in _DeadLetters.letters] == [(1, UNREADABLE, "e1"),
                                                                                         (2, UNREADABLE, "e2")]
    assert "rule json-syntax" in _DeadLetters.letters[0]["message"] and _DeadLetters.letters[0]["notification_text"] \
        == "{not json"
    assert "rule required at work_order_id" in _DeadLetters.letters[1]["message"]   # JSON, but not the contract
    assert state["desk"].reasons == {UNREADABLE: 2}


def test_a_notifier_stopped_mid_delivery_stops_at_once_and_commits_nothing_it_did_not_finish(  # type: ignore[no-untyped-def]
        tmp_path: Path, contracts, monkeypatch) -> None:
    async def run():  # type: ignore[no-untyped-def]
        release = asyncio.Event()

        async def hang(request: web.Request) -> web.Response:
            await release.wait()   # an endpoint that does not answer (within the notifier's timeout)
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/n", hang)
        runner, sub = await _start(app)
        notifier, consumers = _notifier(tmp_path, contracts, monkeypatch, {"desk": sub.endpoint}, records=2)
        asyncio.get_running_loop().call_later(0.5, notifier.stopping.set)   # `citybrain down` while it waits
        started = time.monotonic()
        try:
            return await notifier.run(), consumers["desk"], time.monotonic() - started
        finally:
            release.set()
            await runner.cleanup()

    state, consumer, took = asyncio.run(run())
    assert took < 5 and consumer.commits == [] and consumer.closed and state["desk"].delivered == 0


# -- replay ----------------------------------------------------------------------------------------------------


def _letters(contracts, sub: Subscription, reasons: list[str]) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Dead letters of ``sub`` as the notifier writes them, one per reason, of event ids e0, e1, ..."""
    order = contracts[TOPIC].examples[0]
    out = []
    for n, reason in enumerate(reasons):
        body = notification(sub, TOPIC, order, f"e{n}")
        text = "{not json" if reason == UNREADABLE else json.dumps(body)
        out.append(dead_letter(sub, Record(TOPIC, 0, n), f"e{n}", reason, text, 1, 0, "down"))
    return out


def test_replay_sends_dead_letters_again_reports_each_and_does_not_send_one_twice(contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        app, seen = _serve([204, 400, 400])   # e0 taken; e1 refused, then again on the second replay
        runner, sub = await _start(app)
        gone = Subscription("gone", "p", TOPIC, sub.endpoint)
        letters = _letters(contracts, sub, ["endpoint-error", REFUSED, UNREADABLE]) + _letters(contracts, gone, [REFUSED])
        ledger = tmp_path / "replayed.jsonl"
        try:
            dry = await replay.replay(letters, [sub], ledger, dry_run=True, base_s=0.001)
            sent_dry = len(seen)
            first = await replay.replay(letters, [sub], ledger, base_s=0.001)
            second = await replay.replay(letters, [sub], ledger, base_s=0.001)
            return dry, sent_dry, first, second, seen, letters
        finally:
            await runner.cleanup()

    dry, sent_dry, first, second, seen, letters = asyncio.run(run())
    assert sent_dry == 0 and [r.result for r in dry] == ["would-send", "would-send", "skipped", "failed"]
    assert [r.result for r in first] == ["delivered", "failed", "skipped", "failed"]
    assert [r.result for r in second] == ["skipped", "failed", "skipped", "failed"]
    assert "already delivered" in second[0].detail and "no subscription 'gone'" in first[3].detail
    assert [n["id"] for n in seen] == [letters[0]["notification_id"], letters[1]["notification_id"],
                                       letters[1]["notification_id"]]   # the same ids: the endpoint can drop repeats
    assert replay.replayed_ids(tmp_path / "replayed.jsonl") == {letters[0]["notification_id"]}


def test_replay_keeps_the_order_once_an_endpoint_fails_and_selects_by_subscription_and_time(  # type: ignore[no-untyped-def]
        contracts, tmp_path: Path) -> None:
    async def run():  # type: ignore[no-untyped-def]
        app, seen = _serve([503] * MAX_ATTEMPTS)   # still down for e0: e1 must not overtake it
        runner, sub = await _start(app)
        try:
            letters = _letters(contracts, sub, ["endpoint-error", "endpoint-error"])
            return await replay.replay(letters, [sub], tmp_path / "l.jsonl", base_s=0.001), len(seen)
        finally:
            await runner.cleanup()

    results, sent = asyncio.run(run())
    assert [r.result for r in results] == ["failed", "failed"] and sent == MAX_ATTEMPTS
    assert "failed on an earlier letter" in results[1].detail
    a, b = Subscription("a", "p", TOPIC, "http://x/n"), Subscription("b", "p", TOPIC, "http://x/n")
    letters = [{**x, "failed_at": at} for x, at in zip(_letters(contracts, a, [REFUSED, REFUSED]) + _letters(contracts, b, [REFUSED]),
                                                       ["2026-11-23T08:00:00Z", "2026-11-23T09:00:00Z", "2026-11-23T08:30:00Z"])]
    picked = replay.select(letters + letters[:1], "a", since=replay.parse_time("2026-11-23T07:00:00Z"),
                           until=replay.parse_time("2026-11-23T09:00:00Z"))
    assert picked == letters[:1]   # a's, before 09:00, each notification once


class _Endpoint:
    """A department endpoint in a thread (the command runs its own event loop): answers ``statuses`` in turn,
    then 204."""

    def __init__(self, statuses: list[int]) -> None:
        self.seen: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                endpoint.seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["id"])
                self.send_response(statuses.pop(0) if statuses else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/n"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for key in [k for k in os.environ if k.startswith("CITYBRAIN_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CITYBRAIN_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield tmp_path / "state"
    get_settings.cache_clear()


def test_the_replay_command_reports_as_json_and_exits_by_what_failed_again(  # type: ignore[no-untyped-def]
        contracts, tmp_path: Path, state_dir: Path, monkeypatch) -> None:
    from citybrain.cli import app

    endpoint = _Endpoint([204, 400, 400])
    try:
        subs = tmp_path / "subscriptions.yaml"
        subs.write_text(yaml.safe_dump({"version": 1, "subscriptions": [{**GOOD, "endpoint": endpoint.url}]}))
        sub = Subscription(GOOD["id"], GOOD["principal"], TOPIC, endpoint.url)
        letters = _letters(contracts, sub, ["endpoint-unreachable", REFUSED])
        monkeypatch.setattr(replay, "read_dead_letters", lambda settings: letters)
        cli = CliRunner()
        args = ["notify", "replay", "--file", str(subs), "--json"]
        first = cli.invoke(app, args)
        second = cli.invoke(app, args)
        only_later = cli.invoke(app, [*args, "--since", "2999-01-01T00:00:00Z"])
        bad = cli.invoke(app, [*args, "--since", "yesterday"])
        unknown = cli.invoke(app, [*args, "--subscription", "nobody"])
    finally:
        endpoint.server.shutdown()
    assert first.exit_code == 3 and second.exit_code == 3, first.output
    report = json.loads(first.stdout)
    assert (report["delivered"], report["failed"], report["skipped"]) == (1, 1, 0)
    assert [x["result"] for x in report["letters"]] == ["delivered", "failed"] and "HTTP 400" in report["letters"][1]["detail"]
    assert (json.loads(second.stdout)["delivered"], json.loads(second.stdout)["skipped"]) == (0, 1)
    assert endpoint.seen == [letters[0]["notification_id"], letters[1]["notification_id"], letters[1]["notification_id"]]
    assert only_later.exit_code == 0 and json.loads(only_later.stdout)["letters"] == []
    assert (bad.exit_code, unknown.exit_code) == (2, 2) and "RFC 3339" in bad.output and "nobody" in unknown.output
    assert (state_dir / "notify" / "replayed.jsonl").exists()
