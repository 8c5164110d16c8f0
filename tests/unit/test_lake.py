"""The bronze writer's exactly-once bookkeeping, without Kafka."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from citybrain.lake.sink import LakeWriter, Row

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
