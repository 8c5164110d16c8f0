"""The maintenance DAG's rules: each kind of old state removed past its retention and nothing newer;
the newest releases kept (read-only as they are); quiet lake hours compacted, hours still written left."""

from __future__ import annotations

import json
import os
import stat
import time
from datetime import datetime, timezone
from pathlib import Path

from citybrain.lake import layout
from citybrain.orchestration.maintenance import maintain
from citybrain.lake.writer import LakeWriter, Row
from citybrain.settings import load_settings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
DAY = 86400.0


def _aged(path: Path, days: float) -> Path:
    t = NOW.timestamp() - days * DAY
    os.utime(path, (t, t))
    return path


def _release(lake: Path, dataset: str, version: str) -> Path:
    folder = layout.gold_dir(lake) / dataset / version
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"dataset": dataset, "version": version}))
    (folder / "data.parquet").write_bytes(b"PAR1" * 100)
    for f in folder.iterdir():
        os.chmod(f.path, stat.S_IRUSR | stat.S_IRGRP)   # releases are read-only
    return folder


def test_maintenance_removes_only_what_is_past_its_retention(tmp_path: Path) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var"), "CITYBRAIN_RETENTION_RELEASES": "3"})
    lake = settings.lake_dir
    versions = [f"v2026120{d}T000000000000Z" for d in range(1, 8)]
    for v in versions:
        _release(lake, "flood_risk_by_street", v)
    _release(lake, "hotline_hotspots", versions[0])                 # a dataset's only release: kept however old
    crashed, publishing = (lake / "gold" / "hotline_hotspots" / v for v in ("v20261202T000000000000Z", "v20261203T115900000000Z"))
    for folder, age in ((crashed, 1.0), (publishing, 0.0)):         # data written, manifest not (yet)
        folder.mkdir(parents=True)
        (folder / "data.parquet").write_bytes(b"PAR1")
        _aged(folder / "data.parquet", age)
    docs = lake / "quality" / "gx" / "gx" / "uncommitted" / "data_docs" / "local_site" / "validations"
    docs.mkdir(parents=True)
    old_page, new_page = docs / "old.html", docs / "new.html"
    old_page.write_text("x")
    new_page.write_text("y")
    _aged(old_page, 8)
    _aged(new_page, 1)
    quarantine = lake / "quarantine" / "bronze" / "raw.sensor.water_level" / "date=2026-10-01" / "hour=00"
    for run in ("20261001T000000Z-aaaaaa", "20261202T000000Z-bbbbbb"):
        (quarantine / run).mkdir(parents=True)
        (quarantine / run / "reason.json").write_text("{}")
    for name in ("checked=2026-08-01", "checked=2026-12-01"):
        (lake / "quality" / name).mkdir(parents=True)
    logs = settings.airflow_dir / "logs"
    logs.mkdir(parents=True)
    old_log = logs / "old.log"
    old_log.write_text("x")
    _aged(old_log, 20)

    report = maintain(settings, now=NOW)

    kept = sorted(p.name for p in (layout.gold_dir(lake) / "flood_risk_by_street").iterdir())
    assert kept == versions[-3:]
    assert (layout.gold_dir(lake) / "hotline_hotspots" / versions[0]).exists()
    assert not crashed.exists() and publishing.exists()   # a publish under way is not a crashed one
    assert not old_page.exists() and new_page.exists()
    assert [p.name for p in quarantine.iterdir()] == ["20261202T000000Z-bbbbbb"]
    assert sorted(p.name for p in (lake / "quality").glob("checked=*")) == ["checked=2026-12-01"]
    assert not old_log.exists()
    assert report["removed"] == {"releases": 4, "unfinished_releases": 1, "data_docs_pages": 1, "validation_results": 0,
                                 "quarantined_partitions": 1, "quality_results": 1, "airflow_logs": 1}
    assert report["bytes_freed"] >= 4 * 400


def test_a_dry_run_removes_nothing(tmp_path: Path) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var"), "CITYBRAIN_RETENTION_RELEASES": "1"})
    for v in ("v20261201T000000000000Z", "v20261202T000000000000Z"):
        _release(settings.lake_dir, "flood_risk_by_street", v)
    report = maintain(settings, now=NOW, dry_run=True)
    assert report["removed"]["releases"] == 1 and report["dry_run"]
    assert len(list((layout.gold_dir(settings.lake_dir) / "flood_risk_by_street").iterdir())) == 2


def test_quiet_hours_are_compacted_and_hours_still_written_are_left_to_the_sink(tmp_path: Path) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var")})
    lake, topic = settings.lake_dir, "raw.sensor.noise_level.v1"
    writer = LakeWriter(lake, "bronze")
    t0 = 1_764_720_000_000   # 2025-12-03T00:00:00Z
    for start in (0, 10):    # two files in one hour, as a sink leaves them between its compactions
        writer.write(topic, 0, [Row(topic, 0, o, t0 + o * 1000, None, {}, json.dumps({"n": o})) for o in range(start, start + 10)])
    hour = next((lake / "bronze").glob(f"*/{layout.HOUR_GLOB}"))
    assert len(list(hour.glob("*.parquet"))) == 2
    assert maintain(settings)["files_compacted"] == 0               # written just now: the sink's
    for f in hour.iterdir():
        _aged(f, 0.1)                                               # 2.4 h ago
    os.utime(hour, (time.time() - 9000, time.time() - 9000))
    assert maintain(settings)["files_compacted"] == 2
    assert len(list(hour.glob("*.parquet"))) == 1
