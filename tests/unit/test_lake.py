"""The bronze writer's exactly-once bookkeeping, and its sink's loop, without Kafka."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
from kafka.structs import TopicPartition

from citybrain.lake.writer import LakeWriter, Row
from tests.unit.test_follow import ScriptedConsumer

HOUR = 1_763_800_000_000  # a fixed epoch millisecond


def _rows(first: int, n: int, step_ms: int = 1000) -> list[Row]:
    return [Row("raw.sensor.noise_level.v1", 2, o, HOUR + o * step_ms, f"nz-{o}", {"event-id": f"e{o}"}, '{"x":1}')
            for o in range(first, first + n)]


def test_a_batch_lands_by_hour_and_moves_the_checkpoint(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    files = writer.write("raw.sensor.noise_level.v1", 2, _rows(0, 10, step_ms=30 * 60 * 1000))   # spans hours
    assert len(files) > 1 and all(f.name.startswith("p2-0-9") for f in files)
    assert all(f.parent.name.startswith("hour=") for f in files)
    assert sum(pq.read_table(f).num_rows for f in files) == 10
    assert writer.checkpoint("raw.sensor.noise_level.v1", 2) == 10


def test_a_backfill_lands_in_the_hours_its_records_name_and_keeps_when_it_was_loaded(tmp_path: Path) -> None:
    """Issue 31: four years of readings loaded today went into today's hour. Records are filed by the event time
    their contract names (the first field present), their Kafka timestamp kept as the load time; a record without
    one (or a topic whose contract names none) is filed by its Kafka timestamp."""
    topic = "raw.sensor.air_quality.v1"
    values = ['{"dateObserved": "2014-03-01T05:00:00+08:00"}', '{"dateObserved": "2016-11-30T23:59:59Z"}',
              '{"other": 1}', 'not json']
    rows = [Row(topic, 0, o, HOUR, None, {}, v) for o, v in enumerate(values)]
    files = LakeWriter(tmp_path, "bronze", {topic: ["observedAt", "dateObserved"]}).write(topic, 0, rows)
    hours = sorted(f"{f.parent.parent.name}/{f.parent.name}" for f in files)
    assert hours == ["date=2014-02-28/hour=21", "date=2016-11-30/hour=23", "date=2025-11-22/hour=08"]
    by_offset = {r["offset"]: r for f in files for r in pq.read_table(f).to_pylist()}
    assert [by_offset[o]["event_time"] is None for o in range(4)] == [False, False, True, True]
    assert str(by_offset[0]["event_time"]) == "2014-02-28 21:00:00+00:00"
    assert {int(r["timestamp"].timestamp() * 1000) for r in by_offset.values()} == {HOUR}   # the load time kept
    other = LakeWriter(tmp_path / "plain", "bronze").write(topic, 0, rows)   # no event time declared: by Kafka time
    assert [f.parent.name for f in other] == ["hour=08"]


def test_files_written_after_the_last_checkpoint_are_removed_on_recovery(tmp_path: Path) -> None:
    """Regression guard for the crash between renaming a batch's files and moving the checkpoint."""
    writer = LakeWriter(tmp_path)
    writer.write("raw.sensor.noise_level.v1", 2, _rows(0, 5))
    orphan = writer.write("raw.sensor.noise_level.v1", 2, _rows(5, 5))
    writer._set_checkpoint("raw.sensor.noise_level.v1", 2, 5)        # as if the crash came before the checkpoint
    (orphan[0].parent / ".p2-10-12.parquet.tmp").write_bytes(b"half a file")
    resume, removed = writer.recover("raw.sensor.noise_level.v1", 2)
    assert (resume, removed) == (5, 1)
    left = sorted(p.name for p in (tmp_path / "bronze").rglob("*.parquet"))
    assert left == ["p2-0-4.parquet"] and not list((tmp_path / "bronze").rglob("*.tmp"))


