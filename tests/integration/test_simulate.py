"""`citybrain simulate` and `citybrain load` against the real broker: counts add up, ground truth written."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from citybrain.ingest.feeds import load_feeds
from citybrain.ingest.producer import DLQ_TOPIC
from citybrain.settings import PROJECT_ROOT
from citybrain.sim.clock import default_start
from citybrain.times import iso
from citybrain.sim.exports import broken_rows, to_row, write_export
from citybrain.kafka.topics import read_topic
from tests.integration.conftest import cli

pytestmark = pytest.mark.integration


def _by_trace(settings, topic: str, trace: str) -> list:  # type: ignore[no-untyped-def,type-arg]
    return [r for r in read_topic(settings, topic) if dict(r.headers or []).get("trace-id", b"").decode() == trace]


def test_simulate_produces_every_feed_and_writes_the_ground_truth(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "sim"
    proc = cli("simulate", "--hours", "3", "--scale", "0.05", "--seed", "5", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["format"] == "citybrain.ground_truth/1" and truth["start"] == iso(default_start())
    assert {i["kind"] for i in truth["incidents"]} >= {"underpass_flood", "spoofed_device", "consumer_surge"}
    surge = next(i for i in truth["incidents"] if i["kind"] == "consumer_surge")
    assert surge["evidence"]["executed"] and any(r["mode"] == "surge" and r["records"] > 0 for r in surge["evidence"]["reads"])

    run = summary["run_id"]
    raw_topics = {c.topic for c in contracts.values() if c.zone == "raw"}
    assert set(summary["topics"]) == raw_topics
    dead_back = Counter(dict(r.headers)["dlq-contract"].decode() for r in _by_trace(settings, DLQ_TOPIC, run))
    for topic, counts in summary["topics"].items():
        assert counts["read"] == counts["accepted"] + counts["dead_lettered"], topic
        assert len(_by_trace(settings, topic, run)) == counts["accepted"], topic
        assert dead_back.get(topic, 0) == counts["dead_lettered"], topic
    producers = {dict(r.headers)["producer"].decode() for r in _by_trace(settings, "raw.sensor.water_level.v1", run)}
    assert "gw.chengbo" in producers and "gw.qingyuan" in producers


def test_load_a_gb18030_police_export_with_bad_rows(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    feed = load_feeds(PROJECT_ROOT / "infra" / "feeds", contracts)["police_110"]
    record = {"incident_id": "110-20261122-77001", "reported_at": "2026-11-22T06:32:10Z", "category": "traffic_accident",
              "lat": 38.7, "long": 117.45, "status": "dispatched", "location_text": "新华大道与人民街路口"}
    path = tmp_path / "police_110.csv"
    write_export(feed, [record, {**record, "incident_id": "110-20261122-77002"}], path, "gb18030",
                 broken_rows(feed, to_row(feed, record)))
    proc = cli("load", "police_110", str(path), "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr   # some rows dead-lettered
    report = json.loads(proc.stdout)
    assert report["encoding"] == "gb18030"
    assert (report["read"], report["accepted"], report["dead_lettered"]) == (5, 2, 3)
    assert report["by_rule"] == {"mapping": 1, "datetime": 1, "required": 1}
    stored = [json.loads(r.value) for r in read_topic(settings, "raw.police.incident_110.v1")]
    loaded = [r for r in stored if r["incident_id"] == "110-20261122-77001"]
    assert loaded and loaded[-1]["reported_at"] == "2026-11-22T06:32:10Z" and loaded[-1]["location_text"] == "新华大道与人民街路口"

    old = cli("simulate", "--start", "2026-01-01T00:00:00+08:00", "--hours", "1")
    assert old.returncode == 2 and "retention" in old.stderr

    wrong = cli("load", "urban_inspection", str(path))
    assert wrong.returncode == 2 and "does not match feed urban_inspection" in wrong.stderr
