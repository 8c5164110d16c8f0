"""The standard headers and the one event-id rule (``citybrain.kafka.headers``)."""

from __future__ import annotations

import json
import uuid

import pytest

from citybrain.kafka.headers import (EVENT_ID_NAMESPACE, event_id, read_headers, record_event_id, standard_headers,
                                     trace_of, traceparent, uuid5_hex)

#: A W3C traceparent as the specification's own example writes it.
W3C_EXAMPLE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_every_record_carries_the_six_standard_headers(contracts) -> None:  # type: ignore[no-untyped-def]
    c = contracts["alert.sla.ticket.v1"]
    headers = dict(standard_headers(c, "streams.fusion", "SLA-1-breached", b"trace-1"))
    parent = headers.pop("traceparent")
    assert headers == {"contract-id": c.id.encode(), "contract-version": c.version.encode(),
                       "producer": b"streams.fusion", "event-id": b"SLA-1-breached", "trace-id": b"trace-1"}
    assert parent == traceparent("trace-1", "streams.fusion\0SLA-1-breached")
    fresh = dict(standard_headers(c, "x", "y"))
    assert len(fresh["trace-id"]) == 32 and fresh["trace-id"] != dict(standard_headers(c, "x", "y"))["trace-id"]


def test_traceparent_is_w3c_version_00_with_the_records_trace_id(contracts) -> None:  # type: ignore[no-untyped-def]
    """A 32-hex trace id is carried as it is, so a tracing tool and the trace-id header name the same trace."""
    c = contracts["alert.sla.ticket.v1"]
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = dict(standard_headers(c, "gateway.hotline", "HL-1", trace))["traceparent"]
    version, trace_id, parent_id, flags = parent.decode().split("-")
    assert (version, trace_id, flags) == ("00", trace, "01")
    assert len(parent_id) == 16 and int(parent_id, 16) != 0
    # the record's own span: the same when the record is sent again, another for another record or producer
    assert dict(standard_headers(c, "gateway.hotline", "HL-1", trace))["traceparent"] == parent
    assert dict(standard_headers(c, "gateway.hotline", "HL-2", trace))["traceparent"] != parent
    assert dict(standard_headers(c, "streams.fusion", "HL-1", trace))["traceparent"] != parent


def test_a_trace_id_traceparent_cannot_carry_is_hashed_to_one_it_can() -> None:
    """A simulation run's id, upper-case hex and the all-zero id the standard forbids become 32 lower-case hex."""
    for trace in ("sim-20261207-0800", "4BF92F3577B34DA6A3CE929D0E0E4736", "0" * 32):
        _v, trace_id, _p, _f = traceparent(trace, "span").decode().split("-")
        assert len(trace_id) == 32 and trace_id == trace_id.lower() and trace_id != trace and int(trace_id, 16)
    assert traceparent("sim-1", "s") == traceparent("sim-1", "s") != traceparent("sim-2", "s")


def test_a_traceparent_round_trips_through_the_headers(contracts) -> None:  # type: ignore[no-untyped-def]
    c = contracts["alert.sla.ticket.v1"]
    trace = "0af7651916cd43dd8448eb211c80319c"
    sent = read_headers(standard_headers(c, "gateway.hotline", "HL-1", trace))
    assert trace_of(sent) == trace.encode()
    only_w3c = {k: v for k, v in sent.items() if k != "trace-id"}   # a producer traced by W3C tools alone
    assert trace_of(only_w3c) == trace.encode()
    assert trace_of({"traceparent": W3C_EXAMPLE}) == b"4bf92f3577b34da6a3ce929d0e0e4736"
    # a later version may add fields after the flags
    assert trace_of({"traceparent": W3C_EXAMPLE.replace(b"00-", b"cc-", 1) + b"-what-comes"}) == \
        b"4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_of({"trace-id": b"sim-1", "traceparent": W3C_EXAMPLE}) == b"sim-1"   # the platform's own wins


@pytest.mark.parametrize("bad", [
    b"", b"garbage", W3C_EXAMPLE.upper(), W3C_EXAMPLE[:-1], W3C_EXAMPLE + b"-extra",   # 00 has exactly 4 fields
    b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",                        # version ff is invalid
    b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",                        # all-zero trace id
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",                        # all-zero parent id
    b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",                        # fields of the wrong size
    b"\xff\xfe-not-utf8",
])
def test_a_malformed_traceparent_is_ignored_not_a_crash(bad: bytes) -> None:
    assert trace_of({"traceparent": bad}) is None
    assert trace_of({"traceparent": bad, "trace-id": b"t-1"}) == b"t-1"


