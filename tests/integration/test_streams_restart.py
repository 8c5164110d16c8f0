"""The fusion worker's state survives a kill -9: duplicates sent after a restart are still recognised."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

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
    return [order["work_order_id"] for c in contracts.values() if c.zone == "dispatch"
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


def test_a_kill_between_sending_and_committing_sends_no_work_order_twice(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The worker is killed the moment its work orders are on the broker, before it commits the tickets' offsets
    (checked: its group still lags); after the restart it processes those tickets again and recognises the orders
    it sent already (``streams_resend_window_s``): each work order once."""
    from kafka import TopicPartition

    from citybrain.kafka import clients

    run = uuid.uuid4().hex[:8]
    app_id = f"citybrain-fusion-resend-{run}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**TEST_ENV, "CITYBRAIN_STREAMS_APP_ID": app_id})
    start = (default_start() - timedelta(days=4)).isoformat()   # the reference data of the test above's day
    proc = cli("simulate", "--hours", "0.25", "--scale", "0.01", "--incidents", "none", "--start", start,
               "--out", str(tmp_path / "sim"))
    assert proc.returncode == 0, proc.stderr
    water = "dispatch.water.work_order.v1"   # the lead department of waterlogging tickets
    watch = clients.consumer(settings, enable_auto_commit=False)
    tps = [TopicPartition(water, p) for p in sorted(watch.partitions_for_topic(water) or ())]
    watch.assign(tps)
    watch.seek_to_end(*tps)
    for tp in tps:
        watch.position(tp)
    sent: list[dict] = []  # type: ignore[type-arg]
    worker = start_worker(settings, env=env, log=tmp_path / "worker.log")
    try:
        time.sleep(10)
        assert _joined(settings, worker, app_id, 120), f"worker did not read the existing topics (exit {worker.poll()})"
        uncommitted = False
        for attempt in range(4):   # a kill lands before the commit almost always; tried again if it did not
            batch = _tickets(f"{run}{attempt}", range(3))
            sent += batch
            _produce(tmp_path, f"t{attempt}.jsonl", batch)
            seen: set[str] = set()
            deadline = time.monotonic() + 90
            while len(seen) < 3 and time.monotonic() < deadline:
                for records in watch.poll(timeout_ms=50).values():
                    seen |= {o["source_id"] for r in records for o in [json.loads(r.value)]
                             if o["source_id"].startswith(f"HLR{run}{attempt}")}
            assert len(seen) == 3, f"no work orders for attempt {attempt} (worker exit {worker.poll()})"
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            uncommitted = group_lag(settings, app_id)[1] > 0
            if uncommitted:
                break
            worker = start_worker(settings, env=env, log=tmp_path / "worker.log")
            assert _joined(settings, worker, app_id, 120)
        assert uncommitted, "every kill came after the commit: the case under test never happened"
    finally:
        watch.close()
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

    worker = start_worker(settings, env=env, log=tmp_path / "worker.log")
    try:
        assert wait_for_worker(settings, worker, 180, app_id), f"the restarted worker did not catch up ({worker.poll()})"
        time.sleep(5)   # anything sent twice would be on the topic by now
    finally:
        stop_worker(worker)
    orders = [o for o in _orders(settings, contracts, run)]
    assert len(orders) == len(set(orders)), sorted(orders)   # no work order sent twice
    assert {o.split("-")[1] for o in orders} == {t["service_request_id"] for t in sent}
    log = (tmp_path / "worker.log").read_text()
    suppressed = [int(line.split(" output ids")[0].rsplit("; ", 1)[1]) for line in log.splitlines()
                  if "output ids of the last" in line]
    assert suppressed and suppressed[-1] > 0, "the restart recognised none of the orders it had sent"
