"""faust-streaming (aiokafka underneath) runs against the pinned Apache Kafka 4.x broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citybrain.ingest.producer import ValidatedProducer
from citybrain.devtools.samples import sample_records
from citybrain.settings import PROJECT_ROOT
from citybrain.kafka.topics import read_topic
from citybrain.platform.workers import stop_worker

pytestmark = pytest.mark.integration


def test_faust_worker_consumes_and_keeps_a_table_with_changelog(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    contract = contracts["raw.sensor.noise_level.v1"]
    trace = os.urandom(6).hex()
    with ValidatedProducer(settings) as producer:
        assert producer.produce_values(contract, sample_records(contract, 300), trace_id=trace).accepted == 300
    result = tmp_path / "result"
    _protocol, _mechanism, user, password = settings.client_auth()
    env = {**os.environ, "FAUST_PROBE_USER": user, "FAUST_PROBE_PASSWORD": password, "FAUST_PROBE_TRACE": trace, "FAUST_PROBE_EXPECTED": "300", "FAUST_PROBE_RESULT": str(result),
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
        # Faust writes the table's changelog topic itself; wait (while the worker runs) for the last update.
        name = f"citybrain-faust-probe-{trace}-probe_counts-changelog"
        changelog: list = []  # type: ignore[type-arg]
        while time.monotonic() < deadline + 30:
            try:
                changelog = read_topic(settings, name, timeout_s=5)
            except LookupError:
                changelog = []
            # Updates are written to the changelog partition of the event being processed, so
            # the final count may sit in any partition: look for it, not at the last record.
            if any(r.value == b"300" for r in changelog):
                break
            time.sleep(0.5)
    finally:
        stop_worker(worker)
    assert any(r.value == b"300" for r in changelog), "Faust did not write the table's final count to its changelog"