def test_the_event_id_is_the_contracts_field_else_a_hash_of_topic_and_payload(contracts) -> None:  # type: ignore[no-untyped-def]
    with_field = contracts["alert.sla.ticket.v1"]          # event_id: alert_id
    assert event_id(with_field, {"alert_id": "A1"}, "{}") == "A1"
    without = contracts["raw.sensor.noise_level.v1"]
    payload = json.dumps({"id": "n1", "LAeq": 55.0})
    assert event_id(without, {}, payload) == event_id(without, {}, payload)
    assert event_id(without, {}, payload) != event_id(without, {}, payload + " ")
    assert event_id(without, {}, payload) != event_id(contracts["raw.sensor.air_quality.v1"], {}, payload)


def test_a_consumed_records_event_id_header_wins_over_the_rule(contracts) -> None:  # type: ignore[no-untyped-def]
    c = contracts["raw.sensor.noise_level.v1"]
    payload = b'{"id": "n1"}'
    assert record_event_id(c, read_headers([("event-id", b"from-producer")]), payload, {"id": "n1"}) == "from-producer"
    assert record_event_id(c, read_headers(None), payload, {"id": "n1"}) == event_id(c, {"id": "n1"}, payload.decode())


def test_dead_letters_carry_the_standard_headers_with_their_contracts_version(contracts) -> None:  # type: ignore[no-untyped-def]
    """Regression: the dead-letter headers were written by hand with the version fixed at 1.0.0."""
    from citybrain.contracts.model import Contract
    from citybrain.contracts.topics import INGEST_DEAD_LETTERS
    from citybrain.contracts.validate import Rejection
    from citybrain.ingest.producer import dead_letter_message
    from citybrain.ingest.readers import RawRecord

    record, refused = RawRecord("feed.csv:3", b"not json"), Rejection("not-json", "(record)", "not JSON")
    real = contracts[INGEST_DEAD_LETTERS]
    envelope, headers = dead_letter_message("raw.sensor.weather", record, refused, "edge", "trace-1", 1000, real)
    assert headers == standard_headers(real, "edge", envelope["event_id"], "trace-1") + [
        ("dlq-contract", b"raw.sensor.weather"), ("dlq-rule", b"not-json"), ("dlq-field", b"(record)"),
        ("dlq-source", b"feed.csv:3")]
    minor = Contract({**real.raw, "version": "1.4.2"})
    _envelope, headers = dead_letter_message("raw.sensor.weather", record, refused, "edge", None, 1000, minor)
    assert read_headers(headers)["contract-version"] == b"1.4.2"
    _envelope, headers = dead_letter_message("raw.sensor.weather", record, refused, "edge", None, 1000)
    assert read_headers(headers)["contract-version"] == real.version.encode()


@pytest.mark.parametrize("name", ["", "raw.sensor.air_quality.v1\0{}", "空气质量 µg/m³ 😀", "\x00" * 300, "a" * 64])
@pytest.mark.parametrize("namespace", [EVENT_ID_NAMESPACE, uuid.NAMESPACE_URL, uuid.UUID(int=0),
                                       uuid.UUID(int=(1 << 128) - 1)])
def test_uuid5_hex_is_the_standard_librarys_uuid5(namespace: uuid.UUID, name: str) -> None:
    """The event id's shortcut sets the same version and variant bits as uuid.uuid5: every event id stays as it was
    (namespaces with all bits clear and all bits set, so a wrong mask shows)."""
    assert uuid5_hex(namespace, name) == uuid.uuid5(namespace, name).hex


def test_the_lake_keeps_the_trace_of_a_record_that_came_with_a_traceparent_only() -> None:
    from citybrain.streams.lake_sink import row_headers

    assert row_headers([("event-id", b"e1"), ("traceparent", W3C_EXAMPLE)])["trace-id"] == \
        "4bf92f3577b34da6a3ce929d0e0e4736"
    assert row_headers([("trace-id", b"sim-1"), ("traceparent", W3C_EXAMPLE)])["trace-id"] == "sim-1"
    assert "trace-id" not in row_headers([("traceparent", b"00-garbage")]) and row_headers(None) == {}
