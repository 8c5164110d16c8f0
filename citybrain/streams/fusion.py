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
import os
import socket
import time
import uuid
from collections import Counter
from contextlib import suppress
from datetime import datetime, timezone
from typing import Any

import orjson
from faust.types import Message

from citybrain.contracts.model import Contract, load_all
from citybrain.contracts.validate import Rejection, RecordValidator
from citybrain.fusion.fuse import CityCalls, HotspotDetector
from citybrain.fusion.pipeline import REFERENCE, Pipeline
from citybrain.ingest.producer import DLQ_TOPIC, dead_letter_message
from citybrain.ingest.readers import RawRecord
from citybrain.kafka import clients
from citybrain.kafka.headers import event_id, new_trace_id, read_headers, standard_headers
from citybrain.kafka.replay import sent_ids
from citybrain.kafka.topics import read_values
from citybrain.access.privacy import protector_from_settings
from citybrain.settings import Settings, get_settings
from citybrain.streams.batching import BatchApp
from citybrain.streams.shares import TICKET_EVENTS, Repartitioner, Shares, by_area_topic, city_calls_topic, source_of
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
#: Keyed by area: how long the group waits for a silent worker before its partitions move (faust's default: 60 s).
SESSION_TIMEOUT_S = 15.0

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
        #: Keyed by area (``streams_partitions`` > 0, see :mod:`citybrain.streams.shares`): the raw topics this
        #: worker repartitions, the topics it fuses (by area, and the ticket lifecycle), one pipeline per owned
        #: partition, and the reference data a newly gained partition starts from.
        self.partitions = settings.streams_partitions
        self.by_area = by_area_topic(settings.streams_app_id)
        self.repartitioner = Repartitioner(self.partitions)
        self.keyed_inputs = [t for t in self.inputs if t != TICKET_EVENTS]
        #: The city-wide calls baseline of this worker's shares, published to and learnt from the group's other
        #: workers on ``city_topic`` (records from the others wait in ``heard`` for the event loop's next batch).
        self.city_calls = CityCalls(outbox=bool(self.partitions))
        self.city_topic = city_calls_topic(settings.streams_app_id)
        self.member = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}".encode()
        self.heard: list[tuple[str, str, datetime]] = []
        self.learnt = 0
        self.references: dict[tuple[str, bytes], dict[str, Any]] = {}
        self.shares = Shares(self.contracts, self.new_share_pipeline)
        self.gaining = False
        #: Keyed by area: between giving partitions up in a rebalance and being assigned again.
        self.moving = False

    def new_share_pipeline(self) -> Pipeline:
        pipeline = Pipeline(self.contracts, self.pipeline.dispatcher.protector, auto_sweep=False,
                            city_calls=self.city_calls)
        for (topic, _key), value in self.references.items():
            pipeline.reference(topic, value)
        return pipeline

    def remember_reference(self, topic: str, value: dict[str, Any]) -> None:
        self.references[(topic, self.contracts[topic].key_of(value))] = value

    def start(self) -> None:
        """Areas, devices and routing rules before the first reading, so nothing is fused unplaced;
        then the state the worker had at its committed offsets (keyed by area: per partition, as gained)."""
        for topic in REFERENCE:
            for value in read_values(self.settings, topic, timeout_s=60):
                self.pipeline.reference(topic, value)
                if self.partitions:
                    self.repartitioner.reference(topic, value)
                    self.remember_reference(topic, value)
        if self.partitions:
            gc.collect()
            gc.freeze()
            return
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

    def route(self, messages: list[Message]) -> dict[int, list[Any]]:
        """Keyed by area: the by-area partition of each raw record (reference records to every partition)."""
        routed: dict[int, list[Any]] = {}
        for m in messages:
            partitions, record = self.repartitioner.route(m.topic, m.partition, m.offset, int(m.timestamp * 1000),
                                                          m.headers, m.value or b"")
            for p in partitions:
                routed.setdefault(p, []).append(record)
        return routed

    def gain(self, ends: dict[tuple[str, int], int]) -> None:
        """Keyed by area: state for partitions just gained, from their recent past; on a takeover, the ids the
        group sent lately are not sent again (the previous owner may have sent outputs it did not commit)."""
        from citybrain.kafka.replay import Backlog

        hours = self.settings.streams_warmup_h
        backlog = Backlog(self.settings, self.settings.streams_app_id, set(t for t, _p in ends),
                          lambda t: self.settings.streams_warmup_tickets_h if t == TICKET_EVENTS else hours, ends=ends)
        self.gaining = True   # no sweep of the shares while their state is fed in another thread
        try:
            records = self.shares.gain(backlog)
        finally:
            self.gaining = False
        if records and self.settings.streams_resend_window_s > 0:
            self.sent_before = sent_ids(self.settings, self.outputs, self.settings.streams_resend_window_s,
                                        self.settings.streams_app_id)
            self.sent_before_until = time.monotonic() + self.settings.streams_resend_window_s
            log.warning("%d output ids of the last %.0f s are not sent again", len(self.sent_before),
                        self.settings.streams_resend_window_s)

    def process_shares(self, messages: list[Message]
                       ) -> tuple[list[Produced], list[tuple[str, RawRecord, Rejection, bytes]]]:
        """Keyed by area: feed each record of the by-area topic and the ticket lifecycle to its partition's
        pipeline (:meth:`gain` first for partitions without state)."""
        self.learn_heard()
        produced: list[Produced] = []
        failed = []
        owned = self.shares.owned
        for message in messages:
            headers = read_headers(message.headers)
            topic, partition, offset = source_of(message.topic, message.partition, message.offset, headers)
            trace = headers.get("trace-id") or new_trace_id().encode()
            share = owned.get((message.topic, message.partition))
            if share is None:   # revoked during this batch: its new owner reads it from the committed offset
                log.info("%s[%d] revoked during a batch; left to its new owner", message.topic, message.partition)
                continue
            try:
                at = datetime.fromtimestamp(message.timestamp, timezone.utc)
                pipeline = share.pipeline
                outputs = pipeline.feed_message(topic, headers, message.value, at, partition)
                if topic in REFERENCE:
                    value = orjson.loads(message.value)
                    self.repartitioner.reference(topic, value)
                    self.remember_reference(topic, value)
                for out_topic, record in outputs:
                    produced.append((out_topic, record, trace))
            except Exception as exc:   # noqa: BLE001 - one record must not stop the city's stream: it is dead-lettered
                log.exception("record %s@%d:%d failed; dead-lettered", topic, partition, offset)
                failed.append((topic, RawRecord(f"{topic}@{partition}:{offset}", message.value or b""),
                               Rejection("processing-error", "(record)", f"{type(exc).__name__}: {exc}"), trace))
        return produced + self.sweep(), failed

    def hear(self, records: list[Any]) -> None:
        """Records of the city-calls topic (from the worker's reading task): the other workers' calls, kept for
        the next batch."""
        for r in records:
            if dict(r.headers or ()).get("member") != self.member:
                call = orjson.loads(r.value)
                self.heard.append((call["category"], call["id"], datetime.fromtimestamp(call["at"], timezone.utc)))

    def learn_heard(self) -> None:
        """The other workers' calls into the city baseline (on the event loop, between batches: never while a
        share is fed)."""
        heard, self.heard = self.heard, []
        for category, ident, at in heard:
            self.city_calls.learn(category, ident, at, HotspotDetector.WINDOW + HotspotDetector.LATE)
        if heard:
            self.learnt += len(heard)
            log.info("learnt %d call(s) of other workers for the city baseline (%d in all)", len(heard), self.learnt)

    def city_call_messages(self) -> list[tuple[bytes, bytes, int, list[tuple[str, bytes]]]]:
        """(key, value, timestamp ms, headers) of the calls this worker's shares read since the last batch."""
        return [(category.encode(), orjson.dumps({"category": category, "id": ident, "at": at.timestamp()}),
                 int(time.time() * 1000), [("member", self.member)])
                for category, ident, at in self.city_calls.drain()]

    def counts(self) -> Counter[str]:
        if not self.partitions:
            return self.pipeline.counts
        total: Counter[str] = Counter()
        for share in self.shares.owned.values():
            total.update(share.pipeline.counts)
            share.pipeline.counts.clear()
        return total

    def sweep(self, force: bool = False) -> list[Produced]:
        """SLA alerts, closed events and closed metric windows up to the low watermark of the event streams
        (keyed by area: of each owned partition's pipeline)."""
        if not self.partitions:
            return self._sweep(self.pipeline, self, force)
        return [out for share in list(self.shares.owned.values()) for out in self._sweep(share.pipeline, share, force)]

    @staticmethod
    def _sweep(pipeline: Pipeline, state: Any, force: bool) -> list[Produced]:
        watermark = pipeline.clock.watermark()
        if watermark is None or (not force and state.swept is not None
                                 and (watermark - state.swept).total_seconds() < SWEEP_EVERY_S):
            return []
        state.swept = watermark
        return [(topic, record, b"streams.fusion.sweep") for topic, record in pipeline.sweep(watermark)]

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
        # Keyed by area, a killed worker's partitions go to the others once the group misses its heartbeats.
        **({"broker_session_timeout": SESSION_TIMEOUT_S} if settings.streams_partitions else {}),
    )
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
        """Windows and SLAs also close when no records arrive (not during a rebalance: a share this worker
        is giving away is swept by its next owner, which knows what was sent before it took over)."""
        if worker.ready and not worker.gaining and not worker.moving:
            await send(worker.sweep(force=True))

    @app.timer(interval=FREEZE_EVERY_S)
    async def freeze_survivors() -> None:
        if time.monotonic() - full_gc["at"] >= FULL_GC_EVERY_S:
            gc.unfreeze()
            gc.collect()
            full_gc["at"] = time.monotonic()
        gc.freeze()

    async def ready() -> None:
        if not worker.ready:
            await asyncio.get_running_loop().run_in_executor(None, worker.start)
            worker.ready = True

    async def dead_letter(failed: list[tuple[str, RawRecord, Rejection, bytes]]) -> None:
        if failed:
            letters = [worker.dead_letter(*f) for f in failed]
            await asyncio.gather(*[await dead_letters.send(key=k, value=v, headers=h) for k, v, h in letters])

    def took(kind: str, n: int, started: float) -> None:
        ms = (time.perf_counter() - started) * 1000
        (log.warning if ms > 200 else log.info)("%s batch of %d in %.0f ms: %s", kind, n, ms, dict(worker.counts()))

    if not worker.partitions:
        @app.batch_agent(app.topic(*worker.inputs, value_serializer="raw"))
        async def fuse(messages: list[Message]) -> None:
            started = time.perf_counter()
            await ready()
            produced, failed = worker.process(messages)
            await send(produced)
            await dead_letter(failed)
            took("fused", len(messages), started)

        return app

    @app.batch_agent(app.topic(*worker.keyed_inputs, value_serializer="raw"))
    async def repartition(messages: list[Message]) -> None:
        """Raw records to their district's partition of the by-area topic; returns once the broker has them."""
        started = time.perf_counter()
        await ready()
        await asyncio.gather(*[publish(records, worker.by_area, partition)
                               for partition, records in worker.route(messages).items()])
        took("repartitioned", len(messages), started)

    async def publish(records: list[Any], topic: str, partition: int) -> None:
        """(key, value, timestamp ms, headers) records to one partition in whole batches, through faust's aiokafka
        producer (acks=all); returns once the broker has them."""
        if not records:
            return
        producer = app.producer._ensure_producer()
        pending = []
        batch = producer.create_batch()
        for key, value, ts, headers in records:
            if batch.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=ts, headers=headers)
        pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)

    @app.batch_agent(app.topic(worker.by_area, TICKET_EVENTS, value_serializer="raw"))
    async def fuse_shares(messages: list[Message]) -> None:
        started = time.perf_counter()
        await ready()
        gained = worker.shares.missing(messages)
        if gained:
            await asyncio.get_running_loop().run_in_executor(None, worker.gain, gained)
        produced, failed = worker.process_shares(messages)
        await send(produced)
        await dead_letter(failed)
        await publish(worker.city_call_messages(), worker.city_topic, 0)
        took("fused", len(messages), started)

    @app.task
    async def learn_city_calls() -> None:
        """Every other worker's calls, from the start of the group's city-calls topic (outside the group: each
        worker reads all of it)."""
        consumer = clients.aio_consumer(settings, worker.city_topic, group_id=None, auto_offset_reset="earliest",
                                        enable_auto_commit=False)
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                    worker.hear(records)
        finally:
            await consumer.stop()

    @app.on_partitions_revoked.connect
    async def moving(app: Any, revoked: Any, **_: Any) -> None:   # noqa: ARG001 - the signal's sender
        worker.moving = True

    @app.on_partitions_assigned.connect
    async def drop_lost(app: Any, assigned: Any, **_: Any) -> None:   # noqa: ARG001 - the signal's sender
        worker.shares.keep_only((tp.topic, tp.partition) for tp in assigned)
        worker.moving = False

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


