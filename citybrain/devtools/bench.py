"""`citybrain bench` / `make bench`: what the fusion worker sustains on this machine.

Five measurements on the local broker, written to ``var/bench/latest.json``:

1. ``raw_consume_per_s``: a plain aiokafka consumer reading the raw topics' backlog — the
   ceiling the framework is compared with.
2. ``scale_out``: fusion keyed by area (``CITYBRAIN_STREAMS_PARTITIONS``) on the same backlog,
   one worker and then two workers of one fresh group each: backlog records per second from
   the moment the group first has its partitions assigned until it has committed everything,
   the by-area topic included; the two-worker figure over the one-worker figure is the scaling.
3. ``events_per_s``: the default fusion worker (one, unkeyed) on the same backlog, measured the
   same way.
4. ``p50_ms``/``p95_ms``/``p99_ms``: with the worker caught up, the simulator produces at a
   steady rate (default 2,000 records/s, wall-clock timestamps); the latency of each ticket
   from its produce timestamp to the timestamp of the work order dispatched for it.
5. ``live_pages``: the same steady load again with 50 operations-view pages open on the view's
   live feed (`citybrain ui`, server-sent events): the latency then, and the records each page got.

``worker_rss_mb`` is the default worker's peak resident memory (VmHWM) over the run.

``cpu``: over each run of 1.-3., the CPU seconds each process used (the plain consumer's thread, each
worker, the embedded broker) and so the CPU-microseconds per record, the keyed workers' scaling by CPU
and keyed fusion's records per CPU second over the default worker's (``devtools/bench_cpu.py``): on 2
shared cores, wall-clock records per second cannot show scaling.

Then the edges (``edges``):

6. ``loader``: one station's four-year hourly air-quality export (35,064 rows, ``NA`` cells, CO in
   µg/m³) through ``citybrain load``'s path (``devtools/bench_loader.py``): rows per second.
7. ``pack_check``: ``city check`` on a pack of real-boundary size, 16 districts of ~10,000 vertices
   and 300 streets (``devtools/bench_pack.py``): seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from citybrain.contracts.model import Contract
from citybrain.contracts.topics import SERVICE_REQUESTS
from citybrain.devtools.bench_cpu import (attribute, cpu_figures, owners, proc_missing, process_cpu_s, processes_cpu_s,
                                          thread_cpu_s, used)
from citybrain.streams.shares import by_area_topic, city_calls_topic
from citybrain.settings import Settings
from citybrain.times import now_iso
from citybrain.platform.workers import start_worker, stop_worker

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    backlog_hours: float = 24.0     # simulated hours produced before the workers start
    rate: float = 2000.0            # records/s for the latency phase
    latency_s: float = 60.0         # seconds of steady load
    live_pages: int = 50            # operations-view pages open on the live feed in the last phase
    partitions: int = 12            # by-area partitions of the keyed runs: one per district of the simulated city


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def _raw_consume(settings: Settings, topics: list[str], broker: list[int]) -> dict[str, Any]:
    """The plain consumer's run: records, seconds, the CPU seconds of the thread it runs on (the event loop's, this
    one) and the broker's over the same window."""
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
        cpu, broker_cpu = thread_cpu_s(), processes_cpu_s(broker)
        while count < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not batches:
                break
            count += sum(len(b) for b in batches.values())
        return {"records": count, "seconds": time.perf_counter() - started, "cpu_s": [used(cpu, thread_cpu_s())],
                "handled": [count], "broker_cpu_s": used(broker_cpu, processes_cpu_s(broker))}
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
    used = {int(m[1]) for r in read_topic(settings, SERVICE_REQUESTS, timeout_s=120)
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
    from citybrain.devtools.accounts import demo_account
    from citybrain.devtools.browser import serve
    from citybrain.devtools.load import LiveClients

    env = {k: v for k, v in os.environ.items() if k.startswith("CITYBRAIN_")}
    with serve(env, settings.bench_dir / "ui-live.log") as url, \
            LiveClients(url, demo_account(settings), cfg.live_pages) as pages:
        load()
        time.sleep(2)
    return pages.summary()


def _stable_group(settings: Settings, group_id: str) -> dict[str, Any]:
    """The consumer group's description once it has assigned its partitions ({} while it forms or rebalances)."""
    from kafka.errors import KafkaError

    from citybrain.kafka import clients

    admin = clients.admin(settings)
    try:
        group = admin.describe_groups([group_id]).get(group_id) or {}
    except KafkaError:
        return {}
    finally:
        admin.close()
    state = group.get("group_state") or group.get("state")
    return group if state == "Stable" and group.get("members") else {}


def _broker_pids(settings: Settings) -> list[int]:
    """The embedded broker's processes, one per node (from the pid files `citybrain broker up` writes); none for an
    existing cluster, whose CPU is not this machine's to read."""
    if not settings.embedded:
        return []
    from citybrain.broker.local import LocalBroker

    broker = LocalBroker(settings)
    return [pid for node in broker.nodes if (pid := broker.node_pid(node)) is not None]


def _throughput(settings: Settings, group_id: str, workers: list[Any], counted: set[str], backlog: int,
                broker: list[int], client_ids: list[str] | None = None) -> dict[str, Any]:
    """Backlog records per second of a fresh group: from the first time it has its partitions assigned until it
    has committed every record of ``counted`` and has nothing left to read on any topic (its own included).

    Over the same window, each worker's CPU seconds and the broker's (``broker``: its pids); with ``client_ids`` (the
    workers' Kafka client ids, in order), the offsets each worker committed, from the group's assignment at each
    look (see :mod:`citybrain.devtools.bench_cpu`)."""
    from citybrain.kafka.topics import committed_offsets, group_lag

    started: float | None = None
    rss, done = 0.0, 0
    cpu: list[float | None] = []
    broker_cpu: float | None = None
    owned: dict[tuple[str, int], str] = {}
    handled: dict[str, int] = {}
    before: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and all(w.poll() is None for w in workers):
        time.sleep(0.5)
        rss = max([rss, *(_peak_rss_mb(w.pid) for w in workers)])
        if started is None:
            group = _stable_group(settings, group_id)
            if group:
                started = time.perf_counter()
                cpu, broker_cpu = [process_cpu_s(w.pid) for w in workers], processes_cpu_s(broker)
                owned = owners(group)
            continue
        offsets = committed_offsets(settings, group_id)
        if offsets is None:
            continue
        if client_ids:
            owned = owners(_stable_group(settings, group_id)) or owned   # the last known owners while it rebalances
            attribute(handled, owned, before, offsets)
            before = offsets
        done = sum(o for (t, _p), o in offsets.items() if t in counted)
        # Nothing left that a read_committed consumer would get: a transactional topic's last offset is a commit
        # marker, which no consumer receives, so a caught-up group's committed offset stays one short of the end.
        if done >= backlog * 0.99 and group_lag(settings, group_id)[1] == 0:
            seconds = time.perf_counter() - started
            cpu_s = [used(s, process_cpu_s(w.pid)) for s, w in zip(cpu, workers)]
            return {"per_s": round(done / seconds), "seconds": round(seconds, 1), "records": done,
                    "workers": len(workers), "rss_mb": round(rss), "cpu_s": cpu_s,
                    "handled": [handled.get(c, 0) for c in client_ids] if client_ids else [done],
                    "broker_cpu_s": used(broker_cpu, processes_cpu_s(broker))}
    exits = [w.poll() for w in workers]
    raise RuntimeError(f"{len(workers)} fusion worker(s) of group {group_id} did not get through the backlog "
                       f"({done:,} of {backlog:,} committed, exits {exits}); run `citybrain streams fusion -l info` "
                       "with the same settings to see why")


def _drop_topic(settings: Settings, topic: str) -> None:
    """A keyed run's by-area topic, of no use once its group is gone."""
    from kafka.errors import KafkaError, UnknownTopicOrPartitionError

    from citybrain.kafka import clients

    admin = clients.admin(settings)
    try:
        admin.delete_topics([topic])
    except UnknownTopicOrPartitionError:
        pass   # the workers never got as far as creating it
    except KafkaError as exc:
        log.warning("could not delete %s after the benchmark: %s", topic, exc)
    finally:
        admin.close()


def _scale_out(settings: Settings, cfg: BenchConfig, raw_topics: list[str], backlog: int, broker: list[int],
               say: Callable[[str], None]) -> dict[str, Any]:
    """Fusion keyed by area on the backlog: one worker, then two of one group (each run a fresh group)."""
    runs = {}
    for n in (1, 2):
        app_id = f"citybrain-bench-keyed{n}-{uuid.uuid4().hex[:8]}"
        say(f"   {n} keyed worker(s), {cfg.partitions} by-area partitions (group {app_id})")
        env = {**os.environ, "CITYBRAIN_STREAMS_APP_ID": app_id, "CITYBRAIN_STREAMS_PARTITIONS": str(cfg.partitions)}
        # A Kafka client id of its own per worker (faust reads BROKER_CLIENT_ID), to tell the group's members apart.
        client_ids = [f"{app_id}-worker{i}" for i in range(1, n + 1)]
        workers = [start_worker(settings, env={**env, "BROKER_CLIENT_ID": c}, level="error") for c in client_ids]
        try:
            runs[n] = _throughput(settings, app_id, workers, set(raw_topics), backlog, broker,
                                  client_ids if n > 1 else None)
        finally:
            for w in workers:
                stop_worker(w)
            for topic in (by_area_topic(app_id), city_calls_topic(app_id)):
                _drop_topic(settings, topic)
        say(f"   {runs[n]['per_s']:,} records/s ({runs[n]['seconds']} s)")
    return {"partitions": cfg.partitions, "one": runs[1], "two": runs[2],
            "scaling": round(runs[2]["per_s"] / runs[1]["per_s"], 2)}


def _broker(settings: Settings) -> str:
    if not settings.embedded:
        return f"an existing Kafka cluster ({settings.bootstrap})"
    from citybrain.broker.local import LocalBroker

    status = LocalBroker(settings).status()
    return f"Kafka {status.version} (embedded, {settings.broker_node_count()} node(s))"


def run_bench(settings: Settings, contracts: dict[str, Contract], cfg: BenchConfig,
              say: Callable[[str], None]) -> dict[str, Any]:
    from citybrain.platform.readiness import ensure_ready
    from citybrain.sim.clock import default_start
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import SimConfig
    from citybrain.sim.runner import Pacing, run_simulation
    from citybrain.kafka.topics import read_topic

    raw_topics = [c.topic for c in contracts.values() if c.zone == "raw"]
    from rich.console import Console

    ensure_ready(settings, contracts, Console(stderr=True, quiet=True))
    say(f"1/8 producing a {cfg.backlog_hours:g}-hour simulated backlog")
    # A seed of its own, as the steady load's: `make demo` simulates the same day with seed 7, and one day's ticket ids
    # carry only the day and the seed, so a demo after a bench (or before it) lost its tickets as duplicates.
    start = default_start()
    run_simulation(settings, contracts, Simulation(SimConfig(hours=cfg.backlog_hours, incidents=(), start=start,
                                                             seed=_unused_seed(settings, start))), Pacing())

    say("2/8 plain aiokafka consumer over the raw topics")
    broker = _broker_pids(settings)
    plain = asyncio.run(_raw_consume(settings, raw_topics, broker))
    consumed, consume_s = plain["records"], plain["seconds"]

    say(f"3/8 fusion keyed by area on the backlog of {consumed:,} records: one worker, then two")
    scale_out = _scale_out(settings, cfg, raw_topics, consumed, broker, say)

    app_id = f"citybrain-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CITYBRAIN_STREAMS_APP_ID": app_id, "CITYBRAIN_STREAMS_PARTITIONS": "0"}
    say(f"4/8 the default fusion worker (one, unkeyed) on the same backlog (group {app_id})")
    worker = start_worker(settings, env=env, level="error")
    try:
        default = _throughput(settings, app_id, [worker], set(raw_topics), consumed, broker)
        say(f"   {default['per_s']:,} records/s ({default['seconds']} s)")
        rss = default["rss_mb"]

        say(f"5/8 steady load at {cfg.rate:,.0f} records/s for {cfg.latency_s:g} s; latency produce -> work order")
        started_ms = int(time.time() * 1000)
        _steady_load(settings, contracts, cfg)
        with_ui_ms = int(time.time() * 1000)
        say(f"6/8 the same with {cfg.live_pages} operations-view pages open on the live feed")
        live = _with_live_pages(settings, cfg, lambda: _steady_load(settings, contracts, cfg))
        rss = max(rss, _peak_rss_mb(worker.pid))
    finally:
        stop_worker(worker)

    received = {}
    for r in read_topic(settings, SERVICE_REQUESTS, timeout_s=120):
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
    edges = _edges(settings, say)
    if len(latencies) < 20:
        raise RuntimeError(f"only {len(latencies)} latency samples; the worker may have fallen behind")
    q = statistics.quantiles(latencies, n=100)
    if len(latencies_ui) >= 20:
        q_ui = statistics.quantiles(latencies_ui, n=100)
        live.update(p50_ms=round(q_ui[49]), p99_ms=round(q_ui[98]), latency_samples=len(latencies_ui))
    return {
        "live_pages": live,
        "measured_at": now_iso(),
        "events_per_s": default["per_s"], "raw_consume_per_s": round(consumed / consume_s), "scale_out": scale_out,
        "p50_ms": round(q[49]), "p95_ms": round(q[94]), "p99_ms": round(q[98]),
        "worker_rss_mb": round(rss), "latency_samples": len(latencies), "steady_rate_per_s": cfg.rate,
        "backlog_records": consumed, "cpu_count": os.cpu_count(), "broker": _broker(settings), **edges,
        "raw_consume": {**plain, "seconds": round(consume_s, 2)}, "default_run": default,
        "cpu": {**cpu_figures(plain, default, scale_out["one"], scale_out["two"]), "not_measured": proc_missing()},
        "targets": {"events_per_s": 20000, "p99_ms": 250, "worker_rss_mb": 600, "loader_rows_per_s": 20000,
                    "pack_check_s": 10},
    }


def _edges(settings: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """The loader's rows per second on an ordinary export, and a real-sized city pack's check."""
    import tempfile

    from citybrain.devtools.bench_loader import HOURS, bench_loader
    from citybrain.devtools.bench_pack import bench_pack_check

    with tempfile.TemporaryDirectory(prefix="citybrain-bench-") as work:
        say(f"7/8 the loader: a {HOURS:,}-row hourly air-quality export (NA cells, CO in µg/m³)")
        loader = bench_loader(Path(work), settings)
        say(f"   {loader['rows_per_s']:,.0f} rows/s ({loader['accepted']:,} accepted, "
            f"{loader['dead_lettered']:,} dead-lettered)")
        say("8/8 city check on a pack of 16 districts of ~10,000 vertices and 300 streets")
        pack = bench_pack_check(Path(work))
        say(f"   {pack['seconds']:.2f} s ({pack['problems']} problems)")
    return {"loader": {k: v for k, v in loader.items() if k not in ("export", "rejections_file")}, "pack_check": pack}
