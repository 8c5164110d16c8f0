"""The fusion worker's outputs and its input offsets committed together: one Kafka transaction per batch.

Each batch's outputs (city events, warnings, work orders, SLA alerts, metrics, dead letters; keyed by area also
the by-area records) are sent by a transactional aiokafka producer, the offsets the batch consumed are added to
the same transaction (``send_offsets_to_transaction``) and it commits: outputs and offsets become visible
together or not at all. A worker killed mid-batch leaves an open transaction that its successor aborts; every
consumer on the platform reads ``read_committed`` and never sees those outputs, and the successor does the batch
again from the committed offsets with the same results and ids.

Zombies are fenced by the transactional id: a worker that starts a producer with an id ends (commits or aborts)
the transaction its previous holder left open, and that holder's next transaction fails with ``ProducerFenced``,
upon which it stops without committing. aiokafka 0.14 commits offsets with ``TxnOffsetCommit`` v0, without the
consumer group's generation (KIP-447), so the id must stand for the inputs: the default worker, one pipeline
over all the raw partitions, uses the app id (its state spans every partition, so one transaction covers the
whole fetch); keyed by area, each input partition a worker owns (a raw partition it repartitions, a by-area or
ticket-lifecycle partition it fuses with that partition's own pipeline) has its own producer, id
``<app id>-<topic>-<partition>``, so the partition's next owner fences its previous one.

The principal needs WRITE (and DESCRIBE) on those transactional ids (a PREFIXED grant on the app id covers both
modes), WRITE on the output topics and READ on the consumer group (``TxnOffsetCommit``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from citybrain.errors import ServiceError
from citybrain.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)

#: (topic, key, value, headers, partition, timestamp ms) of one record sent in a transaction; partition and
#: timestamp None: the key's partition, the time of sending.
Out = tuple[str, bytes | None, bytes, list[tuple[str, bytes]], int | None, int | None]
TP = tuple[str, int]

#: How long an open transaction may last before the broker aborts it (a worker that died mid-batch and has no
#: successor): read_committed consumers of the outputs wait at most this long behind it.
TRANSACTION_TIMEOUT_MS = 60_000


class Fenced(ServiceError):
    """Another worker started a producer with this worker's transactional id: this one must stop."""

    retriable = False


def transactional_id(app_id: str, tp: TP | None) -> str:
    """The transactional id of the default worker (``tp`` None) or of one input partition keyed by area."""
    return app_id if tp is None else f"{app_id}-{tp[0]}-{tp[1]}"


class Transactions:
    """The worker's transactional producers by transactional id, started when first used, one transaction at a
    time each (the batch loop and the sweep timer share them)."""

    def __init__(self, settings: Settings, group_id: str) -> None:
        self.settings = settings
        self.group_id = group_id
        self.producers: dict[str, AIOKafkaProducer] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.committed = 0

    def lock(self, txn_id: str) -> asyncio.Lock:
        return self.locks.setdefault(txn_id, asyncio.Lock())

    async def start(self, txn_ids: Iterable[str]) -> None:
        """Start the producers of ``txn_ids`` that are not running: each fences the id's previous holder and ends
        the transaction it left open (so the group's committed offsets are settled once this returns)."""
        async def start(txn_id: str) -> None:
            async with self.lock(txn_id):
                await self._producer(txn_id)

        await asyncio.gather(*[start(t) for t in txn_ids])

    async def _producer(self, txn_id: str) -> AIOKafkaProducer:
        """The running producer of ``txn_id``, started if need be (hold the id's lock)."""
        from aiokafka import AIOKafkaProducer

        if txn_id in self.producers:
            return self.producers[txn_id]

        producer = AIOKafkaProducer(**self.settings.aiokafka_config(), client_id=txn_id, transactional_id=txn_id,
                                    enable_idempotence=True, transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
        try:
            await producer.start()
        except Exception:
            await producer.stop()
            raise
        log.info("transactional producer %s started", txn_id)
        self.producers[txn_id] = producer
        return producer

    async def commit(self, txn_id: str, records: list[Out], offsets: Mapping[TP, int]) -> None:
        """Send ``records`` and commit ``offsets`` for the group in one transaction; returns once it is committed.
        Raises :class:`Fenced` when another worker holds ``txn_id`` now (nothing of this transaction commits)."""
        if not records and not offsets:
            return
        from aiokafka.errors import ProducerFenced
        from aiokafka.structs import OffsetAndMetadata, TopicPartition

        async with self.lock(txn_id):
            producer = await self._producer(txn_id)
            try:
                async with producer.transaction():
                    await self._send(producer, records)
                    if offsets:
                        await producer.send_offsets_to_transaction(
                            {TopicPartition(*tp): OffsetAndMetadata(o, "") for tp, o in offsets.items()}, self.group_id)
            except ProducerFenced as exc:
                raise Fenced(f"the fusion worker's transactional id {txn_id!r} was taken over by another worker (a "
                             "restart of this group, or a worker that took its partitions over); this worker stops "
                             "without committing. Fix: nothing if this worker was replaced; in the default mode run "
                             "one worker per CITYBRAIN_STREAMS_APP_ID, or share the city with "
                             "CITYBRAIN_STREAMS_PARTITIONS=N.") from exc
        self.committed += 1

    @staticmethod
    async def _send(producer: AIOKafkaProducer, records: list[Out]) -> None:
        """Records into the open transaction, in whole batches per partition where one is given."""
        pending: list[Any] = []
        batches: dict[TP, Any] = {}
        for topic, key, value, headers, partition, ts in records:
            if partition is None:
                pending.append(await producer.send(topic, value, key=key, headers=headers, timestamp_ms=ts))
                continue
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[(topic, partition)] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[(topic, partition)] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=ts, headers=headers)
        for (topic, partition), batch in batches.items():
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)

    async def close(self, txn_ids: Iterable[str]) -> None:
        """Stop the producers of ``txn_ids`` (partitions given away: their next owner fences these ids)."""
        for txn_id in txn_ids:
            async with self.lock(txn_id):
                producer = self.producers.pop(txn_id, None)
                if producer is not None:
                    await producer.stop()

    async def close_all(self) -> None:
        await self.close(list(self.producers))
