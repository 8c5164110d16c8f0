"""The batch loop both of the fusion worker's modes share: what an agent does with a fetch around its own
steps. The worker is started (reference data, warm-up) before the first batch; outputs are validated and
turned into records with their headers, failed records into dead letters, and a batch's records go out with the
offsets it consumed in one transaction (:mod:`citybrain.streams.fusion.transactions`); the agent returns once it
is committed. Each batch is logged with what it counted.

Before a transactional id is first used, its producer is started, which fences the id's previous holder and ends
the transaction it left open; only then are the group's committed offsets read (the warm-up's, and the
floors below which a fetch's records were already committed: the consumer may have fetched from an offset read
before that transaction ended, since aiokafka's offset fetch does not wait for pending transactional commits).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable, Mapping

import orjson
from faust.types import Message

from citybrain.contracts.topics import INGEST_DEAD_LETTERS
from citybrain.contracts.validate import Rejection
from citybrain.ingest.readers import RawRecord
from citybrain.kafka.topics import committed_offsets
from citybrain.streams.batching import BatchApp
from citybrain.streams.fusion.transactions import TP, Out, Transactions, transactional_id
from citybrain.streams.fusion.worker import PRODUCER, Failed, FusionWorker, Produced

log = logging.getLogger(__name__)

#: What a mode does with one fetch: (outputs, records to dead-letter).
Process = Callable[[list[Message]], tuple[list[Produced], list[Failed]]]


class BatchLoop:
    """One worker's batches on one faust app: started, turned into records, committed in transactions, logged."""

    def __init__(self, app: BatchApp, worker: FusionWorker, transactions: Transactions) -> None:
        self.app = app
        self.worker = worker
        self.transactions = transactions
        #: Per input partition, the offset the group had committed when this worker took the partition over.
        self.floors: dict[TP, int] = {}
        #: Batches in hand: the sweep timer waits for none (a sweep over a batch's state that then does not
        #: commit would be sent again when the batch is done again).
        self.busy = 0

    @asynccontextmanager
    async def batch(self, kind: str, messages: list[Message]) -> AsyncIterator[None]:
        """Around one agent's work on a fetch: the worker started first, the batch logged once it is done."""
        started = time.perf_counter()
        self.busy += 1
        try:
            await self.ready()
            yield
        finally:
            self.busy -= 1
        self.took(kind, len(messages), started)

    async def ready(self) -> None:
        """Start the worker (in a thread: it reads the reference data and rebuilds its state) before its first batch."""
        if not self.worker.ready:
            await self.in_thread(self.worker.start)
            self.worker.ready = True

    async def in_thread(self, work: Callable[..., Any], *args: Any) -> Any:
        """Blocking work (reading topics, rebuilding state) off the event loop; returns its result once done."""
        return await asyncio.get_running_loop().run_in_executor(None, work, *args)

    def txn_id(self, tp: TP | None) -> str:
        return transactional_id(self.worker.settings.streams_app_id, tp)

    async def take_over(self, keys: Iterable[TP | None], tps: Iterable[TP] | None) -> dict[TP, int]:
        """Start the producers of ``keys`` (partitions, or None: the default worker's), fencing their previous
        holders, then read the group's committed offsets, now settled: the floors of ``tps`` (None: every
        partition the group committed). Returns the floors set."""
        await self.transactions.start([self.txn_id(k) for k in keys])
        committed = await self.in_thread(committed_offsets, self.worker.settings, self.worker.settings.streams_app_id)
        wanted = set(committed or ()) if tps is None else set(tps)
        floors = {tp: o for tp, o in (committed or {}).items() if tp in wanted}
        self.floors.update(floors)
        return floors

    def fresh(self, messages: list[Message]) -> list[Message]:
        """``messages`` without those below their partition's floor (committed by the partition's previous holder)."""
        floors = self.floors
        if not floors:
            return messages
        kept = []
        for m in messages:
            floor = floors.get((m.topic, m.partition))
            if floor is not None and m.offset < floor:
                continue
            if floor is not None:
                del floors[(m.topic, m.partition)]   # past it: later fetches start after it
            kept.append(m)
        if len(kept) < len(messages):
            log.warning("%d record(s) the previous holder had committed dropped from a fetch", len(messages) - len(kept))
        return kept

    async def commit(self, key: TP | None, produced: list[Produced], failed: list[Failed],
                     offsets: Mapping[TP, int], extra: Iterable[Out] = ()) -> None:
        """The outputs, dead letters and ``extra`` records of one batch (of the partition ``key``, or of the
        default worker) with ``offsets`` in one transaction; returns once it is committed."""
        records = self.records(produced)
        records += self.dead_letters(failed)
        records += extra
        await self.transactions.commit(self.txn_id(key), records, offsets)

    def records(self, produced: list[Produced]) -> list[Out]:
        """Each output validated, with its key and headers; one that breaks its contract as a dead letter."""
        message_of, dead_letter_of = self.worker.message, self.worker.dead_letter
        records: list[Out] = []
        for topic, record, trace in produced:
            message = message_of(topic, record, trace)
            if isinstance(message, Rejection):
                log.error("output for %s breaks its contract (%s on %s); dead-lettered", topic, message.rule, message.field)
                key, value, headers = dead_letter_of(topic, RawRecord(PRODUCER, orjson.dumps(record), value=record),
                                                     message, trace)
                records.append((INGEST_DEAD_LETTERS, key, value, list(headers.items()), None, None))
                continue
            key, value, headers = message
            records.append((topic, key, value, list(headers.items()), None, None))
        return records

    def dead_letters(self, failed: list[Failed]) -> list[Out]:
        """Records that failed, as dead letters with their reason."""
        return [(INGEST_DEAD_LETTERS, k, v, list(h.items()), None, None) for k, v, h in (self.worker.dead_letter(*f) for f in failed)]

    async def publish(self, records: list[Any], topic: str, partition: int) -> None:
        """(key, value, timestamp ms, headers) records to one partition in whole batches, through faust's aiokafka
        producer (acks=all), outside any transaction (at least once); returns once the broker has them."""
        if not records:
            return
        producer = self.app.producer._ensure_producer()
        pending = []
        batch = producer.create_batch()
        for key, value, ts, headers in records:
            if batch.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=ts, headers=headers)
        pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)

    def took(self, kind: str, n: int, started: float) -> None:
        """One line per batch: its size, its time (a warning above 200 ms) and what the worker counted."""
        ms = (time.perf_counter() - started) * 1000
        (log.warning if ms > 200 else log.info)("%s batch of %d in %.0f ms: %s", kind, n, ms, dict(self.worker.counts()))
