"""Subscriptions as code, checked against the grants; notifications shaped as NGSI-LD says; retries and failing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from citybrain import access
from citybrain.notify.notifier import (FAILING_AFTER, MAX_ATTEMPTS, SUBSCRIPTIONS_FILE, Delivery, Subscription, SubscriptionError,
                              deliver, entity_of, load_subscriptions, notification)

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
