"""The fusion worker (faust-streaming): raw feeds in; city events, early warnings, SLA alerts
and work orders out.

Wiring only: records arrive in batches (``take_events``), the shared package's ``Pipeline``
does the work (enrich, dedupe, detect, fuse, dispatch), and each output is validated
against its contract before it is sent. Run it with ``citybrain streams fusion`` (or
``python streams/fusion_worker.py worker``). Stream time is the records' Kafka timestamp,
which the simulator sets to simulated time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faust

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the shared package, when run from a checkout

from citybrain.contracts.model import load_all  # noqa: E402
from citybrain.contracts.validate import RecordValidator  # noqa: E402
from citybrain.fusion.pipeline import REFERENCE, Pipeline  # noqa: E402
from citybrain.ingest.producer import DLQ_TOPIC, dead_letter_message, event_id, new_trace_id  # noqa: E402
from citybrain.ingest.readers import RawRecord  # noqa: E402
from citybrain.settings import get_settings  # noqa: E402

log = logging.getLogger("citybrain.streams.fusion")

settings = get_settings()
CONTRACTS = {c.topic: c for c in load_all(settings.schemas_dir).values()}
INPUTS = [t for t, c in CONTRACTS.items() if c.zone == "raw"]
OUTPUTS = [t for t, c in CONTRACTS.items() if c.zone in ("city", "alert", "dispatch", "metrics")]
PRODUCER = "streams.fusion"
BATCH = settings.streams_batch

(settings.state_dir / "streams").mkdir(parents=True, exist_ok=True)
app = faust.App(
    settings.streams_app_id,
    broker=f"kafka://{settings.bootstrap}",
    store="memory://",
    datadir=str(settings.state_dir / "streams" / settings.streams_app_id),
    topic_replication_factor=settings.replication_factor,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
)
raw = app.topic(*INPUTS, value_serializer="raw")
outputs = {t: app.topic(t, value_serializer="raw") for t in OUTPUTS}
dead_letters = app.topic(DLQ_TOPIC, value_serializer="raw")
validators = {t: RecordValidator(CONTRACTS[t]) for t in OUTPUTS}
pipeline = Pipeline(auto_sweep=False)
#: Latest record timestamp per input partition: the low watermark is the stream time all inputs reached.
latest: dict[tuple[str, int], tuple[datetime, float]] = {}
#: A partition that delivered nothing for this long (wall clock) is drained or quiet: it stops holding time back.
IDLE_S = 5.0
#: Event streams move stream time; compacted registers (reference data, the elderly-care register) do not.
CLOCK_TOPICS = {t for t in INPUTS if CONTRACTS[t].cleanup_policy == "delete"}


def _load_reference() -> None:
    """Areas, devices and routing rules before the first reading, so nothing is fused unplaced."""
    from citybrain.topics import read_topic

    for topic in REFERENCE:
        for r in read_topic(settings, topic, timeout_s=60):
            pipeline.reference(topic, json.loads(r.value))


def _event_id(topic: str, headers: dict[str, bytes], payload: bytes) -> str:
    found = headers.get("event-id")
    if found:
        return found.decode()
    text = payload.decode("utf-8", "replace")
    return event_id(CONTRACTS[topic], json.loads(text), text)


async def _send(topic: str, record: dict[str, Any], trace: bytes) -> None:
    contract = CONTRACTS[topic]
    payload = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
    rejection = validators[topic](record)
    if rejection is None:
        headers = {"contract-id": contract.id.encode(), "contract-version": contract.version.encode(),
                   "producer": PRODUCER.encode(), "trace-id": trace,
                   "event-id": str(record.get(contract.event_id_field or contract.key_field)).encode()}
        await outputs[topic].send(key=str(record[contract.key_field]).encode(), value=payload, headers=headers)
        return
    log.error("output for %s breaks its contract (%s on %s); dead-lettered", topic, rejection.rule, rejection.field)
    envelope, dlq_headers = dead_letter_message(topic, RawRecord(PRODUCER, payload, value=record), rejection, PRODUCER,
                                                trace.decode(), settings.max_record_bytes)
    await dead_letters.send(key=topic.encode(), value=json.dumps(envelope, ensure_ascii=False).encode(),
                            headers=dict(dlq_headers))


def _sweep() -> list[tuple[str, dict[str, Any], bytes]]:
    """SLA alerts, closed events and closed metric windows up to the low watermark of the event streams."""
    wall = time.monotonic()
    clocks = [(t, w) for (topic, _p), (t, w) in latest.items() if topic in CLOCK_TOPICS]
    if not clocks:
        return []
    # A backlog read topic by topic must not close cases early: the slowest active partition sets the time;
    # when every partition is quiet (drained), the newest time seen does.
    active = [t for t, w in clocks if wall - w < IDLE_S]
    watermark = min(active) if active else max(t for t, _w in clocks)
    return [(topic, record, b"streams.fusion.sweep") for topic, record in pipeline.sweep(watermark)]


@app.timer(interval=2.0)
async def sweep_when_quiet() -> None:
    """Windows and SLAs also close when no records arrive."""
    for topic, record, trace in _sweep():
        await _send(topic, record, trace)


@app.agent(raw)
async def fuse(stream):  # type: ignore[no-untyped-def]
    # Reference data first, so no record is fused unplaced; it then stays current from the stream.
    await asyncio.get_running_loop().run_in_executor(None, _load_reference)
    async for events in stream.take_events(BATCH, within=settings.streams_batch_wait_s):
        produced: list[tuple[str, dict[str, Any], bytes]] = []
        for event in events:
            message = event.message
            headers = {k: v for k, v in (event.headers or {}).items()}
            try:
                value = json.loads(event.value)
            except (TypeError, ValueError):
                continue   # the edge validated it; a raw topic holds JSON objects only
            trace = headers.get("trace-id") or new_trace_id().encode()
            now = datetime.fromtimestamp(message.timestamp, timezone.utc)
            latest[(message.topic, message.partition)] = (now, time.monotonic())
            if message.topic in REFERENCE:
                pipeline.reference(message.topic, value)
                continue
            for topic, record in pipeline.feed(message.topic, value, _event_id(message.topic, headers, event.value), now):
                produced.append((topic, record, trace))
        produced += _sweep()
        for topic, record, trace in produced:
            await _send(topic, record, trace)
        log.info("batch of %d: %s", len(events), dict(pipeline.counts))


if __name__ == "__main__":
    app.main()
