"""The fusion worker across a kill -9 and a zombie: duplicates sent after a restart are still recognised, and a
worker fenced by a newer producer of its id commits nothing more."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from citybrain.contracts import topics
from citybrain.sim.city import build_city
from citybrain.sim.clock import default_start
from citybrain.kafka.topics import group_lag, read_topic
from citybrain.platform.workers import start_worker, stop_worker, wait_for_worker
from tests.integration.conftest import TEST_ENV, cli

pytestmark = pytest.mark.integration


def _tickets(run: str, numbers: range) -> list[dict]:  # type: ignore[type-arg]
    device = build_city(7).devices[0]   # a place inside the city
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [{"service_request_id": f"HLR{run}{k:03d}", "status": "open", "service_code": "water.waterlogging",
             "service_name": "道路积水", "description": "路口积水很深", "requested_datetime": now, "updated_datetime": now,
             "channel": "phone", "category": "waterlogging", "lifecycle_state": "received",
             "lat": device.lat, "long": device.lon} for k in numbers]


def _produce(tmp_path: Path, name: str, records: list[dict]) -> None:  # type: ignore[type-arg]
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    proc = cli("produce", "raw.hotline.service_request.v1", str(path))
    assert proc.returncode == 0, proc.stderr


def _orders(settings, contracts, run: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Work-order ids for this run's tickets, one entry per message on the dispatch topics."""
    return [order["work_order_id"] for c in contracts.values() if topics.is_work_orders(c.topic)
            for r in read_topic(settings, c.topic)
            for order in [json.loads(r.value)] if order["source_id"].startswith(f"HLR{run}")]


def _joined(settings, worker, app_id: str, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    """The worker's group has nothing left to read, or has had nothing to commit yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        time.sleep(2)
        if group_lag(settings, app_id)[1] in (0, -1):
            return True
    return False


def test_duplicates_after_a_kill_9_and_restart_are_still_dropped(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = uuid.uuid4().hex[:8]
    app_id = f"citybrain-fusion-restart-{run}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**TEST_ENV, "CITYBRAIN_STREAMS_APP_ID": app_id})
    first, second = _tickets(run, range(3)), _tickets(run, range(3, 4))

    # The city's reference data (streets, devices, routing rules) on the broker, with a quarter hour of its feeds.
    # Two days apart from the storm test's day, so a suite that runs across the city's midnight shares no day.
    start = (default_start() - timedelta(days=4)).isoformat()
    proc = cli("simulate", "--hours", "0.25", "--scale", "0.01", "--incidents", "none", "--start", start,
               "--out", str(tmp_path / "sim"))
    assert proc.returncode == 0, proc.stderr
    worker = start_worker(settings, env=env, log=tmp_path / "worker.log")
    try:
        time.sleep(10)   # joined its group; then reads what other tests left on the broker, if anything
        assert _joined(settings, worker, app_id, 120), f"worker did not read the existing topics (exit {worker.poll()})"
        _produce(tmp_path, "first.jsonl", first)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_orders(settings, contracts, run)) < 3:
            time.sleep(2)
        time.sleep(3)
        before = _orders(settings, contracts, run)
        assert {o.split("-")[1] for o in before} == {t["service_request_id"] for t in first}
        assert len(before) == len(set(before))
        assert wait_for_worker(settings, worker, 30, app_id)   # the tickets' offsets are committed
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    # The same three tickets again (a client retrying), and one new one.
    _produce(tmp_path, "again.jsonl", first + second)
    worker = start_worker(settings, env=env, log=tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(_orders(settings, contracts, run)) <= len(before) and worker.poll() is None:
            time.sleep(2)
        assert wait_for_worker(settings, worker, 60, app_id)
    finally:
        stop_worker(worker)
    orders = _orders(settings, contracts, run)
    assert len(orders) == len(set(orders)), sorted(orders)   # no ticket dispatched twice
    assert {o.split("-")[1] for o in orders} == {t["service_request_id"] for t in first + second}
    assert set(before) < set(orders)
    assert "state rebuilt from" in (tmp_path / "worker.log").read_text()


def test_a_worker_fenced_by_a_newer_producer_of_its_id_stops_and_its_restart_sends_each_order_once(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A zombie: something else starts a transactional producer with the worker's id (as a second copy of the
    worker would). The broker fences the worker: its next batch's transaction is refused, nothing of that batch is
    seen by a ``read_committed`` reader, its offsets stay uncommitted, and the worker exits with a failure; the
    restarted worker fences the intruder in turn and sends each of the batch's work orders once."""
    import asyncio

    from citybrain.kafka.transactions import Transactions

    run = uuid.uuid4().hex[:8]
    app_id = f"citybrain-fusion-fenced-{run}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**TEST_ENV, "CITYBRAIN_STREAMS_APP_ID": app_id})
    start = (default_start() - timedelta(days=4)).isoformat()   # the reference data of the test above's day
    proc = cli("simulate", "--hours", "0.25", "--scale", "0.01", "--incidents", "none", "--start", start,
               "--out", str(tmp_path / "sim"))
    assert proc.returncode == 0, proc.stderr
    first, second = _tickets(f"{run}a", range(3)), _tickets(f"{run}b", range(3))
    worker = start_worker(settings, env=env, log=tmp_path / "worker.log")
    try:
        time.sleep(10)
        assert _joined(settings, worker, app_id, 120), f"worker did not read the existing topics (exit {worker.poll()})"
        _produce(tmp_path, "first.jsonl", first)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len({o.split("-")[1] for o in _orders(settings, contracts, f"{run}a")}) < 3:
            time.sleep(2)
        assert {o.split("-")[1] for o in _orders(settings, contracts, f"{run}a")} == {t["service_request_id"] for t in first}

        async def intrude() -> None:
            intruder = Transactions(settings, f"{app_id}.fusion", group_id=app_id)
            await intruder.start()   # fences the running worker's producer
            await intruder.stop()

        asyncio.run(intrude())
        _produce(tmp_path, "second.jsonl", second)
        worker.wait(timeout=120)
        assert worker.returncode not in (None, 0), "the fenced worker went on"
        assert _orders(settings, contracts, f"{run}b") == []          # its refused batch is not seen
        assert group_lag(settings, app_id)[1] > 0                      # nor are its offsets committed
        assert "did not commit: ProducerFenced" in (tmp_path / "worker.log").read_text()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    worker = start_worker(settings, env=env, log=tmp_path / "worker.log")
    try:
        assert wait_for_worker(settings, worker, 180, app_id), f"the restarted worker did not catch up ({worker.poll()})"
        time.sleep(5)   # anything sent twice would be on the topic by now
    finally:
        stop_worker(worker)
    orders = _orders(settings, contracts, run)
    assert len(orders) == len(set(orders)), sorted(orders)   # no work order sent twice
    assert {o.split("-")[1] for o in orders} == {t["service_request_id"] for t in first + second}
