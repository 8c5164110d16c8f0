"""The fusion worker's own work, apart from faust and the broker (``citybrain.streams.fusion.FusionWorker``):
a fetch in, contract-checked outputs with the standard headers out, a failing record dead-lettered."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("faust", reason="faust-streaming lives in the streams environment")

from citybrain.sim.city import build_city  # noqa: E402
from citybrain.sim.reference import reference_records  # noqa: E402
from citybrain.contracts.validate import Rejection  # noqa: E402
from citybrain.fusion.pipeline import EVENT_TOPIC  # noqa: E402
from citybrain.settings import load_settings  # noqa: E402
from citybrain.streams.fusion import PRODUCER, FusionWorker  # noqa: E402
from citybrain.times import iso, parse_time  # noqa: E402

CITY = build_city(7)
T0 = parse_time("2026-11-22T02:00:00Z")


def _message(topic: str, value: object, at: float, offset: int, headers: list | None = None) -> SimpleNamespace:  # type: ignore[type-arg]
    payload = value if isinstance(value, bytes) else json.dumps(value).encode()
    return SimpleNamespace(topic=topic, value=payload, headers=headers or [], timestamp=at, partition=0, offset=offset)


@pytest.fixture()
def worker(tmp_path: Path) -> FusionWorker:
    w = FusionWorker(load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)}))
    for contract, records in reference_records(CITY, "2026-11-22T00:00:00Z").items():
        for r in records:
            w.pipeline.reference(f"{contract}.v1", r)
    return w


def test_a_fetch_becomes_valid_outputs_with_the_standard_headers(worker: FusionWorker) -> None:
    gauge = next(d for d in CITY.devices if d.site_type == "underpass")
    fetch = []
    for k in range(3):
        at = T0 + timedelta(minutes=5 * k)
        fetch.append(_message("raw.sensor.water_level.v1", {
            "id": f"urn:x:{gauge.device_id}:{k}", "type": "FloodMonitoring", "dateObserved": iso(at),
            "location": {"type": "Point", "coordinates": [gauge.lon, gauge.lat]}, "refDevice": gauge.device_id,
            "currentLevel": 0.4, "referenceLevel": 0.27, "floodLevelStatus": "flooded", "siteType": "underpass"},
            at.timestamp(), k, [("trace-id", b"t-1")]))
    fetch.append(_message("raw.police.incident_110.v1", {
        "incident_id": "110-20261122-00001", "reported_at": iso(T0 + timedelta(minutes=12)), "category": "waterlogged_road",
        "lat": gauge.lat, "long": gauge.lon, "status": "dispatched"}, (T0 + timedelta(minutes=12)).timestamp(), 3))
    produced, failed = worker.process(fetch)
    assert failed == [] and EVENT_TOPIC in {t for t, _r, _trace in produced}
    for topic, record, trace in produced:
        message = worker.message(topic, record, trace)
        assert not isinstance(message, Rejection), (topic, message)
        key, value, headers = message
        contract = worker.contracts[topic]
        assert json.loads(value) == record and key == str(record[contract.key_field]).encode()
        assert headers["contract-id"] == contract.id.encode() and headers["producer"] == PRODUCER.encode()
        assert headers["event-id"] and headers["trace-id"] == trace
    assert b"t-1" in {trace for _t, _r, trace in produced}       # an output carries the trace of what caused it


def test_a_record_that_fails_is_dead_lettered_with_its_reason_and_the_fetch_goes_on(worker: FusionWorker) -> None:
    broken = _message("raw.sensor.water_level.v1", b"{not json", T0.timestamp(), 7)
    fine = _message("raw.hotline.ticket_event.v1", {"event_id": "TE-1", "service_request_id": "HL1", "event_type": "accepted",
                                                    "occurred_at": iso(T0)}, T0.timestamp(), 8)
    _produced, failed = worker.process([broken, fine])
    assert len(failed) == 1
    topic, record, rejection, _trace = failed[0]
    assert topic == "raw.sensor.water_level.v1" and record.source == "raw.sensor.water_level.v1@0:7"
    assert rejection.rule == "processing-error" and rejection.field == "(record)"
    key, value, headers = worker.dead_letter(*failed[0])
    envelope = json.loads(value)
    assert headers["dlq-rule"] == b"processing-error" and envelope["original_text"] == "{not json"


def test_an_output_that_breaks_its_contract_is_refused_not_sent(worker: FusionWorker) -> None:
    rejection = worker.message("alert.sla.ticket.v1", {"alert_id": "SLA-1"}, b"t")
    assert isinstance(rejection, Rejection) and rejection.rule == "required"


def test_outputs_sent_before_a_restart_are_not_sent_again_until_the_window_passed(worker: FusionWorker) -> None:
    import time

    fetch = [_message("raw.hotline.service_request.v1", {
        "service_request_id": f"HL{k}", "status": "open", "service_code": "water.waterlogging", "service_name": "道路积水",
        "description": "路口积水很深", "requested_datetime": iso(T0), "updated_datetime": iso(T0), "channel": "phone",
        "category": "waterlogging", "lifecycle_state": "received", "lat": CITY.devices[0].lat,
        "long": CITY.devices[0].lon}, T0.timestamp(), k) for k in range(2)]
    produced, _failed = worker.process(fetch)
    (t0, r0, tr0), (t1, r1, tr1) = [p for p in produced if p[1].get("source_id") in ("HL0", "HL1")][:2]
    _key, _value, first = worker.message(t0, r0, tr0)   # type: ignore[misc]
    assert first["app-id"] == worker.settings.streams_app_id.encode()
    worker.sent_before = {(t0, first["event-id"].decode())}   # what the restart read back from the output topics
    worker.sent_before_until = time.monotonic() + 60
    assert worker.message(t0, r0, tr0) is None and worker.resends_suppressed == 1
    assert worker.message(t1, r1, tr1) is not None        # an output not sent before goes out
    worker.sent_before_until = time.monotonic() - 1        # the window passed: the set is dropped
    assert worker.message(t1, r1, tr1) is not None and worker.sent_before == set()
    assert worker.message(t0, r0, tr0) is not None
