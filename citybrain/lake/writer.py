"""The lake writer: records of topics as Parquet files, exactly once across crashes (no Kafka here:
:mod:`citybrain.streams.lake_sink` reads the topics and hands their records to it).

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
from typing import Iterable

import pyarrow as pa
from citybrain.lake import layout, store
from citybrain.lake.layout import Lake
from citybrain.lake.store import LakePath

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
