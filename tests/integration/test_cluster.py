"""A local three-node cluster (`citybrain broker up --nodes 3`): topics from contracts replicated three times,
and a node killed with SIGKILL mid-stream then brought back while producers (acks=all) carry on: every
accepted record is on the topic afterwards."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

from citybrain.broker.local import LocalBroker
from citybrain.ingest.producer import ValidatedProducer
from citybrain.kafka import clients
from citybrain.kafka.topics import apply_topics, read_topic
from citybrain.samples import sample_records
from citybrain.settings import PROJECT_ROOT
from tests.integration.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BASE = int(os.environ.get("CB_TEST_BROKER_PORT", "19092")) + 200   # beside the session's broker and the second city's
TOPIC = "raw.sensor.water_level.v1"


@pytest.fixture(scope="module")
def cluster(contracts):  # type: ignore[no-untyped-def]
    settings = make_settings(CITYBRAIN_STATE_DIR=str(PROJECT_ROOT / "var" / "test-cluster"),
                             CITYBRAIN_BROKER_PORT=str(BASE), CITYBRAIN_CONTROLLER_PORT=str(BASE + 1),
                             CITYBRAIN_BROKER_NODES="3")
    broker = LocalBroker(settings, nodes=3)
    broker.reset()
    broker = LocalBroker(settings, nodes=3)
    broker.up()
    apply_topics(settings, [contracts[TOPIC], contracts["dlq.ingest.rejected.v1"]])
    yield settings, broker
    broker.down()
    shutil.rmtree(settings.kafka_dir, ignore_errors=True)


def test_three_nodes_replicate_every_topic_three_times(cluster) -> None:  # type: ignore[no-untyped-def]
    settings, broker = cluster
    status = broker.status()
    assert status.running and status.nodes_up == 3
    assert len(settings.bootstrap.split(",")) == 3
    admin = clients.admin(settings)
    try:
        assert len(admin.describe_cluster()["brokers"]) == 3
        (topic,) = admin.describe_topics([TOPIC])
        assert {len(p.get("replica_nodes", p.get("replicas", ()))) for p in topic["partitions"]} == {3}
    finally:
        admin.close()


def test_a_node_killed_mid_stream_loses_no_acknowledged_record(cluster, contracts) -> None:  # type: ignore[no-untyped-def]
    settings, broker = cluster
    contract = contracts[TOPIC]
    records = sample_records(contract, 3000)
    accepted = []

    def produce() -> None:
        with ValidatedProducer(settings, producer_id="test-cluster") as producer:
            for i in range(0, len(records), 100):
                summary = producer.produce_values(contract, records[i:i + 100])
                accepted.append(summary.accepted)
                time.sleep(0.2)

    writer = threading.Thread(target=produce)
    writer.start()
    time.sleep(2)
    broker.kill_node(2)                          # a crash: no controlled shutdown
    assert broker.status().nodes_up == 2
    time.sleep(3)
    broker.up()                                  # the missing node comes back and catches up
    writer.join(timeout=300)
    assert not writer.is_alive()
    assert sum(accepted) == len(records), f"refused while a node was down: {len(records) - sum(accepted)}"
    assert broker.status().nodes_up == 3
    ids = [json.loads(r.value)["id"] for r in read_topic(settings, TOPIC, timeout_s=120)]
    assert set(ids) == {r["id"] for r in records}   # every acknowledged record is there