def _offsets(files: list[Path]) -> list[int]:
    return sorted(o for f in files for o in pq.read_table(f).column("offset").to_pylist())


def test_compaction_merges_an_hours_small_files_into_one_with_every_record_once(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    for first in range(0, 50, 10):   # five batches of ten records, all in one hour
        writer.write("raw.sensor.noise_level.v1", 2, _rows(first, 10, step_ms=1))
    hour = next((tmp_path / "bronze").rglob("hour=*"))
    assert len(list(hour.glob("*.parquet"))) == 5
    result = writer.compact()
    files = list(hour.glob("*.parquet"))
    assert [f.name for f in files] == ["p2-0-49.parquet"]
    assert _offsets(files) == list(range(50))
    assert (result.merged_files, result.written_files, result.rows) == (5, 1, 50)
    writer.write("raw.sensor.noise_level.v1", 2, _rows(50, 10, step_ms=1))   # the hour keeps growing
    writer.compact()
    assert [f.name for f in hour.glob("*.parquet")] == ["p2-0-59.parquet"]
    assert _offsets(list(hour.glob("*.parquet"))) == list(range(60))


def test_compaction_leaves_files_past_the_checkpoint_to_the_sinks_recovery(tmp_path: Path) -> None:
    writer = LakeWriter(tmp_path)
    for first in range(0, 30, 10):
        writer.write("raw.sensor.noise_level.v1", 2, _rows(first, 10, step_ms=1))
    writer._set_checkpoint("raw.sensor.noise_level.v1", 2, 20)   # as if the sink crashed before moving it past 29
    writer.compact()
    hour = next((tmp_path / "bronze").rglob("hour=*"))
    assert sorted(f.name for f in hour.glob("*.parquet")) == ["p2-0-19.parquet", "p2-20-29.parquet"]
    assert writer.recover("raw.sensor.noise_level.v1", 2) == (20, 1)
    assert _offsets(list(hour.glob("*.parquet"))) == list(range(20))


def test_an_interrupted_compaction_is_finished_or_undone_never_doubled(tmp_path: Path) -> None:
    import json

    for renamed in (True, False):
        lake = tmp_path / str(renamed)
        writer = LakeWriter(lake)
        for first in range(0, 30, 10):
            writer.write("raw.sensor.noise_level.v1", 2, _rows(first, 10, step_ms=1))
        hour = next((lake / "bronze").rglob("hour=*"))
        sources = sorted(hour.glob("*.parquet"))
        merged = hour / "p2-0-29.parquet"
        tmp = hour / ".p2-0-29.parquet.tmp"
        pq.write_table(pq.ParquetDataset(sources).read(), tmp)
        journal = lake / "_compactions" / "bronze" / "crash.json"
        journal.parent.mkdir(parents=True)
        rel = lambda p: str(p.relative_to(lake))  # noqa: E731
        journal.write_text(json.dumps({"target": rel(merged), "tmp": rel(tmp), "sources": [rel(s) for s in sources]}))
        if renamed:   # crashed after the rename, before deleting the small files
            tmp.rename(merged)
        assert writer.finish_compactions() == 1
        files = list(hour.glob("*.parquet"))
        assert _offsets(files) == list(range(30)), renamed
        assert (files == [merged]) is renamed
        assert not journal.exists() and not tmp.exists()


def test_the_layout_finds_what_the_writer_wrote_and_the_reader_decodes_it_once(tmp_path: Path) -> None:
    from citybrain.lake import layout, reader

    writer = LakeWriter(tmp_path)
    rows = _rows(0, 3) + [Row("raw.sensor.noise_level.v1", 2, 3, HOUR + 3000, "nz-3", {"event-id": "e3"}, "[1, 2]"),
                          Row("raw.sensor.noise_level.v1", 2, 4, HOUR + 4000, "nz-4", {"event-id": "e4"}, "not json")]
    written = writer.write("raw.sensor.noise_level.v1", 2, rows)
    assert layout.files(tmp_path, "bronze", "raw.sensor.*") == written
    assert layout.files(tmp_path, "silver") == [] and layout.files(tmp_path, "bronze", "raw.hotline.*") == []
    [part] = layout.partitions(tmp_path)
    assert (part.layer, part.contract, part.path) == ("bronze", "raw.sensor.noise_level", written[0].parent)
    assert part.key == f"bronze/raw.sensor.noise_level/{part.name}" and part.end - part.start == timedelta(hours=1)
    table = reader.read(written, columns=["offset", "value"])
    assert reader.values(table) == [{"x": 1}] * 3 + [{}, {}]        # not an object, not JSON: no fields, not a crash
    assert reader.field_values(written, "x") == {"1"}


def test_a_registers_latest_record_per_key_wins_by_offset(tmp_path: Path) -> None:
    from citybrain.lake import reader

    writer = LakeWriter(tmp_path)
    rows = [Row("raw.ref.device.v1", 0, o, HOUR + o, "aq-1", {}, f'{{"device_id": "aq-1", "lat": {o}}}') for o in range(3)]
    files = writer.write("raw.ref.device.v1", 0, rows)
    assert reader.latest_values(files, "device_id") == {"aq-1": {"device_id": "aq-1", "lat": 2}}


class _SinkConsumer(ScriptedConsumer):
    """The scripted consumer, with what the sink asks of it besides the loop's calls; ``starts``: the partitions'
    log start offsets (0 unless given: retention deleted nothing)."""

    starts: dict[TopicPartition, int] = {}

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.starts.get(tp, 0) for tp in tps}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {tp.partition for tp in self.ends if tp.topic == topic} or None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.held = set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset


