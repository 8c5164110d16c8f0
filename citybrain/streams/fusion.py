"""The fusion worker (faust-streaming): raw feeds in; city events, early warnings, SLA alerts,
metrics and work orders out.

Each fetch from the raw topics arrives as one batch (``BatchApp.batch_agent``, see
:mod:`citybrain.streams.batching`), the shared package's ``Pipeline`` does the work (enrich,
dedupe, detect, fuse, dispatch), each output is validated against its contract before it is
sent, and the batch's offsets are acknowledged once its outputs are on the broker. On start
the worker loads the reference data, then rebuilds its state from the raw topics
(:mod:`citybrain.streams.warmup`) so a restart neither forgets duplicates nor reopens cases.
Stream time is the records' Kafka timestamp, which the simulator sets to simulated time.

Outputs once by id across a crash: a worker killed after sending a batch's outputs and before
committing its offsets processes that batch again after the restart, with the same results and
ids. So on start it reads the ids its group sent in the last ``streams_resend_window_s`` of each
output partition (header ``app-id``) and does not send those again; the set is dropped once that
window has passed since the start.

``create_app(settings)`` builds the faust app and its agent and timers around one
:class:`FusionWorker`; ``main()`` is what ``streams/fusion_worker.py`` and ``citybrain streams
fusion`` run. Nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from datetime import datetime, timezone
from typing import Any

import orjson
from faust.types import Message

from citybrain.contracts.model import Contract, load_all
from citybrain.contracts.validate import Rejection, RecordValidator
from citybrain.fusion.pipeline import REFERENCE, Pipeline
from citybrain.ingest.producer import DLQ_TOPIC, dead_letter_message
from citybrain.ingest.readers import RawRecord
from citybrain.kafka import clients
from citybrain.kafka.headers import event_id, new_trace_id, read_headers, standard_headers
from citybrain.kafka.replay import sent_ids
from citybrain.kafka.topics import read_values
from citybrain.privacy import protector_from_settings
from citybrain.settings import Settings, get_settings
from citybrain.streams.batching import BatchApp
from citybrain.streams.warmup import warm_up

log = logging.getLogger(__name__)

PRODUCER = "streams.fusion"
#: Sweep (SLA checks, closing cases and windows) when stream time moved this far, and on a timer.
SWEEP_EVERY_S = 30.0
#: The worker's state is millions of long-lived objects (dedupe window, windows, cases) that
#: refcounting frees; full collections scanning them stalled it ~130 ms every few seconds
#: (p99 latency 750 ms). Fewer young collections, and survivors moved out of the collector's
#: sight (``gc.freeze``) after start and then every ``FREEZE_EVERY_S``; every ``FULL_GC_EVERY_S``
#: one full collection over everything, so cyclic garbage among frozen objects cannot pile up.
GC_THRESHOLD = (50_000, 20, 20)
FREEZE_EVERY_S = 30.0
FULL_GC_EVERY_S = 900.0

Produced = tuple[str, dict[str, Any], bytes]   # (topic, record, trace id)


class FusionWorker:
    """The worker's state and work, apart from faust: the pipeline, the contracts of what it reads
    and writes, and what it has swept."""

    def __init__(self, settings: Settings, contracts: dict[str, Contract] | None = None) -> None:
        self.settings = settings
        self.app_id = settings.streams_app_id.encode()
        self.contracts = {c.topic: c for c in (contracts or load_all(settings.schemas_dir)).values()}
        self.inputs = [t for t, c in self.contracts.items() if c.zone == "raw"]
        self.outputs = [t for t, c in self.contracts.items() if c.zone in ("city", "alert", "dispatch", "metrics")]
        self.validators = {t: RecordValidator(self.contracts[t]) for t in self.outputs}
        self.pipeline = Pipeline(self.contracts, protector_from_settings(settings), auto_sweep=False)
        self.ready = False
        self.swept: datetime | None = None
        #: (topic, event id) sent before the start and not committed for sure: not sent again (see the module).
        self.sent_before: set[tuple[str, str]] = set()
        self.sent_before_until = 0.0
        self.resends_suppressed = 0

    def start(self) -> None:
        """Areas, devices and routing rules before the first reading, so nothing is fused unplaced;
        then the state the worker had at its committed offsets."""
        for topic in REFERENCE:
            for value in read_values(self.settings, topic, timeout_s=60):
                self.pipeline.reference(topic, value)
        warm = warm_up(self.settings, self.pipeline, self.settings.streams_app_id, self.inputs,
                       self.settings.streams_warmup_h, self.settings.streams_warmup_tickets_h)
        if warm.records and self.settings.streams_resend_window_s > 0:   # a restart: the uncommitted may come again
            self.sent_before = sent_ids(self.settings, self.outputs, self.settings.streams_resend_window_s,
                                        self.settings.streams_app_id)
            self.sent_before_until = time.monotonic() + self.settings.streams_resend_window_s
        gc.collect()
        gc.freeze()
        if warm.records:
            log.warning("state rebuilt from %d records of %d partitions in %.1f s (stream time %s); %d output ids of "
                        "the last %.0f s are not sent again", warm.records, warm.partitions, warm.seconds,
                        warm.resumed_at, len(self.sent_before), self.settings.streams_resend_window_s)
        self.pipeline.counts.clear()

    def process(self, messages: list[Message]) -> tuple[list[Produced], list[tuple[str, RawRecord, Rejection, bytes]]]:
        """Feed one fetch through the pipeline: (outputs, records that failed and are to be dead-lettered)."""
        produced: list[Produced] = []
        failed = []
        feed = self.pipeline.feed_message
        for message in messages:
            topic, payload = message.topic, message.value
            headers = read_headers(message.headers)
            trace = headers.get("trace-id") or new_trace_id().encode()
            try:
                at = datetime.fromtimestamp(message.timestamp, timezone.utc)
                for out_topic, record in feed(topic, headers, payload, at, message.partition):
                    produced.append((out_topic, record, trace))
            except Exception as exc:   # noqa: BLE001 - one record must not stop the city's stream: it is dead-lettered
                log.exception("record %s@%d:%d failed; dead-lettered", topic, message.partition, message.offset)
                failed.append((topic, RawRecord(f"{topic}@{message.partition}:{message.offset}", payload or b""),
                               Rejection("processing-error", "(record)", f"{type(exc).__name__}: {exc}"), trace))
        return produced + self.sweep(), failed

    def sweep(self, force: bool = False) -> list[Produced]:
        """SLA alerts, closed events and closed metric windows up to the low watermark of the event streams."""
        watermark = self.pipeline.clock.watermark()
        if watermark is None or (not force and self.swept is not None
                                 and (watermark - self.swept).total_seconds() < SWEEP_EVERY_S):
            return []
        self.swept = watermark
        return [(topic, record, b"streams.fusion.sweep") for topic, record in self.pipeline.sweep(watermark)]

    def message(self, topic: str, record: dict[str, Any], trace: bytes
                ) -> tuple[bytes, bytes, dict[str, bytes]] | Rejection | None:
        """(key, value, headers) of one output, why it breaks its contract, or None: sent before a restart."""
        rejection = self.validators[topic](record)
        if rejection is not None:
            return rejection
        contract = self.contracts[topic]
        payload = orjson.dumps(record)
        ident = event_id(contract, record, payload.decode())
        if self.sent_before and time.monotonic() > self.sent_before_until:
            log.info("restart window over: %d output(s) sent before the restart were not sent again",
                     self.resends_suppressed)
            self.sent_before = set()
        if (topic, ident) in self.sent_before:
            self.resends_suppressed += 1
            return None
        headers = dict(standard_headers(contract, PRODUCER, ident, trace))
        headers["app-id"] = self.app_id
        return contract.key_of(record), payload, headers

    def dead_letter(self, topic: str, record: RawRecord, rejection: Rejection, trace: bytes) -> tuple[bytes, bytes, dict[str, bytes]]:
        envelope, headers = dead_letter_message(topic, record, rejection, PRODUCER, trace.decode(),
                                                self.settings.max_record_bytes)
        return topic.encode(), orjson.dumps(envelope), dict(headers)


def create_app(settings: Settings) -> BatchApp:
    """The faust app of the fusion worker: one batch agent over the raw topics, a sweep timer, a freeze timer."""
    worker = FusionWorker(settings)
    settings.streams_dir.mkdir(parents=True, exist_ok=True)
    app = BatchApp(
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
    )
    raw = app.topic(*worker.inputs, value_serializer="raw")
    outputs = {t: app.topic(t, value_serializer="raw") for t in worker.outputs}
    dead_letters = app.topic(DLQ_TOPIC, value_serializer="raw")
    full_gc = {"at": time.monotonic()}

    async def send(produced: list[Produced]) -> None:
        """Validate and send; return once the broker has every record (the batch may then be acknowledged)."""
        pending = []
        for topic, record, trace in produced:
            message = worker.message(topic, record, trace)
            if message is None:
                continue
            if isinstance(message, Rejection):
                log.error("output for %s breaks its contract (%s on %s); dead-lettered", topic, message.rule, message.field)
                key, value, headers = worker.dead_letter(topic, RawRecord(PRODUCER, orjson.dumps(record), value=record),
                                                         message, trace)
                pending.append(await dead_letters.send(key=key, value=value, headers=headers))
                continue
            key, value, headers = message
            pending.append(await outputs[topic].send(key=key, value=value, headers=headers))
        if pending:
            await asyncio.gather(*pending)

    @app.timer(interval=2.0)
    async def sweep_when_quiet() -> None:
        """Windows and SLAs also close when no records arrive."""
        if worker.ready:
            await send(worker.sweep(force=True))

    @app.timer(interval=FREEZE_EVERY_S)
    async def freeze_survivors() -> None:
        if time.monotonic() - full_gc["at"] >= FULL_GC_EVERY_S:
            gc.unfreeze()
            gc.collect()
            full_gc["at"] = time.monotonic()
        gc.freeze()

    @app.batch_agent(raw)
    async def fuse(messages: list[Message]) -> None:
        started = time.perf_counter()
        if not worker.ready:
            await asyncio.get_running_loop().run_in_executor(None, worker.start)
            worker.ready = True
        produced, failed = worker.process(messages)
        await send(produced)
        if failed:
            letters = [worker.dead_letter(*f) for f in failed]
            await asyncio.gather(*[await dead_letters.send(key=k, value=v, headers=h) for k, v, h in letters])
        took = (time.perf_counter() - started) * 1000
        (log.warning if took > 200 else log.info)("batch of %d in %.0f ms: %s", len(messages), took,
                                                  dict(worker.pipeline.counts))

    return app


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


def main(argv: list[str] | None = None) -> None:
    """Run the fusion worker's faust command line (``worker -l info --without-web``)."""
    import sys

    tune_gc()
    app = create_app(get_settings())
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    app.main()
