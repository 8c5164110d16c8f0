"""Fenced lake sinks (issue 32, "nothing lost, nothing doubled"): one writer per topic and layer, a lost
checkpoint rebuilt from the files, records lost to retention refused by name, unreadable files set aside,
and local renames made durable. Without a broker: the sink runs on a scripted consumer."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
from kafka.structs import TopicPartition

from citybrain.lake import layout, lease, reader
from citybrain.lake.lease import Lease, LeaseHeld, LeaseLost
from citybrain.lake.store import LakePath, open_lake
from citybrain.lake.writer import LakeWriter, Row
from tests.unit.test_lake import _Announcements, _SinkConsumer

TOPIC = "raw.sensor.noise_level.v1"
T0 = int(datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc).timestamp() * 1000)


def _rows(first: int, n: int, step_ms: int = 1000, partition: int = 0) -> list[Row]:
    return [Row(TOPIC, partition, o, T0 + o * step_ms, f"nz-{o % 3}", {"event-id": f"e{o}"},
                json.dumps({"id": f"e{o}", "refDevice": f"urn:ngsi-ld:Device:nz-{o % 3}", "LAeq": 50 + o % 7,
                            "dateObserved": f"2026-12-03T10:{o % 60:02d}:00Z"}))
            for o in range(first, first + n)]


@pytest.fixture(params=["local", "object-store"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> LakePath:
    if request.param == "local":
        return open_lake(str(tmp_path / "lake"))
    root = LakePath(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "lake", "subtree://")
    assert not root.local   # no lock, no rename: the lease's last-writer-wins branch
    return root


def _offsets(lake: LakePath) -> list[int]:
    return sorted(o for t in (reader.read([f], ["offset"]) for f in layout.files(lake, "bronze"))
                  for o in t.column("offset").to_pylist())


# -- one writer per topic and layer ------------------------------------------------------------------------


def _held_by(lake: LakePath, pid: int, pidns: str | None = None) -> None:
    """A lease on TOPIC, not expired, written as process ``pid`` of this host would have written it."""
    holder = Lease(lake, "bronze", TOPIC)
    holder.path.unlink(missing_ok=True)
    holder.take()
    data = json.loads(holder.path.read_text())
    data.update(pid=pid, writer="f" * 32, **({"pidns": pidns} if pidns is not None else {}))
    holder.path.write_text(json.dumps(data))


def test_a_killed_sink_s_lease_is_taken_over_at_once_on_its_own_host(lake: LakePath) -> None:
    """Regression guard: a sink killed and restarted by the supervisor was refused for its own dead lease until
    it expired (60 s of `lake bronze` exiting 1); a holder whose process is gone from this host and pid namespace
    is taken over at once, a live one is not, and in another pid namespace a pid says nothing."""
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    _held_by(lake, dead.pid)
    Lease(lake, "bronze", TOPIC).take()   # its process is gone: taken over before the expiry

    alive = subprocess.Popen(["sleep", "30"])
    try:
        _held_by(lake, alive.pid)
        with pytest.raises(LeaseHeld):
            Lease(lake, "bronze", TOPIC).take()
    finally:
        alive.kill()
        alive.wait()
    _held_by(lake, dead.pid, pidns="pid:[1]")   # another container's pid namespace: only the expiry decides
    with pytest.raises(LeaseHeld):
        Lease(lake, "bronze", TOPIC).take()


def test_a_second_writer_on_a_topic_is_refused_naming_the_holder(lake: LakePath) -> None:
    first = LakeWriter(lake, "bronze")
    first.hold([TOPIC], settle_s=0.01)
    second = LakeWriter(lake, "bronze")
    with pytest.raises(LeaseHeld) as refused:
        second.hold(["raw.sensor.water_level.v1", TOPIC], settle_s=0.01)
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and os.uname().nodename in message and " since 20" in message
    assert TOPIC in message and "Fix: stop that sink" in message
    assert second.leases == {}
    # All or none: the topic it did take on the way is free again.
    LakeWriter(lake, "bronze").hold(["raw.sensor.water_level.v1"], settle_s=0.01)
    first.write(TOPIC, 0, _rows(0, 5))   # the holder writes on
    first.release()
    second.hold([TOPIC], settle_s=0.01)  # released: the next one may
    assert second.leases[TOPIC].read().writer == second.leases[TOPIC].writer


def test_a_second_sink_is_refused_before_it_reads_or_recovers_anything(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Probed on the broker: two sinks on one topic wrote 35 rows for 25 offsets."""
    from citybrain.kafka import clients
    from citybrain.settings import load_settings
    from citybrain.streams import lake_sink

    lake = open_lake(str(tmp_path / "lake"))
    Lease(lake, "bronze", TOPIC).take()            # a sink is running ...
    running = LakeWriter(lake, "bronze")
    running.write(TOPIC, 0, _rows(0, 5))
    running.write(TOPIC, 0, _rows(5, 5))
    running._set_checkpoint(TOPIC, 0, 5)           # ... between a batch's file and its checkpoint
    consumer = _SinkConsumer({TopicPartition(TOPIC, 0): 25})
    monkeypatch.setattr(clients, "consumer", lambda settings, *topics, **config: consumer)
    monkeypatch.setattr(lake_sink, "Announcer", _Announcements)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
        lake_sink.run_sink(settings, [TOPIC], lake, stop_when_idle_s=0.1)
    assert consumer.polls == 0 and _offsets(lake) == list(range(10))   # nothing read, the running sink's file kept


