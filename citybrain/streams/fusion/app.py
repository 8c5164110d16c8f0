"""The fusion worker's faust app: its configuration from the settings, the garbage collector tuned for the
worker's state, ``create_app`` (the app with its worker, timers and the agents of its mode) and ``main()``."""

from __future__ import annotations

import gc
import logging
import sys
import time

from citybrain import metrics
from citybrain.kafka import clients
from citybrain.kafka.transactions import Transactions
from citybrain.settings import Settings, get_settings
from citybrain.streams.batching import BatchApp
from citybrain.streams.fusion.agents import fusion_agent, keyed_agents, sweep_timer
from citybrain.streams.fusion.keyed import KeyedFusionWorker
from citybrain.streams.fusion.loop import BatchLoop
from citybrain.streams.fusion.topics import ensure_keyed_topics
from citybrain.streams.fusion.worker import FusionWorker

log = logging.getLogger(__name__)

#: The worker's state is millions of long-lived objects (dedupe window, windows, cases) that
#: refcounting frees; full collections scanning them stalled it ~130 ms every few seconds
#: (p99 latency 750 ms). Fewer young collections, and survivors moved out of the collector's
#: sight (``gc.freeze``) after start and then every ``FREEZE_EVERY_S``; every ``FULL_GC_EVERY_S``
#: one full collection over everything, so cyclic garbage among frozen objects cannot pile up.
GC_THRESHOLD = (50_000, 20, 20)
FREEZE_EVERY_S = 30.0
FULL_GC_EVERY_S = 900.0
#: Keyed by area: how long the group waits for a silent worker before its partitions move (faust's default: 60 s).
SESSION_TIMEOUT_S = 15.0


def new_app(settings: Settings) -> BatchApp:
    """The faust app of the settings' fusion group, without agents (its data directory created)."""
    settings.streams_dir.mkdir(parents=True, exist_ok=True)
    return BatchApp(
        settings.streams_app_id,
        broker=";".join(f"kafka://{host}" for host in settings.bootstrap.split(",")),
        broker_credentials=clients.faust_credentials(settings),
        store="memory://",
        datadir=str(settings.streams_dir / settings.streams_app_id),
        topic_replication_factor=settings.topic_replicas(),   # its own topics as replicated as the contracts'
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_max_poll_records=settings.streams_batch,
        # Keyed by area, a killed worker's partitions go to the others once the group misses its heartbeats.
        **({"broker_session_timeout": SESSION_TIMEOUT_S} if settings.streams_partitions else {}),
    )


def tune_gc() -> None:
    """Young collections less often, and full collections that stall the worker logged (see GC_THRESHOLD)."""
    pause = {"start": 0.0}

    def logged(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            pause["start"] = time.perf_counter()
        elif info.get("generation") == 2:
            took = (time.perf_counter() - pause["start"]) * 1000
            if took > 50:
                log.warning("full garbage collection took %.0f ms (%d objects collected)", took, info.get("collected", 0))

    gc.callbacks.append(logged)
    gc.set_threshold(*GC_THRESHOLD)


def freeze_timer(app: BatchApp) -> None:
    """Survivors out of the collector's sight every ``FREEZE_EVERY_S``, a full collection every ``FULL_GC_EVERY_S``."""
    full_gc = {"at": time.monotonic()}

    @app.timer(interval=FREEZE_EVERY_S)
    async def freeze_survivors() -> None:
        if time.monotonic() - full_gc["at"] >= FULL_GC_EVERY_S:
            gc.unfreeze()
            gc.collect()
            full_gc["at"] = time.monotonic()
        gc.freeze()


def create_app(settings: Settings) -> BatchApp:
    """The faust app of the fusion worker around one worker of the settings' mode (keyed by area when
    ``streams_partitions`` > 0): its agents, a freeze timer, and in the default mode a sweep timer."""
    worker = KeyedFusionWorker(settings) if settings.streams_partitions else FusionWorker(settings)
    app = new_app(settings)
    if isinstance(worker, KeyedFusionWorker):
        transactional_id = f"{settings.streams_app_id}.repartition.{worker.member.decode()}"
    else:   # one worker per group: a second one started fences the first
        transactional_id = f"{settings.streams_app_id}.fusion"
    loop = BatchLoop(app, worker, Transactions(settings, transactional_id, group_id=app.conf.id))
    if not isinstance(worker, KeyedFusionWorker):
        sweep_timer(app, loop)
    freeze_timer(app)
    if isinstance(worker, KeyedFusionWorker):
        keyed_agents(app, loop, worker)
    else:
        fusion_agent(app, loop)
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the fusion worker's faust command line (``worker -l info --without-web``)."""
    tune_gc()
    settings = get_settings()
    metrics.serve("fusion", settings.metrics_host, settings.metrics_port)
    if settings.streams_partitions:
        ensure_keyed_topics(settings)
    app = create_app(settings)
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    app.main()
