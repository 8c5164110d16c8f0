"""The lake sink: Kafka topics copied into a lake layer by :class:`citybrain.lake.writer.LakeWriter`.

The consumer side of the lake: positions resumed from the writer's checkpoints, batches flushed as
files, small files compacted and each compaction pass announced on ``catalog.lake.compacted.v1``
(the Airflow bridge turns the announcement into an asset event, so data_quality runs on new data).

A sink first takes its topics' leases (one sink per topic and layer: a second is refused naming the
first) and renews them as it polls. It never skips records silently: a checkpoint below a
partition's log start (the sink was down longer than the topic's retention) stops it with
:class:`RecordsLostToRetention` naming the records lost, on start and, since the consumer has no
reset policy, if retention overtakes it while it runs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterable

from citybrain.contracts.topics import LAKE_COMPACTIONS, contract_id
from citybrain.errors import CityBrainError
from citybrain.kafka.headers import read_headers, trace_of
from citybrain.lake import layout
from citybrain.lake.layout import Lake
from citybrain.lake.lease import LEASE_TTL_S, SETTLE_S
from citybrain.lake.store import LakePath
from citybrain.lake.writer import LakeWriter, Row
from citybrain.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from kafka import TopicPartition
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)

#: The broker principal each layer's sink connects as (infra/access.yaml `services:`): bronze reads the raw zone,
#: silver the curated topics; each writes its compaction announcements.
PRINCIPALS = {"bronze": "svc-lake-bronze", "silver": "svc-lake-silver"}


class RecordsLostToRetention(CityBrainError):
    """A partition's next offset is below its log start: the broker deleted records the lake never got."""


def check_log_start(layer: str, resume: dict[TopicPartition, int], starts: dict[TopicPartition, int]) -> None:
    """Refuse to go on when a partition's next offset is below its log start (:class:`RecordsLostToRetention`,
    naming each partition's lost offsets); reading on would jump over them."""
    lost = {tp: (offset, starts[tp]) for tp, offset in resume.items() if starts.get(tp, 0) > offset}
    if not lost:
        return
    total = sum(start - offset for offset, start in lost.values())
    where = "; ".join(f"{tp.topic}[{tp.partition}] offsets {offset}..{start - 1} ({start - offset:,})"
                      for tp, (offset, start) in sorted(lost.items()))
    raise RecordsLostToRetention(
        f"{layer} lake sink: {total:,} record(s) were deleted by the topics' retention before the lake got them: "
        f"{where} (at most: a compacted topic has gaps). The sink stops rather than jump over them. Fix: restore "
        f"them from a copy of the topic if there is one; to accept the loss, set next_offset in the partition's "
        f"checkpoint (_checkpoints/{layer}/<topic>/<partition>.json in the lake) to the log start named here and start "
        f"the sink again; keep the sink down for less than the topics' retention (retention.ms).")


class LakeAheadOfTopic(CityBrainError):
    """A partition's checkpoint is beyond the topic's end: the topic was made anew, or the lake is another broker's."""


def check_log_end(layer: str, resume: dict[TopicPartition, int], ends: dict[TopicPartition, int]) -> None:
    """Refuse to go on when a partition's next offset is beyond its end (:class:`LakeAheadOfTopic`): the topic's
    offsets start again below what the lake holds, and its records would land under offsets the lake already has."""
    ahead = {tp: (offset, ends[tp]) for tp, offset in resume.items() if tp in ends and offset > ends[tp]}
    if not ahead:
        return
    where = "; ".join(f"{tp.topic}[{tp.partition}] lake at {offset:,}, topic ends at {end:,}"
                      for tp, (offset, end) in sorted(ahead.items()))
    raise LakeAheadOfTopic(
        f"{layer} lake sink: the lake holds records beyond the end of {len(ahead)} partition(s): {where}. The topics "
        f"were deleted and made anew (a broker reset), or this lake was written from another broker; reading on "
        f"would file new records under offsets the lake already has. Fix: move this lake aside (or point "
        f"CITYBRAIN_LAKE_URI at a new one) and start the sink again; the old lake stays queryable where it is.")


