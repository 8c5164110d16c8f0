"""The validated producer against the real broker: headers, dead letters with reasons, counts that add up."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from citybrain.contracts.validate import RecordValidator
from citybrain.devtools.demo import write_feed
from citybrain.ingest.producer import DLQ_TOPIC
from citybrain.kafka.topics import read_topic
from tests.integration.conftest import cli

pytestmark = pytest.mark.integration
STANDARD_HEADERS = {"contract-id", "contract-version", "producer", "event-id", "trace-id"}


def test_produce_file_with_bad_records(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    contract = contracts["raw.hotline.service_request.v1"]
    feed = write_feed(contract, tmp_path, 50, settings.max_record_bytes)
    trace = os.urandom(8).hex()
    proc = cli("produce", "raw.hotline.service_request", str(feed), "--json", "--trace-id", trace)
    assert proc.returncode == 3, proc.stderr  # some records dead-lettered
    summary = json.loads(proc.stdout)
    assert summary["read"] == summary["accepted"] + summary["dead_lettered"]
    assert summary["accepted"] == 50
    assert set(summary["by_rule"]) == {"json-syntax", "not-an-object", "empty-record", "encoding", "unknown-field",
                                       "type", "too-large", "required", "maximum"}

    accepted = [r for r in read_topic(settings, contract.topic) if dict(r.headers)["trace-id"] == trace.encode()]
    assert len(accepted) == 50
    for r in accepted:
        headers = dict(r.headers)
        assert STANDARD_HEADERS <= set(headers)
        assert headers["contract-id"] == b"raw.hotline.service_request" and headers["contract-version"] == contract.version.encode()
        value = json.loads(r.value)
        assert r.key == value["service_request_id"].encode()
    assert len({dict(r.headers)["event-id"] for r in accepted}) == 50

    dead = [r for r in read_topic(settings, DLQ_TOPIC) if dict(r.headers)["trace-id"] == trace.encode()]
    assert len(dead) == summary["dead_lettered"]
    dlq_check = RecordValidator(contracts[DLQ_TOPIC])
    for r in dead:
        envelope = json.loads(r.value)
        assert dlq_check(envelope) is None  # the dead letter itself honours its contract
        headers = dict(r.headers)
        assert headers["dlq-rule"].decode() == envelope["rule"] and headers["dlq-contract"] == contract.topic.encode()
        assert envelope["source"].startswith(feed.name + ":")
    by_rule = {json.loads(r.value)["rule"]: json.loads(r.value) for r in dead}
    assert "original_base64" in by_rule["encoding"]  # non-UTF-8 bytes kept losslessly
    assert by_rule["too-large"]["original_truncated"] is True
    assert by_rule["maximum"]["field"] == "lat"


def test_all_valid_file_exits_zero(broker, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    contract = contracts["raw.sensor.noise_level.v1"]
    path = tmp_path / "noise.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in contract.examples) + "\n")
    proc = cli("produce", contract.topic, str(path))
    assert proc.returncode == 0, proc.stderr
    assert f"read {len(contract.examples)}, accepted {len(contract.examples)}, dead-lettered 0" in proc.stdout


def test_csv_with_wrong_columns_exits_2_and_produces_nothing(broker, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "inspections.csv"
    path.write_text("inspection_id,time,category\nUM-20261122-000001,now,garbage\n")
    before = len(read_topic(settings, "raw.urban_management.inspection.v1"))
    proc = cli("produce", "raw.urban_management.inspection", str(path))
    assert proc.returncode == 2
    assert "unknown column(s) time" in proc.stderr and "Nothing from this file was produced" in proc.stderr
    assert len(read_topic(settings, "raw.urban_management.inspection.v1")) == before


def test_unknown_contract_is_a_usage_error(broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.jsonl"
    path.write_text("{}\n")
    proc = cli("produce", "raw.sensor.air_qualty", str(path))
    assert proc.returncode == 2 and "No contract named 'raw.sensor.air_qualty'" in proc.stderr
