"""Issue 16, failover (a) and (c): fusion keyed by area, shared by two workers of one group on the real broker.

A simulated day streams in while worker A runs; worker B joins mid-stream (partitions move to it: A drops what it
lost, B rebuilds what it gained, and learns the calls A read for the city-wide hotspot baseline), then A is killed
with SIGKILL mid-stream and B takes over A's partitions. Every work order, early warning and city event the group
published for the day appears once by id, and the day's detections score what the one-pipeline replay of the same
day scores.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from citybrain.fusion.evaluate import evaluate, in_window
from citybrain.devtools.replay import replay_detections
from citybrain.kafka.topics import group_lag, read_topic
from citybrain.access.privacy import protector_from_settings
from citybrain.sim.clock import default_start
from citybrain.platform.workers import start_worker, stop_worker
from tests.integration.conftest import TEST_ENV, cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PARTITIONS = "12"


def _published(settings, contracts, app_id: str, run: str) -> dict[str, list[tuple[str, dict]]]:  # type: ignore[no-untyped-def,type-arg]
    """(event-id header, record) of every output the group ``app_id`` published for the simulation ``run`` (its
    trace id) or on its sweep timer, by topic. Not those of other tests' records the group also read: two of their
    runs may hold different tickets under one id, which is their data, not failover."""
    found: dict[str, list[tuple[str, dict]]] = {}  # type: ignore[type-arg]
    for c in contracts.values():
        if c.zone not in ("city", "alert", "dispatch"):
            continue
        for r in read_topic(settings, c.topic):
            headers = dict(r.headers or [])
            if headers.get("app-id") == app_id.encode() and headers.get("trace-id") in (run.encode(),
                                                                                         b"streams.fusion.sweep"):
                found.setdefault(c.topic, []).append((headers["event-id"].decode(), json.loads(r.value)))
    return found


def test_two_workers_share_the_city_one_joins_and_one_is_killed_and_nothing_is_lost_or_doubled(
        broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app_id = f"citybrain-fusion-scale-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**TEST_ENV, "CITYBRAIN_STREAMS_APP_ID": app_id, "CITYBRAIN_STREAMS_PARTITIONS": PARTITIONS})

    def caught_up(worker, timeout: float, idle: tuple[int, ...] = (0,)) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and worker.poll() is None:
            time.sleep(2)
            if group_lag(settings, app_id)[1] in idle:
                return True
        return False

    a = start_worker(settings, env=env, log=tmp_path / "a.log", level="info")
    b = None
    try:
        time.sleep(10)   # joined its group; then reads what other tests left on the broker, if anything
        assert caught_up(a, 240, idle=(0, -1)), f"worker A did not read the existing topics (exit {a.poll()})"
        # Eight days ago: no other test of the suite simulates that day. Six simulated hours in about 40 s.
        start = (default_start() - timedelta(days=8)).isoformat()
        sim: dict = {}  # type: ignore[type-arg]
        simulate = threading.Thread(target=lambda: sim.update(proc=cli(
            "simulate", "--hours", "6", "--scale", "0.05", "--seed", "7", "--start", start, "--out", str(tmp_path),
            "--json", "--incidents", "underpass_flood,night_construction_noise", "--speed", "540")))
        simulate.start()
        time.sleep(10)
        b = start_worker(settings, env=env, log=tmp_path / "b.log", level="info")   # (c) a worker added mid-stream
        time.sleep(20)
        assert a.poll() is None and b.poll() is None
        os.killpg(a.pid, signal.SIGKILL)                                          # (a) a worker killed mid-stream
        a.wait()
        assert simulate.is_alive(), "the simulation ended before the kill: the kill was not mid-stream"
        simulate.join(timeout=300)
        assert sim["proc"].returncode == 0, sim["proc"].stderr
        assert caught_up(b, 300), f"worker B did not take over (exit {b.poll()})"
        time.sleep(15)   # the last windows and quiet cases close on B's timer
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
        if b is not None:
            stop_worker(b)

    a_log, b_log = (tmp_path / "a.log").read_text(), (tmp_path / "b.log").read_text()
    assert "lost " in a_log, "A gave no partition to B when it joined"
    gained = [line for line in b_log.splitlines() if "gained " in line]
    assert len(gained) >= 2, gained   # its share when it joined, then A's after the kill
    assert any(int(line.split("state rebuilt from ")[1].split()[0]) > 0 for line in gained[1:]), gained
    # The city-wide baseline of the hotspot detector crosses workers on the group's city-calls topic.
    learnt = [int(line.split("learnt ")[1].split()[0]) for line in b_log.splitlines() if "of other workers" in line]
    assert sum(learnt) > 0, "B never learnt A's calls: each worker judged streets against its own districts only"

    published = _published(settings, contracts, app_id, json.loads(sim["proc"].stdout)["run_id"])
    for topic, records in published.items():
        doubled = [i for i, n in Counter(i for i, _r in records).items() if n > 1]
        assert not doubled, f"{topic}: published more than once: {doubled[:5]}"
    orders = [r for t, rs in published.items() if t.startswith("dispatch.") for _i, r in rs]
    assert len(orders) == len({o["work_order_id"] for o in orders}) > 20

    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    events = in_window(truth, [r for _i, r in published.get("city.event.incident.v1", [])])
    warnings = in_window(truth, [r for _i, r in published.get("alert.early_warning.risk.v1", [])])
    two = evaluate(truth, events, warnings)
    one = evaluate(truth, *replay_detections(truth, contracts, protector_from_settings(settings)))
    detected = lambda score: sorted((i["incident_id"], i["output"], i["detected"]) for i in score["items"])  # noqa: E731
    assert detected(two) == detected(one), (two, one)
    assert two["recall"] == one["recall"] == 1.0
    assert two["precision"] == one["precision"], (two, one)
