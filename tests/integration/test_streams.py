"""The fusion worker (faust-streaming) on simulator data, against the real broker."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from citybrain.contracts.validate import RecordValidator
from citybrain.sim.clock import default_start
from citybrain.kafka.topics import group_lag, read_topic
from citybrain.platform.workers import start_worker, stop_worker
from tests.integration.conftest import TEST_ENV, cli

pytestmark = pytest.mark.integration


def _outputs(settings, contracts, trace: str) -> dict[str, list[dict]]:  # type: ignore[no-untyped-def,type-arg]
    found: dict[str, list[dict]] = defaultdict(list)  # type: ignore[type-arg]
    for c in contracts.values():
        if c.zone not in ("city", "alert", "dispatch", "metrics"):
            continue
        for r in read_topic(settings, c.topic):
            if dict(r.headers or []).get("trace-id", b"").decode() in (trace, "streams.fusion.sweep"):
                found[c.topic].append(json.loads(r.value))
    return found


def test_fusion_worker_turns_a_simulated_storm_into_an_event_warnings_and_work_orders(
        broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app_id = f"citybrain-fusion-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**TEST_ENV, "CITYBRAIN_STREAMS_APP_ID": app_id})
    worker = start_worker(settings, env=env, log=tmp_path / "worker.log")

    def caught_up(timeout: float) -> int:
        deadline, lag = time.monotonic() + timeout, -1
        while time.monotonic() < deadline and worker.poll() is None:
            time.sleep(2)
            _done, lag = group_lag(settings, app_id)
            if lag == 0:
                break
        return lag

    try:
        # Let the worker join and read what other tests left on the broker (nothing, on a fresh one) first.
        if caught_up(45) not in (0, -1) or worker.poll() is not None:
            pytest.fail(f"worker did not read the existing topics (exit {worker.poll()})")
        # The worker runs while the city does: six simulated hours in about twelve seconds.
        # Three days ago: other tests simulate yesterday on the same broker, and a suite that runs across the
        # city's midnight has a new yesterday by now (the restart test's day is two days earlier still).
        start = (default_start() - timedelta(days=2)).isoformat()
        proc = cli("simulate", "--hours", "6", "--scale", "0.05", "--seed", "7", "--start", start, "--out", str(tmp_path),
                   "--json",
                   "--incidents", "underpass_flood,night_construction_noise", "--speed", "1800")
        assert proc.returncode == 0, proc.stderr
        run = json.loads(proc.stdout)["run_id"]
        lag = caught_up(180)
        assert lag == 0, f"worker did not catch up (lag {lag}, exit {worker.poll()})"
        # Once its inputs go quiet, the worker closes the last windows on its own timer.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not _outputs(settings, contracts, run).get("metrics.city.aggregate.v1"):
            time.sleep(2)
        time.sleep(8)
    finally:
        stop_worker(worker)
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    flood = next(i for i in truth["incidents"] if i["kind"] == "underpass_flood")

    outputs = _outputs(settings, contracts, run)
    by_topic = {c.topic: RecordValidator(c) for c in contracts.values()}
    for topic, records in outputs.items():
        assert all(by_topic[topic](r) is None for r in records), topic

    in_window = lambda at: flood["start"][:13] <= at[:13] <= flood["end"]  # noqa: E731  (other runs share the broker)
    events = [e for e in outputs["city.event.incident.v1"]
              if e["street_code"] == flood["street_code"] and in_window(e["first_seen"])]
    assert events and {e["category"] for e in events} == {"flood"}
    event = events[-1]
    assert set(flood["devices"]) & set(event["evidence"]["devices"]), [(e["status"], e["detected_at"], e["evidence"]) for e in events]
    assert event["confidence"] >= 0.85 and set(event["evidence"]["tickets"]) & set(flood["evidence"]["tickets"])
    warnings = [w for w in outputs["alert.early_warning.risk.v1"]
                if w["street_code"] == flood["street_code"] and in_window(w["observed_at"])]
    assert warnings and min(w["detected_at"] for w in warnings) < flood["evidence"]["complaint_peak"]
    orders = [o for o in outputs["dispatch.water.work_order.v1"] if o["source"] == "city_event"]
    assert {o["source_id"] for o in orders} >= {events[0]["event_id"]}
    for dept in ("transport", "emergency", "police"):
        assert any(o["source_id"] == events[0]["event_id"] for o in outputs[f"dispatch.{dept}.work_order.v1"]), dept
    ticket_orders = [o for topic, records in outputs.items() if topic.startswith("dispatch.") for o in records
                     if o["source"] == "ticket"]
    assert len(ticket_orders) > 20
    assert not [o for o in ticket_orders if o["department"] == "hotline_12345"]
    metrics = [m for m in outputs["metrics.city.aggregate.v1"] if m["district_code"] == flood["district_code"]
               and m["window"] == "hour" and flood["start"][:13] <= m["window_start"][:13] <= flood["end"]]
    assert any(m["source"] == "ticket" and m["category"] == "waterlogging" and m["count"] > 0 for m in metrics), sorted((m["window_start"], m["category"]) for m in outputs["metrics.city.aggregate.v1"] if m["district_code"] == flood["district_code"])[-12:]
    assert any(m["source"] == "reading" and m["category"] == "water_level" and m["max"] > 0.27 for m in metrics)


def test_a_routing_rule_changed_in_the_city_pack_changes_dispatch_without_a_restart(
        broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 13: re-importing the pack with the probe service routed elsewhere, within another SLA, moves the
    next ticket's work order there while the same worker keeps running."""
    from citybrain.sim.city import build_city
    from citybrain.city.pack import pack_from_city
    from citybrain.city.pack_import import import_pack
    from citybrain.ingest.producer import ValidatedProducer
    from citybrain.devtools.samples import sample_records
    from citybrain.times import now_iso

    def pack_routing_probe_to(department: str, sla_hours: float) -> Path:
        pack = pack_from_city(build_city(7), version=f"test-route-{department}", grids=False)
        pack.services.append({"service_code": "probe.route", "name": "派单探针", "group": "test", "category": "route_probe",
                              "department": department, "sla_hours": sla_hours, "priority": "normal"})
        pack.routing.append({"rule_id": "probe.route", "category": "route_probe", "service_code": "probe.route",
                             "department": department, "sla_hours": sla_hours, "priority": "normal"})
        directory = tmp_path / f"pack-{department}"
        pack.write(directory)
        return directory

    hotline = contracts["raw.hotline.service_request.v1"]

    def ticket(rid: str, status: str = "open") -> None:
        now = now_iso()
        record = {**sample_records(hotline, 1)[0], "service_request_id": rid, "service_code": "probe.route",
                  "category": "route_probe", "status": status, "lifecycle_state": "received" if status == "open" else "closed",
                  "lat": 38.70, "long": 117.45, "requested_datetime": now, "updated_datetime": now}
        with ValidatedProducer(settings, producer_id="test-routing") as producer:
            assert producer.produce_values(hotline, [record]).accepted == 1

    def order_of(rid: str, timeout: float = 90) -> dict:  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for dept in ("data_bureau", "water"):
                for r in read_topic(settings, f"dispatch.{dept}.work_order.v1", timeout_s=10):
                    value = json.loads(r.value)
                    if value.get("source_id") == rid:
                        return value
            time.sleep(2)
        pytest.fail(f"no work order for {rid} within {timeout:.0f} s")

    import_pack(settings, contracts, pack_routing_probe_to("data_bureau", 24))
    app_id = f"citybrain-fusion-routing-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update({**TEST_ENV, "CITYBRAIN_STREAMS_APP_ID": app_id})
    worker = start_worker(settings, env=env, log=tmp_path / "worker.log")
    first, second = (f"HL20261202{n}{uuid.uuid4().hex[:4].upper()}" for n in ("91", "92"))
    try:
        ticket(first)
        before = order_of(first, timeout=240)          # the worker first reads what is on the broker
        assert (before["department"], before["sla_hours"], before["rule_id"]) == ("data_bureau", 24.0, "probe.route")
        import_pack(settings, contracts, pack_routing_probe_to("water", 6))
        time.sleep(5)                                  # the rule reaches the running worker on its topic
        ticket(second)
        after = order_of(second)
        assert (after["department"], after["sla_hours"]) == ("water", 6.0)
        assert worker.poll() is None                   # the same worker, never restarted
    finally:
        stop_worker(worker)
        for rid in (first, second):   # closed: a later pack without the probe service is not refused for them
            ticket(rid, status="closed")
