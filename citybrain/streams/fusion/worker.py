"""The fusion worker's state and work, apart from faust: the pipeline, the contracts of what it reads and
writes, and what it has swept.

:class:`FusionWorker` is the default worker (one pipeline over the raw topics) and what the worker keyed by
area (:class:`~citybrain.streams.fusion.keyed.KeyedFusionWorker`) shares with it: starting, sweeping, and
turning an output into the (key, value, headers) it is sent as, or into a dead letter.
"""

from __future__ import annotations

import gc
import logging
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import orjson
from faust.types import Message

from citybrain.access.privacy import protector_from_settings
from citybrain.contracts.model import Contract, load_platform
from citybrain.contracts.validate import Rejection, RecordValidator
from citybrain.fusion.pipeline import REFERENCE, Pipeline
from citybrain.contracts.topics import INGEST_DEAD_LETTERS
from citybrain.ingest.producer import dead_letter_message
from citybrain.ingest.readers import RawRecord
from citybrain.kafka.headers import event_id, new_trace_id, read_headers, standard_headers, trace_of
from citybrain.kafka.topics import read_values
from citybrain.settings import Settings
from citybrain.streams.warmup import warm_up

log = logging.getLogger(__name__)

PRODUCER = "streams.fusion"
#: Sweep (SLA checks, closing cases and windows) when stream time moved this far, and on a timer.
SWEEP_EVERY_S = 30.0

Produced = tuple[str, dict[str, Any], bytes]   # (topic, record, trace id)
#: The trace id of what a sweep closes (caused by stream time passing, not by one record).
SWEEP_TRACE = b"streams.fusion.sweep"
#: A record that failed, to be dead-lettered: (topic, record, why, trace id).
Failed = tuple[str, RawRecord, Rejection, bytes]


class FusionWorker:
    """The worker's state and work, apart from faust: the pipeline, the contracts of what it reads
    and writes, and what it has swept."""

    def __init__(self, settings: Settings, contracts: dict[str, Contract] | None = None) -> None:
        self.settings = settings
        self.app_id = settings.streams_app_id.encode()
        self.contracts = {c.topic: c for c in (contracts or load_platform(settings)).values()}
        self.inputs = [t for t, c in self.contracts.items() if c.zone == "raw"]
        self.outputs = [t for t, c in self.contracts.items() if c.zone in ("city", "alert", "dispatch", "metrics")]
        self.validators = {t: RecordValidator(self.contracts[t]) for t in self.outputs}
        self.pipeline = Pipeline(self.contracts, protector_from_settings(settings), auto_sweep=False,
                                 call_false_alarm_rate=settings.call_false_alarm_rate)
        self.ready = False
        self.swept: datetime | None = None

    def reference(self, topic: str, value: dict[str, Any]) -> None:
        """One record of reference data (areas, devices, routing rules, the city) read on start."""
        self.pipeline.reference(topic, value)

    def load_reference(self) -> None:
        """Areas, devices, routing rules and the city before the first reading, so nothing is fused unplaced nor
        judged by another city's clock."""
        for topic in REFERENCE:
            for value in read_values(self.settings, topic, timeout_s=60):
                self.reference(topic, value)

    def start(self) -> None:
        """The reference data, then the state the worker had at its committed offsets."""
        self.load_reference()
        warm = warm_up(self.settings, self.pipeline, self.settings.streams_app_id, self.inputs,
                       self.settings.streams_warmup_h, self.settings.streams_warmup_tickets_h)
        gc.collect()
        gc.freeze()
        if warm.records:
            log.warning("state rebuilt from %d records of %d partitions in %.1f s (stream time %s)", warm.records,
                        warm.partitions, warm.seconds, warm.resumed_at)
        self.pipeline.counts.clear()

    def process(self, messages: list[Message]) -> tuple[list[Produced], list[Failed]]:
        """Feed one fetch through the pipeline: (outputs, records that failed and are to be dead-lettered)."""
        produced: list[Produced] = []
        failed = []
        feed = self.pipeline.feed_message
        for message in messages:
            topic, payload = message.topic, message.value
            headers = read_headers(message.headers)
            trace = trace_of(headers) or new_trace_id().encode()
            try:
                at = datetime.fromtimestamp(message.timestamp, timezone.utc)
                for out_topic, record in feed(topic, headers, payload, at, message.partition):
                    produced.append((out_topic, record, trace))
            except Exception as exc:   # noqa: BLE001 - one record must not stop the city's stream: it is dead-lettered
                log.exception("record %s@%d:%d failed; dead-lettered", topic, message.partition, message.offset)
                failed.append((topic, RawRecord(f"{topic}@{message.partition}:{message.offset}", payload or b""),
                               Rejection("processing-error", "(record)", f"{type(exc).__name__}: {exc}"), trace))
        return produced + self.sweep(), failed

    def counts(self) -> Counter[str]:
        """What the pipeline counted since the last batch's log line."""
        return self.pipeline.counts

    def may_sweep(self) -> bool:
        """Whether the timer may sweep now that no records arrive: once the worker has started."""
        return self.ready

    def sweep(self, force: bool = False) -> list[Produced]:
        """SLA alerts, closed events and closed metric windows up to the low watermark of the event streams."""
        return self._sweep(self.pipeline, self, force)

    @staticmethod
    def _sweep(pipeline: Pipeline, state: Any, force: bool) -> list[Produced]:
        watermark = pipeline.clock.watermark()
        if watermark is None or (not force and state.swept is not None
                                 and (watermark - state.swept).total_seconds() < SWEEP_EVERY_S):
            return []
        state.swept = watermark
        return [(topic, record, SWEEP_TRACE) for topic, record in pipeline.sweep(watermark)]

    def message(self, topic: str, record: dict[str, Any], trace: bytes
                ) -> tuple[bytes, bytes, dict[str, bytes]] | Rejection:
        """(key, value, headers) of one output, or why it breaks its contract."""
        rejection = self.validators[topic](record)
        if rejection is not None:
            return rejection
        contract = self.contracts[topic]
        payload = orjson.dumps(record)
        ident = event_id(contract, record, payload.decode())
        headers = dict(standard_headers(contract, PRODUCER, ident, trace))
        headers["app-id"] = self.app_id
        return contract.key_of(record), payload, headers

    def dead_letter(self, topic: str, record: RawRecord, rejection: Rejection, trace: bytes) -> tuple[bytes, bytes, dict[str, bytes]]:
        envelope, headers = dead_letter_message(topic, record, rejection, PRODUCER, trace.decode(),
                                                self.settings.max_record_bytes, self.contracts.get(INGEST_DEAD_LETTERS))
        return topic.encode(), orjson.dumps(envelope), dict(headers)
