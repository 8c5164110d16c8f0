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
from pathlib import Path

import pytest

from citybrain.contracts import topics
from citybrain.broker.local import BrokerError, LocalBroker
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
        return [o["work_order_id"] for c in contracts.values() if topics.is_work_orders(c.topic)
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


#: The chaos test: at least this many kills, one every few seconds, some restarted later than any timeout (the keyed
#: group's 15 s session, the transactions' 15 s).
CHAOS_KILLS = 20
LATE_RESTART_S = 25.0
SKEW_S = 600.0   # worker B's wall clock, ten minutes ahead (tests/integration/skewed_clock)


@pytest.mark.chaos
@pytest.mark.timeout(1500)
def test_chaos_kills_workers_sinks_and_brokers_and_nothing_is_lost_or_doubled(cluster, contracts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 32's chaos test, in the style of Kafka's ``transactions_test.py``: a simulated day streams into the
    three-node cluster through two fusion workers keyed by area and the bronze lake sink, while a driver SIGKILLs a random worker, the sink or a broker node every few seconds and
    brings it back, some later than any timeout, with worker B's clock ten minutes ahead. At the end every work order and city event the group published
    is there once by id, every ticket has its work orders, every record on the raw topics is in the lake once,
    and the day's detections are those of the one-pipeline replay of the same day. The counts go to
    ``chaos.json`` beside the test's logs (the README reports the latest run).

    Not asserted, reported: city events and their work orders under the same ids as the replay's, and no update
    of a city event or alert sent twice. A case rebuilt after a takeover can open under a later first-seen time
    (a new id) and a share's sweep can repeat what the last owner swept; both are issue 32's open part."""
    import random
    import re
    import signal
    import subprocess
    import sys
    import uuid
    from collections import Counter
    from datetime import datetime, timedelta

    import pyarrow.parquet as pq

    from citybrain.access.privacy import protector_from_settings
    from citybrain.devtools.replay import replay_outputs
    from citybrain.contracts.topics import CITY_EVENTS, EARLY_WARNINGS
    from citybrain.fusion.evaluate import evaluate, in_window
    from citybrain.kafka.topics import group_lag
    from citybrain.lake import layout
    from citybrain.platform.workers import start_worker
    from citybrain.sim.clock import default_start
    from tests.integration.conftest import TEST_ENV

    settings, broker = cluster
    # A cluster of its own: the tests before it leave records of today on the raw topics, and a share fed those
    # beside the simulated day's (three days back) has its stream time jump ahead by days and closes the day's
    # open cases, which the day's next evidence reopens under new ids.
    broker.reset()
    broker = LocalBroker(settings, nodes=3)
    broker.up()
    apply_topics(settings, contracts.values())
    rng = random.Random(32)
    run_app = uuid.uuid4().hex[:8]
    app_id = f"citybrain-fusion-chaos-{run_app}"
    lake = settings.state_dir / "lake"   # the sink's own, at the cluster's state folder
    shutil.rmtree(lake, ignore_errors=True)
    cluster_env = {"CITYBRAIN_STATE_DIR": str(settings.state_dir), "CITYBRAIN_BROKER_PORT": str(BASE),
                   "CITYBRAIN_CONTROLLER_PORT": str(BASE + 1), "CITYBRAIN_BROKER_NODES": "3"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**TEST_ENV, **cluster_env, "CITYBRAIN_STREAMS_APP_ID": app_id, "CITYBRAIN_STREAMS_PARTITIONS": "12",
                "CITYBRAIN_METRICS_PORT": "0"})
    skewed = {**env, "PYTHONPATH": str(Path(__file__).parent / "skewed_clock"), "CB_CLOCK_SKEW_S": str(SKEW_S)}
    citybrain = str(Path(sys.executable).with_name("citybrain"))

    def sink(log: Path) -> subprocess.Popen:  # type: ignore[type-arg]
        return subprocess.Popen([citybrain, "lake", "bronze", "--max-wait-s", "1"], env=env, start_new_session=True,
                                stdout=log.open("ab"), stderr=subprocess.STDOUT)

    starters = {"worker-a": lambda: start_worker(settings, env=env, log=tmp_path / "worker-a.log", level="info"),
                "worker-b": lambda: start_worker(settings, env=skewed, log=tmp_path / "worker-b.log", level="info"),
                "sink": lambda: sink(tmp_path / "sink.log")}
    procs = {name: start() for name, start in starters.items()}
    kills: Counter[str] = Counter()
    exits: Counter[str] = Counter()   # stopped on their own (a refused transaction, a lost broker): restarted
    late = 0

    def supervise() -> None:
        """What systemd's Restart= does: a process that stopped on its own is started again."""
        for name, proc in procs.items():
            if proc.poll() is not None:
                exits[name] += 1
                procs[name] = starters[name]()
    sim: dict = {}  # type: ignore[type-arg]
    # A simulated day of its own on the cluster (the fusion test above simulates six days back), within the raw
    # topics' retention (7 days): a day older is deleted by retention as it arrives. About 150 s.
    start = (default_start() - timedelta(days=3)).isoformat()
    simulate = threading.Thread(target=lambda: sim.update(proc=subprocess.run(
        [citybrain, "simulate", "--hours", "24", "--scale", "0.05", "--seed", "7", "--start", start,
         "--out", str(tmp_path / "sim"), "--json", "--incidents", "underpass_flood,night_construction_noise",
         "--speed", "600"], env=env, capture_output=True, text=True, timeout=900)))
    try:
        time.sleep(15)   # both workers joined the group
        simulate.start()
        while sum(kills.values()) < CHAOS_KILLS or simulate.is_alive():
            time.sleep(rng.uniform(2.0, 5.0))
            supervise()
            target = rng.choice(["worker-a", "worker-b", "sink", "node"])
            wait_s = LATE_RESTART_S if rng.random() < 0.15 else rng.uniform(0.5, 4.0)
            if target == "node":
                index = rng.randint(1, 3)
                whole = time.monotonic() + 90
                while broker.status().nodes_up < 3 and time.monotonic() < whole:
                    broker.up()   # one node down at a time: the last one back first
                    time.sleep(2)
                try:
                    broker.kill_node(index)
                except BrokerError:   # it stopped on its own after it came back: counted, brought back
                    exits[f"node-{index}"] += 1
                    broker.up()
                    continue
                kills[f"node-{index}"] += 1
                time.sleep(wait_s)
                broker.up()
            else:
                os.killpg(procs[target].pid, signal.SIGKILL)
                procs[target].wait()
                kills[target] += 1
                time.sleep(wait_s)
                procs[target] = starters[target]()
            late += wait_s >= LATE_RESTART_S
            if sum(kills.values()) >= 3 * CHAOS_KILLS:
                break   # the day took longer than the kills: enough
        simulate.join(timeout=600)
        assert sim["proc"].returncode == 0, sim["proc"].stderr
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline and group_lag(settings, app_id)[1] != 0:
            supervise()
            time.sleep(3)
        assert group_lag(settings, app_id)[1] == 0, "the group did not catch up after the chaos"
        time.sleep(20)   # the last windows and quiet cases close on the sweep timers
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        broker.up()
    # The sink once more, to the end of the topics, then the lake against the topics.
    final = subprocess.run([citybrain, "lake", "bronze", "--exit-when-idle", "10"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    run_id = json.loads(sim["proc"].stdout)["run_id"]
    raw = [c for c in contracts.values() if c.zone == "raw"]
    on_topics = {c.id: {(r.partition, r.offset) for r in read_topic(settings, c.topic, timeout_s=120)} for c in raw}
    in_lake = {c.id: Counter((row["partition"], row["offset"]) for f in layout.files(lake, "bronze", c.id)
                             for row in pq.read_table(f, columns=["partition", "offset"]).to_pylist()) for c in raw}
    lost = {cid: len(on_topics[cid] - set(in_lake[cid])) for cid in on_topics}
    lake_doubled = {cid: sum(n - 1 for n in rows.values() if n > 1) for cid, rows in in_lake.items()}

    published: dict[str, Counter[str]] = {}
    orders: set[str] = set()
    ordered: set[str] = set()
    events, warnings = [], []
    for c in contracts.values():
        if c.zone not in ("city", "alert", "dispatch"):
            continue
        for r in read_topic(settings, c.topic, timeout_s=120):
            headers = dict(r.headers or [])
            if headers.get("app-id") != app_id.encode():
                continue
            published.setdefault(c.topic, Counter())[headers["event-id"].decode()] += 1
            value = json.loads(r.value)
            if topics.is_work_orders(c.topic):
                orders.add(value["work_order_id"])
                ordered.add(value["source_id"])
            elif c.topic == "city.event.incident.v1":
                events.append(value)
            elif c.topic == "alert.early_warning.risk.v1":
                warnings.append(value)
    doubled = {t: sum(n - 1 for n in ids.values() if n > 1) for t, ids in published.items()}
    tickets = {json.loads(r.value)["service_request_id"] for r in read_topic(settings, "raw.hotline.service_request.v1")
               if dict(r.headers or []).get("trace-id") == run_id.encode()}
    truth = json.loads((tmp_path / "sim" / "ground_truth.json").read_text())
    replay = replay_outputs(truth, contracts, protector_from_settings(settings))
    expected_orders = {o["work_order_id"] for t, records in replay.items() if t.startswith("dispatch.") for o in records}
    two = evaluate(truth, in_window(truth, events), in_window(truth, warnings))
    one = evaluate(truth, replay.get(CITY_EVENTS, []), replay.get(EARLY_WARNINGS, []))
    # Worker B ran ahead: its log's first line (logging takes time.time) against worker A's, both started together.
    stamp = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\]", re.M)
    first = {name: datetime.fromisoformat(stamp.search((tmp_path / f"{name}.log").read_text(errors="replace"))[1])
             for name in ("worker-a", "worker-b")}
    report = {"skew_s": round((first["worker-b"] - first["worker-a"]).total_seconds()), "kills": dict(kills),
              "kills_total": sum(kills.values()), "late_restarts": late, "exits": dict(exits),
              "raw_records": sum(len(s) for s in on_topics.values()), "lake_lost": sum(lost.values()),
              "lake_doubled": sum(lake_doubled.values()), "outputs": sum(sum(c.values()) for c in published.values()),
              "outputs_doubled": sum(doubled.values()),
              "doubled_by_topic": {t: n for t, n in doubled.items() if n}, "tickets": len(tickets),
              "work_orders": len(orders), "work_orders_expected": len(expected_orders),
              "work_orders_missing": sorted(expected_orders - orders)[:10],
              "work_orders_unexpected": sorted(orders - expected_orders)[:10],
              "city_events": len({e["event_id"] for e in events}),
              "city_events_expected": len({e["event_id"] for e in replay.get(CITY_EVENTS, [])}),
              "city_events_other_id": sorted({e["event_id"] for e in events}
                                             - {e["event_id"] for e in replay.get(CITY_EVENTS, [])}),
              "city_events_other": _other_events(events, replay.get(CITY_EVENTS, [])),
              "recall": two["recall"], "precision": two["precision"],
              "replay_recall": one["recall"], "replay_precision": one["precision"]}
    (tmp_path / "chaos.json").write_text(json.dumps(report, indent=1))
    print("chaos:", json.dumps(report))
    assert report["kills_total"] >= CHAOS_KILLS and late >= 1, report
    assert report["skew_s"] >= SKEW_S - 60, report
    assert not any(lost.values()) and not any(lake_doubled.values()), (lost, lake_doubled)
    # Every ticket's work orders, once each: what the one pipeline dispatches for the day's tickets.
    ticket_orders = {o for o in orders if o.startswith("WO-HL")}
    expected_ticket_orders = {o for o in expected_orders if o.startswith("WO-HL")}
    assert expected_ticket_orders and ticket_orders == expected_ticket_orders, (
        sorted(expected_ticket_orders - ticket_orders)[:10], sorted(ticket_orders - expected_ticket_orders)[:10])
    assert not any(n for t, n in doubled.items() if t.startswith("dispatch.")), report["doubled_by_topic"]
    assert ordered <= tickets | {e["event_id"] for e in events}
    detected = lambda score: sorted((i["incident_id"], i["output"], i["detected"]) for i in score["items"])  # noqa: E731
    assert detected(two) == detected(one), (two, one)
    assert two["recall"] == one["recall"] and two["precision"] == one["precision"], (two, one)


def _other_events(events: list[dict], replayed: list[dict]) -> list[dict]:  # type: ignore[type-arg]
    """The city events the group sent under ids the one-pipeline replay did not, each beside the replay's events of
    the same category and street: their first-seen times and the kinds of evidence each rests on (calls, gauges,
    reports), what tells a takeover's lost state from a call baseline learnt across workers."""
    def brief(e: dict) -> dict:  # type: ignore[type-arg]
        evidence = e.get("evidence") or {}
        return {"event_id": e["event_id"], "status": e.get("status"), "detected_at": e.get("detected_at"),
                "evidence": {k: len(v) if isinstance(v, (list, dict)) else v for k, v in evidence.items()}}
    ids = {e["event_id"] for e in replayed}
    out = []
    for e in events:
        if e["event_id"] in ids or any(o["group"]["event_id"] == e["event_id"] for o in out):
            continue
        same = [r for r in replayed if (r.get("category"), r.get("street_code")) == (e.get("category"), e.get("street_code"))]
        out.append({"group": brief(e), "category": e.get("category"), "street_code": e.get("street_code"),
                    "replay": [brief(r) for r in same][:6]})
    return out[:10]
