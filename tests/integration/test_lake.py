"""The bronze lake sink against the real broker: every record exactly once, even after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from citybrain.kafka.topics import end_offsets
from tests.integration.conftest import TEST_ENV, cli, service_logins

pytestmark = pytest.mark.integration


def _sink(env: dict[str, str], *args: str) -> subprocess.Popen:  # type: ignore[type-arg]
    exe = Path(sys.executable).with_name("citybrain")
    return subprocess.Popen([str(exe), "lake", "bronze", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_bronze_sink_writes_every_record_once_across_a_kill_9(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Its own seed: the demo simulates the same day with seed 7 at another scale, and ticket ids carry only the day
    # and the seed, so the two runs' different tickets would share ids (the fusion tests count outputs by id).
    proc = cli("simulate", "--hours", "2", "--scale", "0.3", "--seed", "31", "--incidents", "none", "--json")
    assert proc.returncode == 0, proc.stderr
    lake_state = tmp_path / "state"
    service_logins(settings, lake_state)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    # Its own state folder, so it is given the broker's address and the services' passwords (the sink logs in as
    # svc-lake-bronze); the admin login in the environment is the other commands' (`lake compact` reads no topic).
    _protocol, _mechanism, user, password = settings.client_auth()
    env.update({**TEST_ENV, "CITYBRAIN_STATE_DIR": str(lake_state), "CITYBRAIN_SASL_USERNAME": user,
                "CITYBRAIN_SASL_PASSWORD": password})
    checkpoints = lake_state / "lake" / "_checkpoints" / "bronze"

    first = _sink(env, "--batch", "300", "--max-wait-s", "0.2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(checkpoints.rglob("*.json"))) < 10:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)   # mid-stream: some partitions written, others not yet
    first.wait(timeout=10)
    assert list(checkpoints.rglob("*.json")), "the sink wrote nothing before it was killed"

    second = _sink(env, "--batch", "5000", "--exit-when-idle", "3")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output

    # Small files of the killed run's batches are merged: one file per partition and hour.
    proc = cli("lake", "compact", "bronze", env_extra={"CITYBRAIN_STATE_DIR": str(lake_state)})
    assert proc.returncode == 0 and "files merged" in proc.stdout, proc.stderr
    files = Counter((path.parent, path.name.split("-")[0]) for path in (lake_state / "lake" / "bronze").rglob("*.parquet"))
    assert files and max(files.values()) == 1, [k for k, n in files.items() if n > 1][:5]

    raw = [c.topic for c in contracts.values() if c.zone == "raw"]
    ends = end_offsets(settings, raw)
    rows = Counter()
    for path in (lake_state / "lake" / "bronze").rglob("*.parquet"):
        table = pq.read_table(path, columns=["topic", "partition", "offset"])
        for t, p, o in zip(*(table.column(c).to_pylist() for c in ("topic", "partition", "offset")), strict=True):
            rows[(t, p, o)] += 1
    assert rows and max(rows.values()) == 1, "some record was written twice"
    for (topic, partition), end in ends.items():
        held = sum(1 for (t, p, _o) in rows if t == topic and p == partition)
        assert held == end, f"{topic}[{partition}]: lake holds {held} of {end} records"
    one = next((lake_state / "lake" / "bronze" / "raw.sensor.noise_level").rglob("*.parquet"))
    assert one.parent.name.startswith("hour=") and one.parent.parent.name.startswith("date=")
    value = json.loads(pq.read_table(one).column("value")[0].as_py())
    assert value["type"] == "NoiseLevelObserved"
