"""Fusion state that survives a restart: rebuilt from the raw topics themselves.

The fusion worker keeps its state in memory (the dedupe window, open cases, hotspot
histories, tickets under SLA watch, open metric windows). All of it is a function of the
raw records in the recent past, and the raw topics keep those records (retention days).
So on start, before it consumes anything new, the worker re-reads each input partition
from ``hours`` of stream time before its consumer group's committed offset up to that
offset, and feeds the records through the pipeline with every output discarded: those
outputs were published before the restart. The worker then resumes at the committed
offset with the state it had there. A duplicate that arrives after a restart is still
recognised; a case opened before it is updated, not opened again.

Outputs produced after the last commit and before a crash are produced again on restart
with the same ids (at least once; consumers key on ``event_id``/``work_order_id``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from citybrain.contracts.model import Contract
from citybrain.fusion.pipeline import REFERENCE, Pipeline
from citybrain.ingest.producer import event_id
from citybrain.settings import Settings

log = logging.getLogger("citybrain.fusion.warmup")

#: Tickets stay under SLA watch for days: their lifecycle topic is re-read over a longer span.
TICKET_EVENTS = "raw.hotline.ticket_event.v1"


def record_event_id(contract: Contract, headers: dict[str, bytes], payload: bytes, value: dict[str, Any]) -> str:
    """The record's event id: its ``event-id`` header, else the contract's rule over the value."""
    found = headers.get("event-id")
    if found:
        return found.decode()
    return event_id(contract, value, payload.decode("utf-8", "replace"))


@dataclass
class Clock:
    """Stream time over the event-stream partitions: the low watermark every input reached.

    A partition that delivered nothing for ``idle_s`` (wall clock) is drained or quiet and
    stops holding time back; when every partition is quiet, the newest time seen counts."""

    topics: set[str]
    idle_s: float = 5.0
    latest: dict[tuple[str, int], tuple[datetime, float]] = field(default_factory=dict)

    def saw(self, topic: str, partition: int, at: datetime) -> None:
        if topic in self.topics:
            self.latest[(topic, partition)] = (at, time.monotonic())

    def watermark(self) -> datetime | None:
        if not self.latest:
            return None
        wall = time.monotonic()
        active = [t for t, w in self.latest.values() if wall - w < self.idle_s]
        return min(active) if active else max(t for t, _w in self.latest.values())


@dataclass
class WarmUp:
    records: int = 0
    partitions: int = 0
    seconds: float = 0.0
    resumed_at: datetime | None = None


def warm_up(settings: Settings, pipeline: Pipeline, contracts: dict[str, Contract], group_id: str,
            topics: Iterable[str], hours: float, ticket_hours: float, clock: Clock) -> WarmUp:
    """Feed ``pipeline`` the records before ``group_id``'s committed offsets (outputs discarded)."""
    from kafka import KafkaConsumer, TopicPartition

    from citybrain.topics import committed_offsets

    started = time.perf_counter()
    result = WarmUp()
    wanted = set(topics) - set(REFERENCE)
    committed = {tp: o for tp, o in (committed_offsets(settings, group_id) or {}).items() if tp[0] in wanted and o > 0}
    if not committed or hours <= 0:
        return result
    consumer = KafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False,
                             max_partition_fetch_bytes=4 * 1024 * 1024)
    try:
        tps = {tp: TopicPartition(*tp) for tp in committed}
        consumer.assign(list(tps.values()))
        # The stream time each partition had reached: the timestamp of its last committed record.
        last: dict[tuple[str, int], int] = {}
        for tp, ktp in tps.items():
            consumer.seek(ktp, committed[tp] - 1)
        deadline = time.monotonic() + 60
        while len(last) < len(tps) and time.monotonic() < deadline:
            for ktp, records in consumer.poll(timeout_ms=1000).items():
                key = (ktp.topic, ktp.partition)
                if key not in last and records:
                    last[key] = records[0].timestamp
                    consumer.pause(ktp)
        consumer.resume(*tps.values())
        span_ms = {t: int((ticket_hours if t == TICKET_EVENTS else hours) * 3_600_000) for t, _p in tps}
        starts = consumer.offsets_for_times({tps[tp]: max(0, ts - span_ms[tp[0]]) for tp, ts in last.items()})
        todo = {}
        for ktp, found in starts.items():
            key = (ktp.topic, ktp.partition)
            begin = found.offset if found is not None else committed[key]
            if begin < committed[key]:
                consumer.seek(ktp, begin)
                todo[key] = committed[key]
            else:
                consumer.pause(ktp)
        result.partitions = len(todo)
        while todo:
            polled = consumer.poll(timeout_ms=2000, max_records=10_000)
            if not polled:
                log.warning("warm-up stopped early: no records before the committed offsets of %s", sorted(todo))
                break
            for ktp, records in polled.items():
                key = (ktp.topic, ktp.partition)
                end = todo.get(key)
                if end is None:
                    continue
                contract = contracts[ktp.topic]
                for r in records:
                    if r.offset >= end:
                        break
                    try:
                        value = json.loads(r.value)
                        at = datetime.fromtimestamp(r.timestamp / 1000, timezone.utc)
                        clock.saw(ktp.topic, ktp.partition, at)
                        pipeline.feed(ktp.topic, value, record_event_id(contract, dict(r.headers or ()), r.value, value), at)
                    except Exception:   # noqa: BLE001 - the live pass dead-letters it; the warm-up only skips it
                        log.exception("warm-up skipped %s@%d", key, r.offset)
                    result.records += 1
                if records and records[-1].offset >= end - 1:
                    del todo[key]
                    consumer.pause(ktp)
            watermark = clock.watermark()
            if watermark is not None:
                pipeline.sweep(watermark)
        result.resumed_at = clock.watermark()
    finally:
        consumer.close()
    result.seconds = time.perf_counter() - started
    return result
