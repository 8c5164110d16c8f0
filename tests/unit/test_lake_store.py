"""The lake on a pyarrow filesystem URI: the sink's exactly-once files, compaction, quality's partitions, releases
and SQL over them work the same on a ``file://`` root and on a root without folders or renames (the object-storage
branch of ``citybrain.lake.store``, run here over pyarrow's local filesystem as a sub-tree); ``s3://`` and ``gs://``
roots open the cloud filesystems without touching the network."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from citybrain.lake import layout, store
from citybrain.lake.writer import LakeWriter, Row
from citybrain.lake.store import LakePath, LakeStorageError, open_lake
from citybrain.settings import SettingsError, load_settings

T0 = int(datetime(2026, 12, 3, 10, 58, tzinfo=timezone.utc).timestamp() * 1000)
TOPIC = "raw.sensor.noise_level.v1"


def _rows(first: int, n: int, step_ms: int = 60_000) -> list[Row]:
    return [Row(TOPIC, 0, o, T0 + (o - first) * step_ms, f"dev-{o % 3}", {"event-id": f"e{o}"},
                json.dumps({"id": f"e{o}", "LAeq": 50 + o % 7})) for o in range(first, first + n)]


@pytest.fixture(params=["file-uri", "object-store"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> LakePath:
    if request.param == "file-uri":
        return open_lake((tmp_path / "lake").as_uri())
    # No folders to make, no atomic rename: the code takes its object-storage branch.
    root = LakePath(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "lake", "subtree://")
    assert not root.local
    return root


def test_a_file_uri_in_the_settings_is_the_lake_every_module_reads(tmp_path: Path) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var"),
                              "CITYBRAIN_LAKE_URI": (tmp_path / "elsewhere").as_uri()})
    assert settings.lake.local and str(settings.lake) == str(tmp_path / "elsewhere")
    LakeWriter(settings.lake, "bronze").write(TOPIC, 0, _rows(0, 5))
    assert len(list((tmp_path / "elsewhere" / "bronze").rglob("*.parquet"))) == 2   # two hours
    assert not (tmp_path / "var" / "lake").exists()


def test_the_sink_writes_each_offset_once_and_recovers_from_a_crash(lake: LakePath) -> None:
    writer = LakeWriter(lake, "bronze")
    writer.write(TOPIC, 0, _rows(0, 4))
    writer.write(TOPIC, 0, _rows(4, 4))
    assert writer.checkpoint(TOPIC, 0) == 8
    # A crash between a batch's files and its checkpoint leaves a file that starts at the checkpoint.
    leftover = layout.hour_dir(lake, "bronze", TOPIC, datetime(2026, 12, 3, 11, tzinfo=timezone.utc)) / "p0-8-9.parquet"
    store.write_table(pa.table({"offset": [8, 9]}), leftover)
    assert writer.recover(TOPIC, 0) == (8, 1) and not leftover.exists()
    files = layout.files(lake, "bronze")
    assert [f.name for f in files] == ["p0-0-3-0.parquet", "p0-4-7-0.parquet", "p0-0-3-1.parquet", "p0-4-7-1.parquet"]
    offsets = store.read_table(files, columns=["offset"]).column("offset").to_pylist()
    assert sorted(offsets) == list(range(8))


def test_compaction_merges_an_hour_and_finishes_an_interrupted_one(lake: LakePath) -> None:
    writer = LakeWriter(lake, "bronze")
    for first in (0, 2, 4):
        writer.write(TOPIC, 0, _rows(first, 2, step_ms=1000))   # all in 10:00
    result = writer.compact()
    assert (result.merged_files, result.written_files, result.rows) == (3, 1, 6)
    [merged] = layout.files(lake, "bronze")
    assert merged.name == "p0-0-5.parquet" and store.read_metadata(merged).num_rows == 6
    # Interrupted after the merged file was written: the next pass deletes the sources the journal names.
    writer.write(TOPIC, 0, _rows(6, 2, step_ms=1000))
    source = layout.files(lake, "bronze")[-1]
    journal = layout.compactions_dir(lake, "bronze") / "cut.json"
    journal.write_text(json.dumps({"target": str(merged.relative_to(lake)), "sources": [str(source.relative_to(lake))]}))
    assert writer.finish_compactions() == 1
    assert not source.exists() and not journal.exists()


def test_partitions_releases_and_sql_read_the_same_lake(lake: LakePath) -> None:
    from citybrain.scenarios.catalog import query
    from citybrain.scenarios.release import publish, releases, verify

    LakeWriter(lake, "bronze").write(TOPIC, 0, _rows(0, 6))
    parts = layout.partitions(lake, ["bronze"])
    assert [(p.contract, p.hour) for p in parts] == [("raw.sensor.noise_level", "10"), ("raw.sensor.noise_level", "11")]
    inputs = layout.files(lake, "bronze")
    table = pa.table({"street": ["a", "b"], "level": [51.0, 63.5]})
    contract = {"title": "t", "owner": "o", "fields": {"street": "s", "level": "l"}}
    release = publish(lake, "noise_by_street", table, contract, {"passed": True}, inputs,
                      now=datetime(2026, 12, 3, 12, tzinfo=timezone.utc))
    assert [r.version for r in releases(lake)] == [release.version] and verify(release) == []
    assert {e["path"] for e in release.manifest["lineage"]} == {str(f.relative_to(lake)) for f in inputs}
    got = query(lake, "SELECT street FROM noise_by_street WHERE level > 60").to_pylist()
    assert got == [{"street": "b"}]


def test_quarantine_moves_a_partition_out_with_its_reason(lake: LakePath) -> None:
    from citybrain.lake.quarantine import quarantine

    LakeWriter(lake, "bronze").write(TOPIC, 0, _rows(0, 2, step_ms=1000))
    [p] = layout.partitions(lake, ["bronze"])
    moved = quarantine(lake, p, "20261203T120000Z-abcdef", [{"success": False, "check": "validity"}],
                       datetime(2026, 12, 3, 12, tzinfo=timezone.utc))
    assert layout.partitions(lake, ["bronze"]) == []
    assert [f.name for f in layout.quarantined_files(lake, "bronze")] == ["p0-0-1.parquet"]
    assert [str(run.relative_to(lake)) for run in layout.quarantine_runs(lake)] == [moved]
    assert json.loads((lake / moved / "reason.json").read_text())["partition"] == p.key


def test_scenarios_read_only_the_files_whose_partition_passed_its_latest_check(lake: LakePath) -> None:
    """The quality table read back from the lake room (no Great Expectations): a partition passes with the very
    files its latest check saw; a later failing check, or files changed since, leave it out."""
    from citybrain.lake.quality_results import RESULT_SCHEMA, passed_files, results

    LakeWriter(lake, "bronze").write(TOPIC, 0, _rows(0, 6))
    first, second = layout.partitions(lake, ["bronze"])
    assert results(lake) is None and passed_files(lake) == (set(), {"unchecked": [first.key, second.key],
                                                                     "failed": [], "runs": []})

    def check(run: str, minute: int, verdicts: list[tuple[layout.Partition, bool]]) -> None:
        rows = [{"run_id": run, "checked_at": datetime(2026, 12, 3, 12, minute, tzinfo=timezone.utc), "layer": p.layer,
                 "contract": p.contract, "partition": p.name, "fingerprint": p.fingerprint, "suite": "s.records",
                 "success": passed, "partition_passed": passed} for p, passed in verdicts]
        store.write_table(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA),
                          layout.quality_dir(lake) / "checked=2026-12-03" / f"run-{run}.parquet")

    check("a", 0, [(first, True), (second, True)])
    check("b", 5, [(second, False)])
    ok, summary = passed_files(lake)
    assert ok == {first.path / f for f in first.files}
    assert summary == {"unchecked": [], "failed": [second.key], "runs": ["a"]}
    assert [f.name for f in layout.quality_runs(lake)] == ["run-a.parquet", "run-b.parquet"]
    LakeWriter(lake, "bronze").write(TOPIC, 0, _rows(6, 1))    # the first hour gets a new file: checked again
    assert passed_files(lake)[1]["unchecked"] == [first.key]


def test_glob_matches_names_level_by_level(lake: LakePath) -> None:
    for rel in ("gold/a/v1/manifest.json", "gold/a/v1/data.parquet", "gold/b/v2/manifest.json", "gold/b/x/manifest.json",
                "gold/.hidden.tmp"):
        (lake / rel).write_text("{}")
    assert [str(p.relative_to(lake)) for p in layout.gold_dir(lake).glob("*/v*/manifest.json")] == \
        ["gold/a/v1/manifest.json", "gold/b/v2/manifest.json"]
    assert [p.name for p in (lake / "gold").glob("*")] == [".hidden.tmp", "a", "b"]
    assert sorted(p.name for p in lake.rglob("*.json")) == ["manifest.json"] * 3
    assert list((lake / "nowhere").glob("*/*")) == []


def test_cloud_uris_open_their_filesystems_and_refuse_local_only_steps() -> None:
    s3 = open_lake("s3://city-lake/citybrain?region=eu-west-1&endpoint_override=127.0.0.1:1&scheme=http")
    assert (s3.fs.type_name, str(s3), s3.local) == ("s3", "s3://city-lake/citybrain", False)
    hour = layout.hour_dir(s3, "bronze", TOPIC, datetime(2026, 12, 3, 10, tzinfo=timezone.utc))
    assert str(hour) == "s3://city-lake/citybrain/bronze/raw.sensor.noise_level/date=2026-12-03/hour=10"
    with pytest.raises(LakeStorageError, match="object storage"):
        os.fspath(hour)
    gs = open_lake("gs://city-lake/citybrain")
    assert (gs.fs.type_name, str(gs / "gold")) == ("gcs", "gs://city-lake/citybrain/gold")


def test_a_lake_uri_pyarrow_does_not_know_is_refused_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="(?s)CITYBRAIN_LAKE_URI='ftp://city/lake' is not a pyarrow filesystem URI.*s3://"):
        load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path), "CITYBRAIN_LAKE_URI": "ftp://city/lake"})
    with pytest.raises(LakeStorageError, match="scheme 'ftp'"):
        open_lake("ftp://city/lake")


def test_a_local_folder_is_copied_into_the_lake_once_then_only_what_changed(lake: LakePath, tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "validations").mkdir(parents=True)
    (site / "index.html").write_text("v1")
    (site / "validations" / "run-1.html").write_text("r1")
    target = lake / "quality" / "data_docs"
    assert store.upload_tree(site, target) == 2
    assert store.upload_tree(site, target) == 0
    (site / "index.html").write_text("v2 longer")
    (site / "validations" / "run-2.html").write_text("r2")
    assert store.upload_tree(site, target) == 2
    assert (target / "index.html").read_text() == "v2 longer"
    assert sorted(p.name for p in target.rglob("*.html")) == ["index.html", "run-1.html", "run-2.html"]
