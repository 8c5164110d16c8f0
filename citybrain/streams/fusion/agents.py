"""The fusion worker's agents, each a few lines over the shared :class:`~citybrain.streams.fusion.loop.BatchLoop`:
the sweep timer both modes run, the default worker's one agent over the raw topics, and keyed by area the
repartitioning and fusing agents with the task that hears the group's other workers and the rebalance signals.
Every agent commits its fetch's offsets itself, in the transactions of its outputs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import Message

from citybrain.kafka import clients
from citybrain.streams.batching import BatchApp
from citybrain.streams.fusion.keyed import KeyedFusionWorker
from citybrain.streams.fusion.loop import BatchLoop
from citybrain.streams.fusion.topics import raw
from citybrain.streams.fusion.transactions import TP
from citybrain.contracts.topics import TICKET_EVENTS

#: How often the sweep timer looks for windows and SLAs to close when no records arrive.
QUIET_SWEEP_EVERY_S = 2.0


def sweep_timer(app: BatchApp, loop: BatchLoop) -> None:
    """Both modes: windows and SLAs also close when no records arrive (see ``FusionWorker.may_sweep``); each
    partition's sweep in a transaction of its own (no offsets)."""
    worker = loop.worker

    @app.timer(interval=QUIET_SWEEP_EVERY_S)
    async def sweep_when_quiet() -> None:
        if worker.may_sweep() and not loop.busy:
            await asyncio.gather(*[loop.commit(key, produced, [], {}) for key, produced in worker.sweeps(force=True).items()
                                   if produced])


def fusion_agent(app: BatchApp, loop: BatchLoop) -> None:
    """The default worker: every fetch of the raw topics through its one pipeline, in one transaction."""
    worker = loop.worker

    @app.batch_agent(raw(app, *worker.inputs), commits_offsets=True)
    async def fuse(messages: list[Message], ends: dict[TP, int]) -> None:
        if not worker.ready:
            await loop.take_over([None], None)   # the previous worker fenced before the warm-up reads the offsets
        async with loop.batch("fused", messages):
            produced, failed = worker.process(loop.fresh(messages))
            await loop.commit(None, produced, failed, ends)


def keyed_agents(app: BatchApp, loop: BatchLoop, worker: KeyedFusionWorker) -> None:
    """Keyed by area: raw records repartitioned by district, each owned partition fused by its own pipeline, each
    input partition's batch in its own transaction, the other workers' calls heard, and the shares and
    producers given up and kept across rebalances."""
    producers = loop.transactions.producers

    async def take_over_new(tps: Any) -> dict[TP, int]:
        """Partitions of this fetch whose producer is not running yet: taken over (see ``BatchLoop.take_over``)."""
        new = [tp for tp in tps if loop.txn_id(tp) not in producers]
        return await loop.take_over(new, new) if new else {}

    @app.batch_agent(raw(app, *worker.keyed_inputs), commits_offsets=True)
    async def repartition(messages: list[Message], ends: dict[TP, int]) -> None:
        """Raw records to their district's partition of the by-area topic, with each raw partition's offset."""
        async with loop.batch("repartitioned", messages):
            await take_over_new(ends)
            by_tp: dict[TP, list[Message]] = {tp: [] for tp in ends}
            for m in loop.fresh(messages):
                by_tp[(m.topic, m.partition)].append(m)
            await asyncio.gather(*[
                loop.commit(tp, [], [], {tp: ends[tp]}, [(worker.by_area, key, value, headers, partition, ts)
                                                         for partition, routed in worker.route(of_tp).items()
                                                         for key, value, ts, headers in routed])
                for tp, of_tp in by_tp.items()])

    @app.batch_agent(raw(app, worker.by_area, TICKET_EVENTS), commits_offsets=True)
    async def fuse_shares(messages: list[Message], ends: dict[TP, int]) -> None:
        async with loop.batch("fused", messages):
            gained = worker.shares.missing(messages)
            if gained:
                floors = await take_over_new(gained)
                await loop.in_thread(worker.gain, {tp: max(first, floors.get(tp, 0)) for tp, first in gained.items()})
            done = worker.process_shares(loop.fresh(messages))
            await asyncio.gather(*[loop.commit(tp, produced, failed, {tp: ends[tp]})
                                   for tp, (produced, failed) in done.items()])
            await loop.publish(worker.city_call_messages(), worker.city_topic, 0)

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

    @app.on_partitions_revoked.connect
    async def moving(app: Any, revoked: Any, **_: Any) -> None:   # noqa: ARG001 - the signal's sender
        """Partitions given up: no sweep until the next assignment, and their producers stopped (their next owner
        fences them; one kept here would be fenced if the partition came back)."""
        worker.moving = True
        await loop.transactions.close([loop.txn_id((tp.topic, tp.partition)) for tp in revoked])

    @app.on_partitions_assigned.connect
    async def drop_lost(app: Any, assigned: Any, **_: Any) -> None:   # noqa: ARG001 - the signal's sender
        worker.shares.keep_only((tp.topic, tp.partition) for tp in assigned)
        worker.moving = False
