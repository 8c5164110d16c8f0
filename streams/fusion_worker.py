"""The fusion worker (faust-streaming): raw feeds in; city events, early warnings, SLA alerts,
metrics and work orders out.

Wiring only: each fetch from the raw topics arrives as one batch (``BatchApp.batch_agent``,
see ``streams/batching.py``), the shared package's ``Pipeline`` does the work (enrich,
dedupe, detect, fuse, dispatch), each output is validated against its contract before it
is sent, and the batch's offsets are acknowledged once its outputs are on the broker. On
start the worker loads the reference data, then rebuilds its state from the raw topics
(``citybrain.fusion.warmup``) so a restart neither forgets duplicates nor reopens cases.
Run it with ``citybrain streams fusion`` (or ``python streams/fusion_worker.py worker``).
Stream time is the records' Kafka timestamp, which the simulator sets to simulated time.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the shared package, when run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402
from batching import BatchApp, broker_credentials  # noqa: E402
from faust.types import Message  # noqa: E402

from citybrain.contracts.model import load_all  # noqa: E402
from citybrain.contracts.validate import Rejection, RecordValidator  # noqa: E402
from citybrain.fusion.pipeline import REFERENCE, Pipeline  # noqa: E402
from citybrain.fusion.warmup import Clock, record_event_id, warm_up  # noqa: E402
from citybrain.ingest.producer import DLQ_TOPIC, dead_letter_message, new_trace_id  # noqa: E402
from citybrain.ingest.readers import RawRecord  # noqa: E402
from citybrain.privacy import protector_from_settings  # noqa: E402
from citybrain.settings import get_settings  # noqa: E402

log = logging.getLogger("citybrain.streams.fusion")

settings = get_settings()
CONTRACTS = {c.topic: c for c in load_all(settings.schemas_dir).values()}
INPUTS = [t for t, c in CONTRACTS.items() if c.zone == "raw"]
OUTPUTS = [t for t, c in CONTRACTS.items() if c.zone in ("city", "alert", "dispatch", "metrics")]
PRODUCER = "streams.fusion"
#: Sweep (SLA checks, closing cases and windows) when stream time moved this far, and on a timer.
SWEEP_EVERY_S = 30.0

(settings.state_dir / "streams").mkdir(parents=True, exist_ok=True)
app = BatchApp(
    settings.streams_app_id,
    broker=f"kafka://{settings.bootstrap}",
    broker_credentials=broker_credentials(settings),
    store="memory://",
    datadir=str(settings.state_dir / "streams" / settings.streams_app_id),
    topic_replication_factor=settings.replication_factor,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    broker_max_poll_records=settings.streams_batch,
)
raw = app.topic(*INPUTS, value_serializer="raw")
outputs = {t: app.topic(t, value_serializer="raw") for t in OUTPUTS}
dead_letters = app.topic(DLQ_TOPIC, value_serializer="raw")
validators = {t: RecordValidator(CONTRACTS[t]) for t in OUTPUTS}
pipeline = Pipeline(auto_sweep=False, protector=protector_from_settings(settings),
                    hotline=CONTRACTS["raw.hotline.service_request.v1"])
#: Event streams move stream time; compacted registers (reference data, the elderly-care register) do not.
clock = Clock({t for t in INPUTS if CONTRACTS[t].cleanup_policy == "delete"})
state = {"ready": False, "swept": None}


def _start() -> None:
    """Areas, devices and routing rules before the first reading, so nothing is fused unplaced;
    then the state the worker had at its committed offsets."""
    from citybrain.topics import read_topic

    for topic in REFERENCE:
        for r in read_topic(settings, topic, timeout_s=60):
            pipeline.reference(topic, json.loads(r.value))
    warm = warm_up(settings, pipeline, CONTRACTS, settings.streams_app_id, INPUTS, settings.streams_warmup_h,
                   settings.streams_warmup_tickets_h, clock)
    gc.collect()
    gc.freeze()
    if warm.records:
        log.warning("state rebuilt from %d records of %d partitions in %.1f s (stream time %s)",
                    warm.records, warm.partitions, warm.seconds, warm.resumed_at)
    pipeline.counts.clear()


def _sweep(force: bool = False) -> list[tuple[str, dict[str, Any], bytes]]:
    """SLA alerts, closed events and closed metric windows up to the low watermark of the event streams."""
    watermark = clock.watermark()
    swept = state["swept"]
    if watermark is None or (not force and swept is not None and (watermark - swept).total_seconds() < SWEEP_EVERY_S):
        return []
    state["swept"] = watermark
    return [(topic, record, b"streams.fusion.sweep") for topic, record in pipeline.sweep(watermark)]


async def _send(produced: list[tuple[str, dict[str, Any], bytes]]) -> None:
    """Validate and send; return once the broker has every record (the batch may then be acknowledged)."""
    pending = []
    for topic, record, trace in produced:
        contract = CONTRACTS[topic]
        payload = orjson.dumps(record)
        rejection = validators[topic](record)
        if rejection is None:
            headers = {"contract-id": contract.id.encode(), "contract-version": contract.version.encode(),
                       "producer": PRODUCER.encode(), "trace-id": trace,
                       "event-id": str(record.get(contract.event_id_field or contract.key_field)).encode()}
            pending.append(await outputs[topic].send(key=str(record[contract.key_field]).encode(), value=payload,
                                                     headers=headers))
            continue
        log.error("output for %s breaks its contract (%s on %s); dead-lettered", topic, rejection.rule, rejection.field)
        pending.append(await _dead_letter(topic, RawRecord(PRODUCER, payload, value=record), rejection, trace))
    if pending:
        await asyncio.gather(*pending)


async def _dead_letter(topic: str, record: RawRecord, rejection: Rejection, trace: bytes) -> Any:
    envelope, headers = dead_letter_message(topic, record, rejection, PRODUCER, trace.decode(), settings.max_record_bytes)
    return await dead_letters.send(key=topic.encode(), value=json.dumps(envelope, ensure_ascii=False).encode(),
                                   headers=dict(headers))


def _gc_pause(phase: str, info: dict[str, int]) -> None:
    """Log full garbage collections that stall the worker (the tail of its latency)."""
    if phase == "start":
        state["gc"] = time.perf_counter()
    elif info.get("generation") == 2:
        took = (time.perf_counter() - state["gc"]) * 1000
        if took > 50:
            log.warning("full garbage collection took %.0f ms (%d objects collected)", took, info.get("collected", 0))


gc.callbacks.append(_gc_pause)
#: The worker's state is millions of long-lived objects (dedupe window, windows, cases) that
#: refcounting frees; full collections scanning them stalled it ~130 ms every few seconds
#: (p99 latency 750 ms). Fewer young collections, and survivors moved out of the collector's
#: sight (``gc.freeze``) after start and then every ``FREEZE_EVERY_S``; every ``FULL_GC_EVERY_S``
#: one full collection over everything, so cyclic garbage among frozen objects cannot pile up.
gc.set_threshold(50_000, 20, 20)
FREEZE_EVERY_S = 30.0
FULL_GC_EVERY_S = 900.0


@app.timer(interval=2.0)
async def sweep_when_quiet() -> None:
    """Windows and SLAs also close when no records arrive."""
    if state["ready"]:
        await _send(_sweep(force=True))


@app.timer(interval=FREEZE_EVERY_S)
async def freeze_survivors() -> None:
    if time.monotonic() - state.setdefault("full_gc", time.monotonic()) >= FULL_GC_EVERY_S:
        gc.unfreeze()
        gc.collect()
        state["full_gc"] = time.monotonic()
    gc.freeze()


@app.batch_agent(raw)
async def fuse(messages: list[Message]) -> None:
    started = time.perf_counter()
    if not state["ready"]:
        await asyncio.get_running_loop().run_in_executor(None, _start)
        state["ready"] = True
    produced: list[tuple[str, dict[str, Any], bytes]] = []
    failed = []
    feed, reference, saw = pipeline.feed, pipeline.reference, clock.saw
    for message in messages:
        topic, payload = message.topic, message.value
        headers = dict(message.headers or ())
        trace = headers.get("trace-id") or new_trace_id().encode()
        try:
            value = orjson.loads(payload)
            if topic in REFERENCE:
                reference(topic, value)
                continue
            now = datetime.fromtimestamp(message.timestamp, timezone.utc)
            saw(topic, message.partition, now)
            for out_topic, record in feed(topic, value, record_event_id(CONTRACTS[topic], headers, payload, value), now):
                produced.append((out_topic, record, trace))
        except Exception as exc:   # noqa: BLE001 - one record must not stop the city's stream: it is dead-lettered
            log.exception("record %s@%d:%d failed; dead-lettered", topic, message.partition, message.offset)
            failed.append((topic, RawRecord(f"{topic}@{message.partition}:{message.offset}", payload or b""),
                           Rejection("processing-error", "(record)", f"{type(exc).__name__}: {exc}"), trace))
    produced += _sweep()
    await _send(produced)
    if failed:
        await asyncio.gather(*[await _dead_letter(*f) for f in failed])
    took = (time.perf_counter() - started) * 1000
    (log.warning if took > 200 else log.info)("batch of %d in %.0f ms: %s", len(messages), took, dict(pipeline.counts))


if __name__ == "__main__":
    app.main()
