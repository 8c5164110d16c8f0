"""The fusion worker's agents, each a few lines over the shared :class:`~citybrain.streams.fusion.loop.BatchLoop`:
the default worker's sweep timer and its one agent over the raw topics, and keyed by area the
repartitioning and fusing agents with the task that hears the group's other workers and the rebalance signals.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from faust.types import Message

from citybrain.kafka import clients
from citybrain.streams.batching import BatchApp
from citybrain.streams.fusion.keyed import KeyedFusionWorker
from citybrain.streams.fusion.loop import BatchLoop
from citybrain.streams.fusion.topics import raw
from citybrain.contracts.topics import TICKET_EVENTS

#: How often the sweep timer looks for windows and SLAs to close when no records arrive.
QUIET_SWEEP_EVERY_S = 2.0


def sweep_timer(app: BatchApp, loop: BatchLoop) -> None:
    """The default worker: windows and SLAs also close when no records arrive (see ``FusionWorker.may_sweep``).
    Keyed by area there is no timer: a share sweeps as its records move its stream time, which its next owner's
    warm-up reproduces (:class:`~citybrain.streams.shares.Share`); a sweep on the wall clock would not be."""
    worker = loop.worker

    @app.timer(interval=QUIET_SWEEP_EVERY_S)
    async def sweep_when_quiet() -> None:
        if worker.may_sweep():
            await loop.send(worker.sweep(force=True))


def fusion_agent(app: BatchApp, loop: BatchLoop) -> None:
    """The default worker: every fetch of the raw topics through its one pipeline, in one transaction."""
    worker = loop.worker

    @app.batch_agent(raw(app, *worker.inputs))
    async def fuse(messages: list[Message]) -> None:
        async with loop.batch("fused", messages):
            await loop.fuse(messages, worker.process)


def keyed_agents(app: BatchApp, loop: BatchLoop, worker: KeyedFusionWorker) -> None:
    """Keyed by area: raw records repartitioned by district, each owned partition fused by its own pipeline and
    committed by its own transactional producer, the other workers' calls heard, and the shares given up and kept
    across rebalances."""

    @app.batch_agent(raw(app, *worker.keyed_inputs))
    async def repartition(messages: list[Message]) -> None:
        """Raw records to their district's partition of the by-area topic, with the raw offsets, in one
        transaction of the worker's own producer."""
        async with loop.batch("repartitioned", messages):
            await loop.publish(worker.route(messages), worker.by_area, messages, loop.transactions)

    @app.batch_agent(raw(app, worker.by_area, TICKET_EVENTS))
    async def fuse_shares(messages: list[Message]) -> None:
        async with loop.batch("fused", messages):
            gained = worker.shares.missing(messages)
            if gained:
                messages = await loop.take_over(gained, messages)
            for tp, share_messages in worker.by_share(messages).items():
                transactions = loop.shares.get(tp)
                if transactions is None:   # lost during this batch: its new owner reads it from the committed offset
                    continue
                await loop.fuse(share_messages, partial(worker.process_share, tp), transactions)
            await loop.publish_calls(worker.city_call_messages(), worker.city_topic)

    @app.task
    async def learn_city_calls() -> None:
        """Every other worker's calls, from the start of the group's city-calls topic (outside the group: each
        worker reads all of it)."""
        consumer = clients.aio_consumer(worker.settings, worker.city_topic, group_id=None,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                    worker.hear(records)
        finally:
            await consumer.stop()

    @app.on_partitions_assigned.connect
    async def drop_lost(app: Any, assigned: Any, **_: Any) -> None:   # noqa: ARG001 - the signal's sender
        for tp in worker.shares.keep_only((tp.topic, tp.partition) for tp in assigned):
            await loop.give_up(tp)
