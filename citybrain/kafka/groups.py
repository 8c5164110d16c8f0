"""Consumer groups seen from the broker: offset commits read from ``__consumer_offsets`` (who read
what, when) and where each partition's log now starts. The security checks judge them."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

from citybrain.kafka import clients
from citybrain.settings import Settings


@dataclass(frozen=True)
class Commit:
    """One offset commit: ``group`` read ``topic``'s ``partition`` up to ``offset``, at ``at``."""

    group: str
    topic: str
    partition: int
    offset: int
    at: datetime


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from(">h", buf, pos)
    pos += 2
    return buf[pos:pos + n].decode(), pos + n


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def parse_offset_commit(key: bytes, value: bytes | None) -> tuple[str, str, int, int, int | None] | None:
    """(group, topic, partition, offset, commit ms) of an offset-commit record of ``__consumer_offsets``."""
    if not key or value is None:
        return None
    (kv,) = struct.unpack_from(">h", key, 0)
    if kv not in (0, 1):           # 2 = group metadata
        return None
    group, pos = _string(key, 2)
    topic, pos = _string(key, pos)
    (partition,) = struct.unpack_from(">i", key, pos)
    (vv,) = struct.unpack_from(">h", value, 0)
    (offset,) = struct.unpack_from(">q", value, 2)
    pos = 10
    if vv >= 3:
        pos += 4                   # leader epoch
    if vv >= 4:                    # flexible version: compact string
        n, pos = _uvarint(value, pos)
        pos += max(0, n - 1)
    else:
        (n,) = struct.unpack_from(">h", value, pos)
        pos += 2 + max(0, n)
    (commit_ms,) = struct.unpack_from(">q", value, pos)
    return group, topic, partition, offset, commit_ms


def read_commits(settings: Settings, timeout_s: float = 20.0) -> Iterator[Commit]:
    """Every offset commit the broker still holds in ``__consumer_offsets``: who read what, up to where, when."""
    from kafka import TopicPartition

    consumer = clients.consumer(settings, enable_auto_commit=False, exclude_internal_topics=False,
                                consumer_timeout_ms=2000)
    try:
        parts = [TopicPartition("__consumer_offsets", p) for p in sorted(consumer.partitions_for_topic("__consumer_offsets") or ())]
        if not parts:
            return
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        deadline = datetime.now() + timedelta(seconds=timeout_s)
        while any(consumer.position(p) < end[p] for p in parts) and datetime.now() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=10000).values():
                for m in batch:
                    got = parse_offset_commit(m.key, m.value)
                    if got:
                        g, t, p, off, ms = got
                        yield Commit(g, t, p, off, datetime.fromtimestamp((ms or m.timestamp) / 1000, timezone.utc))
    finally:
        consumer.close()


def log_starts(settings: Settings, topics: set[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the first offset the broker still keeps (older records were deleted)."""
    from kafka import TopicPartition

    consumer = clients.consumer(settings, enable_auto_commit=False)
    try:
        parts = [TopicPartition(t, p) for t in sorted(topics) for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): off for tp, off in consumer.beginning_offsets(parts).items()} if parts else {}
    finally:
        consumer.close()
