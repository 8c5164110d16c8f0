"""The batch loop both of the fusion worker's modes share: what an agent does with a fetch around its own
steps. The worker's transactional producer is started (fencing any older worker of its id) and the worker
started (reference data, warm-up) before the first batch; each fetch's outputs are validated, its failed
records dead-lettered, and all of it committed in one Kafka transaction with the fetch's offsets
(:mod:`citybrain.kafka.transactions`), so nothing of a batch is seen unless its offsets are committed, and the
agent returns only then (faust acknowledges the same offsets after). A transaction that does not commit crashes
the worker: its restart redoes the batch from the committed offsets. Each batch is logged with what it counted
and measured into the platform's metrics (batch time, each record's end-to-end time, the lag of its partitions).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import orjson
from faust.types import Message

from citybrain import metrics
from citybrain.contracts.validate import Rejection
from citybrain.ingest.readers import RawRecord
from citybrain.streams.batching import BatchApp
from citybrain.kafka.transactions import Out, TransactionLost, Transactions, offsets_after
from citybrain.contracts.topics import INGEST_DEAD_LETTERS as DLQ_TOPIC
from citybrain.streams.shares import TP, Routed, share_transactional_id
from citybrain.kafka.replay import ReplayStalled
from citybrain.kafka.topics import committed_offsets
from citybrain.streams.fusion.worker import PRODUCER, Failed, FusionWorker, Produced

log = logging.getLogger(__name__)

#: What a mode does with one fetch: (outputs, records to dead-letter).
Process = Callable[[list[Message]], tuple[list[Produced], list[Failed]]]


class BatchLoop:
    """One worker's batches on one faust app: started, sent, dead-lettered, published and logged."""

    def __init__(self, app: BatchApp, worker: FusionWorker, transactions: Transactions) -> None:
        self.app = app
        self.worker = worker
        #: The worker's own transactional producer (keyed by area, the repartitioning's; each share has its own).
        self.transactions = transactions
        #: Keyed by area: the transactional producer of each share (owned partition) this worker holds.
        self.shares: dict[TP, Transactions] = {}
        self.lag: dict[Any, tuple[str, int]] = {}   # partition -> (topic, records behind its end)

    @asynccontextmanager
    async def batch(self, kind: str, messages: list[Message]) -> AsyncIterator[None]:
        """Around one agent's work on a fetch: the worker started first, the batch logged once it is done."""
        started = time.perf_counter()
        await self.ready()
        yield
        self.took(kind, len(messages), started)
        self.measure(kind, messages, started)

    async def ready(self) -> None:
        """Start the worker (in a thread: it reads the reference data and rebuilds its state) before its first batch."""
        if not self.worker.ready:
            await self.transactions.start()   # fences an older worker of this id before the state is rebuilt
            try:
                await self.in_thread(self.worker.start)
            except ReplayStalled as exc:
                await self.lost(exc)
                raise
            self.worker.ready = True

    async def in_thread(self, work: Callable[..., None], *args: Any) -> None:
        """Blocking work (reading topics, rebuilding state) off the event loop; returns once it is done."""
        await asyncio.get_running_loop().run_in_executor(None, work, *args)

    async def fuse(self, messages: list[Message], process: Process, transactions: Transactions | None = None) -> None:
        """One fetch through ``process``; its outputs, its dead letters and its offsets committed in one transaction
        (the worker's, or ``transactions``: a share's, keyed by area); returns once it is committed."""
        produced, failed = process(messages)
        await self.commit(produced, failed, offsets_after(messages), transactions)

    async def send(self, produced: list[Produced], transactions: Transactions | None = None) -> None:
        """Outputs without input (the sweep timer's) in one transaction of their own."""
        await self.commit(produced, [], None, transactions)

    async def commit(self, produced: list[Produced], failed: list[Failed], offsets: dict[tuple[str, int], int] | None,
                     transactions: Transactions | None = None) -> None:
        """Validate the outputs (one that breaks its contract is dead-lettered), dead-letter the records that failed,
        and commit all of it with ``offsets`` in one transaction. A transaction that does not commit stops the worker
        (:class:`~citybrain.kafka.transactions.TransactionLost`): its state holds the batch, its restart redoes it."""
        records, sent, refused = self.records_of(produced, failed)
        try:
            await (transactions or self.transactions).commit(records, offsets)
        except TransactionLost as exc:
            await self.lost(exc)
            raise
        for topic, n in sent.items():
            metrics.RECORDS_OUT.labels(topic).inc(n)
        for (topic, rule), n in refused.items():
            metrics.RECORDS_DEAD_LETTERED.labels(topic, rule).inc(n)

    def records_of(self, produced: list[Produced], failed: list[Failed]
                   ) -> tuple[list[Out], Counter[str], Counter[tuple[str, str]]]:
        """(records to send, outputs per topic, dead letters per (topic, rule)) of a batch's outputs and failures."""
        message_of, dead_letter_of = self.worker.message, self.worker.dead_letter
        records: list[Out] = []
        sent: Counter[str] = Counter()
        refused: Counter[tuple[str, str]] = Counter()
        for topic, record, trace in produced:
            message = message_of(topic, record, trace)
            if isinstance(message, Rejection):
                log.error("output for %s breaks its contract (%s on %s); dead-lettered", topic, message.rule, message.field)
                key, value, headers = dead_letter_of(topic, RawRecord(PRODUCER, orjson.dumps(record), value=record),
                                                     message, trace)
                records.append((DLQ_TOPIC, None, key, value, None, list(headers.items())))
                refused[(topic, message.rule)] += 1
                continue
            key, value, headers = message
            records.append((topic, None, key, value, None, list(headers.items())))
            sent[topic] += 1
        for topic, raw_record, rejection, trace in failed:
            key, value, headers = dead_letter_of(topic, raw_record, rejection, trace)
            records.append((DLQ_TOPIC, None, key, value, None, list(headers.items())))
            refused[(topic, rejection.rule)] += 1
        return records, sent, refused

    async def lost(self, exc: TransactionLost | ReplayStalled) -> None:
        """A transaction that did not commit, or state that could not be rebuilt whole: logged, and the worker
        crashed (it exits with a failure; its supervisor restarts it, and the restart rebuilds its state from the
        committed offsets)."""
        log.critical("%s", exc)
        await self.app.crash(exc)

    async def publish(self, routed: dict[int, list[Routed]], topic: str, messages: list[Message],
                      transactions: Transactions) -> None:
        """Keyed by area: the repartitioned records (key, value, timestamp ms, headers) to their partitions of
        ``topic``, with the offsets of the raw ``messages`` they came from, in one transaction."""
        records: list[Out] = [(topic, partition, key, value, ts, headers)
                              for partition, batch in routed.items() for key, value, ts, headers in batch]
        try:
            await transactions.commit(records, offsets_after(messages))
        except TransactionLost as exc:
            await self.lost(exc)
            raise

    async def publish_calls(self, records: list[Routed], topic: str) -> None:
        """Keyed by area: the calls this worker's shares read, to the group's city-calls topic (one partition), in a
        transaction of the worker's own producer (learnt by call id: a call told twice counts once)."""
        if records:
            await self.publish({0: records}, topic, [], self.transactions)

    async def take_over(self, gained: dict[TP, int], messages: list[Message]) -> list[Message]:
        """Keyed by area, partitions just gained: each share's transactional producer started first, which fences
        the previous owner and aborts its open transaction; then the offsets committed now (the previous owner may
        have committed after the group gave this worker the partition), the fetch's records before them skipped, and
        each share's state rebuilt from its recent past up to there. Returns the fetch's records left to fuse."""
        settings = self.worker.settings
        for tp in gained:
            transactions = Transactions(settings, share_transactional_id(settings.streams_app_id, tp),
                                        group_id=self.app.conf.id)
            await transactions.start()
            self.shares[tp] = transactions
        committed = await asyncio.get_running_loop().run_in_executor(
            None, committed_offsets, settings, self.app.conf.id) or {}
        ends = {tp: max(first, committed.get(tp, 0)) for tp, first in gained.items()}
        ahead = {tp: end - gained[tp] for tp, end in ends.items() if end > gained[tp]}
        if ahead:
            log.warning("the previous owner committed after the hand-over: %s record(s) skipped as done",
                        ", ".join(f"{t}[{p}]: {n}" for (t, p), n in sorted(ahead.items())))
        try:
            await self.in_thread(self.worker.gain, ends)
        except ReplayStalled as exc:
            await self.lost(exc)
            raise
        return [m for m in messages if m.offset >= ends.get((m.topic, m.partition), 0)]

    async def give_up(self, tp: TP) -> None:
        """Keyed by area, a partition lost: its share's producer stopped (its next owner's fences it anyway)."""
        transactions = self.shares.pop(tp, None)
        if transactions is not None:
            await transactions.stop()

    def measure(self, kind: str, messages: list[Message], started: float) -> None:
        """A finished batch into the metrics: its time; each record's time from its Kafka timestamp to now, when its
        outputs are acknowledged; and each topic's lag over the partitions it holds, from the ends the fetches last saw
        (aiokafka's highwater)."""
        now = time.time()
        metrics.FUSION_BATCH_SECONDS.labels(kind).observe(time.perf_counter() - started)
        by_topic: dict[str, list[float]] = {}
        last: dict[Any, int] = {}
        for m in messages:
            by_topic.setdefault(m.topic, []).append(m.timestamp)
            last[m.tp] = max(last.get(m.tp, -1), m.offset)
        for topic, stamps in by_topic.items():
            histogram = metrics.FUSION_END_TO_END_SECONDS.labels(topic)
            for stamp in stamps:
                histogram.observe(max(0.0, now - stamp))
        held = self.app.consumer.assignment()   # a partition revoked since counts no more (nor may it be asked)
        self.lag = {tp: lag for tp, lag in self.lag.items() if tp in held}
        for tp, offset in last.items():
            end = self.app.consumer.highwater(tp) if tp in held else None
            if end is not None:
                self.lag[tp] = (tp.topic, max(0, end - offset - 1))
        behind: dict[str, int] = {}
        for topic, records in self.lag.values():
            behind[topic] = behind.get(topic, 0) + records
        for topic, records in behind.items():
            metrics.CONSUMER_LAG.labels(self.app.conf.id, topic).set(records)

    def took(self, kind: str, n: int, started: float) -> None:
        """One line per batch: its size, its time (a warning above 200 ms) and what the worker counted."""
        ms = (time.perf_counter() - started) * 1000
        (log.warning if ms > 200 else log.info)("%s batch of %d in %.0f ms: %s", kind, n, ms, dict(self.worker.counts()))
