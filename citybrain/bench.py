"""`citybrain bench` / `make bench`: what the fusion worker sustains on this machine.

Four measurements on the local broker, written to ``var/bench/latest.json``:

1. ``raw_consume_per_s``: a plain aiokafka consumer reading the raw topics' backlog — the
   ceiling the framework is compared with.
2. ``events_per_s``: a fusion worker started on the same backlog with a fresh consumer group;
   records processed (committed) per second between its first and last commit.
3. ``p50_ms``/``p95_ms``/``p99_ms``: with the worker caught up, the simulator produces at a
   steady rate (default 2,000 records/s, wall-clock timestamps); the latency of each ticket
   from its produce timestamp to the timestamp of the work order dispatched for it.
4. ``live_pages``: the same steady load again with 50 operations-view pages open on the view's
   live feed (`citybrain ui`, server-sent events): the latency then, and the records each page got.

``worker_rss_mb`` is the worker's peak resident memory (VmHWM) over the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from citybrain.contracts.model import Contract
from citybrain.settings import Settings
from citybrain.times import now_iso
from citybrain.workers import start_worker, stop_worker


@dataclass
class BenchConfig:
    backlog_hours: float = 6.0      # simulated hours produced before the worker starts
    rate: float = 2000.0            # records/s for the latency phase
    latency_s: float = 60.0         # seconds of steady load
    live_pages: int = 50            # operations-view pages open on the live feed in the last phase


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def _raw_consume(settings: Settings, topics: list[str]) -> tuple[int, float]:
    from aiokafka import TopicPartition

    from citybrain.kafka import clients

    meta = clients.consumer(settings)
    try:
        partitions = {t: sorted(meta.partitions_for_topic(t) or ()) for t in topics}
    finally:
        meta.close()

    consumer = clients.aio_consumer(settings, enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in partitions[t]]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        total = sum(end.values())
        count, started = 0, time.perf_counter()
        while count < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not batches:
                break
            count += sum(len(b) for b in batches.values())
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


def _unused_seed(settings: Settings, start: datetime) -> int:
    """A simulator seed whose ticket ids (``HL<simulated local date><seed % 100><seq>``) no earlier
    run of that simulated day used on this broker: the worker rightly drops a repeated ticket id
    as a duplicate."""
    import re

    from citybrain.sim.clock import LOCAL
    from citybrain.kafka.topics import read_topic

    day = start.astimezone(LOCAL).strftime("%Y%m%d")
    pattern = re.compile(rf'"service_request_id":\s*"HL{day}(\d\d)')
    used = {int(m[1]) for r in read_topic(settings, "raw.hotline.service_request.v1", timeout_s=120)
            if (m := pattern.search(r.value.decode("utf-8", "replace")))}
    free = [s for s in range(10, 100) if s not in used]
    if not free:
        raise RuntimeError(f"every ticket-id seed of simulated day {day} is taken on this broker; run "
                           "`citybrain broker reset` or bench again tomorrow")
    return free[0]


def _steady_load(settings: Settings, contracts: dict[str, Contract], cfg: BenchConfig) -> None:
    """``cfg.rate`` records/s of a fresh simulated city for ``cfg.latency_s`` s, stamped with the wall clock."""
    from citybrain.sim.clock import default_start
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import SimConfig
    from citybrain.sim.runner import Pacing, run_simulation

    start = default_start()
    sim = Simulation(SimConfig(hours=cfg.rate * cfg.latency_s / 23_000, incidents=(),   # ~23k records per simulated hour
                               start=start, seed=_unused_seed(settings, start)))
    run_simulation(settings, contracts, sim, Pacing(rate=cfg.rate), wall_clock=True)
    time.sleep(3)


def _with_live_pages(settings: Settings, cfg: BenchConfig, load: Callable[[], None]) -> dict[str, Any]:
    """Run ``load`` with ``cfg.live_pages`` operations-view pages on the live feed; what they received."""
    from citybrain.settings import credentials_path
    from citybrain.ui.browser import serve
    from citybrain.ui.load import LiveClients

    admin = json.loads(credentials_path(settings.kafka_dir).read_text())
    env = {k: v for k, v in os.environ.items() if k.startswith("CITYBRAIN_")}
    with serve(env, settings.bench_dir / "ui-live.log") as url, \
            LiveClients(url, admin["admin_user"], admin["admin_password"], cfg.live_pages) as pages:
        load()
        time.sleep(2)
    return pages.summary()


def _broker(settings: Settings) -> str:
    if not settings.embedded:
        return f"an existing Kafka cluster ({settings.bootstrap})"
    from citybrain.broker.local import LocalBroker

    status = LocalBroker(settings).status()
    return f"Kafka {status.version} (embedded, {settings.broker_node_count()} node(s))"


def run_bench(settings: Settings, contracts: dict[str, Contract], cfg: BenchConfig,
              say: Callable[[str], None]) -> dict[str, Any]:
    from citybrain.platform import ensure_ready
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import SimConfig
    from citybrain.sim.runner import Pacing, run_simulation
    from citybrain.kafka.topics import group_lag, read_topic

    raw_topics = [c.topic for c in contracts.values() if c.zone == "raw"]
    from rich.console import Console

    ensure_ready(settings, contracts, Console(stderr=True, quiet=True))
    say(f"1/5 producing a {cfg.backlog_hours:g}-hour simulated backlog")
    run_simulation(settings, contracts, Simulation(SimConfig(hours=cfg.backlog_hours, incidents=())), Pacing())

    say("2/5 plain aiokafka consumer over the raw topics")
    consumed, consume_s = asyncio.run(_raw_consume(settings, raw_topics))

    app_id = f"citybrain-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CITYBRAIN_STREAMS_APP_ID": app_id}
    say(f"3/5 fusion worker on the backlog of {consumed:,} records (group {app_id})")
    worker = start_worker(settings, env=env, level="error")
    rss = 0.0
    try:
        first: tuple[float, int] | None = None
        last: tuple[float, int] = (time.perf_counter(), 0)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.5)
            rss = max(rss, _peak_rss_mb(worker.pid))
            done, lag = group_lag(settings, app_id)
            now = time.perf_counter()
            if lag < 0:
                continue
            if first is None and done > 0:
                first = (now, done)
            last = (now, done)
            if lag == 0 and done >= consumed * 0.99:
                break
        if first is None or last[1] <= first[1]:
            raise RuntimeError(f"the fusion worker did not process the backlog (exit {worker.poll()}); "
                               "run `citybrain streams fusion -l info` to see why")
        events_per_s = (last[1] - first[1]) / (last[0] - first[0])

        say(f"4/5 steady load at {cfg.rate:,.0f} records/s for {cfg.latency_s:g} s; latency produce -> work order")
        started_ms = int(time.time() * 1000)
        _steady_load(settings, contracts, cfg)
        with_ui_ms = int(time.time() * 1000)
        say(f"5/5 the same with {cfg.live_pages} operations-view pages open on the live feed")
        live = _with_live_pages(settings, cfg, lambda: _steady_load(settings, contracts, cfg))
        rss = max(rss, _peak_rss_mb(worker.pid))
    finally:
        stop_worker(worker)

    received = {}
    for r in read_topic(settings, "raw.hotline.service_request.v1", timeout_s=120):
        if r.timestamp >= started_ms:
            value = json.loads(r.value)
            if value.get("lifecycle_state") == "received":
                received[value["service_request_id"]] = (r.timestamp, r.timestamp >= with_ui_ms)
    latencies: list[int] = []
    latencies_ui: list[int] = []
    for c in contracts.values():
        if c.zone != "dispatch":
            continue
        for r in read_topic(settings, c.topic, timeout_s=120):
            if r.timestamp >= started_ms:
                order = json.loads(r.value)
                # Orders issued on receipt only: a ticket the city's areas hold first gets its orders on the
                # hotline's later dispatch (assigned_at after received_at), which is not the worker's latency.
                if order.get("source") == "ticket" and order["source_id"] in received \
                        and order.get("assigned_at", order.get("received_at")) == order.get("received_at"):
                    at, ui = received[order["source_id"]]
                    (latencies_ui if ui else latencies).append(r.timestamp - at)
    if len(latencies) < 20:
        raise RuntimeError(f"only {len(latencies)} latency samples; the worker may have fallen behind")
    q = statistics.quantiles(latencies, n=100)
    if len(latencies_ui) >= 20:
        q_ui = statistics.quantiles(latencies_ui, n=100)
        live.update(p50_ms=round(q_ui[49]), p99_ms=round(q_ui[98]), latency_samples=len(latencies_ui))
    return {
        "live_pages": live,
        "measured_at": now_iso(),
        "events_per_s": round(events_per_s), "raw_consume_per_s": round(consumed / consume_s),
        "p50_ms": round(q[49]), "p95_ms": round(q[94]), "p99_ms": round(q[98]),
        "worker_rss_mb": round(rss), "latency_samples": len(latencies), "steady_rate_per_s": cfg.rate,
        "backlog_records": consumed, "cpu_count": os.cpu_count(), "broker": _broker(settings),
        "targets": {"events_per_s": 20000, "p99_ms": 250, "worker_rss_mb": 600},
    }
