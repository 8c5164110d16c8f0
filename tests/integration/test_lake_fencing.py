"""Fenced lake sinks against the real broker: a second sink on a topic is refused naming the first, and the lake
holds each offset once (probed before the lease: two sinks on one topic wrote 35 rows for 25 offsets)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from citybrain.contracts.topics import NOISE_LEVEL
from citybrain.devtools.samples import sample_records
from citybrain.ingest.producer import ValidatedProducer
from citybrain.kafka.topics import read_topic
from citybrain.lake import layout
from citybrain.lake.lease import LeaseHeld
from citybrain.streams.lake_sink import run_sink
from tests.integration.conftest import cli, service_logins

pytestmark = pytest.mark.integration


def test_a_second_sink_on_a_topic_is_refused_and_the_lake_holds_each_offset_once(broker, settings, contracts,  # type: ignore[no-untyped-def]
                                                                                  tmp_path: Path) -> None:
    contract = contracts[NOISE_LEVEL]
    with ValidatedProducer(settings, producer_id="test-lake-fencing") as producer:
        assert producer.produce_values(contract, sample_records(contract, 25)).accepted == 25
    state = tmp_path / "state"
    lake = state / "lake"
    lease = layout.lease_path(lake, "bronze", NOISE_LEVEL)
    first: dict[str, Any] = {}
    failed: list[BaseException] = []

    def sink() -> None:
        try:
            first.update(run_sink(settings, [NOISE_LEVEL], lake, batch=10, max_wait_s=0.2, stop_when_idle_s=20.0))
        except BaseException as exc:   # noqa: BLE001 - reported by the test below
            failed.append(exc)

    running = threading.Thread(target=sink)
    running.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not lease.exists():
        time.sleep(0.05)
    assert lease.exists(), "the first sink took no lease"

    # The same lake in-process, and the real command line beside it: both refused, naming the holder.
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
        run_sink(settings, [NOISE_LEVEL], lake, stop_when_idle_s=1.0)
    _protocol, _mechanism, user, password = settings.client_auth()
    service_logins(settings, state)   # the second sink logs in as svc-lake-bronze from its own state folder
    second = cli("lake", "bronze", "--exit-when-idle", "1", env_extra={   # its own state folder: credentials given
        "CITYBRAIN_STATE_DIR": str(state), "CITYBRAIN_SASL_USERNAME": user, "CITYBRAIN_SASL_PASSWORD": password})
    assert second.returncode == 1, second.stdout + second.stderr
    assert "lease held by" in second.stderr and f"pid {os.getpid()}" in second.stderr, second.stderr

    running.join(timeout=120)
    assert not running.is_alive() and not failed, failed
    assert not lease.exists(), "the first sink kept its lease after it stopped"

    rows: Counter[tuple[int, int]] = Counter()
    for path in layout.files(lake, "bronze", layout.contract_of(NOISE_LEVEL)):
        table = pq.read_table(str(path), columns=["partition", "offset"])
        rows.update(zip(table.column("partition").to_pylist(), table.column("offset").to_pylist()))
    assert rows and max(rows.values()) == 1, "some offset was written twice"
    on_topic = {(r.partition, r.offset) for r in read_topic(settings, NOISE_LEVEL, timeout_s=60)}
    assert set(rows) == on_topic and sum(rows.values()) == first["written"], "rows != offsets"
