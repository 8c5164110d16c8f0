"""The benchmark's CPU figures: /proc stat lines read right, seconds per record, per-worker shares, scaling."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from citybrain.devtools.bench_cpu import (NOT_LINUX, attribute, cpu_figures, owners, parse_stat, proc_missing,
                                          process_cpu_s, processes_cpu_s, shares, thread_cpu_s, us_per_record, used)

#: A real line's shape (proc(5)): pid, (comm), state, ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt, majflt,
#: cmajflt, utime (14th), stime (15th), cutime, cstime, ...; the name holds spaces and parentheses.
TRAP = "4242 (python3 (x) y) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 567 89 10 20 0 3 0 5000 1e6 900"


def fake_proc(tmp_path: Path, pid: int | str, line: str) -> Path:
    (tmp_path / str(pid)).mkdir(parents=True, exist_ok=True)
    (tmp_path / str(pid) / "stat").write_text(line + "\n")
    return tmp_path


def test_a_name_with_spaces_and_parentheses_does_not_shift_the_fields() -> None:
    assert parse_stat(TRAP) == (1234, 567)      # split on spaces: (0, 0); counted after the first ')': (0, 1234)
    assert parse_stat("7 (kafka.Kafka) R 1 7 7 0 -1 0 1 2 3 4 100 50 0 0") == (100, 50)


@pytest.mark.parametrize("line", ["", "4242 python3 S 1 2 3", "4242 (python3) S 1 2 3 4 5 6 7 8 9 10 11"])
def test_a_line_that_is_not_a_stat_line_is_refused_with_what_was_expected(line: str) -> None:
    with pytest.raises(ValueError, match="expected 'pid \\(name\\) state ...' with at least 15 fields"):
        parse_stat(line)


def test_process_seconds_are_user_plus_system_ticks_over_the_clock_rate(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 4242, TRAP)
    assert process_cpu_s(4242, proc) == pytest.approx((1234 + 567) / os.sysconf("SC_CLK_TCK"))
    fake_proc(tmp_path, 4343, TRAP.replace("1234 567", "100 0"))
    assert processes_cpu_s([4242, 4343], proc) == pytest.approx((1234 + 567 + 100) / os.sysconf("SC_CLK_TCK"))


def test_without_proc_nothing_is_measured_and_nothing_crashes(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-proc"
    assert process_cpu_s(4242, nowhere) is None and thread_cpu_s(nowhere) is None
    assert processes_cpu_s([4242], nowhere) is None and processes_cpu_s([], tmp_path) is None
    assert proc_missing(nowhere) == NOT_LINUX and "not measured" in NOT_LINUX
    fake_proc(tmp_path, "self", TRAP)
    assert proc_missing(tmp_path) is None


def test_a_broker_node_that_cannot_be_read_leaves_the_broker_unmeasured(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, 4242, TRAP)
    assert processes_cpu_s([4242, 9999], proc) is None


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux's /proc")
def test_the_thread_reading_is_this_threads_own_time() -> None:
    """A busy thread beside this one does not count into this thread's seconds (the plain consumer's figure), and
    does into the process's (a worker's figure)."""
    def spin() -> None:
        start = time.thread_time()
        while time.thread_time() - start < 0.3:
            pass

    thread_before, process_before = thread_cpu_s(), process_cpu_s(os.getpid())
    busy = threading.Thread(target=spin)
    busy.start()
    busy.join()
    thread_after, process_after = thread_cpu_s(), process_cpu_s(os.getpid())
    assert thread_before is not None and thread_after is not None
    assert process_before is not None and process_after is not None
    assert thread_after - thread_before < 0.1 and process_after - process_before >= 0.25


def test_differences_and_seconds_per_record() -> None:
    assert used(10.0, 12.5) == 2.5 and used(None, 3.0) is None and used(1.0, None) is None
    assert us_per_record(2.5, 100_000) == 25.0
    assert us_per_record(None, 100_000) is None and us_per_record(2.5, 0) is None


def test_each_member_owns_its_assigned_partitions() -> None:
    group = {"group_state": "Stable", "members": [
        {"client_id": "g-worker1", "member_assignment": {"assigned_partitions": [
            {"topic": "raw.a", "partitions": [0, 1]}, {"topic": "by-area", "partitions": [0]}], "user_data": "{}"}},
        {"client_id": "g-worker2", "member_assignment": {"assigned_partitions": [
            {"topic": "by-area", "partitions": [1, 2]}], "user_data": "{}"}},
        {"client_id": "g-worker3", "member_assignment": b"\x00undecodable"}]}
    assert owners(group) == {("raw.a", 0): "g-worker1", ("raw.a", 1): "g-worker1", ("by-area", 0): "g-worker1",
                             ("by-area", 1): "g-worker2", ("by-area", 2): "g-worker2"}
    assert owners({}) == {}


def test_owners_reads_kafka_pythons_own_description_of_a_group() -> None:
    """The shape ``describe_groups`` hands back: the response as the broker sends it, decoded by kafka-python."""
    from kafka.admin import KafkaAdminClient
    from kafka.protocol.admin import DescribeGroupsResponse
    from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription

    described = DescribeGroupsResponse.DescribedGroup
    member = described.DescribedGroupMember(
        member_id="g-worker2-5f1c", group_instance_id=None, client_id="g-worker2", client_host="/127.0.0.1",
        member_metadata=ConsumerProtocolSubscription(version=0, topics=["raw.a"], user_data=b"").encode(),
        member_assignment=ConsumerProtocolAssignment(version=0, assigned_partitions=[("raw.a", [3, 4])],
                                                     user_data=b"{}").encode())
    response = DescribeGroupsResponse(version=3, throttle_time_ms=0, groups=[described(
        error_code=0, group_id="g", group_state="Stable", protocol_type="consumer", protocol_data="faust",
        members=[member])])
    admin = KafkaAdminClient.__new__(KafkaAdminClient)   # no connection: only the response's decoding
    admin._process_acl_operations = lambda group: group  # type: ignore[method-assign]
    group = admin._describe_groups_process_response(response)["g"]
    assert owners(group) == {("raw.a", 3): "g-worker2", ("raw.a", 4): "g-worker2"}


def test_committed_offsets_count_for_the_partitions_owner_at_each_look() -> None:
    handled: dict[str, int] = {}
    owned = {("raw.a", 0): "w1", ("raw.a", 1): "w2"}
    attribute(handled, owned, {}, {("raw.a", 0): 100, ("raw.a", 1): 50})
    owned = {("raw.a", 0): "w2", ("raw.a", 1): "w2"}     # a rebalance moved partition 0
    attribute(handled, owned, {("raw.a", 0): 100, ("raw.a", 1): 50},
              {("raw.a", 0): 130, ("raw.a", 1): 50, ("lost", 0): 7})
    assert handled == {"w1": 100, "w2": 80, "?": 7}


def test_workers_share_the_records_in_proportion_to_their_offsets() -> None:
    assert shares(1000, [300, 100]) == [750.0, 250.0]
    assert shares(1000, [0, 0]) == [500.0, 500.0] and shares(1000, []) == []


def run(records: int, seconds: float, cpu: list[float | None], handled: list[int] | None = None,
        broker: float | None = 5.0) -> dict:  # type: ignore[type-arg]
    return {"records": records, "seconds": seconds, "cpu_s": cpu, "handled": handled or [records],
            "broker_cpu_s": broker}


def test_scaling_by_cpu_per_record_and_keyed_rate_per_cpu_second() -> None:
    figures = cpu_figures(plain=run(1_000_000, 5.0, [2.0]), default=run(1_000_000, 40.0, [30.0]),
                          one=run(1_000_000, 80.0, [50.0]),
                          two=run(1_000_000, 50.0, [30.0, 27.5], handled=[600, 400]))
    runs = figures["runs"]
    assert runs["plain"]["us_per_record"] == 2.0 and runs["default"]["us_per_record"] == 30.0
    assert runs["keyed_one"]["us_per_record"] == 50.0 and runs["keyed_two"]["us_per_record"] == 57.5
    assert runs["keyed_two"]["each_us_per_record"] == [50.0, 68.75]    # 30 s over 600k records, 27.5 s over 400k
    assert runs["default"]["broker_us_per_record"] == 5.0
    assert figures["scaling_cpu"] == 1.15 and figures["scaling_wall"] == 1.6
    assert figures["keyed_per_cpu_s"] == 0.6                            # 1/50 µs over 1/30 µs
    assert figures["broker_cpu_s"]["keyed_two"] == 5.0


def test_a_worker_not_measured_leaves_its_run_and_the_ratios_unmeasured() -> None:
    figures = cpu_figures(plain=run(1000, 1.0, [None], broker=None), default=run(1000, 1.0, [0.5]),
                          one=run(1000, 2.0, [1.0]), two=run(1000, 1.5, [0.6, None], handled=[1, 1]))
    assert figures["runs"]["plain"]["us_per_record"] is None
    assert figures["runs"]["plain"]["broker_us_per_record"] is None
    assert figures["runs"]["keyed_two"]["us_per_record"] is None
    assert figures["runs"]["keyed_two"]["each_us_per_record"] == [1200.0, None]
    assert figures["scaling_cpu"] is None and figures["keyed_per_cpu_s"] == 0.5


class FakeWorker:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> None:
        return None


def test_a_timed_run_reads_each_workers_cpu_at_its_start_and_end_and_what_each_committed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's own loop, the broker's answers made up: the window opens at the first stable group and
    closes when everything is committed and nothing is left to read; offsets count for the worker that owned them when they were committed."""
    from citybrain.devtools import bench
    from citybrain.kafka import topics

    def member(client_id: str, partitions: list[int]) -> dict:  # type: ignore[type-arg]
        return {"client_id": client_id, "member_assignment": {"assigned_partitions": [
            {"topic": "raw.a", "partitions": partitions}]}}

    groups = iter([{"members": [member("g-worker1", [0, 1])]},                                   # the window opens
                   {"members": [member("g-worker1", [0]), member("g-worker2", [1])]}, {}, {}])    # {}: rebalancing
    commits = iter([{("raw.a", 0): 500, ("raw.a", 1): 300}, {("raw.a", 0): 600, ("raw.a", 1): 400},
                    {("raw.a", 0): 600, ("raw.a", 1): 400}])
    # All committed, then still 2 records ahead on the group's own topic, then none (commit markers are no records).
    lag = iter([(1000, 2), (1000, 0)])
    cpu = {1: iter([10.0, 15.0]), 2: iter([20.0, 24.5])}
    broker = iter([100.0, 103.0])
    monkeypatch.setattr(bench.time, "sleep", lambda _s: None)
    monkeypatch.setattr(bench, "_stable_group", lambda _settings, _group: next(groups))
    monkeypatch.setattr(topics, "committed_offsets", lambda _settings, _group: next(commits))
    monkeypatch.setattr(topics, "group_lag", lambda _settings, _group: next(lag))
    monkeypatch.setattr(bench, "process_cpu_s", lambda pid: next(cpu[pid]))
    monkeypatch.setattr(bench, "processes_cpu_s", lambda pids: next(broker) if pids == [77] else None)

    result = bench._throughput(None, "g", [FakeWorker(1), FakeWorker(2)], {"raw.a"}, 1000,  # type: ignore[arg-type]
                               [77], ["g-worker1", "g-worker2"])
    assert result["records"] == 1000 and result["workers"] == 2
    assert next(lag, None) is None   # it waited for the last record, not for the offsets to meet the end
    assert result["cpu_s"] == [5.0, 4.5] and result["broker_cpu_s"] == 3.0
    # Partition 1's first 300 count for worker 2, its owner at that look; the last look, mid-rebalance, keeps the
    # owners known before it.
    assert result["handled"] == [600, 400]
