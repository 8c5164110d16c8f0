"""The lake sink: topics as Parquet, exactly once across crashes.

Bronze holds the validated raw records (``raw.*``), silver the curated and fused ones
(``city.*``, ``alert.*``, ``dispatch.*``, ``metrics.*``). Layout:
``<lake>/<layer>/<contract>/date=YYYY-MM-DD/hour=HH/p<partition>-<first>-<last>[-<n>].parquet``
(date and hour of the record's Kafka timestamp, UTC). Each file holds one partition's records
from offset ``first`` to ``last`` that fall in that hour, with their key, headers, offset and
timestamp next to the JSON value.

Exactly once without Kafka transactions: a batch's files are written atomically (locally to
temporary names renamed into place, on object storage by single uploads: ``citybrain.lake.store``),
then the partition's checkpoint (the next offset to read) is replaced atomically. On start,
files of a partition that begin at or after its checkpoint are the leftovers of a crash
between the two steps: they are deleted, and reading resumes at the checkpoint, so every
offset lands in exactly one file.

Compaction (``compact``, ``citybrain lake compact``) merges one partition's small files of
one hour into one file named after the whole offset range. Only files wholly below the
checkpoint take part, so it can run beside the sink. A journal written before the merged
file makes it crash-safe: the next compaction or sink start finishes an interrupted one
(sources deleted if the merged file is in place; else the sources stay and the journal goes).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import pyarrow as pa
from citybrain.lake import layout, store
from citybrain.lake.layout import Lake
from citybrain.lake.store import LakePath
from citybrain.settings import Settings

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("timestamp", pa.timestamp("ms", tz="UTC")), ("key", pa.string()), ("event_id", pa.string()),
    ("producer", pa.string()), ("trace_id", pa.string()), ("value", pa.string()),
])
FILE_RE = re.compile(r"^p(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)(-\d+)?\.parquet$")


@dataclass(frozen=True)
class Row:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: dict[str, str]
    value: str


class LakeWriter:
    """Writes batches of one topic-partition into a lake layer and keeps its checkpoint."""

    def __init__(self, lake: Lake, layer: str = "bronze") -> None:
        self.lake, self.layer = store.as_lake(lake), layer
        self.root = layout.layer_dir(self.lake, layer)
        self.checkpoints = layout.checkpoints_dir(self.lake, layer)
        self.touched: set[LakePath] = set()   # hour directories written since the last compaction

    def _contract_dir(self, topic: str) -> LakePath:
        return self.root / layout.contract_of(topic)

    def checkpoint(self, topic: str, partition: int) -> int:
        path = self.checkpoints / topic / f"{partition}.json"
        return json.loads(path.read_text())["next_offset"] if path.exists() else 0

    def recover(self, topic: str, partition: int) -> tuple[int, int]:
        """(offset to resume at, leftover files deleted) for one partition after a crash."""
        resume = self.checkpoint(topic, partition)
        removed = 0
        base = self._contract_dir(topic)
        if base.exists():
            for path in base.rglob(f"p{partition}-*.parquet"):
                m = FILE_RE.match(path.name)
                if m and int(m["first"]) >= resume:
                    path.unlink()
                    removed += 1
            for tmp in base.rglob(f".p{partition}-*.tmp"):
                tmp.unlink()
        return resume, removed

    def write(self, topic: str, partition: int, rows: list[Row]) -> list[LakePath]:
        """Write one batch (consecutive offsets of one partition); then move the checkpoint past it."""
        if not rows:
            return []
        first, last = rows[0].offset, rows[-1].offset
        by_hour: dict[datetime, list[Row]] = defaultdict(list)
        for r in rows:
            t = datetime.fromtimestamp(r.timestamp_ms / 1000, timezone.utc)
            by_hour[t.replace(minute=0, second=0, microsecond=0)].append(r)
        written: list[LakePath] = []
        for n, (hour, group) in enumerate(sorted(by_hour.items())):
            directory = layout.hour_dir(self.lake, self.layer, topic, hour)
            name = f"p{partition}-{first}-{last}" + (f"-{n}" if len(by_hour) > 1 else "") + ".parquet"
            store.write_table(_table(group), directory / name)
            written.append(directory / name)
            self.touched.add(directory)
        self._set_checkpoint(topic, partition, last + 1)
        return written

    def finish_compactions(self) -> int:
        """Complete or undo compactions a crash interrupted; the number found."""
        journals = sorted(layout.compactions_dir(self.lake, self.layer).glob("*.json"))
        for journal in journals:
            plan = json.loads(journal.read_text())
            target = self.lake / plan["target"]
            if target.exists():
                for source in plan["sources"]:
                    (self.lake / source).unlink(missing_ok=True)
            target.with_name(f".{target.name}.tmp").unlink(missing_ok=True)   # a local write cut short
            journal.unlink()
        return len(journals)

    def compact(self, min_files: int = 2, hours: Iterable[LakePath] | None = None) -> CompactResult:
        """Merge each partition's files of each hour (at least ``min_files`` of them) into one;
        ``hours``: only these hour directories (default: the whole layer)."""
        result = CompactResult(interrupted=self.finish_compactions())
        if not self.root.exists():
            return result
        journal_dir = layout.compactions_dir(self.lake, self.layer)
        todo = self.root.glob(f"*/{layout.HOUR_GLOB}") if hours is None else hours
        # Read once per compaction: the topic of each contract directory, each partition's checkpoint.
        topics: dict[str, str | None] = {}
        done_at: dict[tuple[str | None, int], int] = {}
        for hour_dir in sorted(p for p in todo if p.is_dir()):
            contract_dir = hour_dir.parent.parent.name
            if contract_dir not in topics:
                topics[contract_dir] = _topic_of(contract_dir, self.checkpoints)
            topic = topics[contract_dir]
            groups: dict[int, list[tuple[int, int, LakePath]]] = defaultdict(list)
            for path in hour_dir.glob("p*.parquet"):
                m = FILE_RE.match(path.name)
                if m:
                    groups[int(m["partition"])].append((int(m["first"]), int(m["last"]), path))
            for partition, files in groups.items():
                if (topic, partition) not in done_at:
                    done_at[(topic, partition)] = self.checkpoint(topic, partition) if topic else 0
                done = done_at[(topic, partition)]
                files = sorted(f for f in files if f[1] < done)
                if len(files) < min_files:
                    continue
                name = f"p{partition}-{files[0][0]}-{files[-1][1]}.parquet"
                target = hour_dir / name
                table = pa.concat_tables([store.read_table(f[2], schema=SCHEMA) for f in files]).sort_by("offset")
                journal = journal_dir / f"{uuid.uuid4().hex}.json"
                rel = lambda p: str(p.relative_to(self.lake))  # noqa: E731
                journal.write_text(json.dumps({"target": rel(target),
                                               "sources": [rel(f[2]) for f in files if f[2] != target]}))
                store.write_table(table, target)
                for _first, _last, path in files:
                    if path != target:
                        path.unlink()
                journal.unlink()
                result.merged_files += len(files)
                result.written_files += 1
                result.rows += table.num_rows
        return result

    def _set_checkpoint(self, topic: str, partition: int, next_offset: int) -> None:
        (self.checkpoints / topic / f"{partition}.json").write_text(
            json.dumps({"next_offset": next_offset, "at": time.time()}))


@dataclass
class CompactResult:
    merged_files: int = 0    # small files merged away
    written_files: int = 0   # merged files written in their place
    rows: int = 0
    interrupted: int = 0     # earlier compactions a crash had interrupted, finished now


def _topic_of(contract_dir: str, checkpoints: LakePath) -> str | None:
    """The topic a contract directory holds (its checkpoints are kept under the topic's name)."""
    found = sorted(checkpoints.glob(f"{contract_dir}.v*"))
    return found[-1].name if found else None


def _table(rows: Iterable[Row]) -> pa.Table:
    rows = list(rows)
    return pa.table({
        "topic": [r.topic for r in rows], "partition": [r.partition for r in rows], "offset": [r.offset for r in rows],
        "timestamp": [r.timestamp_ms for r in rows], "key": [r.key for r in rows],
        "event_id": [r.headers.get("event-id") for r in rows], "producer": [r.headers.get("producer") for r in rows],
        "trace_id": [r.headers.get("trace-id") for r in rows], "value": [r.value for r in rows],
    }, schema=SCHEMA)


def run_sink(settings: Settings, topics: list[str], lake: Lake, batch: int = 20_000, max_wait_s: float = 5.0,
             stop_when_idle_s: float | None = None, layer: str = "bronze", compact_every_s: float = 300.0,
             ) -> dict[str, Any]:
    """Copy ``topics`` into a lake layer until interrupted, or with ``stop_when_idle_s`` until they are drained (polls
    found nothing for that long, not counting the time writes took, and the positions are at the topics' ends);
    every ``compact_every_s`` and on the way out, merge the small files of the hours it wrote to."""
    from kafka import TopicPartition

    from citybrain.kafka import clients

    writer = LakeWriter(lake, layer)
    announcer = Announcer(settings, layer)
    consumer = clients.consumer(settings, enable_auto_commit=False, max_poll_records=batch,
                                fetch_max_bytes=64 * 1024 * 1024)
    tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
    consumer.assign(tps)
    writer.finish_compactions()
    removed = 0
    for tp in tps:
        resume, gone = writer.recover(tp.topic, tp.partition)
        removed += gone
        consumer.seek(tp, resume)
    pending: dict[Any, list[Row]] = defaultdict(list)
    last_flush = time.monotonic()
    last_compaction = time.monotonic()
    idle_since: float | None = None   # since when polls have found nothing (measured after the work they caused)
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

    try:
        while True:
            try:
                polled = consumer.poll(timeout_ms=500)
            except KeyboardInterrupt:   # SIGINT, or SIGTERM from `citybrain down`: flush what was read, then stop
                break
            for tp, records in polled.items():
                for r in records:
                    headers = {k: v.decode("utf-8", "replace") for k, v in (r.headers or [])}
                    pending[tp].append(Row(tp.topic, tp.partition, r.offset, r.timestamp,
                                           r.key.decode("utf-8", "replace") if r.key else None, headers,
                                           r.value.decode("utf-8", "replace")))
            full = any(len(rows) >= batch for rows in pending.values())
            if pending and (full or time.monotonic() - last_flush >= max_wait_s or not polled):
                flush()
            if time.monotonic() - last_compaction >= compact_every_s:
                compact()
                last_compaction = time.monotonic()
            if polled:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()   # after the flush: slow storage does not count as quiet topics
            if stop_when_idle_s is not None and not pending and idle_since is not None \
                    and time.monotonic() - idle_since >= stop_when_idle_s:
                ends = consumer.end_offsets(tps)
                if all(consumer.position(tp) >= ends.get(tp, 0) for tp in tps):   # drained, not just a slow fetch
                    break
                idle_since = None
        flush()
        compact()
    finally:
        consumer.close()
        announcer.close()
    return {"written": written, "recovered_files_removed": removed, "files_compacted": merged,
            "announcements": announcer.sent, "announcements_failed": announcer.failed}


class Announcer:
    """Tells ``catalog.lake.compacted.v1`` which hours of a layer a compaction pass closed (the Airflow bridge
    turns each announcement into an asset event, so data_quality runs on new data).

    An announcement the broker does not take never stops the sink (the records are safe in the lake either
    way): it is logged, and its hours go out with the next pass's announcement."""

    CONTRACT = "catalog.lake.compacted"

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
