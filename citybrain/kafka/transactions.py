"""Kafka transactions for a stream worker: its outputs and the offsets of the inputs they came from, committed
together or not at all (aiokafka's transactional producer, Kafka's KIP-98).

A worker sends each batch's outputs and dead letters inside one transaction and commits its input offsets in the
same transaction (``send_offsets_to_transaction``). Consumers that read ``read_committed`` (every consumer
:mod:`citybrain.kafka.clients` builds, and the fusion worker's own) never see the outputs of a batch whose
offsets were not committed, so a worker killed halfway leaves nothing behind that its restart sends again.

The transactional id fences: a producer started with the id of another still running (a zombie whose group
session expired, an old process not quite dead) makes the broker refuse the older one with ``ProducerFenced``,
so at most one of them can commit. A failed transaction is never retried in place: the worker's state already
holds the batch, so the worker stops (:class:`TransactionLost`) and its restart rebuilds state from the committed
offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable

from citybrain.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)

#: (topic, partition or None for the key's, key, value, timestamp ms or None for now, headers) of one record.
Out = tuple[str, "int | None", "bytes | None", bytes, "int | None", list[tuple[str, bytes]]]

#: How long the broker lets a transaction stay open before it aborts it (and fences its producer). A worker killed
#: mid-transaction holds back every ``read_committed`` reader of the partitions it wrote (their last stable offset)
#: until then, unless a producer of its id starts first: 15 s, the keyed group's session timeout (Kafka Streams uses
#: 10 s). A batch is fused before its transaction begins, so a transaction only sends and commits.
TRANSACTION_TIMEOUT_MS = 15_000


class TransactionLost(RuntimeError):
    """A transaction could not commit (fenced by a newer producer, timed out, the broker unreachable): the worker's
    state is ahead of what is committed, so it must stop and be restarted from the committed offsets."""


class Transactions:
    """One transactional producer: batches of records, with the input offsets they consumed, committed atomically.

    Transactions of one producer never overlap: a batch waits for the one in progress (the sweep timer and the
    batch agent share a producer)."""

    def __init__(self, settings: Settings, transactional_id: str, group_id: str | None = None) -> None:
        self.settings = settings
        self.transactional_id = transactional_id
        self.group_id = group_id
        self.producer: AIOKafkaProducer | None = None
        self.lock = asyncio.Lock()
        self.committed = 0
        self.records = 0

    async def start(self) -> None:
        """Start the producer: the broker fences any older producer of this id and aborts its open transaction."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.settings.aiokafka_config(), transactional_id=self.transactional_id,
                                    enable_idempotence=True, acks="all", linger_ms=5,
                                    transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
        await producer.start()
        self.producer = producer
        log.info("transactional producer %s started (older producers of this id fenced)", self.transactional_id)

    async def stop(self) -> None:
        """Stop the producer (an open transaction is aborted by the broker when its timeout passes)."""
        if self.producer is not None:
            producer, self.producer = self.producer, None
            try:
                await producer.stop()
            except Exception as exc:   # noqa: BLE001 - a fenced producer may refuse to stop cleanly: it is gone anyway
                log.info("transactional producer %s stopped with %s", self.transactional_id, exc)

    async def commit(self, records: Iterable[Out], offsets: dict[tuple[str, int], int] | None = None) -> int:
        """Send ``records`` and commit ``offsets`` ((topic, partition) -> next offset to read) in one transaction.
        Returns the records sent; raises :class:`TransactionLost` if the transaction did not commit."""
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError

        batch = list(records)
        if not batch and not offsets:
            return 0
        if self.producer is None:
            raise TransactionLost(f"transactional producer {self.transactional_id} is not started")
        producer = self.producer
        async with self.lock:
            started = time.perf_counter()
            try:
                await producer.begin_transaction()
                pending = await send_all(producer, batch)
                if pending:
                    await asyncio.gather(*pending)
                if offsets:
                    await producer.send_offsets_to_transaction(
                        {TopicPartition(t, p): o for (t, p), o in offsets.items()}, self.group_id)
                await producer.commit_transaction()
            except (KafkaError, asyncio.TimeoutError, OSError) as exc:
                await self._abort()
                raise TransactionLost(
                    f"transaction of {self.transactional_id} ({len(batch)} record(s), {len(offsets or {})} "
                    f"offset(s)) did not commit: {type(exc).__name__}: {exc}. Its outputs are aborted and its "
                    "offsets not committed; the worker stops so its restart redoes the batch from the committed "
                    "offsets.") from exc
            self.committed += 1
            self.records += len(batch)
            ms = (time.perf_counter() - started) * 1000
            if ms > 1000:
                log.warning("transaction of %d record(s) took %.0f ms to commit", len(batch), ms)
            return len(batch)

    async def _abort(self) -> None:
        """Abort the open transaction if the producer still may (a fenced one may not: the broker aborted it)."""
        producer = self.producer
        if producer is None:
            return
        try:
            await producer.abort_transaction()
        except Exception as exc:   # noqa: BLE001 - fenced or disconnected: the broker aborts it on its own
            log.info("abort of %s's transaction refused (%s): the broker aborts it", self.transactional_id, exc)


async def send_all(producer: Any, records: list[Out]) -> list[Any]:
    """Send ``records`` in the producer's open transaction; returns the futures of their acknowledgements.

    A record for a partition of its own choosing (the repartitioned records: one per raw record of the city) is
    appended to a record batch of that partition (aiokafka's ``create_batch``, sent with ``send_batch`` when full
    and at the end), not sent alone: ``send`` costs an await and a future per record, which a batch pays once. The
    records, their order in each partition and the batches' size and linger are those ``send`` makes. A record
    without a partition goes through ``send``, whose partitioner picks it by key."""
    pending: list[Any] = []
    batches: dict[tuple[str, int], Any] = {}
    for topic, partition, key, value, ts, headers in records:
        if partition is None:
            pending.append(await producer.send(topic, value=value, key=key, timestamp_ms=ts, headers=headers))
            continue
        builder = batches.get((topic, partition))
        if builder is None:
            builder = batches[(topic, partition)] = producer.create_batch()
        if builder.append(timestamp=ts, key=key, value=value, headers=headers) is None:   # full: it closed itself
            pending.append(await producer.send_batch(builder, topic, partition=partition))
            builder = batches[(topic, partition)] = producer.create_batch()
            builder.append(timestamp=ts, key=key, value=value, headers=headers)   # an empty batch takes any record
    for (topic, partition), builder in batches.items():
        pending.append(await producer.send_batch(builder, topic, partition=partition))
    return pending


def offsets_after(messages: Iterable[Any]) -> dict[tuple[str, int], int]:
    """The offset to commit per partition after ``messages`` (objects with ``topic``, ``partition``, ``offset``):
    one past the last read."""
    offsets: dict[tuple[str, int], int] = {}
    for m in messages:
        tp = (m.topic, m.partition)
        if m.offset + 1 > offsets.get(tp, -1):
            offsets[tp] = m.offset + 1
    return offsets
