"""NGSI-LD notifications out, against the real broker and a department system's HTTP endpoint on 127.0.0.1:
delivered as the standard shapes them, retried, dead-lettered when the endpoint refuses them for good, held
while an endpoint is down and delivered once it is back, and nothing lost or repeated across a SIGKILL of
the notifier."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from citybrain.ingest.producer import ValidatedProducer
from citybrain.ingest.readers import RawRecord
from citybrain.kafka.topics import read_topic
from citybrain.notify.notifier import DLQ_TOPIC, status_path
from tests.integration.conftest import TEST_ENV

pytestmark = pytest.mark.integration


class Receiver:
    """A department's system: /ok takes every notification, /flaky refuses each one twice (503) before it
    takes it, /refuse answers 400 to everything, /down answers 503 while ``down`` is set, then takes them."""

    def __init__(self) -> None:
        self.taken: dict[str, list[tuple[dict[str, str], dict[str, Any]]]] = {"ok": [], "flaky": [], "down": []}
        self.tries: Counter[tuple[str, str]] = Counter()
        self.down = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.strip("/")
                note = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.tries[(path, note["id"])] += 1
                if path == "refuse":
                    code = 400
                elif (path == "flaky" and receiver.tries[(path, note["id"])] <= 2) or (path == "down" and receiver.down):
                    code = 503
                else:
                    code = 204
                    receiver.taken[path].append((dict(self.headers), note))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _start(subs: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(TEST_ENV)
    exe = Path(sys.executable).with_name("citybrain")
    return subprocess.Popen([str(exe), "notify", "run", "--file", str(subs), "--retry-base", "0.05", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(settings, proc: subprocess.Popen[str], done: Callable[[dict[str, Any]], bool], what: str,  # type: ignore[no-untyped-def]
          timeout: float = 90) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the notifier exited ({proc.returncode}) before {what}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            status = json.loads(status_path(settings).read_text(encoding="utf-8"))["subscriptions"]
        except (OSError, ValueError, KeyError):
            status = {}
        if status and done(status):
            return status
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def _orders(settings, contracts, topic: str, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    contract = contracts[topic]
    ids = [f"WO-NOTIFY-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    records = [RawRecord("test-notify", b"", value={**contract.examples[0], "work_order_id": i}) for i in ids]
    with ValidatedProducer(settings, producer_id="test.notify") as producer:
        assert producer.produce(contract, records).accepted == n
    return ids


@pytest.mark.timeout(400)
def test_department_systems_get_their_work_orders_as_ngsi_ld_notifications_and_nothing_is_lost(  # type: ignore[no-untyped-def]
        broker, settings, contracts, tmp_path) -> None:
    rx = Receiver()
    run = uuid.uuid4().hex[:6]
    ok, flaky, refused = f"water-desk-{run}", f"police-desk-{run}", f"transport-desk-{run}"
    subs = tmp_path / "subscriptions.yaml"
    subs.write_text(yaml.safe_dump({"version": 1, "subscriptions": [
        {"id": ok, "principal": "dept-water", "topic": "dispatch.water.work_order.v1", "endpoint": rx.base + "/ok"},
        {"id": flaky, "principal": "dept-police", "topic": "dispatch.police.work_order.v1",
         "endpoint": rx.base + "/flaky", "accept": "application/json", "format": "concise"},
        {"id": refused, "principal": "dept-transport", "topic": "dispatch.transport.work_order.v1",
         "endpoint": rx.base + "/refuse"},
    ]}), encoding="utf-8")
    ours = (ok, flaky, refused)
    proc = _start(subs)
    try:
        _wait(settings, proc, lambda s: all(s.get(i, {}).get("caught_up") for i in ours), "every subscription assigned")
        water = _orders(settings, contracts, "dispatch.water.work_order.v1", 4)
        police = _orders(settings, contracts, "dispatch.police.work_order.v1", 4)
        transport = _orders(settings, contracts, "dispatch.transport.work_order.v1", 4)
        status = _wait(settings, proc, lambda s: all(s[i]["delivered"] + s[i]["dead_lettered"] == 4 for i in ours),
                       "every record delivered or dead-lettered")

        # Normalized, application/ld+json with the @context in the body, one entity per notification.
        assert [n["data"][0]["id"] for _h, n in rx.taken["ok"]] == [f"urn:ngsi-ld:WorkOrder:{i}" for i in water]
        headers, note = rx.taken["ok"][0]
        assert headers["Content-Type"] == "application/ld+json" and "@context" in note
        assert (note["type"], note["subscriptionId"]) == ("Notification", f"urn:ngsi-ld:Subscription:{ok}")
        entity = note["data"][0]
        assert entity["type"] == "WorkOrder" and entity["work_order_id"] == {"type": "Property", "value": water[0]}
        assert entity["department"]["value"] == "water"
        # Concise, application/json with the context in a Link header; each taken on its third try.
        assert [n["data"][0]["work_order_id"] for _h, n in rx.taken["flaky"]] == police
        assert "@context" not in rx.taken["flaky"][0][1] and "json-ld#context" in rx.taken["flaky"][0][0]["Link"]
        assert {rx.tries[("flaky", n["id"])] for _h, n in rx.taken["flaky"]} == {3}
        assert (status[flaky]["delivered"], status[flaky]["retries"], status[flaky]["status"]) == (4, 8, "active")
        # The refusing endpoint: each record refused for good (400), tried once and dead-lettered; nothing paused.
        assert (status[refused]["delivered"], status[refused]["dead_lettered"], status[refused]["paused"]) == (0, 4, False)
        letters = [json.loads(r.value) for r in read_topic(settings, DLQ_TOPIC)]
        letters = [x for x in letters if x["subscription_id"] == refused]
        assert [x["event_id"] for x in letters] == transport
        assert [(x["reason"], x["attempts"], x["last_status"]) for x in letters] == [("endpoint-refused", 1, 400)] * 4
        assert json.loads(letters[0]["notification_text"])["data"][0]["id"] == f"urn:ngsi-ld:WorkOrder:{transport[0]}"

        # Killed mid-life: what arrives while it is down is sent after the restart, nothing twice.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        later = _orders(settings, contracts, "dispatch.water.work_order.v1", 2)
        status_path(settings).unlink()
        proc = _start(subs)
        _wait(settings, proc, lambda s: s.get(ok, {}).get("delivered") == 2, "the restarted notifier catching up")
        ids = [n["data"][0]["work_order_id"]["value"] for _h, n in rx.taken["ok"]]
        assert ids == water + later and len(set(n["id"] for _h, n in rx.taken["ok"])) == 6
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
            rx.server.shutdown()


@pytest.mark.timeout(300)
def test_an_endpoint_down_then_back_gets_every_record_once_in_order_and_none_is_dead_lettered(  # type: ignore[no-untyped-def]
        broker, settings, contracts, tmp_path) -> None:
    """Issue 32: the subscription pauses on the first record its endpoint does not take, keeps the others waiting,
    and resumes where it stopped when the endpoint answers again."""
    rx = Receiver()
    sid = f"water-down-{uuid.uuid4().hex[:6]}"
    subs = tmp_path / "subscriptions.yaml"
    subs.write_text(yaml.safe_dump({"version": 1, "subscriptions": [
        {"id": sid, "principal": "dept-water", "topic": "dispatch.water.work_order.v1", "endpoint": rx.base + "/down"},
    ]}), encoding="utf-8")
    proc = _start(subs, "--pause-max", "1")
    try:
        _wait(settings, proc, lambda s: s.get(sid, {}).get("caught_up"), "the subscription assigned")
        water = _orders(settings, contracts, "dispatch.water.work_order.v1", 4)
        status = _wait(settings, proc, lambda s: s[sid]["paused"] and s[sid]["waiting"] == 4,
                       "the subscription paused with every record waiting")[sid]
        assert (status["delivered"], status["dead_lettered"], status["status"], status["last_error"]) == (
            0, 0, "failed", "HTTP 503") and status["paused_since"] and not status["caught_up"]

        rx.down = False
        status = _wait(settings, proc, lambda s: s[sid]["delivered"] == 4 and s[sid]["caught_up"],
                       "every record delivered once the endpoint is back")[sid]
        assert (status["paused"], status["waiting"], status["dead_lettered"], status["status"]) == (False, 0, 0, "active")
        assert [n["data"][0]["id"] for _h, n in rx.taken["down"]] == [f"urn:ngsi-ld:WorkOrder:{i}" for i in water]
        assert len({n["id"] for _h, n in rx.taken["down"]}) == 4
        letters = [json.loads(r.value) for r in read_topic(settings, DLQ_TOPIC)]
        assert [x for x in letters if x["subscription_id"] == sid] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()
            rx.server.shutdown()
