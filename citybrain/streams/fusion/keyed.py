"""The fusion worker keyed by area (``CITYBRAIN_STREAMS_PARTITIONS`` = N > 0, see
:mod:`citybrain.streams.shares`): the raw records it repartitions by district, one pipeline per by-area
partition it owns, and the city-wide calls baseline it shares with the group's other workers.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import orjson
from faust.types import Message

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import Rejection
from citybrain.fusion.fuse import CityCalls, HotspotDetector
from citybrain.fusion.pipeline import REFERENCE, Pipeline
from citybrain.ingest.readers import RawRecord
from citybrain.kafka.headers import new_trace_id, read_headers, trace_of
from citybrain.kafka.replay import Backlog
from citybrain.settings import Settings
from citybrain.streams.fusion.worker import SWEEP_TRACE, Failed, FusionWorker, Produced
from citybrain.contracts.topics import TICKET_EVENTS
from citybrain.streams.shares import (QUIET_AFTER, TP, Repartitioner, Routed, Shares, by_area_topic, city_calls_topic,
                                      source_of)

log = logging.getLogger(__name__)


class KeyedFusionWorker(FusionWorker):
    """The fusion worker of a group keyed by area: the raw topics it repartitions, the topics it fuses (by area,
    and the ticket lifecycle), one pipeline per owned partition, and the reference data a newly gained partition
    starts from."""

    def __init__(self, settings: Settings, contracts: dict[str, Contract] | None = None) -> None:
        super().__init__(settings, contracts)
        self.partitions = settings.streams_partitions
        self.by_area = by_area_topic(settings.streams_app_id)
        self.repartitioner = Repartitioner(self.partitions)
        self.keyed_inputs = [t for t in self.inputs if t != TICKET_EVENTS]
        #: The city-wide calls baseline of this worker's shares, published to and learnt from the group's other
        #: workers on ``city_topic`` (records from the others wait in ``heard`` for the event loop's next batch).
        self.city_calls = CityCalls(outbox=True)
        self.city_topic = city_calls_topic(settings.streams_app_id)
        self.member = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}".encode()
        self.heard: list[tuple[str, str, datetime]] = []
        self.learnt = 0
        self.references: dict[tuple[str, bytes], dict[str, Any]] = {}
        self.shares = Shares(self.contracts, self.new_share_pipeline)

    def new_share_pipeline(self) -> Pipeline:
        """The pipeline of a partition just gained: this worker's city-calls baseline, all the reference data, and
        stream time judged by the records alone (``QUIET_AFTER``), so that its warm-up reproduces its sweeps."""
        pipeline = Pipeline(self.contracts, self.pipeline.dispatcher.protector, auto_sweep=False,
                            city_calls=self.city_calls, call_false_alarm_rate=self.settings.call_false_alarm_rate,
                            quiet_after=QUIET_AFTER)
        for (topic, _key), value in self.references.items():
            pipeline.reference(topic, value)
        return pipeline

    def remember_reference(self, topic: str, value: dict[str, Any]) -> None:
        """Reference data for the repartitioner's keys and for the shares gained later."""
        self.repartitioner.reference(topic, value)
        self.references[(topic, self.contracts[topic].key_of(value))] = value

    def reference(self, topic: str, value: dict[str, Any]) -> None:
        super().reference(topic, value)
        self.remember_reference(topic, value)

    def start(self) -> None:
        """The reference data only: the state of each partition is rebuilt as it is gained (:meth:`gain`)."""
        self.load_reference()
        gc.collect()
        gc.freeze()

    def route(self, messages: list[Message]) -> dict[int, list[Routed]]:
        """The by-area partition of each raw record (reference records to every partition)."""
        return self.repartitioner.route(messages)

    def gain(self, ends: dict[tuple[str, int], int]) -> None:
        """State for partitions just gained, from their recent past up to the offsets committed with the previous
        owner's last transaction: what the previous owner had there, what its sweeps sent included, so nothing it
        sent is sent again."""
        hours = self.settings.streams_warmup_h
        backlog = Backlog(self.settings, self.settings.streams_app_id, set(t for t, _p in ends),
                          lambda t: self.settings.streams_warmup_tickets_h if t == TICKET_EVENTS else hours, ends=ends)
        self.shares.gain(backlog)

    def by_share(self, messages: list[Message]) -> dict[TP, list[Message]]:
        """A fetch of the by-area topic and the ticket lifecycle split by partition: each share's records are fused,
        sent and committed in that share's own transaction."""
        split: dict[TP, list[Message]] = {}
        for message in messages:
            split.setdefault((message.topic, message.partition), []).append(message)
        return split

    def process_share(self, tp: TP, messages: list[Message]) -> tuple[list[Produced], list[Failed]]:
        """Feed the records of one owned partition to its share (:meth:`gain` first for partitions without state),
        which sweeps as they move its stream time: (outputs, records that failed and are to be dead-lettered)."""
        self.learn_heard()
        share = self.shares.owned.get(tp)
        if share is None:   # revoked during this batch: its new owner reads it from the committed offset
            log.info("%s[%d] revoked during a batch; left to its new owner", *tp)
            return [], []
        produced: list[Produced] = []
        failed = []
        for message in messages:
            headers = read_headers(message.headers)
            topic, partition, offset = source_of(message.topic, message.partition, message.offset, headers)
            trace = trace_of(headers) or new_trace_id().encode()
            try:
                at = datetime.fromtimestamp(message.timestamp, timezone.utc)
                outputs, swept = share.feed(topic, headers, message.value, at, partition)
                if topic in REFERENCE:
                    self.remember_reference(topic, orjson.loads(message.value))
                produced += [(out_topic, record, trace) for out_topic, record in outputs]
                produced += [(out_topic, record, SWEEP_TRACE) for out_topic, record in swept]
            except Exception as exc:   # noqa: BLE001 - one record must not stop the city's stream: it is dead-lettered
                log.exception("record %s@%d:%d failed; dead-lettered", topic, partition, offset)
                failed.append((topic, RawRecord(f"{topic}@{partition}:{offset}", message.value or b""),
                               Rejection("processing-error", "(record)", f"{type(exc).__name__}: {exc}"), trace))
        return produced, failed

    def hear(self, records: list[Any]) -> None:
        """Records of the city-calls topic (from the worker's reading task): the other workers' calls, kept for
        the next batch."""
        for r in records:
            if dict(r.headers or ()).get("member") != self.member:
                call = orjson.loads(r.value)
                self.heard.append((call["category"], call["id"], datetime.fromtimestamp(call["at"], timezone.utc)))

    def learn_heard(self) -> None:
        """The other workers' calls into the city baseline (on the event loop, between batches: never while a
        share is fed)."""
        heard, self.heard = self.heard, []
        for category, ident, at in heard:
            self.city_calls.learn(category, ident, at, HotspotDetector.WINDOW + HotspotDetector.LATE)
        if heard:
            self.learnt += len(heard)
            log.info("learnt %d call(s) of other workers for the city baseline (%d in all)", len(heard), self.learnt)

    def city_call_messages(self) -> list[tuple[bytes, bytes, int, list[tuple[str, bytes]]]]:
        """(key, value, timestamp ms, headers) of the calls this worker's shares read since the last batch."""
        return [(category.encode(), orjson.dumps({"category": category, "id": ident, "at": at.timestamp()}),
                 int(time.time() * 1000), [("member", self.member)])
                for category, ident, at in self.city_calls.drain()]

    def counts(self) -> Counter[str]:
        """What the owned partitions' pipelines counted since the last batch's log line (their counts reset)."""
        total: Counter[str] = Counter()
        for share in self.shares.owned.values():
            total.update(share.pipeline.counts)
            share.pipeline.counts.clear()
        return total
