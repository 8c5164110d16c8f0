"""Re-reading the recent past: each partition's records before a consumer group's committed offset.

A stream worker keeps its state in memory, and all of it is a function of the raw records
of the recent past, which the raw topics keep (retention days). On start it re-reads, per
input partition, ``span`` of stream time before its group's committed offset up to that
offset (:func:`before_committed`), feeds them through its logic with every output
discarded (those were published before the restart), and resumes at the committed offset
with the state it had there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from citybrain.kafka import clients
from citybrain.kafka.topics import committed_offsets
from citybrain.settings import Settings

log = logging.getLogger(__name__)

#: A re-read that gets no record for this long before reaching its ends stops (a partition leader down, a broker
#: unreachable), rather than rebuild state from part of the records: one empty poll is not the end (a node's
#: failover takes seconds).
STALL_S = 60.0
#: A re-read quiet this long goes on with a new consumer (fresh metadata: a leader that moved).
RECONNECT_S = 8.0


class ReplayStalled(RuntimeError):
    """The re-read of the records before the committed offsets stalled before it reached them."""


@dataclass
class Backlog:
    """The records before ``group_id``'s committed offsets; iterate for batches of consumed records
    (kafka-python ``ConsumerRecord``), in offset order within each partition."""

    settings: Settings
    group_id: str
    topics: set[str]
    span_h: Callable[[str], float]
    #: Partitions with records to re-read (known once iterated).
    partitions: int = 0
    #: Where to stop in each partition instead of the group's committed offsets (a partition a worker just gained:
    #: the first offset it was given).
    ends: dict[tuple[str, int], int] | None = None

    def _consumer(self) -> Any:
        return clients.consumer(self.settings, enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)

    def __iter__(self) -> Iterator[list[Any]]:
        from kafka import TopicPartition

        ends = self.ends if self.ends is not None else committed_offsets(self.settings, self.group_id) or {}
        committed = {tp: o for tp, o in ends.items()
                     if tp[0] in self.topics and o > 0 and self.span_h(tp[0]) > 0}
        if not committed:
            return
        consumer = self._consumer()
        try:
            tps = {tp: TopicPartition(*tp) for tp in committed}
            consumer.assign(list(tps.values()))
            last = last_record_times(self.settings, consumer, tps, committed)
            consumer.resume(*tps.values())
            starts = consumer.offsets_for_times(
                {tps[tp]: max(0, ts - int(self.span_h(tp[0]) * 3_600_000)) for tp, ts in last.items()})
            todo = {}
            for ktp, found in starts.items():
                key = (ktp.topic, ktp.partition)
                begin = found.offset if found is not None else committed[key]
                if begin < committed[key]:
                    consumer.seek(ktp, begin)
                    todo[key] = committed[key]
                else:
                    consumer.pause(ktp)
            self.partitions = len(todo)
            progress = quiet = time.monotonic()
            while todo:
                polled = consumer.poll(timeout_ms=1000, max_records=10_000)
                batch: list[Any] = []
                for ktp, records in polled.items():
                    key = (ktp.topic, ktp.partition)
                    end = todo.get(key)
                    if end is not None:
                        batch += [r for r in records if r.offset < end]
                for key in [k for k in todo if consumer.position(tps[k]) >= todo[k]]:
                    del todo[key]   # read to its end (past commit markers too, which no consumer receives)
                    consumer.pause(tps[key])
                now = time.monotonic()
                if polled:
                    progress = quiet = now
                elif now - progress > STALL_S:
                    raise ReplayStalled(
                        f"the re-read of {sorted(todo)} got no record for {STALL_S:.0f} s before reaching the committed "
                        f"offsets ({_where(self.settings, consumer, {k: tps[k] for k in todo}, todo)}): state rebuilt "
                        "from part of them would reopen cases under new ids. The worker stops; its restart reads them "
                        "again. If it recurs, check that the partitions' leaders are up (`citybrain status`); a last "
                        "stable offset below the end is a transaction left open (`kafka-transactions.sh find-hanging`).")
                elif todo and now - quiet > RECONNECT_S:
                    # kafka-python's consumer can stay on a leader that is gone after a broker's failover: a new
                    # consumer, with fresh metadata, goes on from where this one was.
                    at = {key: consumer.position(tps[key]) for key in todo}
                    log.warning("re-read of %s quiet for %.0f s: reconnecting", sorted(todo), now - quiet)
                    consumer.close()
                    consumer = self._consumer()
                    consumer.assign([tps[key] for key in todo])
                    for key, offset in at.items():
                        consumer.seek(tps[key], offset)
                    quiet = now
                if batch:
                    yield batch
        finally:
            consumer.close()



def _where(settings: Settings, consumer: Any, tps: dict[tuple[str, int], Any], ends: dict[tuple[str, int], int]) -> str:
    """Each stalled partition's position, the offset it must reach, its last stable offset (the end a read_committed
    reader sees) and its high watermark: what tells a transaction left open from a fetch that does not move."""
    try:
        stable = consumer.end_offsets(list(tps.values()))
        other = clients.consumer(settings, isolation_level="read_uncommitted", enable_auto_commit=False)
        try:
            high = other.end_offsets(list(tps.values()))
        finally:
            other.close()
        return "; ".join(f"{k[0]}[{k[1]}] at {consumer.position(tp)}, to reach {ends[k]}, last stable offset "
                         f"{stable.get(tp)}, high watermark {high.get(tp)}" for k, tp in sorted(tps.items()))
    except Exception as exc:   # noqa: BLE001 - the diagnosis must not hide the stall it describes
        return f"offsets not read: {exc!r}"


#: How far before an offset ``last_record_times`` starts looking for the record before it: commit markers and the
#: records of aborted transactions sit between a transactional topic's records, and a consumer never receives them.
LOOK_BACK = 64


def last_record_times(settings: Settings, consumer: Any, tps: dict[tuple[str, int], Any],
                      before: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """The timestamp of each partition's last record before ``before`` (a committed offset: the stream time the
    partition had reached; an end offset: its newest record), looked for from ``LOOK_BACK`` offsets before it, then
    further back while a window holds no record a ``read_committed`` consumer gets. Leaves those partitions paused."""
    last: dict[tuple[str, int], int] = {}
    back = {tp: LOOK_BACK for tp in tps}
    found: dict[tuple[str, int], int] = {}
    for tp, ktp in tps.items():
        consumer.seek(ktp, max(0, before[tp] - back[tp]))
    deadline = time.monotonic() + 60
    while len(last) < len(tps) and time.monotonic() < deadline:
        for ktp, records in consumer.poll(timeout_ms=500).items():
            key = (ktp.topic, ktp.partition)
            for r in records:
                if r.offset < before[key]:
                    found[key] = r.timestamp
        for tp, ktp in tps.items():
            if tp in last or consumer.position(ktp) < before[tp]:
                continue
            start = max(0, before[tp] - back[tp])
            if tp in found or start == 0:   # the window's last record, or none at all before it
                last[tp] = found.get(tp, -1)
                consumer.pause(ktp)
            else:                           # only markers and aborted records in the window: look further back
                back[tp] *= 8
                consumer.seek(ktp, max(0, before[tp] - back[tp]))
    if len(last) < len(tps):
        stalled = {k: tps[k] for k in tps if k not in last}
        raise ReplayStalled(f"the record before the committed offset of {sorted(stalled)} was not read in 60 s "
                            f"({_where(settings, consumer, stalled, before)}): the stream time to rebuild state from is unknown. The worker stops; its restart "
                            "tries again. If it recurs, check that the partitions' leaders are up (`citybrain status`).")
    return {tp: ts for tp, ts in last.items() if ts >= 0}


def before_committed(settings: Settings, group_id: str, topics: Iterable[str], span_h: Callable[[str], float]) -> Backlog:
    """The records of ``topics`` from ``span_h(topic)`` hours of stream time before ``group_id``'s
    committed offsets up to them."""
    return Backlog(settings, group_id, set(topics), span_h)
