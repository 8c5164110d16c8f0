"""Kafka transactions as the fusion worker uses them, against the real broker: a committed batch is seen whole with
its offsets, an aborted or fenced one is not seen at all, and a group that read a transactional topic to its end
counts no lag though commit markers sit after its committed offset."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic

from citybrain.kafka import clients
from citybrain.kafka.topics import committed_offsets, group_lag, read_topic
from citybrain.kafka.transactions import TransactionLost, Transactions

pytestmark = pytest.mark.integration


@pytest.fixture()
def topics(broker, settings):  # type: ignore[no-untyped-def]
    run = uuid.uuid4().hex[:8]
    names = (f"test.tx.out.{run}", f"test.tx.in.{run}")
    admin = clients.admin(settings)
    admin.create_topics([NewTopic(n, 1, 1) for n in names])
    admin.close()
    return names


def _values(settings, topic: str) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [r.value for r in read_topic(settings, topic)]


def test_a_batch_and_its_offsets_commit_together_and_an_aborted_or_fenced_one_is_never_seen(settings, topics) -> None:  # type: ignore[no-untyped-def]
    out, source = topics
    group = f"test-tx-{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        # A batch left open by a worker killed halfway: its restart (same id) fences it and the broker aborts it.
        killed = Transactions(settings, f"{group}.fusion", group_id=group)
        await killed.start()
        await killed.producer.begin_transaction()   # type: ignore[union-attr]
        await (await killed.producer.send(out, value=b"half"))   # type: ignore[union-attr]
        worker = Transactions(settings, f"{group}.fusion", group_id=group)
        await worker.start()
        await worker.commit([(out, None, b"k", b"first", None, [("trace-id", b"t")])], {(source, 0): 7})
        # A zombie: a newer producer of its id started since its last commit; its next batch is refused whole.
        restarted = Transactions(settings, f"{group}.fusion", group_id=group)
        await restarted.start()
        with pytest.raises(TransactionLost, match="ProducerFenced"):
            await worker.commit([(out, None, None, b"zombie", None, [])], {(source, 0): 9})
        await restarted.commit([(out, None, None, b"second", None, [])], {(source, 0): 8})
        for producer in (killed, worker, restarted):
            await producer.stop()

    asyncio.run(run())
    assert _values(settings, out) == [b"first", b"second"]            # the open and the fenced batch: not seen
    assert committed_offsets(settings, group) == {(source, 0): 8}        # the zombie's offsets never committed
    uncommitted = clients.consumer(settings, enable_auto_commit=False, isolation_level="read_uncommitted",
                                   auto_offset_reset="earliest", consumer_timeout_ms=3000)
    tp = TopicPartition(out, 0)
    uncommitted.assign([tp])
    uncommitted.seek_to_beginning(tp)
    assert b"half" in [r.value for r in uncommitted]                    # it was written, and aborted
    uncommitted.close()


def test_a_group_at_the_end_of_a_transactional_topic_has_no_lag(settings, topics) -> None:  # type: ignore[no-untyped-def]
    """Each transaction leaves a commit marker after its records: a group that read everything is an offset behind
    the end for each, and must still count as caught up (tests, ``status`` and the benchmarks wait on it)."""
    out, _source = topics
    group = f"test-tx-lag-{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        producer = Transactions(settings, f"{group}.writer")
        await producer.start()
        for n in range(3):
            await producer.commit([(out, None, None, f"r{n}".encode(), None, [])])
        await producer.stop()

    asyncio.run(run())
    reader = clients.consumer(settings, out, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
                              consumer_timeout_ms=3000)
    records = list(reader)
    assert [r.value for r in records] == [b"r0", b"r1", b"r2"]
    reader.commit({TopicPartition(out, 0): clients_offset(records[-2].offset + 1)})
    assert group_lag(settings, group)[1] == 1                            # one record still ahead, markers aside
    reader.commit({TopicPartition(out, 0): clients_offset(records[-1].offset + 1)})
    reader.close()
    assert group_lag(settings, group)[1] == 0                            # only a commit marker after it


def clients_offset(offset: int):  # type: ignore[no-untyped-def]
    """kafka-python's commit value for ``offset``."""
    from kafka.structs import OffsetAndMetadata

    return OffsetAndMetadata(offset, "", -1)
