"""The fusion worker's own work, apart from faust and the broker (``citybrain.streams.fusion.FusionWorker``):
a fetch in, contract-checked outputs with the standard headers out, a failing record dead-lettered; keyed by
area (``KeyedFusionWorker``), a fetch fused by its district's partition; and each mode's agents and topics."""

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
from citybrain.settings import Settings, load_settings  # noqa: E402
from citybrain.streams.fusion import PRODUCER, FusionWorker, KeyedFusionWorker  # noqa: E402
from citybrain.streams.shares import Share  # noqa: E402
from citybrain.times import iso, parse_time  # noqa: E402

CITY = build_city(7)
T0 = parse_time("2026-11-22T02:00:00Z")


def _message(topic: str, value: object, at: float, offset: int, headers: list | None = None) -> SimpleNamespace:  # type: ignore[type-arg]
    payload = value if isinstance(value, bytes) else json.dumps(value).encode()
    return SimpleNamespace(topic=topic, value=payload, headers=headers or [], timestamp=at, partition=0, offset=offset)


def _worker(tmp_path: Path) -> FusionWorker:
    w = FusionWorker(load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)}))
    for contract, records in reference_records(CITY, "2026-11-22T00:00:00Z").items():
        for r in records:
            w.pipeline.reference(f"{contract}.v1", r)
    return w


@pytest.fixture()
def worker(tmp_path: Path) -> FusionWorker:
    return _worker(tmp_path)


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


def test_the_same_batch_fused_again_from_the_same_state_gives_the_same_outputs_and_ids(tmp_path: Path) -> None:
    """What the transactions rest on: a batch redone after an aborted transaction, by a worker whose state was
    rebuilt up to the committed offsets, produces the outputs it produced the first time, with the same ids."""
    fetch = [_message("raw.hotline.service_request.v1", {
        "service_request_id": f"HL{k}", "status": "open", "service_code": "water.waterlogging", "service_name": "道路积水",
        "description": "路口积水很深", "requested_datetime": iso(T0), "updated_datetime": iso(T0), "channel": "phone",
        "category": "waterlogging", "lifecycle_state": "received", "lat": CITY.devices[0].lat,
        "long": CITY.devices[0].lon}, T0.timestamp(), k) for k in range(2)]
    ids = []
    for _run in range(2):   # two workers from the same (empty) state: the first killed before its commit
        worker = _worker(tmp_path)
        produced, failed = worker.process(fetch)
        assert not failed and produced
        ids.append(sorted((topic, worker.message(topic, record, trace)[2]["event-id"])   # type: ignore[index]
                          for topic, record, trace in produced))
    assert ids[0] == ids[1] and any(t.startswith("dispatch.") for t, _i in ids[0])


def _app_settings(tmp_path: Path, partitions: int) -> Settings:
    return load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path), "CITYBRAIN_BOOTSTRAP_SERVERS": "127.0.0.1:9",
                          "CITYBRAIN_STREAMS_PARTITIONS": str(partitions)})


def test_each_mode_runs_its_own_agents_over_its_own_topics(tmp_path: Path) -> None:
    """The default worker fuses the raw topics in one agent and sweeps on a timer when no records arrive; keyed by
    area, one agent repartitions the raw topics but the ticket lifecycle, another fuses the by-area topic and the
    ticket lifecycle (each share sweeping as its records move its stream time: no timer, whose sweeps a takeover
    could not reproduce), a task hears the other workers, the shares lost are dropped on assignment and the group
    notices a silent worker sooner."""
    from citybrain.streams.fusion import SESSION_TIMEOUT_S, create_app
    from citybrain.contracts.topics import TICKET_EVENTS
    from citybrain.streams.shares import by_area_topic

    settings = _app_settings(tmp_path, 0)
    app = create_app(settings)
    inputs = FusionWorker(settings).inputs
    assert {t: h.__name__ for t, h in app.batch_handlers.items()} == {t: "fuse" for t in inputs}
    assert [t.__name__ for t in app._app_tasks] == ["sweep_when_quiet", "freeze_survivors"]
    assert app.conf.broker_session_timeout != SESSION_TIMEOUT_S

    keyed = create_app(_app_settings(tmp_path, 4))
    by_area = by_area_topic(settings.streams_app_id)
    assert {t: h.__name__ for t, h in keyed.batch_handlers.items()} == {
        **{t: "repartition" for t in inputs if t != TICKET_EVENTS}, by_area: "fuse_shares", TICKET_EVENTS: "fuse_shares"}
    assert [t.__name__ for t in keyed._app_tasks] == ["freeze_survivors", "learn_city_calls"]
    assert [r.__name__ for r in keyed.on_partitions_revoked.iter_receivers(keyed)] == []
    assert [r.__name__ for r in keyed.on_partitions_assigned.iter_receivers(keyed)] == ["drop_lost"]
    assert keyed.conf.broker_session_timeout == SESSION_TIMEOUT_S


def test_keyed_by_area_a_fetch_is_fused_by_its_districts_partition(tmp_path: Path) -> None:
    worker = KeyedFusionWorker(_app_settings(tmp_path, 4))
    for contract, records in reference_records(CITY, "2026-11-22T00:00:00Z").items():
        for r in records:
            worker.reference(f"{contract}.v1", r)
    gauge = next(d for d in CITY.devices if d.site_type == "underpass")
    fetch = [_message("raw.sensor.water_level.v1", {
        "id": f"urn:x:{gauge.device_id}:{k}", "type": "FloodMonitoring", "dateObserved": iso(T0 + timedelta(minutes=5 * k)),
        "location": {"type": "Point", "coordinates": [gauge.lon, gauge.lat]}, "refDevice": gauge.device_id,
        "currentLevel": 0.4, "referenceLevel": 0.27, "floodLevelStatus": "flooded", "siteType": "underpass"},
        (T0 + timedelta(minutes=5 * k)).timestamp(), k, [("trace-id", b"t-1")]) for k in range(3)]
    fetch.append(_message("raw.police.incident_110.v1", {
        "incident_id": "110-20261122-00001", "reported_at": iso(T0 + timedelta(minutes=12)), "category": "waterlogged_road",
        "lat": gauge.lat, "long": gauge.lon, "status": "dispatched"}, (T0 + timedelta(minutes=12)).timestamp(), 3))
    ((partition, routed),) = worker.route(fetch).items()     # one district: one partition of the by-area topic
    by_area = [SimpleNamespace(topic=worker.by_area, value=value, headers=headers, timestamp=ts / 1000,
                               partition=partition, offset=n) for n, (_key, value, ts, headers) in enumerate(routed)]
    assert worker.shares.missing(by_area) == {(worker.by_area, partition): 0}
    worker.shares.owned[(worker.by_area, partition)] = Share(worker.new_share_pipeline())
    assert worker.by_share(by_area) == {(worker.by_area, partition): by_area}   # one transaction: the share's
    produced, failed = worker.process_share((worker.by_area, partition), by_area)
    assert failed == [] and EVENT_TOPIC in {t for t, _r, _trace in produced}
    assert worker.process_share((worker.by_area, partition + 1), by_area) == ([], [])   # not owned: left to its owner