def test_a_stale_lease_is_taken_over_and_its_stalled_holder_stops_without_a_checkpoint(lake: LakePath) -> None:
    crashed = LakeWriter(lake, "bronze")
    crashed.hold([TOPIC], ttl_s=0.05, settle_s=0.01)
    crashed.write(TOPIC, 0, _rows(0, 5))
    time.sleep(0.1)                                # no heartbeat: the lease expires
    taker = LakeWriter(lake, "bronze")
    taker.hold([TOPIC], settle_s=0.01)
    assert taker.recover(TOPIC, 0) == (5, 0)
    # The old holder was only stalled: it wakes, finds the lease taken, and moves no checkpoint.
    with pytest.raises(LeaseLost, match="stalled past"):
        crashed.write(TOPIC, 0, _rows(5, 5))
    taker.write(TOPIC, 0, _rows(5, 5))
    assert taker.checkpoint(TOPIC, 0) == 10 and _offsets(lake) == list(range(10))


def test_a_holder_that_beats_keeps_its_lease_past_its_time_to_live(lake: LakePath) -> None:
    holder = LakeWriter(lake, "bronze")
    holder.hold([TOPIC], ttl_s=0.3, settle_s=0.01)
    for _ in range(6):                             # twice the time to live, beating as the sink's loop does
        time.sleep(0.1)
        holder.heartbeat()
    with pytest.raises(LeaseHeld, match="expires in"):
        LakeWriter(lake, "bronze").hold([TOPIC], settle_s=0.01)


