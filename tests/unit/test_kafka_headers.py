"""The standard headers and the one event-id rule (``citybrain.kafka.headers``)."""

from __future__ import annotations

import json
import uuid

import pytest

from citybrain.kafka.headers import (EVENT_ID_NAMESPACE, event_id, read_headers, record_event_id, standard_headers,
                                     uuid5_hex)


def test_every_record_carries_the_five_standard_headers(contracts) -> None:  # type: ignore[no-untyped-def]
    c = contracts["alert.sla.ticket.v1"]
    headers = dict(standard_headers(c, "streams.fusion", "SLA-1-breached", b"trace-1"))
    assert headers == {"contract-id": c.id.encode(), "contract-version": c.version.encode(),
                       "producer": b"streams.fusion", "event-id": b"SLA-1-breached", "trace-id": b"trace-1"}
    fresh = dict(standard_headers(c, "x", "y"))
    assert len(fresh["trace-id"]) == 32 and fresh["trace-id"] != dict(standard_headers(c, "x", "y"))["trace-id"]


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
