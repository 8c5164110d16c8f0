"""Fusion state that survives a restart: rebuilt from the raw topics themselves.

The fusion worker keeps its state in memory (the dedupe window, open cases, hotspot
histories, tickets under SLA watch, open metric windows). On start, before it consumes
anything new, it re-reads each input partition from ``hours`` of stream time before its
consumer group's committed offset up to that offset (:mod:`citybrain.kafka.replay`) and feeds
the records through the pipeline with every output discarded: those outputs were published
before the restart. A duplicate that arrives after a restart is still recognised; a case
opened before it is updated, not opened again.

Outputs of a batch whose transaction did not commit before a crash were aborted with it
(:mod:`citybrain.kafka.transactions`): the restart produces them again, once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

from citybrain.contracts.topics import TICKET_EVENTS
from citybrain.fusion.pipeline import REFERENCE, Pipeline
from citybrain.kafka.headers import read_headers
from citybrain.kafka.replay import before_committed
from citybrain.settings import Settings

log = logging.getLogger(__name__)

#: Tickets stay under SLA watch for days: their lifecycle topic is re-read over a longer span.


@dataclass
class WarmUp:
    records: int = 0
    partitions: int = 0
    seconds: float = 0.0
    resumed_at: datetime | None = None


def warm_up(settings: Settings, pipeline: Pipeline, group_id: str, topics: Iterable[str], hours: float,
            ticket_hours: float) -> WarmUp:
    """Feed ``pipeline`` the records before ``group_id``'s committed offsets (outputs discarded)."""
    started = time.perf_counter()
    result = WarmUp()
    if hours <= 0:
        return result
    backlog = before_committed(settings, group_id, set(topics) - set(REFERENCE),
                               lambda topic: ticket_hours if topic == TICKET_EVENTS else hours)
    for batch in backlog:
        for r in batch:
            try:
                pipeline.feed_message(r.topic, read_headers(r.headers), r.value,
                                      datetime.fromtimestamp(r.timestamp / 1000, timezone.utc), r.partition)
            except Exception:   # noqa: BLE001 - the live pass dead-letters it; the warm-up only skips it
                log.exception("warm-up skipped %s@%d:%d", r.topic, r.partition, r.offset)
            result.records += 1
        watermark = pipeline.clock.watermark()
        if watermark is not None:
            pipeline.sweep(watermark)
    result.partitions = backlog.partitions
    result.resumed_at = pipeline.clock.watermark()
    result.seconds = time.perf_counter() - started
    return result