def test_on_object_storage_the_sink_that_is_not_read_back_is_refused(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Without create-if-absent, the last lease written wins: a contender writing during the settle is seen."""
    lake = LakePath(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "lake", "subtree://")
    contender = Lease(lake, "bronze", TOPIC)

    def contender_writes(seconds: float) -> None:
        contender.since = time.time()
        contender._write(time.time())

    monkeypatch.setattr(lease.time, "sleep", contender_writes)
    with pytest.raises(LeaseHeld, match="refused"):
        LakeWriter(lake, "bronze").hold([TOPIC])
    assert contender.read().writer == contender.writer   # the loser did not release the winner's lease


# -- a lost checkpoint ---------------------------------------------------------------------------------------

def test_a_lost_checkpoint_is_rebuilt_from_the_files_and_no_file_is_deleted(lake: LakePath) -> None:
    """Probed: removing a partition's checkpoint made recovery delete every file of the partition (3 files, 0 left)."""
    writer = LakeWriter(lake, "bronze")
    for first in (0, 10, 20):
        writer.write(TOPIC, 0, _rows(first, 10))
    checkpoint = layout.checkpoints_dir(lake, "bronze") / TOPIC / "0.json"
    checkpoint.unlink()
    assert LakeWriter(lake, "bronze").recover(TOPIC, 0) == (30, 0)
    assert len(layout.files(lake, "bronze")) == 3 and _offsets(lake) == list(range(30))
    assert json.loads(checkpoint.read_text())["next_offset"] == 30   # stored again


def test_a_rebuilt_checkpoint_counts_quarantined_files_and_redoes_a_split_batch_a_crash_cut(lake: LakePath) -> None:
    from citybrain.lake.quarantine import quarantine

    writer = LakeWriter(lake, "bronze")
    writer.write(TOPIC, 0, _rows(0, 10))                              # 10:00
    [p] = layout.partitions(lake, ["bronze"])
    quarantine(lake, p, "run-1", [{"success": False}], datetime(2026, 12, 3, 12, tzinfo=timezone.utc))
    checkpoints = layout.checkpoints_dir(lake, "bronze") / TOPIC
    (checkpoints / "0.json").unlink()
    assert writer.recover(TOPIC, 0) == (10, 0)     # the quarantined records are not read again
    split = writer.write(TOPIC, 0, _rows(10, 10, step_ms=30 * 60 * 1000))   # one batch over several hours
    assert len(split) > 2
    (checkpoints / "0.json").unlink()
    split[-1].unlink()                             # the crash came before the batch's last file
    assert writer.recover(TOPIC, 0) == (10, len(split) - 1)   # the cut batch's parts are leftovers: read again
    writer.write(TOPIC, 0, _rows(10, 10, step_ms=30 * 60 * 1000))
    assert _offsets(lake) == list(range(10, 20))


# -- records lost to retention -------------------------------------------------------------------------------

def test_a_checkpoint_below_the_log_start_stops_the_sink_naming_the_records_lost(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Probed: a sink down longer than the retention jumped silently to the end of the topic."""
    from citybrain.kafka import clients
    from citybrain.settings import load_settings
    from citybrain.streams import lake_sink
    from citybrain.streams.lake_sink import RecordsLostToRetention

    lake = open_lake(str(tmp_path / "lake"))
    LakeWriter(lake, "bronze").write(TOPIC, 0, _rows(0, 10))
    tp0, tp1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = _SinkConsumer({tp0: 40, tp1: 40})
    consumer.starts = {tp0: 25, tp1: 7}            # retention deleted offsets 0..24 of partition 0 (and 0..6 of
    #                                                partition 1, which the lake never read: it starts at 7)
    config: dict[str, Any] = {}

    def make(settings: Any, *topics: str, **kwargs: Any) -> _SinkConsumer:
        config.update(kwargs)
        return consumer

    monkeypatch.setattr(clients, "consumer", make)
    monkeypatch.setattr(lake_sink, "Announcer", _Announcements)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    with pytest.raises(RecordsLostToRetention) as stopped:
        lake_sink.run_sink(settings, [TOPIC], lake, stop_when_idle_s=0.1)
    assert "15 record(s)" in str(stopped.value) and f"{TOPIC}[0] offsets 10..24" in str(stopped.value)
    assert f"{TOPIC}[1]" not in str(stopped.value)
    assert config["auto_offset_reset"] == "none"   # no silent jump when retention overtakes it while it runs
    assert consumer.polls == 0 and consumer.closed and _offsets(lake) == list(range(10))
    LakeWriter(lake, "bronze").hold([TOPIC])       # the lease was given back


def test_a_lake_ahead_of_its_topic_stops_the_sink_instead_of_filing_new_records_under_old_offsets(  # type: ignore[no-untyped-def]
        tmp_path: Path, monkeypatch) -> None:
    """Seen on a second local `make test`: the test broker was made anew, the test lake kept its checkpoints at 30,
    and the topic's new records 0..9 were to be filed beside the old ones under the same offsets."""
    from citybrain.kafka import clients
    from citybrain.settings import load_settings
    from citybrain.streams import lake_sink
    from citybrain.streams.lake_sink import LakeAheadOfTopic

    lake = open_lake(str(tmp_path / "lake"))
    LakeWriter(lake, "bronze").write(TOPIC, 0, _rows(0, 30))
    consumer = _SinkConsumer({TopicPartition(TOPIC, 0): 10})
    monkeypatch.setattr(clients, "consumer", lambda settings, *topics, **kwargs: consumer)
    monkeypatch.setattr(lake_sink, "Announcer", _Announcements)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    with pytest.raises(LakeAheadOfTopic) as stopped:
        lake_sink.run_sink(settings, [TOPIC], lake, stop_when_idle_s=0.1)
    assert f"{TOPIC}[0] lake at 30, topic ends at 10" in str(stopped.value) and "Fix: move this lake aside" in str(stopped.value)
    assert consumer.polls == 0 and _offsets(lake) == list(range(30))   # nothing read, nothing removed


def test_a_partition_new_to_the_lake_starts_at_its_log_start(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What retention deleted before the lake's first read was never the lake's: not a loss, not a refusal."""
    from citybrain.kafka import clients
    from citybrain.settings import load_settings
    from citybrain.streams import lake_sink

    lake = open_lake(str(tmp_path / "lake"))
    tp0 = TopicPartition(TOPIC, 0)
    consumer = _SinkConsumer({tp0: 40})
    consumer.starts = {tp0: 7}
    monkeypatch.setattr(clients, "consumer", lambda settings, *topics, **config: consumer)
    monkeypatch.setattr(lake_sink, "Announcer", _Announcements)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    result = lake_sink.run_sink(settings, [TOPIC], lake, stop_when_idle_s=0.1)
    assert result["written"] == 33 and _offsets(lake) == list(range(7, 40))


# -- unreadable files ---------------------------------------------------------------------------------------

def _three_hours(lake: LakePath) -> list[LakePath]:
    writer = LakeWriter(lake, "bronze")
    for first in (0, 60, 120):                     # one file in each of three hours
        writer.write(TOPIC, 0, _rows(first, 60, step_ms=60_000))
    return layout.files(lake, "bronze")


@pytest.mark.parametrize("damage", ["torn", "corrupt page"])
def test_a_corrupt_file_is_set_aside_and_its_neighbours_still_read(lake: LakePath, damage: str, caplog) -> None:  # type: ignore[no-untyped-def]
    """Probed: one corrupt Parquet file made every page of the operations view that reads its hour answer 500."""
    from citybrain.ui import views

    files = _three_hours(lake)
    bad = files[1]
    data = bytearray(bad.read_bytes())
    if damage == "torn":
        data = data[:len(data) // 2]
    else:                                          # every page's bytes: the footer still reads
        footer = int.from_bytes(data[-8:-4], "little")
        for i in range(4, len(data) - 8 - footer):
            data[i] ^= 0xFF
    bad.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    assert views._last_readings(files, "LAeq").keys() == {"nz-0", "nz-1", "nz-2"}
    assert not bad.exists()
    aside = lake / "quarantine" / "_unreadable" / str(bad.relative_to(lake))
    assert layout.unreadable_files(lake, "bronze") == [aside]
    reason = json.loads(aside.with_name(aside.name + ".reason.json").read_text())
    assert reason["error"].split(":")[0] in ("ArrowInvalid", "OSError") and reason["fix"]
    assert any("set aside" in r.getMessage() for r in caplog.records)
    # The pages and checks that read these files go on without it.
    assert len(views._records(files)) == 120
    assert sum(sum(c.values()) for c in views._records_per_hour(lake, layout.files(lake, "bronze")).values()) == 120
    assert reader.read(files, ["offset"]).num_rows == 120
    # Its offsets are not written twice when the checkpoint is rebuilt.
    (layout.checkpoints_dir(lake, "bronze") / TOPIC / "0.json").unlink()
    assert LakeWriter(lake, "bronze").recover(TOPIC, 0) == (180, 0)


def test_a_good_file_asked_for_a_column_it_lacks_is_not_set_aside(lake: LakePath) -> None:
    files = _three_hours(lake)
    with pytest.raises(KeyError):
        reader.read_one(files[0], ["no_such_column"])
    assert files[0].exists() and layout.unreadable_files(lake, "bronze") == []


# -- durable renames ----------------------------------------------------------------------------------------

def test_files_are_fsynced_before_their_rename_and_their_folder_after_it(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Probed: files were renamed without fsync (a power cut could leave a checkpoint past empty files)."""
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), stat.S_ISDIR(os.fstat(fd).st_mode)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    [written] = LakeWriter(tmp_path, "bronze").write(TOPIC, 0, _rows(0, 5))
    hour = str(written.parent)
    assert (str(written.with_name(f".{written.name}.tmp")), False) in synced   # the data, under its temporary name
    assert synced.index((hour, True)) > synced.index((str(written.with_name(f".{written.name}.tmp")), False))
    assert (str(Path(hour).parent), True) in synced                           # the new hour folder's entry
    checkpoint = layout.checkpoints_dir(tmp_path, "bronze") / TOPIC / "0.json"
    assert (str(checkpoint.with_name(".0.json.tmp")), False) in synced and (str(checkpoint.parent), True) in synced