def row_headers(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """A record's headers as the lake keeps them (text), its ``trace-id`` taken from a valid ``traceparent`` when it
    has none (a record of a producer traced by W3C tools alone)."""
    text = {k: v.decode("utf-8", "replace") for k, v in (headers or [])}
    if "trace-id" not in text:
        trace = trace_of(read_headers(headers))
        if trace:
            text["trace-id"] = trace.decode()
    return text


def run_sink(settings: Settings, topics: list[str], lake: Lake, batch: int = 20_000, max_wait_s: float = 5.0,
             stop_when_idle_s: float | None = None, layer: str = "bronze", compact_every_s: float = 300.0,
             lease_ttl_s: float = LEASE_TTL_S, lease_settle_s: float = SETTLE_S) -> dict[str, Any]:
    """Copy ``topics`` into a lake layer until interrupted, or with ``stop_when_idle_s`` until they are drained (polls
    found nothing for that long, not counting the time writes took, and the positions are at the topics' ends);
    every ``compact_every_s`` and on the way out, merge the small files of the hours it wrote to. Refused
    (``LeaseHeld``) while another sink writes one of ``topics`` into ``layer``; stopped by
    :class:`RecordsLostToRetention` rather than skip records the broker no longer has, and by :class:`LakeAheadOfTopic`
    when the lake is ahead of the topics (made anew since)."""
    from kafka import TopicPartition
    from kafka.errors import OffsetOutOfRangeError

    from citybrain.kafka import clients
    from citybrain.kafka.follow import Follower

    from citybrain.contracts.model import load_all

    writer = LakeWriter(lake, layer, {c.topic: c.event_time_fields for c in load_all(settings.schemas_dir).values()})
    announcer = Announcer(settings, layer)
    writer.hold(topics, lease_ttl_s, lease_settle_s)   # before anything is read or recovered
    consumer = None
    pending: dict[Any, list[Row]] = defaultdict(list)
    last_flush = last_compaction = time.monotonic()
    written = merged = announced_at = 0

    def compact() -> None:
        nonlocal merged, announced_at
        result = writer.compact(hours=writer.touched)
        merged += result.merged_files
        announcer.announce(writer.touched, written - announced_at, result.merged_files)
        announced_at = written
        writer.touched.clear()

    def flush() -> None:
        nonlocal written, last_flush
        for tp, rows in list(pending.items()):
            if rows:
                writer.write(tp.topic, tp.partition, rows)
                written += len(rows)
        pending.clear()
        last_flush = time.monotonic()

    def take(tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        for r in records:
            pending[tp].append(Row(tp.topic, tp.partition, r.offset, r.timestamp,
                                   r.key.decode("utf-8", "replace") if r.key else None, row_headers(r.headers),
                                   r.value.decode("utf-8", "replace")))

    def tick(polled: bool) -> None:
        """Renew the leases when due; flush a full batch, every ``max_wait_s``, and whenever a poll found
        nothing; compact when it is time."""
        nonlocal last_compaction
        writer.heartbeat()
        full = any(len(rows) >= batch for rows in pending.values())
        if pending and (full or time.monotonic() - last_flush >= max_wait_s or not polled):
            flush()
        if time.monotonic() - last_compaction >= compact_every_s:
            compact()
            last_compaction = time.monotonic()

    try:
        # No reset policy: a position the broker no longer has raises instead of jumping to the end (the default).
        consumer = clients.consumer(settings, enable_auto_commit=False, max_poll_records=batch,
                                    fetch_max_bytes=64 * 1024 * 1024, auto_offset_reset="none")
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        writer.finish_compactions()
        removed = 0
        resume: dict[TopicPartition, int] = {}
        starts = consumer.beginning_offsets(tps) if tps else {}
        for tp in tps:
            new = not writer.started(tp.topic, tp.partition)
            resume[tp], gone = writer.recover(tp.topic, tp.partition)
            removed += gone
            if new:   # new to the lake: what retention deleted before was never the lake's to lose
                resume[tp] = max(resume[tp], starts.get(tp, 0))
        check_log_start(layer, resume, starts)
        check_log_end(layer, resume, consumer.end_offsets(tps) if tps else {})
        for tp, offset in resume.items():
            consumer.seek(tp, offset)
        # Drained, or SIGINT / SIGTERM from `citybrain down` while polling: flush what was read, then stop.
        try:
            Follower(consumer, take, on_tick=tick, poll_ms=500, idle_s=stop_when_idle_s, name=f"lake-{layer}").run()
        except OffsetOutOfRangeError:   # retention overtook the sink while it ran: keep what was read, then say so
            flush()
            done = {tp: writer.checkpoint(tp.topic, tp.partition) if writer.started(tp.topic, tp.partition)
                    else resume[tp] for tp in tps}
            check_log_start(layer, done, consumer.beginning_offsets(tps))
            raise
        flush()
        compact()
    finally:
        if consumer is not None:
            consumer.close()
        announcer.close()
        writer.release()
    return {"written": written, "recovered_files_removed": removed, "files_compacted": merged,
            "announcements": announcer.sent, "announcements_failed": announcer.failed}


class Announcer:
    """Tells ``catalog.lake.compacted.v1`` which hours of a layer a compaction pass closed (the Airflow bridge
    turns each announcement into an asset event, so data_quality runs on new data).

    An announcement the broker does not take never stops the sink (the records are safe in the lake either
    way): it is logged, and its hours go out with the next pass's announcement."""

    CONTRACT = contract_id(LAKE_COMPACTIONS)

    def __init__(self, settings: Settings, layer: str) -> None:
        self.settings, self.layer = settings, layer
        self.producer: Any = None
        self.sent = self.failed = 0
        self.pending: dict[tuple[str, str, int], None] = {}   # hours not announced yet, in order
        self.records = self.files_merged = 0

    def announce(self, hours: Iterable[LakePath], records: int, files_merged: int) -> None:
        for hour_dir in sorted(hours):
            m = layout.PART_RE.match(f"{hour_dir.parent.name}/{hour_dir.name}")
            if m:
                self.pending[(hour_dir.parent.parent.name, m[1], int(m[2]))] = None
        self.records += records
        self.files_merged += files_merged
        if not self.pending:
            return
        from citybrain.contracts.model import load_all, resolve
        from citybrain.ingest.producer import ValidatedProducer
        from citybrain.times import now_iso

        parts = [{"contract": c, "date": d, "hour": h} for c, d, h in list(self.pending)[:2000]]
        try:
            if self.producer is None:
                self.producer = ValidatedProducer(self.settings, producer_id=f"lake-{self.layer}")
            contract = resolve(load_all(self.settings.schemas_dir), self.CONTRACT)
            summary = self.producer.produce_values(contract, [{
                "announcement_id": uuid.uuid4().hex, "layer": self.layer, "hours": parts, "records": self.records,
                "files_merged": self.files_merged, "compacted_at": now_iso()}], source=f"lake-{self.layer}")
            if summary.accepted != 1:
                raise RuntimeError(f"dead-lettered: {summary.by_rule}")
        except Exception as exc:   # noqa: BLE001 - the lake is written; the announcement waits for the next pass
            self.failed += 1
            log.warning("%s: announcing %d hour(s) on %s failed (%s); they go out with the next pass", self.layer,
                        len(parts), self.CONTRACT, exc)
            return
        for p in parts:
            del self.pending[(p["contract"], p["date"], p["hour"])]
        self.records = self.files_merged = 0
        self.sent += 1
        log.info("%s: announced %d hour(s) of %d contract(s)", self.layer, len(parts), len({p["contract"] for p in parts}))

    def close(self) -> None:
        if self.producer is not None:
            self.producer.close()
