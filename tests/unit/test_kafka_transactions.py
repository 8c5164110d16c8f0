"""A transaction's records sent (``citybrain.kafka.transactions.send_all``): records for a partition of their own
choosing go in record batches per partition, each record once, in order, with its key, value, timestamp and
headers as given; records without a partition through ``send``, whose partitioner picks it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("aiokafka", reason="aiokafka lives in the streams environment")

from aiokafka.producer.message_accumulator import BatchBuilder  # noqa: E402
from aiokafka.record.default_records import DefaultRecordBatch  # noqa: E402

from citybrain.kafka.transactions import Out, send_all  # noqa: E402


class _Producer:
    """What ``send_all`` uses of aiokafka's producer, keeping what it was given: batches of a small size (1 KiB,
    so a partition's records fill several) built as the broker would receive them."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, BatchBuilder]] = []
        self.sent: list[tuple[str, Any, Any, Any, Any]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1024, 0, is_transactional=True)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> str:
        self.batches.append((topic, partition, batch))
        return "batch acknowledged"

    async def send(self, topic: str, value: Any = None, key: Any = None, timestamp_ms: Any = None,
                   headers: Any = None) -> str:
        self.sent.append((topic, key, value, timestamp_ms, headers))
        return "record acknowledged"


def _records_of(builder: BatchBuilder) -> list[tuple[bytes | None, bytes, int, list[tuple[str, bytes]]]]:
    return [(r.key, r.value, r.timestamp, list(r.headers)) for r in DefaultRecordBatch(builder._builder.build())]


def test_records_for_their_own_partition_are_batched_per_partition_each_once_in_order() -> None:
    records: list[Out] = [("by-area", n % 3, f"{n % 5}".encode() if n % 4 else None, b'{"n": %d}' % n + b" " * 90,
                           1_700_000_000_000 + n, [("event-id", b"e%d" % n), ("src-offset", b"%d" % n)])
                          for n in range(60)]
    records.insert(7, ("city.event.v1", None, b"k", b"{}", None, [("trace-id", b"t")]))
    producer = _Producer()
    pending = asyncio.run(send_all(producer, records))
    assert producer.sent == [("city.event.v1", b"k", b"{}", None, [("trace-id", b"t")])]
    assert pending.count("record acknowledged") == 1 and pending.count("batch acknowledged") == len(producer.batches)
    for partition in range(3):
        batches = [b for t, p, b in producer.batches if (t, p) == ("by-area", partition)]
        assert len(batches) > 1   # 20 records of ~170 bytes: more than one batch of 1 KiB each
        assert [r for b in batches for r in _records_of(b)] == [
            (key, value, ts, headers) for _t, p, key, value, ts, headers in records if p == partition]
