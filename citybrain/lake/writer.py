"""The lake writer: records of topics as Parquet files, exactly once across crashes (no Kafka here:
:mod:`citybrain.streams.lake_sink` reads the topics and hands their records to it).

Bronze holds the validated raw records (``raw.*``), silver the curated and fused ones
(``city.*``, ``alert.*``, ``dispatch.*``, ``metrics.*``). Layout:
``<lake>/<layer>/<contract>/date=YYYY-MM-DD/hour=HH/p<partition>-<first>-<last>[-<n>].parquet``
(date and hour of the record's event time, UTC: the field its contract names as ``event_time``, else its Kafka
timestamp). Each file holds one partition's records from offset ``first`` to ``last`` that fall in that hour, with
their key, headers, offset, Kafka timestamp (when the platform took the record: its load time) and event time next
to the JSON value. A backfill of last year's readings lands in last year's hours, each record keeping the day it
was loaded.

Exactly once without Kafka transactions: a batch's files are written atomically (locally to
temporary names renamed into place, on object storage by single uploads: ``citybrain.lake.store``),
then the partition's checkpoint (the next offset to read) is replaced atomically. On start,
files of a partition that begin at or after its checkpoint are the leftovers of a crash
between the two steps: they are deleted, and reading resumes at the checkpoint, so every
offset lands in exactly one file. All of it rests on one writer per topic: a sink holds the
topic's lease (:mod:`citybrain.lake.lease`, :meth:`LakeWriter.hold`) and the writer re-reads it
before every batch and checkpoint.

A lost checkpoint is rebuilt from the files, never by deleting them: reading resumes after the
highest offset their names hold (in the layer and in quarantine). The one exception is a batch
split across hours that a crash cut short (each part carries the batch's row count in its
Parquet metadata): its parts are leftovers like any other, and it is read again.

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
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
from citybrain import metrics
from citybrain.lake import layout, store
from citybrain.lake.layout import Lake
from citybrain.lake.lease import LEASE_TTL_S, SETTLE_S, Lease, hold
from citybrain.lake.reader import tables
from citybrain.lake.store import LakePath

log = logging.getLogger(__name__)

try:   # the stream workers' environment has orjson (the sink reads every record's event time); others the standard library
    from orjson import loads as _loads
except ImportError:   # pragma: no cover - the Airflow environment
    from json import loads as _loads

SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("timestamp", pa.timestamp("ms", tz="UTC")), ("key", pa.string()), ("event_id", pa.string()),
    ("producer", pa.string()), ("trace_id", pa.string()), ("value", pa.string()),
    ("event_time", pa.timestamp("ms", tz="UTC")),
])
FILE_RE = re.compile(r"^p(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)(-\d+)?\.parquet$")
#: Parquet metadata key of a batch split across hours: its rows in all its files (to tell a whole batch from a cut one).
BATCH_ROWS = b"citybrain.batch_rows"


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
    """Writes batches of one topic-partition into a lake layer and keeps its checkpoint. ``event_times``: topic ->
    the fields holding its records' event time (``Contract.event_time_fields``); a topic without any is filed by
    Kafka timestamp."""

    def __init__(self, lake: Lake, layer: str = "bronze", event_times: Mapping[str, Sequence[str]] | None = None) -> None:
        self.lake, self.layer = store.as_lake(lake), layer
        self.event_times = {topic: tuple(names) for topic, names in (event_times or {}).items() if names}
        self.root = layout.layer_dir(self.lake, layer)
        self.checkpoints = layout.checkpoints_dir(self.lake, layer)
        self.touched: set[LakePath] = set()   # hour directories written since the last compaction
        self.leases: dict[str, Lease] = {}    # topic -> this writer's lease (held by a sink)

    def _contract_dir(self, topic: str) -> LakePath:
        return self.root / layout.contract_of(topic)

    def hold(self, topics: list[str], ttl_s: float = LEASE_TTL_S, settle_s: float = SETTLE_S) -> None:
        """Take the leases of ``topics`` (``LeaseHeld`` naming the holder when another sink has one); from now on
        every batch and checkpoint of these topics first checks its lease is still this writer's."""
        self.leases.update((lease.topic, lease) for lease in hold(self.lake, self.layer, topics, ttl_s, settle_s))

    def heartbeat(self) -> None:
        """Renew the leases that are due (``LeaseLost`` when one was taken over); cheap when none is."""
        for lease in self.leases.values():
            if lease.due():
                lease.check()

    def release(self) -> None:
        """Give the leases up (a sink on its way out)."""
        for lease in self.leases.values():
            lease.release()
        self.leases.clear()

    def _checkpoint_path(self, topic: str, partition: int) -> LakePath:
        return self.checkpoints / topic / f"{partition}.json"

    def _stored_checkpoint(self, topic: str, partition: int) -> int | None:
        path = self._checkpoint_path(topic, partition)
        return json.loads(path.read_text())["next_offset"] if path.exists() else None

    def checkpoint(self, topic: str, partition: int) -> int:
        """The next offset to read: the stored checkpoint, or, when it is lost, the one its files give."""
        stored = self._stored_checkpoint(topic, partition)
        return stored if stored is not None else self._rebuild(topic, partition)[0]

    def started(self, topic: str, partition: int) -> bool:
        """Whether the lake has written this partition before (a checkpoint, or files that give one)."""
        return self._stored_checkpoint(topic, partition) is not None or self._rebuild(topic, partition)[1] > 0

    def recover(self, topic: str, partition: int) -> tuple[int, int]:
        """(offset to resume at, leftover files deleted) for one partition after a crash. A lost checkpoint is
        rebuilt from the files and stored again."""
        resume = self._stored_checkpoint(topic, partition)
        if resume is None:
            resume, files = self._rebuild(topic, partition)
            if files:
                log.warning("%s/%s[%d]: checkpoint %s missing; rebuilt from %d file(s): resuming at offset %d",
                            self.layer, topic, partition, self._checkpoint_path(topic, partition), files, resume)
                self._set_checkpoint(topic, partition, resume)
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

    def _rebuild(self, topic: str, partition: int) -> tuple[int, int]:
        """(next offset, files seen) from a partition's files: after the highest offset their names hold, in the
        layer and in quarantine (their records were written); at the start of a split batch a crash cut short."""
        contract = layout.contract_of(topic)
        quarantined = self.lake / "quarantine"
        places = [self._contract_dir(topic), quarantined / self.layer / contract,
                  quarantined / layout.UNREADABLE / self.layer / contract]
        spans: dict[tuple[int, int], list[LakePath]] = defaultdict(list)
        for place in places:
            for path in place.rglob(f"p{partition}-*.parquet"):
                m = FILE_RE.match(path.name)
                if m:
                    spans[(int(m["first"]), int(m["last"]))].append(path)
        if not spans:
            return 0, 0
        seen = sum(len(paths) for paths in spans.values())
        first, last = max(spans, key=lambda span: (span[1], span[0]))   # the last batch written
        if not self._whole(first, last, spans):
            return first, seen
        return last + 1, seen

    def _whole(self, first: int, last: int, spans: dict[tuple[int, int], list[LakePath]]) -> bool:
        """Whether the batch ``first``-``last`` is all there: a batch split across hours knows its rows; the rows
        of ``first``..``last`` in the readable files that overlap it must add up to them."""
        wanted = None
        for path in spans[(first, last)]:
            if layout.UNREADABLE in path.parts:
                return True   # its rows cannot be counted: take the name's word
            try:
                meta = store.read_metadata(path).metadata or {}
            except (pa.ArrowException, OSError):
                return True
            if BATCH_ROWS in meta:
                wanted = int(meta[BATCH_ROWS])
                break
        if wanted is None:
            return True   # one file, or written before batches carried their rows
        held = 0
        for (lo, hi), paths in spans.items():
            if hi >= first and lo <= last:
                for _path, table in tables([p for p in paths if layout.UNREADABLE not in p.parts], ["offset"]):
                    offsets = table.column("offset").to_pylist()
                    held += sum(1 for o in offsets if first <= o <= last)
        return held >= wanted

    def write(self, topic: str, partition: int, rows: list[Row]) -> list[LakePath]:
        """Write one batch (consecutive offsets of one partition); then move the checkpoint past it."""
        if not rows:
            return []
        self._check_lease(topic)
        first, last = rows[0].offset, rows[-1].offset
        names = self.event_times.get(topic)
        by_hour: dict[datetime, list[tuple[Row, int | None]]] = defaultdict(list)
        for r in rows:
            event_ms = event_time_ms(r.value, names) if names else None
            t = datetime.fromtimestamp((r.timestamp_ms if event_ms is None else event_ms) / 1000, timezone.utc)
            by_hour[t.replace(minute=0, second=0, microsecond=0)].append((r, event_ms))
        written: list[LakePath] = []
        for n, (hour, group) in enumerate(sorted(by_hour.items())):
            directory = layout.hour_dir(self.lake, self.layer, topic, hour)
            name = f"p{partition}-{first}-{last}" + (f"-{n}" if len(by_hour) > 1 else "") + ".parquet"
            table = _table(group)
            if len(by_hour) > 1:
                table = table.replace_schema_metadata({BATCH_ROWS: str(len(rows)).encode()})
            size = store.write_table(table, directory / name)
            metrics.SINK_FILES.labels(self.layer, topic).inc()
            metrics.SINK_BYTES.labels(self.layer, topic).inc(size)
            written.append(directory / name)
            self.touched.add(directory)
        self._set_checkpoint(topic, partition, last + 1)
        return written

    def _check_lease(self, topic: str) -> None:
        lease = self.leases.get(topic)
        if lease is not None:
            lease.check()

    def finish_compactions(self) -> int:
        """Complete or undo compactions a crash interrupted; the number found."""
        journals = sorted(layout.compactions_dir(self.lake, self.layer).glob("*.json"))
        for journal in journals:
            plan = json.loads(journal.read_text())
            target = self.lake / plan["target"]
            if target.exists():
                for source in plan["sources"]:
                    (self.lake / source).unlink(missing_ok=True)
                store.sync_dir(target.parent)   # the sources gone for good before the journal that names them
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
                if (topic, partition) not in done_at:   # a lost checkpoint: left to the sink's recovery
                    done_at[(topic, partition)] = (self._stored_checkpoint(topic, partition) or 0) if topic else 0
                done = done_at[(topic, partition)]
                files = sorted(f for f in files if f[1] < done)
                if len(files) < min_files:
                    continue
                read = dict(tables([f[2] for f in files]))   # an unreadable file is set aside, not merged
                files = [f for f in files if f[2] in read]
                if len(files) < min_files:
                    continue
                name = f"p{partition}-{files[0][0]}-{files[-1][1]}.parquet"
                target = hour_dir / name
                table = pa.concat_tables([conform(read[f[2]]) for f in files]).sort_by("offset")
                journal = journal_dir / f"{uuid.uuid4().hex}.json"
                rel = lambda p: str(p.relative_to(self.lake))  # noqa: E731
                journal.write_text(json.dumps({"target": rel(target),
                                               "sources": [rel(f[2]) for f in files if f[2] != target]}))
                store.write_table(table, target)
                for _first, _last, path in files:
                    if path != target:
                        path.unlink()
                store.sync_dir(hour_dir)
                journal.unlink()
                result.merged_files += len(files)
                result.written_files += 1
                result.rows += table.num_rows
        return result

    def _set_checkpoint(self, topic: str, partition: int, next_offset: int) -> None:
        self._check_lease(topic)
        self._checkpoint_path(topic, partition).write_text(
            json.dumps({"next_offset": next_offset, "at": time.time()}))
        metrics.SINK_CHECKPOINT_TIME.labels(self.layer, topic).set_to_current_time()


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


