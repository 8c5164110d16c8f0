"""Where fusion keyed by area spends its CPU, measured in-process: no broker, the same records both ways.

`make bench` measures the worker's CPU per record end to end (broker, clients, pipeline); this measures the
part that is CityBrain's own code, one record at a time, under the same simulated city. Simulated raw records
(the simulator's records, encoded as its producer sends them: strict JSON, the six standard headers, the
Kafka timestamp of the simulated send time) are fed

- through the default worker's :meth:`~citybrain.streams.fusion.worker.FusionWorker.process` (one pipeline);
- keyed by area, through :meth:`~citybrain.streams.fusion.keyed.KeyedFusionWorker.route` (the repartition
  hop: the raw record keyed by district, with its ``src-*`` headers) and then, as records of the by-area
  topic, through :meth:`~citybrain.streams.fusion.keyed.KeyedFusionWorker.process_share` of each partition
  (every partition owned, as one worker of the group would).

Each side reports its CPU microseconds per raw record (``time.process_time``, the process's user and system
time; the least of ``--runs`` runs from fresh workers), the repartition hop and the shares on their own, and
with ``--profile`` the top entries of :mod:`cProfile` by own time. What it leaves out is the Kafka clients' and
the broker's work, which `make bench` measures. Run: ``python -m citybrain.devtools.bench_keyed --hours 2 --scale 0.25 --profile``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import logging
import pstats
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from types import SimpleNamespace
from typing import Any

import orjson

from citybrain.contracts.model import load_platform
from citybrain.contracts.validate import RecordValidator
from citybrain.fusion.pipeline import REFERENCE
from citybrain.ingest.strict_json import JsonRefused, dumps_record
from citybrain.kafka.headers import event_id, standard_headers
from citybrain.settings import Settings, load_settings
from citybrain.sim.engine import Simulation
from citybrain.sim.model import SimConfig
from citybrain.streams.fusion.keyed import KeyedFusionWorker
from citybrain.streams.fusion.worker import FusionWorker
from citybrain.streams.shares import Share

__all__ = ["Measured", "bench_keyed", "by_area_messages", "main", "simulated_messages"]

log = logging.getLogger(__name__)

#: Partitions of each raw topic, as `citybrain topics apply` makes them (a record's partition follows its key).
RAW_PARTITIONS = 3
#: Records per fetch, near what a busy worker's fetch holds.
FETCH = 500


def simulated_messages(hours: float, scale: float, seed: int = 7) -> list[SimpleNamespace]:
    """The raw records of ``hours`` of the simulated city at ``scale`` as a worker consumes them (topic,
    partition, offset, Kafka timestamp in seconds, headers, value bytes); records its producer would refuse are
    left out (they go to the dead-letter topic, never to fusion)."""
    contracts = {c.id: c for c in load_platform(load_settings()).values()}
    checks = {i: RecordValidator(c) for i, c in contracts.items()}
    sim = Simulation(SimConfig(seed=seed, hours=hours, scale=scale))
    offsets: dict[tuple[str, int], int] = {}
    out: list[SimpleNamespace] = []
    trace = "bench-keyed"
    refused = 0
    for t, emissions in sim.ticks():
        for e in emissions:
            contract = contracts[e.contract]
            try:
                payload = dumps_record(e.value)
            except JsonRefused:
                payload = b""
            if not payload or checks[e.contract](e.value) is not None:
                refused += 1
                continue
            key = contract.key_of(e.value)
            partition = zlib.crc32(key) % RAW_PARTITIONS if key else 0
            offset = offsets[(contract.topic, partition)] = offsets.get((contract.topic, partition), -1) + 1
            headers = standard_headers(contract, e.producer, event_id(contract, e.value, payload.decode()), trace)
            out.append(SimpleNamespace(topic=contract.topic, partition=partition, offset=offset,
                                       timestamp=t.timestamp(), headers=headers, value=payload))
    if refused:
        log.info("%d simulated record(s) left out: the producer dead-letters them (contract, strict JSON)", refused)
    return out


def by_area_messages(topic: str, routed: dict[int, list[Any]], offsets: dict[int, int]) -> list[SimpleNamespace]:
    """The repartitioned records as the by-area topic's consumer hands them over (``offsets``: the next offset
    of each partition, moved on)."""
    out = []
    for partition, records in routed.items():
        for _key, value, ts, headers in records:
            offset = offsets[partition] = offsets.get(partition, -1) + 1
            out.append(SimpleNamespace(topic=topic, partition=partition, offset=offset, timestamp=ts / 1000,
                                       headers=headers, value=value))
    return out


@dataclass
class Measured:
    """CPU microseconds per raw record of each side (the least of the runs: the machine's other work only ever
    adds), and the profile's top entries when asked."""

    records: int
    default_us: float
    route_us: float
    shares_us: float
    profiles: dict[str, str]

    @property
    def keyed_us(self) -> float:
        return self.route_us + self.shares_us

    def lines(self) -> list[str]:
        return [f"{self.records} raw records",
                f"default worker (process):               {self.default_us:6.1f} µs/record",
                f"keyed by area (route + process_share):  {self.keyed_us:6.1f} µs/record "
                f"({self.default_us / self.keyed_us:.2f} of the default worker's records per CPU second)",
                f"  the repartition hop (route):          {self.route_us:6.1f} µs/record",
                f"  the shares (process_share):           {self.shares_us:6.1f} µs/record"]


