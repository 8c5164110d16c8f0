"""Fusion keyed by area: the raw feeds repartitioned by district so several workers share the city.

Two stages run in every fusion worker of one consumer group (``CITYBRAIN_STREAMS_PARTITIONS`` = N > 0):

1. **Repartition** (stateless): each raw record the group hands this worker is keyed by its district
   (:mod:`citybrain.fusion.keys`: a reading by its device's registered place, a ticket, a police report or an
   inspection by where it reports) and sent to partition ``partition_of(district, N)`` of the internal topic
   ``<app id>-by-area-repartition``, with its own headers, its Kafka timestamp and where it came from
   (``src-topic``, ``src-partition``, ``src-offset``). Reference records (areas, devices, routing rules) go to
   every partition: each share needs all of them, and every worker's keying stays current from them.
   The ticket lifecycle is not repartitioned: SLA watch needs only a ticket's own events, and its raw topic is
   keyed by ticket already.
2. **Fuse**: one :class:`~citybrain.fusion.pipeline.Pipeline` per partition this worker owns (of the by-area
   topic and of the ticket lifecycle). A partition gained in a rebalance is warmed up from its own recent past
   (the records before the first offset it was given; outputs discarded) before its first record; a partition
   lost is dropped with its state. A share's outputs are a function of its partition's records alone: it sweeps
   (SLA alerts, quiet cases closed, metric windows closed) whenever its records carry its stream time across a
   point of a fixed grid (:data:`SWEEP_EVERY`), never on a wall-clock timer, and its stream time does not depend
   on the wall clock either (:data:`QUIET_AFTER`). The warm-up feeds the same records the same way
   (:meth:`Share.feed`), so a share taken over reaches the state its last owner had, sweeps included, and goes on
   with the same outputs and ids, none of them sent again. Every correlation fusion makes stays in one district,
   so each share detects what the whole city's pipeline detects there. The trending-hotspot detector's city-wide
   baseline (:class:`~citybrain.fusion.fuse.CityCalls`) is shared by the shares of one worker, and across workers through
   the group's small aggregate topic ``<app id>-city-calls``: each worker publishes the calls its shares read
   (category, call id, time) and learns every other worker's, keyed by call so nothing counts twice.

Why district and not street: a flood correlates a street's gauges with its district's weather station, and the
metrics are per district; keyed by street, both would need a second aggregation stage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

from citybrain.contracts.model import Contract
from citybrain.fusion.keys import AreaKeys, partition_of
from citybrain.fusion.pipeline import REFERENCE, Pipeline
from citybrain.kafka.headers import read_headers
from citybrain.kafka.replay import Backlog

try:
    from orjson import loads as _loads
except ImportError:   # pragma: no cover - the stream workers' environment has orjson
    from json import loads as _loads

log = logging.getLogger(__name__)

#: A share sweeps when its stream time enters a new span of this length (a grid of stream time, the same for the live
#: owner and for a warm-up, whatever the batches).
SWEEP_EVERY = timedelta(seconds=30)
#: A source partition whose latest record in a share is this far behind the share's newest record stops holding the
#: share's stream time back (a feed with nothing for this district lately): judged by stream time, so a warm-up
#: reaches the watermarks the live owner reached.
QUIET_AFTER = timedelta(hours=1)

TP = tuple[str, int]
Output = tuple[str, dict[str, Any]]
#: (key, value, timestamp ms, headers) of one record for the by-area topic.
Routed = tuple[bytes | None, bytes, int, list[tuple[str, bytes]]]


def by_area_topic(app_id: str) -> str:
    """The internal topic of a fusion group's repartitioned feeds (Kafka Streams' ``<app>-...-repartition``)."""
    return f"{app_id}-by-area-repartition"


def city_calls_topic(app_id: str) -> str:
    """The internal topic on which a fusion group's workers tell each other the calls they read, the city-wide
    baseline of the trending-hotspot detector (one partition: every worker reads all of it)."""
    return f"{app_id}-city-calls"


def share_transactional_id(app_id: str, tp: TP) -> str:
    """The transactional id of the producer that commits one share (a partition of the by-area topic or of the
    ticket lifecycle): the same on whichever worker owns it, so its next owner fences the last."""
    return f"{app_id}.share.{tp[0]}.{tp[1]}"


def source_of(topic: str, partition: int, offset: int, headers: dict[str, bytes]) -> tuple[str, int, int]:
    """(raw topic, partition, offset) a record came from: its ``src-*`` headers on the by-area topic."""
    src = headers.get("src-topic")
    if src is None:
        return topic, partition, offset
    return src.decode(), int(headers["src-partition"]), int(headers["src-offset"])


def named(tps: Iterable[TP]) -> str:
    """Partitions for a log line, by topic: ``topic[0,3,5]``."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(tps):
        by_topic.setdefault(topic, []).append(partition)
    return ", ".join(f"{t}[{','.join(map(str, ps))}]" for t, ps in by_topic.items())