def event_time_ms(value: str, names: Sequence[str]) -> int | None:
    """The event time (ms since the epoch) a record's JSON names in the first of ``names`` it carries; None when it
    carries none or an unreadable one (the record was validated on its way in: this is a file written by hand)."""
    try:
        record: Any = _loads(value)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for name in names:
        text = record.get(name)
        if isinstance(text, str):
            try:
                t = datetime.fromisoformat(text)
            except ValueError:
                return None
            return int((t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1000)
    return None


def conform(table: pa.Table) -> pa.Table:
    """A file's table in today's :data:`SCHEMA` (files written before records kept their event time lack it)."""
    if "event_time" not in table.column_names:
        table = table.append_column("event_time", pa.nulls(table.num_rows, pa.timestamp("ms", tz="UTC")))
    return table.select(SCHEMA.names).cast(SCHEMA)


def _table(rows: Iterable[tuple[Row, int | None]]) -> pa.Table:
    rows = list(rows)
    return pa.table({
        "topic": [r.topic for r, _e in rows], "partition": [r.partition for r, _e in rows],
        "offset": [r.offset for r, _e in rows], "timestamp": [r.timestamp_ms for r, _e in rows],
        "key": [r.key for r, _e in rows], "event_id": [r.headers.get("event-id") for r, _e in rows],
        "producer": [r.headers.get("producer") for r, _e in rows], "trace_id": [r.headers.get("trace-id") for r, _e in rows],
        "value": [r.value for r, _e in rows], "event_time": [e for _r, e in rows],
    }, schema=SCHEMA)
