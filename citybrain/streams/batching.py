"""Batch delivery for faust-streaming: one coroutine call per fetch instead of one event at a time.

Why the fusion worker bypasses faust's per-event path: faust delivers every record through
its per-event machinery: two tasks and an ``asyncio.wait`` per record in the consumer's
drain loop, an ``Event`` per record, a queue put and get per record, then the stream's own
per-event path. Measured here, that costs ~90 µs per record, more than the fusion work
itself (~17 µs), and capped the fusion worker at ~9,000 records/s with
``stream.take_events``.

``BatchApp.batch_agent(topic)`` registers a coroutine that receives every fetch of those
topics as one list of messages. The consumer keeps faust's group membership, flow control
during rebalances and gap tracking for compacted topics; each message is
acknowledged only after the coroutine returned. Offsets are committed by the coroutine itself, in
the transaction that carries the batch's outputs (:mod:`citybrain.kafka.transactions`); faust's
own commits are not sent (``TransactionalConsumerThread``). The consumer reads ``read_committed``. On a rebalance, faust waits
for the fetch a batch agent has in hand before it commits and gives partitions away
(``wait_empty``), so their next owner starts after that work, not before it and does it a
second time. Topics without a batch agent still go through faust's normal path.

The price: ``BatchConsumer._drain_messages`` overrides a private method of faust's aiokafka
consumer (faust-streaming 0.15, pinned below 0.16 in ``pyproject.toml``). Its test
(``tests/unit/test_batching.py``) drives the loop in-process and checks the contract the
worker relies on: one call per fetch per agent, in offset order, acknowledged after the call
returned, redeliveries before a seek skipped, compaction gaps recorded, other topics on
faust's own path. A faust upgrade that changes the consumer fails that test first.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterable

import faust
from faust.transport.drivers import aiokafka as kafka_driver
from faust.types import Message

from citybrain.kafka.clients import READ_COMMITTED

BatchHandler = Callable[[list[Message]], Awaitable[None]]

#: Yield to the event loop after this many records of one fetch, so timers and commits run.
YIELD_EVERY = 1000


class TransactionalConsumerThread(kafka_driver.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread for a worker that commits its offsets in its own transactions
    (:mod:`citybrain.kafka.transactions`): it reads ``read_committed`` (records of aborted transactions, a batch that
    did not commit, are never delivered) and leaves the offsets to those transactions. faust reads committed only
    under its own ``exactly_once``, which brings its transaction manager along."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = READ_COMMITTED   # read by AIOKafkaConsumer.start() when it builds its fetcher
        return consumer

    async def _commit(self, offsets: Any) -> bool:
        """Nothing sent: each batch's offsets were committed in its transaction, with its outputs. faust's own commit
        (on its timer, after a number of acks, on a rebalance) would race those transactions on another connection
        and could move a partition's offset back behind work already committed."""
        return True


class BatchConsumer(kafka_driver.Consumer):
    """faust's aiokafka consumer, reading committed records only and leaving offsets to the worker's transactions,
    with a drain loop that hands whole fetches to batch agents."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Clear while a fetch for batch agents is in hand: collected and not yet acknowledged.
        self.batches_idle = asyncio.Event()
        self.batches_idle.set()

    def _new_consumer_thread(self) -> TransactionalConsumerThread:
        return TransactionalConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_empty(self) -> None:
        """faust's wait before it commits on a rebalance or a stop, first for the fetch in hand."""
        await self.batches_idle.wait()
        await super().wait_empty()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs against the broker
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        ebb = self.app.producer.buffer.wait_until_ebb
        idle = self.batches_idle
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                await asyncio.sleep(0)
                batches: dict[BatchHandler, list[Message]] = {}
                n = 0
                async for tp, message in self.getmany(timeout=1.0):
                    idle.clear()
                    n += 1
                    if n % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                    offset = message.offset
                    read = get_read_offset(tp)
                    if read is not None and offset < read:
                        continue   # already delivered before a seek
                    if read and offset - read > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, read + 1, offset)   # compacted away: nothing to wait for
                    handler = handlers.get(message.topic)
                    if handler is None:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    else:
                        batches.setdefault(handler, []).append(message)
                    set_read_offset(tp, offset)
                for handler, messages in batches.items():
                    await ebb()
                    await handler(messages)
                    self._ack_all(messages)
                idle.set()
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            idle.set()

    def _ack_all(self, messages: Iterable[Message]) -> None:
        ack = self.ack
        for message in messages:
            ack(message)


class BatchTransport(kafka_driver.Transport):
    Consumer = BatchConsumer


class BatchApp(faust.App):
    """A faust app whose ``batch_agent`` coroutines receive whole fetches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers: dict[str, BatchHandler] = {}

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)

    def batch_agent(self, topic: faust.TopicT) -> Callable[[BatchHandler], BatchHandler]:
        """Subscribe to ``topic`` and hand each fetch of it to the decorated coroutine."""
        def register(handler: BatchHandler) -> BatchHandler:
            for name in topic.topics:
                self.batch_handlers[name] = handler
            self.topics.add(topic)
            return handler
        return register