class Repartitioner:
    """Keys raw records by district onto the partitions of the by-area topic."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.keys = AreaKeys()
        #: The ``src-topic`` and ``src-partition`` headers of each raw partition, made once: every record of it
        #: carries the same two.
        self._sources: dict[TP, tuple[tuple[str, bytes], tuple[str, bytes]]] = {}
        #: (partition, key bytes) of each district key seen (the city's districts: a few dozen).
        self._targets: dict[str, tuple[int, bytes]] = {}

    def reference(self, topic: str, value: dict[str, Any]) -> None:
        self.keys.reference(topic, value)

    def route(self, messages: Iterable[Any]) -> dict[int, list[Routed]]:
        """The records of one fetch of raw records (topic, partition, offset, Kafka timestamp in seconds, headers,
        value) by partition of the by-area topic: every partition for reference data, else its district's. A record
        that cannot be read goes to the first partition, whose pipeline dead-letters it.

        Each record moves as it came (its value's bytes, its headers) with its Kafka timestamp and where it came
        from (``src-topic``, ``src-partition``, ``src-offset`` headers after its own). This runs once per raw record
        of the city, so it is written for that: the value is decoded only for its key and never encoded again, the
        source headers of a partition and the target of a district are made once, and one fetch is routed in one
        call."""
        routed: dict[int, list[Routed]] = {}
        sources, targets, keys, n = self._sources, self._targets, self.keys, self.partitions
        every = range(n)
        for m in messages:
            topic, partition, payload = m.topic, m.partition, m.value or b""
            source = sources.get((topic, partition))
            if source is None:
                source = sources[(topic, partition)] = (("src-topic", topic.encode()),
                                                        ("src-partition", b"%d" % partition))
            headers = [*(m.headers or ()), *source, ("src-offset", b"%d" % m.offset)]
            timestamp_ms = int(m.timestamp * 1000)
            try:
                value = _loads(payload)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                routed.setdefault(partition_of(None, n), []).append((None, payload, timestamp_ms, headers))
                continue
            if topic in REFERENCE:
                keys.reference(topic, value)
                record: Routed = (None, payload, timestamp_ms, headers)
                for p in every:
                    routed.setdefault(p, []).append(record)
                continue
            try:
                key = keys.key(topic, value)
            except Exception:   # noqa: BLE001 - the pipeline dead-letters what it cannot read
                key = None
            if key:
                target = targets.get(key)
                if target is None:
                    target = targets[key] = (partition_of(key, n), key.encode())
                p, key_bytes = target
            else:
                p, key_bytes = partition_of(key, n), None
            routed.setdefault(p, []).append((key_bytes, payload, timestamp_ms, headers))
        return routed


@dataclass
class Share:
    """The fusion state of one partition a worker owns: its pipeline (made with ``quiet_after=QUIET_AFTER``) and
    the stream time it last swept at."""

    pipeline: Pipeline
    swept: datetime | None = None

    def feed(self, topic: str, headers: Mapping[str, bytes], payload: bytes, at: datetime, partition: int
             ) -> tuple[list[Output], list[Output]]:
        """One record of the share's partition (``topic``, ``partition``: where it came from): (what it caused, what
        the sweep it made due closed). Raises as ``Pipeline.feed_message`` does; the next record sweeps then."""
        outputs = self.pipeline.feed_message(topic, headers, payload, at, partition)
        return outputs, self.sweep_due(at)

    def sweep_due(self, at: datetime) -> list[Output]:
        """Sweep up to the watermark when it entered a new span of ``SWEEP_EVERY`` since the last sweep, asked after
        a record of time ``at``. A record in a span already swept is not asked about: a watermark it moves stays at
        or below its time, but where a partition's time went back (then the next record in a later span sweeps);
        either way the sweeps follow from the records alone."""
        if self.swept is not None and _span(at) <= _span(self.swept):
            return []
        watermark = self.pipeline.clock.watermark()
        if watermark is None or (self.swept is not None and _span(watermark) <= _span(self.swept)):
            return []
        self.swept = watermark
        return self.pipeline.sweep(watermark)


def _span(at: datetime) -> int:
    return int(at.timestamp() // SWEEP_EVERY.total_seconds())


class Shares:
    """The pipelines of the partitions one worker owns: created and warmed up when gained, dropped when lost."""

    def __init__(self, contracts: dict[str, Contract], new_pipeline: Callable[[], Pipeline]) -> None:
        self.contracts = contracts
        self.new_pipeline = new_pipeline
        self.owned: dict[TP, Share] = {}

    def missing(self, messages: Iterable[Any]) -> dict[TP, int]:
        """Partitions in ``messages`` without state yet, with the first offset each was given."""
        found: dict[TP, int] = {}
        for m in messages:
            tp = (m.topic, m.partition)
            if tp not in self.owned and tp not in found:
                found[tp] = m.offset
        return found

    def gain(self, backlog: Backlog) -> int:
        """Create the pipelines of ``backlog.ends`` and feed each its partition's recent past as the live owner fed
        it, sweeps included (:meth:`Share.feed`; outputs discarded, the previous owner sent them): the state the
        previous owner had at that offset. Returns the records re-read."""
        assert backlog.ends is not None
        started = time.perf_counter()
        for tp in backlog.ends:
            self.owned[tp] = Share(self.new_pipeline())
        records = 0
        for batch in backlog:
            for r in batch:
                share = self.owned.get((r.topic, r.partition))
                if share is None:
                    continue   # lost again while it was being rebuilt
                headers = read_headers(r.headers)
                topic, partition, offset = source_of(r.topic, r.partition, r.offset, headers)
                try:
                    share.feed(topic, headers, r.value, datetime.fromtimestamp(r.timestamp / 1000, timezone.utc),
                               partition)
                except Exception:   # noqa: BLE001 - the live pass dead-lettered it; the warm-up only skips it
                    log.debug("warm-up skipped %s@%d:%d", topic, partition, offset)
                records += 1
        for tp in backlog.ends:
            if tp in self.owned:
                self.owned[tp].pipeline.counts.clear()
        log.warning("gained %s: state rebuilt from %d records in %.1f s", named(backlog.ends), records,
                    time.perf_counter() - started)
        return records

    def keep_only(self, assigned: Iterable[TP]) -> list[TP]:
        """Drop the state of partitions no longer assigned (another worker owns them now)."""
        keep = set(assigned)
        lost = [tp for tp in self.owned if tp not in keep]
        for tp in lost:
            del self.owned[tp]
        if lost:
            log.warning("lost %s: state dropped", named(lost))
        return lost
