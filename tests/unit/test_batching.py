"""The fusion worker's batch delivery (``citybrain.streams.batching``), driven in-process.

``BatchConsumer._drain_messages`` replaces a private loop of faust's aiokafka consumer, so
these tests run that very loop over a scripted fetch and check what the worker relies on:
one call per fetch per batch agent, in offset order; acknowledgement only after the call
returned; a rebalance's wait released only once the fetch in hand is acknowledged; records delivered before a seek skipped; compaction gaps recorded; topics without
a batch agent on faust's own per-event path; commits every ``commit_every`` acks.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

faust = pytest.importorskip("faust", reason="faust-streaming lives in the streams environment")

from citybrain.streams.batching import BatchApp, BatchConsumer  # noqa: E402


class Flag:
    def __init__(self) -> None:
        self.value = False

    def is_set(self) -> bool:
        return self.value


class ScriptedConsumer:
    """What ``_drain_messages`` touches of faust's consumer, with one scripted fetch."""

    _ack_all = BatchConsumer._ack_all
    consumer_stopped_errors = (RuntimeError,)

    def __init__(self, fetch: list[tuple[str, Any]], handlers: dict[str, Any], read_offsets: dict[str, int],
                 compacted: set[str], commit_every: int) -> None:
        self.log: list[tuple[Any, ...]] = []
        self.fetch = fetch
        self._stopped, self.fetcher = Flag(), SimpleNamespace(_stopped=Flag())
        self._read_offset: dict[str, int | None] = {tp: None for tp, _m in fetch}
        self._read_offset.update(read_offsets)
        self._commit_every, self._n_acked = commit_every, 0
        self.suspend_flow = asyncio.Event()
        self.batches_idle = asyncio.Event()
        self.batches_idle.set()

        async def ebb() -> None:
            self.log.append(("ebb",))

        self.app = SimpleNamespace(batch_handlers=handlers,
                                   topics=SimpleNamespace(acks_enabled_for=lambda topic: topic in compacted),
                                   producer=SimpleNamespace(buffer=SimpleNamespace(wait_until_ebb=ebb)))
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=True))

    async def getmany(self, timeout: float) -> Any:
        if self._stopped.value:
            return
        for item in self.fetch:
            yield item
        self._stopped.value = True      # one fetch, then the worker stops

    async def callback(self, message: Any) -> None:
        self.log.append(("per-event", message.topic, message.offset))

    async def wait_first(self, *coros: Any) -> None:
        await coros[0]
        coros[1].close()

    async def _add_gap(self, tp: str, start: int, end: int) -> None:
        self.log.append(("gap", tp, start, end))

    def ack(self, message: Any) -> None:
        self._n_acked += 1
        self.log.append(("ack", message.topic, message.offset))

    async def commit(self) -> None:
        self.log.append(("commit",))


def _message(topic: str, offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, offset=offset)


def _drain(consumer: ScriptedConsumer) -> None:
    asyncio.run(BatchConsumer._drain_messages(consumer, consumer.fetcher))  # type: ignore[arg-type]


def test_one_call_per_fetch_in_offset_order_acknowledged_only_after_it_returned() -> None:
    calls: list[list[tuple[str, int]]] = []

    async def fuse(messages: list[Any]) -> None:
        consumer.log.append(("batch", [(m.topic, m.offset) for m in messages]))
        calls.append([(m.topic, m.offset) for m in messages])

    fetch = [("a0", _message("raw.a", 10)), ("b0", _message("raw.b", 3)), ("a0", _message("raw.a", 11))]
    consumer = ScriptedConsumer(fetch, {"raw.a": fuse, "raw.b": fuse}, {}, set(), commit_every=100)
    _drain(consumer)
    assert calls == [[("raw.a", 10), ("raw.b", 3), ("raw.a", 11)]]
    batch_at = consumer.log.index(("batch", calls[0]))
    acks = [i for i, entry in enumerate(consumer.log) if entry[0] == "ack"]
    assert len(acks) == 3 and min(acks) > batch_at, consumer.log      # never acknowledged before the work is done
    assert consumer.log[batch_at - 1] == ("ebb",)                       # the producer's buffer drained first


def test_a_rebalance_waits_for_the_fetch_in_hand_until_it_is_acknowledged() -> None:
    """faust commits and gives partitions away after ``wait_empty``: a fetch being worked on then would be
    worked on again by the partitions' next owner, outputs and all."""
    waits: list[asyncio.Task[None]] = []

    async def rebalance() -> None:
        await consumer.batches_idle.wait()
        consumer.log.append(("rebalance may commit",))

    async def fuse(messages: list[Any]) -> None:
        waits.append(asyncio.create_task(rebalance()))   # a rebalance starts while the fetch is in hand
        await asyncio.sleep(0.01)
        consumer.log.append(("batch done",))

    async def drain_then_settle() -> None:
        await BatchConsumer._drain_messages(consumer, consumer.fetcher)  # type: ignore[arg-type]
        await asyncio.gather(*waits)

    fetch = [("a0", _message("raw.a", 1)), ("a0", _message("raw.a", 2))]
    consumer = ScriptedConsumer(fetch, {"raw.a": fuse}, {}, set(), commit_every=100)
    asyncio.run(drain_then_settle())
    released = consumer.log.index(("rebalance may commit",))
    acks = [i for i, entry in enumerate(consumer.log) if entry[0] == "ack"]
    assert len(acks) == 2 and released > max(acks), consumer.log
    assert consumer.batches_idle.is_set()


def test_redeliveries_before_a_seek_are_skipped_and_compaction_gaps_recorded() -> None:
    seen: list[int] = []

    async def fuse(messages: list[Any]) -> None:
        seen.extend(m.offset for m in messages)

    fetch = [("r0", _message("raw.ref", 4)), ("r0", _message("raw.ref", 9)), ("r0", _message("raw.ref", 10))]
    consumer = ScriptedConsumer(fetch, {"raw.ref": fuse}, {"r0": 5}, compacted={"raw.ref"}, commit_every=100)
    _drain(consumer)
    assert seen == [9, 10]                                  # offset 4 was delivered before the seek to 5
    assert ("gap", "r0", 6, 9) in consumer.log              # 6..8 compacted away: nothing to wait for
    assert consumer._read_offset["r0"] == 10


def test_topics_without_a_batch_agent_take_fausts_own_path_and_commits_follow_acks() -> None:
    batches: list[list[int]] = []

    async def fuse(messages: list[Any]) -> None:
        batches.append([m.offset for m in messages])

    fetch = [("a0", _message("raw.a", 1)), ("t0", _message("faust.table-changelog", 7)), ("a0", _message("raw.a", 2))]
    consumer = ScriptedConsumer(fetch, {"raw.a": fuse}, {}, set(), commit_every=2)
    _drain(consumer)
    assert batches == [[1, 2]]
    assert ("per-event", "faust.table-changelog", 7) in consumer.log
    assert consumer.log[-1] == ("commit",) and consumer._n_acked == 0


def test_a_batch_agent_subscribes_its_topics() -> None:
    app = BatchApp("citybrain-batching-test", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    topic = app.topic("raw.a.v1", "raw.b.v1", value_serializer="raw")

    @app.batch_agent(topic)
    async def fuse(messages: list[Any]) -> None:  # pragma: no cover - registration only
        pass

    assert app.batch_handlers == {"raw.a.v1": fuse, "raw.b.v1": fuse}
    assert topic in app.topics
