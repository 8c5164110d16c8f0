"""Keyed by area, a share taken over goes on as if its owner had never changed (issue 32): a simulated day
repartitioned as the workers repartition it, one partition fused by one owner batch by batch, against owners that
stop at a cut and hand the partition to a new worker, which rebuilds the share from the records before the cut
(``Shares.gain``, the warm-up a takeover runs) and fuses on. After every cut the new owner sends what the first
sent there, with the same ids, and nothing the first had sent already; whatever the wall clock did meanwhile."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

pytest.importorskip("faust", reason="faust-streaming lives in the streams environment")

from citybrain.contracts.validate import RecordValidator  # noqa: E402
from citybrain.fusion import watermark  # noqa: E402
from citybrain.settings import load_settings  # noqa: E402
from citybrain.sim.engine import Simulation  # noqa: E402
from citybrain.sim.model import SimConfig  # noqa: E402
from citybrain.streams.fusion import KeyedFusionWorker  # noqa: E402
from citybrain.streams.shares import TP, Share  # noqa: E402

BATCH = 50   # records per fetch of the live owner


class Wall:
    """The wall clock the watermark reads, moved by the test: fetches seconds apart, a warm-up slower still."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def _worker(tmp_path: Path) -> KeyedFusionWorker:
    return KeyedFusionWorker(load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path),
                                            "CITYBRAIN_BOOTSTRAP_SERVERS": "127.0.0.1:9",
                                            "CITYBRAIN_STREAMS_PARTITIONS": "12"}))


def _by_area(worker: KeyedFusionWorker) -> tuple[TP, list[SimpleNamespace]]:
    """The busiest partition of the by-area topic over four simulated hours with a flood, its records in the order a
    backlog's fetches put them: each raw partition's records in turns of 300 (feeds hours apart, as after an outage)."""
    sim = Simulation(SimConfig(seed=5, start=datetime(2026, 12, 4, 4, tzinfo=timezone.utc), hours=4, scale=0.05,
                               incidents=("underpass_flood",)))
    contracts = {c.id: c for c in worker.contracts.values()}
    checks = {k: RecordValidator(c) for k, c in contracts.items()}
    raw: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
    for t, batch in sim.ticks():
        for e in batch:
            if checks[e.contract](e.value):
                continue   # dead-lettered at the edge
            contract = contracts[e.contract]
            payload = json.dumps(e.value, ensure_ascii=False, separators=(",", ":")).encode()
            raw.setdefault((contract.topic, zlib.crc32(payload) % contract.partitions), []).append(
                (int(t.timestamp() * 1000), payload))
    fetches = sorted(((0 if topic.startswith("raw.ref.") else 1, turn, topic, partition, offset)
                      for (topic, partition), records in raw.items() for offset in range(len(records))
                      for turn in [offset // 300]))
    by_area: dict[int, list[SimpleNamespace]] = {}
    for _ref, _turn, topic, partition, offset in fetches:
        ts, payload = raw[(topic, partition)][offset]
        raw_record = SimpleNamespace(topic=topic, partition=partition, offset=offset, timestamp=ts / 1000, headers=[],
                                     value=payload)
        for p, routed in worker.repartitioner.route([raw_record]).items():
            for _key, value, at_ms, headers in routed:
                records = by_area.setdefault(p, [])
                records.append(SimpleNamespace(topic=worker.by_area, partition=p, offset=len(records), value=value,
                                               headers=headers, timestamp=at_ms / 1000))
    busiest = max(by_area, key=lambda p: len(by_area[p]))
    return (worker.by_area, busiest), by_area[busiest]


def _ids(worker: KeyedFusionWorker, produced: list[Any]) -> list[tuple[str, str]]:
    out = []
    for topic, record, trace in produced:
        message = worker.message(topic, record, trace)
        assert isinstance(message, tuple), (topic, message)
        out.append((topic, message[2]["event-id"].decode()))
    return out


def _fuse(worker: KeyedFusionWorker, tp: TP, records: list[SimpleNamespace], wall: Wall) -> list[list[tuple[str, str]]]:
    """The outputs (topic, event id) of each fetch of ``records``, fused as the live loop fuses them."""
    out = []
    for start in range(0, len(records), BATCH):
        wall.now += 3.0
        produced, failed = worker.process_share(tp, records[start:start + BATCH])
        assert not failed
        out.append(_ids(worker, produced))
    return out


class Backlog:
    """What ``Shares.gain`` reads a partition's past from: its records before ``end`` as a consumer fetches them
    (Kafka timestamps in milliseconds), slowly."""

    def __init__(self, tp: TP, records: list[SimpleNamespace], end: int, wall: Wall) -> None:
        self.ends = {tp: end}
        self.records, self.wall = records[:end], wall

    def __iter__(self) -> Iterator[list[SimpleNamespace]]:
        for start in range(0, len(self.records), 400):
            self.wall.now += 6.0
            yield [SimpleNamespace(**{**vars(r), "timestamp": round(r.timestamp * 1000)})
                   for r in self.records[start:start + 400]]


def test_a_share_taken_over_at_any_fetch_sends_what_its_owner_would_have_sent_once_with_the_same_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the warm-up swept once at its end, and the live owner after each fetch, both up to a watermark
    that left out partitions idle for 5 s of wall clock; a takeover then sent again windows and SLA alerts its last
    owner had sent, or never sent ones it had not yet (and a case closed early reopened under a new id)."""
    wall = Wall()
    monkeypatch.setattr(watermark, "time", wall)
    owner = _worker(tmp_path)
    tp, records = _by_area(owner)
    owner.shares.owned[tp] = Share(owner.new_share_pipeline())
    fetches = _fuse(owner, tp, records, wall)
    sent = [i for fetch in fetches for i in fetch]
    assert len(records) > 1500 and {t for t, _i in sent} >= {"city.event.incident.v1", "metrics.city.aggregate.v1"}
    assert len(set(sent)) == len(sent)   # the owner itself sends every id once
    differ = {}
    for fetch in range(2, len(fetches), 3):
        cut = fetch * BATCH
        wall.now += 60.0
        heir = _worker(tmp_path)
        heir.shares.gain(Backlog(tp, records, cut, wall))   # type: ignore[arg-type]
        after = Counter(i for out in _fuse(heir, tp, records[cut:], wall) for i in out)
        expected = Counter(i for out in fetches[fetch:] for i in out)
        if after != expected:
            differ[cut] = {"again": sorted(set(after) & {i for out in fetches[:fetch] for i in out})[:3],
                           "new": sorted(after - expected)[:3], "lost": sorted(expected - after)[:3]}
    assert differ == {}
