"""Subscriptions as code, checked against the grants; notifications shaped as NGSI-LD says; retries and failing;
the notifier's loop over each subscription (scripted consumers, a real HTTP endpoint on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from kafka.structs import TopicPartition

from citybrain import access
from citybrain.ingest.producer import ProduceSummary
from citybrain.notify.notifier import (FAILING_AFTER, MAX_ATTEMPTS, SUBSCRIPTIONS_FILE, Delivery, Subscription, SubscriptionError,
                              deliver, entity_of, load_subscriptions, notification, status_path)
from citybrain.settings import load_settings
from tests.unit.test_follow import ScriptedConsumer

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
    async def run() -> tuple[tuple[bool, int, int, str], int]:
        app, seen = _serve(list(statuses))
        runner, sub = await _start(app)
        try:
            async with aiohttp.ClientSession() as session:
                result = await deliver(session, sub, {"id": "n1"}, Delivery(), base_s=0.001)
                return result, len(seen)
        finally:
            await runner.cleanup()

    (ok, tries, _status, error), sent = asyncio.run(run())
    assert (ok, tries, sent) == (delivered, attempts, attempts) and bool(error) == (not delivered)


def test_a_failing_endpoint_is_tried_once_and_its_first_success_clears_it() -> None:
    async def run() -> tuple[list[tuple[bool, int]], bool]:
        app, _seen = _serve([500, 204])
        runner, sub = await _start(app)
        state = Delivery(failures_in_a_row=FAILING_AFTER)
        try:
            async with aiohttp.ClientSession() as session:
                out = []
                for _ in range(2):
                    ok, tries, _s, _e = await deliver(session, sub, {"id": "n"}, state, base_s=0.001)
                    out.append((ok, tries))
                return out, state.failing
        finally:
            await runner.cleanup()

    tries, still_failing = asyncio.run(run())
    assert tries == [(False, 1), (True, 1)] and not still_failing


def test_no_answer_at_all_is_retried_and_named() -> None:
    sub = Subscription("d", "p", "dispatch.water.work_order.v1", "http://127.0.0.1:9/n")   # nothing listens on 9

    async def run() -> tuple[bool, int, int, str]:
        async with aiohttp.ClientSession() as session:
            return await deliver(session, sub, {"id": "n"}, Delivery(), base_s=0.001)

    ok, tries, status, error = asyncio.run(run())
    assert (ok, tries, status) == (False, MAX_ATTEMPTS, 0) and error


class _DeadLetters:
    """The notifier's dead-letter producer, without a broker: it takes every letter."""

    letters: list[dict[str, Any]] = []

    def __init__(self, settings, producer_id: str) -> None:  # type: ignore[no-untyped-def]
        pass

    def __enter__(self) -> _DeadLetters:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def produce(self, contract, records):  # type: ignore[no-untyped-def]
        self.letters.extend(r.value for r in records)
        return ProduceSummary(contract.topic, read=len(records), accepted=len(records))


def _notifier(tmp_path: Path, contracts, monkeypatch, endpoints: dict[str, str], records: int):  # type: ignore[no-untyped-def]
    """A notifier of one subscription per endpoint (``id: url``), each topic holding ``records`` work orders
    for it to read from a scripted consumer; and those consumers by subscription id."""
    from citybrain.ingest import producer
    from citybrain.kafka import clients
    from citybrain.notify.notifier import Notifier

    subs = [Subscription(sid, "dept-water", "dispatch.water.work_order.v1", url) for sid, url in endpoints.items()]
    consumers = {s.id: ScriptedConsumer({TopicPartition(s.topic, 0): records}, group=True) for s in subs}
    monkeypatch.setattr(clients, "consumer", lambda settings, *topics, group_id, **config:
                        consumers[group_id.rsplit(".", 1)[1]])
    monkeypatch.setattr(producer, "ValidatedProducer", _DeadLetters)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    return Notifier(settings, contracts, subs, {"dept-water": "pw"}, retry_base_s=0.001), consumers


def test_each_subscription_is_followed_delivered_or_dead_lettered_committed_and_reported(  # type: ignore[no-untyped-def]
        tmp_path: Path, contracts, monkeypatch) -> None:
    async def run():  # type: ignore[no-untyped-def]
        app, seen = _serve([500] * (MAX_ATTEMPTS * 2))   # the first two records fail every try, then all is taken
        runner, sub = await _start(app)
        notifier, consumers = _notifier(tmp_path, contracts, monkeypatch, {"desk": sub.endpoint}, records=4)
        try:
            return await notifier.run(idle_exit_s=0.3), consumers["desk"], notifier, len(seen)
        finally:
            await runner.cleanup()

    state, consumer, notifier, tries = asyncio.run(run())
    desk = state["desk"]
    assert (desk.delivered, desk.dead_lettered, desk.reasons, tries) == (2, 2, {"endpoint-error": 2}, 2 * MAX_ATTEMPTS + 2)
    assert [x["offset"] for x in _DeadLetters.letters] == [0, 1] and consumer.commits[-1] == {
        TopicPartition("dispatch.water.work_order.v1", 0): 4} and consumer.closed
    status = json.loads(status_path(notifier.settings).read_text())["subscriptions"]["desk"]
    assert status["caught_up"] and (status["delivered"], status["dead_lettered"]) == (2, 2)


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