class _Announcements:
    """The sink's announcer, without a broker: what each compaction pass would announce."""

    records: list[int] = []   # of every announcement, across instances

    def __init__(self, settings, layer: str) -> None:  # type: ignore[no-untyped-def]
        self.sent = self.failed = 0

    def announce(self, hours, records: int, files_merged: int) -> None:  # type: ignore[no-untyped-def]
        self.records.append(records)
        self.sent += 1

    def close(self) -> None:
        pass


def test_a_sink_told_to_stop_when_idle_drains_its_topic_through_slow_fetches_and_slow_writes(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seen on the demo with the lake on S3 (tests/integration/test_lake_s3.py has it against the broker): writes
    slower than the idle time, and fetches that came back empty for longer than it, must not stop the sink with
    records unread; it flushes on a quiet poll, compacts and announces on the way out."""
    from citybrain.kafka import clients
    from citybrain.settings import load_settings
    from citybrain.streams import lake_sink

    topic = "raw.sensor.noise_level.v1"
    consumer = _SinkConsumer({TopicPartition(topic, 0): 120}, script=[50] + [0] * 20 + [50])   # 20 quiet polls > idle
    monkeypatch.setattr(clients, "consumer", lambda settings, *topics, **config: consumer)
    monkeypatch.setattr(lake_sink, "Announcer", _Announcements)
    monkeypatch.setattr(_Announcements, "records", [])   # this run's announcements only
    write = LakeWriter.write

    def slow_write(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.3)   # slower than the idle time
        return write(self, *args, **kwargs)

    monkeypatch.setattr(LakeWriter, "write", slow_write)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    result = lake_sink.run_sink(settings, [topic], tmp_path / "lake", batch=50, max_wait_s=0.1, stop_when_idle_s=0.2,
                                compact_every_s=3600)
    files = list((tmp_path / "lake" / "bronze").rglob("*.parquet"))
    assert result["written"] == 120 and _offsets(files) == list(range(120))
    assert result["announcements"] == 1 and _Announcements.records == [120]   # one pass, on the way out
    assert result["files_compacted"] > 0 and consumer.closed