def _fetches(messages: list[SimpleNamespace]) -> list[list[SimpleNamespace]]:
    return [messages[i:i + FETCH] for i in range(0, len(messages), FETCH)]


def _timed(work: Callable[[], None], profile: cProfile.Profile | None) -> float:
    """CPU seconds of ``work``, what was built before it out of the collector's sight (as the worker's
    ``gc.freeze`` after its start)."""
    gc.collect()
    gc.freeze()
    started = time.process_time()
    if profile is None:
        work()
    else:
        profile.runcall(work)
    return time.process_time() - started


def _top(profile: cProfile.Profile, n: int) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(n)
    return out.getvalue()


def _settings(state: Path, partitions: int) -> Settings:
    return load_settings({"CITYBRAIN_STATE_DIR": str(state), "CITYBRAIN_STREAMS_PARTITIONS": str(partitions)})


def bench_keyed(messages: list[SimpleNamespace], partitions: int = 4, profile: bool = False, top: int = 25,
                runs: int = 3) -> Measured:
    """Both workers over ``messages``, ``runs`` times from fresh workers (one run when profiling); the least CPU
    per record of each side."""
    measured = [_run(messages, partitions, profile, top) for _ in range(1 if profile else runs)]
    return Measured(measured[0].records, min(m.default_us for m in measured), min(m.route_us for m in measured),
                    min(m.shares_us for m in measured), measured[0].profiles)


def _run(messages: list[SimpleNamespace], partitions: int, profile: bool, top: int) -> Measured:
    """Both workers over ``messages`` (reference records fed first to each, as their start reads them), fetch by
    fetch; the CPU each spent, per record that was not reference data."""
    reference = [m for m in messages if m.topic in REFERENCE]
    live = [m for m in messages if m.topic not in REFERENCE]
    profiles: dict[str, str] = {}
    with TemporaryDirectory() as state:
        default = FusionWorker(_settings(Path(state), 0))
        default.process(reference)   # type: ignore[arg-type]
        p = cProfile.Profile() if profile else None

        def fuse_default() -> None:
            for fetch in _fetches(live):
                default.process(fetch)   # type: ignore[arg-type]

        default_s = _timed(fuse_default, p)
        if p is not None:
            profiles["default"] = _top(p, top)
        del default

        keyed = KeyedFusionWorker(_settings(Path(state), partitions))
        for m in reference:
            keyed.reference(m.topic, orjson.loads(m.value))
        for partition in range(partitions):
            keyed.shares.owned[(keyed.by_area, partition)] = Share(keyed.new_share_pipeline())
        fetches = _fetches([m for m in live if m.topic in keyed.keyed_inputs])
        tickets = [m for m in live if m.topic not in keyed.keyed_inputs]
        routed: list[dict[int, list[Any]]] = []
        p_route = cProfile.Profile() if profile else None

        def route() -> None:
            for fetch in fetches:
                routed.append(keyed.route(fetch))   # type: ignore[arg-type]

        route_s = _timed(route, p_route)
        offsets: dict[int, int] = {}
        by_area = [by_area_messages(keyed.by_area, r, offsets) for r in routed]
        p_share = cProfile.Profile() if profile else None

        def fuse_shares() -> None:
            for fetch in [*by_area, *_fetches(tickets)]:
                for tp, share_messages in keyed.by_share(fetch).items():   # type: ignore[arg-type]
                    if tp in keyed.shares.owned:
                        keyed.process_share(tp, share_messages)   # type: ignore[arg-type]

        shares_s = _timed(fuse_shares, p_share)
        if p_route is not None and p_share is not None:
            profiles["route"] = _top(p_route, top)
            profiles["shares"] = _top(p_share, top)
    gc.unfreeze()
    n = len(live)
    return Measured(n, default_s / n * 1e6, route_s / n * 1e6, shares_s / n * 1e6, profiles)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours (default 2)")
    parser.add_argument("--scale", type=float, default=0.25, help="share of the city's devices (default 0.25)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the by-area topic (default 4)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries of each side")
    parser.add_argument("--top", type=int, default=25, help="entries of each profile (default 25)")
    parser.add_argument("--runs", type=int, default=3, help="runs from fresh workers, the least kept (default 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    messages = simulated_messages(args.hours, args.scale)
    measured = bench_keyed(messages, args.partitions, args.profile, args.top, args.runs)
    for name, text in measured.profiles.items():
        print(f"== {name}\n{text}")
    print("\n".join(measured.lines()))


if __name__ == "__main__":
    main()
