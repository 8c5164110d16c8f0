"""faust-streaming (aiokafka underneath) runs against the pinned Apache Kafka 4.x broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citybrain.ingest.producer import ValidatedProducer
from citybrain.samples import sample_records
from citybrain.settings import PROJECT_ROOT
from citybrain.topics import read_topic

pytestmark = pytest.mark.integration


def test_faust_worker_consumes_and_keeps_a_table_with_changelog(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    contract = contracts["raw.sensor.noise_level.v1"]
    trace = os.urandom(6).hex()
    with ValidatedProducer(settings) as producer:
        assert producer.produce_values(contract, sample_records(contract, 300), trace_id=trace).accepted == 300
    result = tmp_path / "result"
    env = {**os.environ, "FAUST_PROBE_TRACE": trace, "FAUST_PROBE_EXPECTED": "300", "FAUST_PROBE_RESULT": str(result),
           "FAUST_PROBE_BOOTSTRAP": settings.bootstrap, "FAUST_PROBE_DATADIR": str(tmp_path / "faust")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "tests.integration.faust_probe_app", "worker", "-l", "warn"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not result.exists() and worker.poll() is None:
            time.sleep(0.5)
        assert result.exists(), f"faust worker did not finish; exit {worker.poll()}"
        assert result.read_text() == "300"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    # Faust itself created and wrote the table's changelog topic on the broker.
    changelog = read_topic(settings, f"citybrain-faust-probe-{trace}-probe_counts-changelog")
    assert changelog and changelog[-1].value == b"300"
