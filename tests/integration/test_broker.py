"""The embedded broker: idempotent start, clear errors, and a restart that keeps every record."""

from __future__ import annotations

import os
import socket
import time

import pytest

from citybrain.broker.local import BrokerError, LocalBroker
from citybrain.ingest.producer import ValidatedProducer
from citybrain.devtools.samples import sample_records
from citybrain.kafka.topics import read_topic
from tests.integration.conftest import make_settings

pytestmark = pytest.mark.integration


def test_up_is_idempotent(broker: LocalBroker) -> None:
    first = broker.status()
    again = broker.up()
    assert first.running and again.running and again.pid == first.pid


def test_busy_port_gives_a_clear_error(broker: LocalBroker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        other = LocalBroker(make_settings(CITYBRAIN_STATE_DIR=str(tmp_path), CITYBRAIN_BROKER_PORT=str(port),
                                          CITYBRAIN_CONTROLLER_PORT=str(port + 1 if port < 65535 else port - 1)))
        with pytest.raises(BrokerError, match=f"Port {port} on 127.0.0.1 is in use.*CITYBRAIN_BROKER_PORT"):
            other.up()


def test_restart_keeps_every_record_and_committed_offsets(broker: LocalBroker, settings, contracts) -> None:  # type: ignore[no-untyped-def]
    contract = contracts["raw.sensor.water_level.v1"]
    trace = os.urandom(8).hex()
    with ValidatedProducer(settings) as producer:
        summary = producer.produce_values(contract, sample_records(contract, 500), trace_id=trace)
    assert summary.accepted == 500

    def mine() -> list[bytes]:
        return [r.value for r in read_topic(settings, contract.topic) if dict(r.headers)["trace-id"] == trace.encode()]

    before = mine()
    group = f"restart-{trace}"
    assert len(read_topic(settings, contract.topic, group_id=group)) >= 500  # commits the group's offsets

    broker.down()
    assert not broker.status().running
    time.sleep(0.5)
    broker.up()

    assert mine() == before  # every record, same order per partition, same bytes
    with ValidatedProducer(settings) as producer:
        producer.produce_values(contract, sample_records(contract, 7), trace_id=trace + "-after")
    # The consumer group resumes where it committed before the restart: only the 7 new records.
    assert len(read_topic(settings, contract.topic, group_id=group)) == 7
