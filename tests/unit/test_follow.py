"""The one consumer loop (citybrain.kafka.follow): records to the hook, commits after it, and the ways it stops."""

from __future__ import annotations

import json
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka.structs import TopicPartition

from citybrain.kafka.follow import Follower, StatusFile, Stopped

HOUR = 1_763_800_000_000  # a fixed epoch millisecond
A, B = TopicPartition("raw.sensor.noise_level.v1", 0), TopicPartition("raw.sensor.noise_level.v1", 1)


@dataclass
class Record:
    """What the loop's owners read of a kafka-python ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    timestamp: int = 0
    key: bytes | None = b"nz-1"
    value: bytes = b'{"x": 1}'
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class ScriptedConsumer:
    """A kafka-python consumer as the loop uses it, fetching by a script: poll n returns up to ``script[n]`` records
    of each partition it holds (0: a fetch that came back empty while records wait, as from a slow broker); past the
    script, every poll returns all that is left. ``group``: subscribed in a consumer group, holding ``held``;
    ``value``: every record's value."""

    def __init__(self, ends: dict[TopicPartition, int], script: list[int] | None = None, group: bool = False,
                 held: set[TopicPartition] | None = None, interrupt_at: int | None = None,
                 value: bytes = b'{"x": 1}') -> None:
        self.ends, self.script, self.group, self.value = dict(ends), list(script or []), group, value
        self.held = set(ends) if held is None else held
        self.positions = {tp: 0 for tp in ends}
        self.polls, self.interrupt_at = 0, interrupt_at
        self.commits: list[dict[TopicPartition, int]] = []
        self.ends_asked = 0
        self.closed = False

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        self.polls += 1
        if self.polls == self.interrupt_at:
            raise KeyboardInterrupt   # SIGINT, or SIGTERM made one by the command, while waiting for records
        step = self.script.pop(0) if self.script else 1_000_000
        out = {}
        for tp in sorted(self.held):
            first = self.positions[tp]
            n = min(step, self.ends[tp] - first)
            if n > 0:
                out[tp] = [Record(tp.topic, tp.partition, o, HOUR + o * 1000, value=self.value,
                                  headers=[("event-id", f"e{o}".encode())]) for o in range(first, first + n)]
                self.positions[tp] += n
        if not out:
            time.sleep(min(timeout_ms, 20) / 1000)   # a poll that finds nothing waits (briefly, in a test)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.held)

    def subscription(self) -> set[str] | None:
        return {tp.topic for tp in self.ends} if self.group else None

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.ends_asked += 1
        return {tp: self.ends[tp] for tp in tps}

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    def close(self) -> None:
        self.closed = True


def test_a_follower_told_to_exit_when_drained_reads_to_the_ends_through_slow_fetches() -> None:
    """Quiet polls alone do not end it: a fetch that came back empty with records still unread is not the end."""
    consumer = ScriptedConsumer({A: 6, B: 3}, script=[2] + [0] * 10 + [2])
    seen: list[tuple[int, int]] = []
    follower = Follower(consumer, lambda tp, rs: seen.extend((tp.partition, r.offset) for r in rs), idle_s=0.05)
    assert follower.run() == "drained" and follower.drained
    assert sorted(seen) == [(0, o) for o in range(6)] + [(1, o) for o in range(3)]
    assert consumer.ends_asked >= 2 and consumer.commits == []   # asked at the slow fetch too; no group, no commits


def test_the_quiet_is_timed_from_after_the_tick_so_slow_storage_is_not_quiet_topics() -> None:
    """Regression guard for the lake sink on S3: a flush slower than the idle time made it stop as soon as a poll
    found nothing. The idle time counts from the end of the tick that flushed."""
    consumer = ScriptedConsumer({A: 4}, script=[4])
    flushed_at: list[float] = []

    def tick(polled: bool) -> None:
        if not polled and not flushed_at:
            time.sleep(0.3)   # the flush of what the last poll read, on slow storage
            flushed_at.append(time.monotonic())

    assert Follower(consumer, lambda tp, rs: None, on_tick=tick, idle_s=0.2).run() == "drained"
    assert time.monotonic() - flushed_at[0] >= 0.2


def test_records_are_committed_after_their_hook_and_not_when_it_stops_the_loop() -> None:
    consumer = ScriptedConsumer({A: 2, B: 2}, group=True)

    def send(tp: TopicPartition, records: list[Record]) -> None:
        if tp == B:
            raise Stopped   # e.g. the notifier stopping while a delivery was under way

    follower = Follower(consumer, send, commit_records=True, idle_s=0.0)
    assert follower.run() == "stopped"
    assert consumer.commits == [{A: 2}]   # A's records were handled: committed; B's were not


def test_keyboard_interrupt_while_polling_is_a_clean_stop_after_what_was_read() -> None:
    consumer = ScriptedConsumer({A: 10}, script=[3], interrupt_at=2)
    seen: list[int] = []
    follower = Follower(consumer, lambda tp, rs: seen.extend(r.offset for r in rs), idle_s=0.0)
    assert follower.run() == "interrupted" and seen == [0, 1, 2]


def test_a_group_member_holding_no_partitions_yet_is_not_drained() -> None:
    consumer = ScriptedConsumer({A: 0}, group=True, held=set())
    follower = Follower(consumer, lambda tp, rs: None, idle_s=0.0)
    runner = threading.Thread(target=follower.run)
    runner.start()
    time.sleep(0.2)
    assert runner.is_alive() and not follower.drained   # has not joined its group yet: quiet, not caught up
    consumer.held = {A}                                # the group assigned it the (empty) partition
    runner.join(timeout=5)
    assert not runner.is_alive() and follower.drained


def test_a_follower_that_does_not_exit_when_drained_says_so_and_stops_on_its_event() -> None:
    consumer = ScriptedConsumer({A: 3}, group=True)
    stop = threading.Event()
    follower = Follower(consumer, lambda tp, rs: None, idle_s=0.0, exit_when_drained=False, stop=stop)
    runner = threading.Thread(target=follower.run)
    runner.start()
    deadline = time.monotonic() + 5
    while not follower.drained and time.monotonic() < deadline:
        time.sleep(0.01)
    assert follower.drained and runner.is_alive() and follower.idle_for() > 0
    stop.set()
    runner.join(timeout=5)
    assert not runner.is_alive()


def test_a_status_file_is_one_json_object_with_its_time_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "run" / "sink.json"
    status = StatusFile(path)
    status.write({"state": "posting", "posted": 3})
    status.write({"state": "stopped", "posted": 4})
    doc = json.loads(path.read_text())
    assert doc["state"] == "stopped" and doc["posted"] == 4 and doc["updated_at"].endswith("Z")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and [p.name for p in path.parent.iterdir()] == ["sink.json"]
