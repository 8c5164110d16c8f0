"""A local three-node cluster (`citybrain broker up --nodes 3`): topics from contracts replicated three times,
and a node killed with SIGKILL mid-stream then brought back while producers (acks=all), the lake sink and the
fusion worker carry on: every accepted record is on the topic afterwards and in the lake exactly once, and
every ticket gets one work order."""

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
from citybrain.devtools.samples import sample_records
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
    """Issue 16's failover (b), for the producers and the lake sink (the fusion worker through a node crash is
    still to come)."""
    import pyarrow.parquet as pq

    from citybrain.lake import layout
    from citybrain.streams.lake_sink import run_sink

    settings, broker = cluster
    contract = contracts[TOPIC]
    records = sample_records(contract, 3000)
    accepted = []
    lake = settings.state_dir / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    sunk: dict = {}  # type: ignore[type-arg]
    sink = threading.Thread(target=lambda: sunk.update(run_sink(settings, [TOPIC], lake, max_wait_s=1.0,
                                                                stop_when_idle_s=30.0)))
    sink.start()

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
    on_topic = list(read_topic(settings, TOPIC, timeout_s=120))
    ids = [json.loads(r.value)["id"] for r in on_topic]
    assert set(ids) == {r["id"] for r in records}   # every acknowledged record is there
    sink.join(timeout=300)
    assert not sink.is_alive() and sunk["written"] == len(on_topic)
    rows = [row for f in layout.files(lake, "bronze", contract.id)
            for row in pq.read_table(f, columns=["partition", "offset", "value"]).to_pylist()]
    # the lake holds the topic exactly once: each offset once, and every accepted record
    assert len(rows) == len({(r["partition"], r["offset"]) for r in rows}) == len(on_topic)
    assert {json.loads(r["value"])["id"] for r in rows} == {r["id"] for r in records}


def test_the_fusion_worker_carries_on_through_a_node_killed_mid_stream(cluster, contracts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 16's failover (b), for the fusion worker: tickets keep arriving while a node dies and comes back;
    every ticket gets its work order, exactly once by id."""
    import uuid
    from datetime import datetime, timedelta, timezone

    from citybrain.sim.city import build_city
    from citybrain.sim.clock import default_start
    from citybrain.platform.workers import start_worker, stop_worker, wait_for_worker
    from tests.integration.conftest import TEST_ENV, cli

    settings, broker = cluster
    apply_topics(settings, contracts.values())
    run = uuid.uuid4().hex[:8]
    app_id = f"citybrain-fusion-cluster-{run}"
    cluster_env = {"CITYBRAIN_STATE_DIR": str(settings.state_dir), "CITYBRAIN_BROKER_PORT": str(BASE),
                   "CITYBRAIN_CONTROLLER_PORT": str(BASE + 1), "CITYBRAIN_BROKER_NODES": "3"}
    # The city's reference data (streets, devices, routing rules) with a quarter hour of its feeds, on a day of its own.
    start = (default_start() - timedelta(days=6)).isoformat()
    proc = cli("simulate", "--hours", "0.25", "--scale", "0.01", "--incidents", "none", "--start", start,
               "--out", str(tmp_path / "sim"), env_extra=cluster_env)
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**TEST_ENV, **cluster_env, "CITYBRAIN_STREAMS_APP_ID": app_id})
    device = build_city(7).devices[0]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    tickets = [{"service_request_id": f"HLC{run}{k:03d}", "status": "open", "service_code": "water.waterlogging",
                "service_name": "道路积水", "description": "路口积水很深", "requested_datetime": now,
                "updated_datetime": now, "channel": "phone", "category": "waterlogging", "lifecycle_state": "received",
                "lat": device.lat, "long": device.lon} for k in range(40)]
    contract = contracts["raw.hotline.service_request.v1"]

    def orders() -> list[str]:
        return [o["work_order_id"] for c in contracts.values() if c.zone == "dispatch"
                for r in read_topic(settings, c.topic) for o in [json.loads(r.value)]
                if o["source_id"].startswith(f"HLC{run}")]

    worker = start_worker(settings, env=env, log=tmp_path / "worker.log")
    try:
        assert wait_for_worker(settings, worker, 180, app_id), f"the worker did not catch up (exit {worker.poll()})"
        accepted = []

        def produce() -> None:
            with ValidatedProducer(settings, producer_id="test-cluster") as producer:
                for i in range(0, len(tickets), 4):
                    accepted.append(producer.produce_values(contract, tickets[i:i + 4]).accepted)
                    time.sleep(0.5)

        writer = threading.Thread(target=produce)
        writer.start()
        time.sleep(1.5)
        broker.kill_node(3)                       # a crash mid-stream: no controlled shutdown
        time.sleep(3)
        broker.up()
        writer.join(timeout=300)
        assert sum(accepted) == len(tickets)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(set(orders())) < len(tickets) and worker.poll() is None:
            time.sleep(2)
        assert wait_for_worker(settings, worker, 120, app_id)
        assert worker.poll() is None, "the worker died with the node"
    finally:
        stop_worker(worker)
    got = orders()
    assert len(got) == len(set(got)), sorted(got)          # no ticket dispatched twice
    assert {o.split("-")[1] for o in got} == {t["service_request_id"] for t in tickets}
