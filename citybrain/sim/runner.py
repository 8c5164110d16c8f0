"""Run a simulation against the broker: pace it, produce it, read as a department, write the ground truth.

The records go through the validated producer like any feed's, so the simulator's faulty
readings end in the dead-letter topic with their reasons, and the counts add up.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

from citybrain.contracts.topics import AIR_QUALITY, REF_POIS, SERVICE_REQUESTS, contract_id
from citybrain.contracts.model import Contract
from citybrain.ingest.producer import ProduceSummary, ValidatedProducer
from citybrain.ingest.readers import RawRecord
from citybrain.settings import Settings
from citybrain.times import iso
from citybrain.sim.engine import Simulation
from citybrain.sim.incidents import ConsumerSurge

log = logging.getLogger(__name__)


@dataclass
class SimReport:
    run_id: str
    out_dir: Path
    ground_truth: dict[str, Any]
    summaries: dict[str, ProduceSummary]
    elapsed_s: float
    records: int = 0

    @property
    def balanced(self) -> bool:
        return all(s.balanced for s in self.summaries.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "out_dir": str(self.out_dir),
            "ground_truth": str(self.out_dir / "ground_truth.json"),
            "start": self.ground_truth["start"], "end": self.ground_truth["end"],
            "elapsed_s": round(self.elapsed_s, 2), "records": self.records,
            "records_per_s": round(self.records / self.elapsed_s) if self.elapsed_s else None,
            "topics": {t: {"read": s.read, "accepted": s.accepted, "dead_lettered": s.dead_lettered,
                           "by_rule": dict(s.by_rule)} for t, s in sorted(self.summaries.items())},
            "incidents": [{k: i[k] for k in ("incident_id", "kind", "start", "end") if k in i} | (
                {"street": i["street_name"]} if "street_name" in i else {}) for i in self.ground_truth["incidents"]],
            "balanced": self.balanced,
        }


@dataclass
class Pacing:
    """How fast simulated time runs: ``speed`` simulated seconds per second, at most ``rate`` records/s."""

    speed: float = 0.0
    rate: float = 0.0
    _wall0: float = field(default=0.0, init=False)
    _sent: int = field(default=0, init=False)

    def start(self) -> None:
        self._wall0 = time.monotonic()

    def before_tick(self, elapsed_sim_s: float) -> None:
        if self.speed > 0:
            wait = self._wall0 + elapsed_sim_s / self.speed - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def sent(self, n: int) -> None:
        self._sent += n
        if self.rate > 0:
            wait = self._wall0 + self._sent / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)


class DepartmentReader:
    """A department's dashboard reading its topics: a little every simulated hour, then (the
    injected consumer surge) everything from the beginning of five topics."""

    SURGE_CAP = 20_000   # about 100 times a normal hour's read

    def __init__(self, settings: Settings, incident: ConsumerSurge) -> None:
        from kafka import TopicPartition

        from citybrain.kafka import clients

        self.incident = incident
        self._tp = TopicPartition
        self.consumer = clients.consumer(settings, group_id=incident.GROUP, client_id=incident.GROUP,
                                         enable_auto_commit=False, auto_offset_reset="latest", fetch_max_wait_ms=50)
        self.next_read: datetime | None = None
        self.surged = False

    def _partitions(self, topics: list[str]) -> list[Any]:
        return [self._tp(t, p) for t in topics for p in sorted(self.consumer.partitions_for_topic(t) or ())]

    def maybe_read(self, t: datetime) -> None:
        inc = self.incident
        if self.next_read is None:
            self.next_read = t
        if not self.surged and inc.start <= t:
            self.surged = True
            self._read(t, inc.surge_topics, from_beginning=True, mode="surge")
        elif t >= self.next_read:
            self._read(t, inc.normal_topics, from_beginning=False, mode="normal")
        while self.next_read <= t:
            self.next_read += timedelta(hours=1)

    def _read(self, t: datetime, topics: list[str], from_beginning: bool, mode: str) -> None:
        partitions = self._partitions(topics)
        if set(partitions) != self.consumer.assignment():
            self.consumer.assign(partitions)
        if from_beginning:
            self.consumer.seek_to_beginning(*partitions)
        end = self.consumer.end_offsets(partitions)
        count, started = 0, time.monotonic()
        # A surge reads far more than usual, but is capped so a long-lived broker does not stall the run.
        while (any(self.consumer.position(p) < end[p] for p in partitions) and count < self.SURGE_CAP
               and time.monotonic() - started < 20):
            for batch in self.consumer.poll(timeout_ms=100, max_records=5000).values():
                count += len(batch)
        if from_beginning:   # the dashboard then goes back to following the live end
            for p in partitions:
                self.consumer.seek(p, end[p])
        self.consumer.commit()
        self.incident.executed = True
        self.incident.reads.append({"sim_time": iso(t), "wall_time": iso(datetime.now().astimezone()),
                                    "mode": mode, "topics": topics, "records": count})
        log.info("department reader (%s) read %d records at %s", mode, count, iso(t))

    def close(self) -> None:
        self.consumer.close()


def run_simulation(
    settings: Settings, contracts: dict[str, Contract], sim: Simulation, pacing: Pacing, out_dir: Path | None = None,
    progress: Callable[[datetime, int], None] | None = None, wall_clock: bool = False,
) -> SimReport:
    """Produce the whole simulation; write ``ground_truth.json`` and ``summary.json`` to ``out_dir``.

    ``wall_clock``: stamp records with the time they are sent instead of simulated time (benchmarks).
    """
    run_id = uuid.uuid4().hex
    out_dir = out_dir or settings.sim_dir / run_id[:12]
    out_dir.mkdir(parents=True, exist_ok=True)
    by_id = {c.id: c for c in contracts.values()}
    missing = sorted({e for e in (contract_id(AIR_QUALITY), contract_id(SERVICE_REQUESTS), contract_id(REF_POIS))
                      if e not in by_id})
    if missing:
        raise LookupError(f"contracts {', '.join(missing)} are missing from {settings.schemas_dir}; "
                          "the simulator produces every raw feed. Fix: restore them from git.")
    surge = sim.incident("consumer_surge")
    reader = DepartmentReader(settings, surge) if isinstance(surge, ConsumerSurge) else None
    records = 0

    def items() -> Iterator[tuple[Contract, RawRecord]]:
        nonlocal records
        pacing.start()
        for t, emissions in sim.ticks():
            pacing.before_tick((t - sim.start).total_seconds())
            for e in emissions:
                # The Kafka timestamp is the simulated send time, so stream time follows the simulated city.
                yield by_id[e.contract], RawRecord(f"sim:{e.contract}", b"", value=e.value, producer=e.producer,
                                                   timestamp_ms=None if wall_clock else int(t.timestamp() * 1000))
            records += len(emissions)
            pacing.sent(len(emissions))
            if reader:
                reader.maybe_read(t)
            if progress:
                progress(t, records)

    started = time.perf_counter()
    try:
        with ValidatedProducer(settings, producer_id="citybrain-simulator") as producer:
            summaries = producer.produce_many(items(), trace_id=run_id)
    finally:
        if reader:
            reader.close()
    elapsed = time.perf_counter() - started
    produced = {t: {"read": s.read, "accepted": s.accepted, "dead_lettered": s.dead_lettered,
                    "by_rule": dict(s.by_rule)} for t, s in sorted(summaries.items())}
    truth = sim.ground_truth(run_id, produced)
    (out_dir / "ground_truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=2))
    report = SimReport(run_id, out_dir, truth, summaries, elapsed, records)
    (out_dir / "summary.json").write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    latest = settings.sim_dir / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    for name in ("ground_truth.json", "summary.json"):
        (latest / name).write_bytes((out_dir / name).read_bytes())
    return report