def ensure_keyed_topics(settings: Settings) -> None:
    """Keyed by area: create the group's by-area topic (``streams_partitions`` partitions, replicated as the
    contracts' topics, kept as long as a warm-up reaches back) and its city-calls topic (one partition, a day);
    refuse a by-area topic with another partition count."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from citybrain.errors import InputError

    name = by_area_topic(settings.streams_app_id)
    admin = clients.admin(settings)
    try:
        with suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(city_calls_topic(settings.streams_app_id), 1, settings.topic_replicas(),
                                          topic_configs={"retention.ms": str(24 * 3_600_000)})])
        retention_ms = int(max(settings.streams_warmup_h, 24) * 2 * 3_600_000)
        admin.create_topics([NewTopic(name, settings.streams_partitions, settings.topic_replicas(),
                                      topic_configs={"retention.ms": str(retention_ms)})])
        log.info("created %s with %d partitions", name, settings.streams_partitions)
    except TopicAlreadyExistsError:
        (found,) = admin.describe_topics([name])
        have = len(found["partitions"])
        if have != settings.streams_partitions:
            raise InputError(
                f"CITYBRAIN_STREAMS_PARTITIONS={settings.streams_partitions}, but the fusion group "
                f"{settings.streams_app_id}'s topic {name} has {have} partitions: districts would move between "
                f"partitions and their state with them. Fix: set CITYBRAIN_STREAMS_PARTITIONS={have}, or start "
                "the group afresh under another CITYBRAIN_STREAMS_APP_ID.") from None
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> None:
    """Run the fusion worker's faust command line (``worker -l info --without-web``)."""
    import sys

    tune_gc()
    settings = get_settings()
    if settings.streams_partitions:
        ensure_keyed_topics(settings)
    app = create_app(settings)
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    app.main()
