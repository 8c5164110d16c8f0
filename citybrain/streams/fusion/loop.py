"""The batch loop both of the fusion worker's modes share: what an agent does with a fetch around its own
steps. The worker is started (reference data, warm-up) before the first batch; outputs are validated and sent
with their headers, failed records dead-lettered, and the agent returns only once the broker has all of them,
so faust acknowledges the fetch's offsets after its outputs are out; each batch is logged with what it counted
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
from citybrain.streams.fusion.topics import Outputs
from citybrain.streams.fusion.worker import PRODUCER, Failed, FusionWorker, Produced

log = logging.getLogger(__name__)

#: What a mode does with one fetch: (outputs, records to dead-letter).
Process = Callable[[list[Message]], tuple[list[Produced], list[Failed]]]


class BatchLoop:
    """One worker's batches on one faust app: started, sent, dead-lettered, published and logged."""

    def __init__(self, app: BatchApp, worker: FusionWorker, outputs: Outputs) -> None:
        self.app = app
        self.worker = worker
        self.outputs = outputs
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
            await self.in_thread(self.worker.start)
            self.worker.ready = True

    async def in_thread(self, work: Callable[..., None], *args: Any) -> None:
        """Blocking work (reading topics, rebuilding state) off the event loop; returns once it is done."""
        await asyncio.get_running_loop().run_in_executor(None, work, *args)

    async def fuse(self, messages: list[Message], process: Process) -> None:
        """One fetch through ``process``; returns once the broker has its outputs and its dead letters."""
        produced, failed = process(messages)
        await self.send(produced)
        await self.dead_letter(failed)

    async def send(self, produced: list[Produced]) -> None:
        """Validate and send; return once the broker has every record (the batch may then be acknowledged)."""
        message_of, dead_letter_of = self.worker.message, self.worker.dead_letter
        outputs, dead_letters = self.outputs.topics, self.outputs.dead_letters
        pending = []
        sent: Counter[str] = Counter()
        refused: Counter[tuple[str, str]] = Counter()
        for topic, record, trace in produced:
            message = message_of(topic, record, trace)
            if message is None:
                continue
            if isinstance(message, Rejection):
                log.error("output for %s breaks its contract (%s on %s); dead-lettered", topic, message.rule, message.field)
                key, value, headers = dead_letter_of(topic, RawRecord(PRODUCER, orjson.dumps(record), value=record),
                                                     message, trace)
                pending.append(await dead_letters.send(key=key, value=value, headers=headers))
                refused[(topic, message.rule)] += 1
                continue
            key, value, headers = message
            pending.append(await outputs[topic].send(key=key, value=value, headers=headers))
            sent[topic] += 1
        if pending:
            await asyncio.gather(*pending)
        for topic, n in sent.items():
            metrics.RECORDS_OUT.labels(topic).inc(n)
        for (topic, rule), n in refused.items():
            metrics.RECORDS_DEAD_LETTERED.labels(topic, rule).inc(n)

    async def dead_letter(self, failed: list[Failed]) -> None:
        """Records that failed to the dead-letter topic, with their reason; returns once the broker has them."""
        if failed:
            letters = [self.worker.dead_letter(*f) for f in failed]
            dead_letters = self.outputs.dead_letters
            await asyncio.gather(*[await dead_letters.send(key=k, value=v, headers=h) for k, v, h in letters])
            for topic, _record, rejection, _trace in failed:
                metrics.RECORDS_DEAD_LETTERED.labels(topic, rejection.rule).inc()

    async def publish(self, records: list[Any], topic: str, partition: int) -> None:
        """(key, value, timestamp ms, headers) records to one partition in whole batches, through faust's aiokafka
        producer (acks=all); returns once the broker has them."""
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
