"""`citybrain notify alertmanager` against the test broker and the real Alertmanager (Debian's): the platform's alert
records reach the duty officer's webhook; a record that cannot be read is dead-lettered; Alertmanager down keeps the
records (nothing committed), and a restart sends each once, from where the group's offsets say."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from citybrain.contracts import topics
from citybrain.devtools.browser import free_port
from citybrain.ingest.producer import ValidatedProducer
from citybrain.ingest.readers import RawRecord
from citybrain.kafka import clients
from citybrain.kafka.topics import committed_offsets, read_topic
from citybrain.notify.alert_bridge import GROUP
from citybrain.times import iso
from tests.integration.conftest import TEST_ENV, cli
from tests.integration.test_alertmanager import Webhook, alertmanager, webhook  # noqa: F401 - the fixtures

pytestmark = pytest.mark.integration

ENV = {"CITYBRAIN_METRICS_PORT": "0"}


def _sla_alerts(settings, contracts, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    """``n`` SLA alerts detected now, on the broker; their ids."""
    contract = contracts[topics.SLA_ALERTS]
    ids = [f"SLA-BRIDGE-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    records = [RawRecord("test-bridge", b"", value={**contract.examples[0], "alert_id": i,
                                                    "detected_at": iso(datetime.now(timezone.utc))}) for i in ids]
    with ValidatedProducer(settings, producer_id="test.alert-bridge") as producer:
        assert producer.produce(contract, records).accepted == n
    return ids


def _held(base: str, alert_id: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds with this ``alert_id``."""
    query = urllib.parse.quote(f'alert_id="{alert_id}"')
    with urllib.request.urlopen(f"{base}/api/v2/alerts?filter={query}", timeout=10) as answer:
        return json.load(answer)


def _committed(settings) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """The bridge group's committed offsets on the SLA topic, by partition."""
    return {p: o for (t, p), o in (committed_offsets(settings, GROUP) or {}).items() if t == topics.SLA_ALERTS}


@pytest.mark.timeout(300)
def test_alert_records_reach_the_webhook_and_a_bad_record_is_dead_lettered(  # type: ignore[no-untyped-def]
        broker, settings, contracts, alertmanager: str, webhook: Webhook) -> None:  # noqa: F811
    ids = _sla_alerts(settings, contracts, 2)
    producer = clients.producer(settings)
    producer.send(topics.SLA_ALERTS, b"{not json", headers=[("event-id", b"bridge-bad-1")]).get(timeout=30)
    producer.close()

    run = cli("notify", "alertmanager", "--url", alertmanager, "--exit-when-idle", "3", env_extra=ENV)
    assert run.returncode == 0, run.stdout + run.stderr

    note = webhook.next("firing", {"alertname": "TicketSLA", "service": "sla"})
    assert note["receiver"] == "duty-officer"
    for alert_id in ids:
        (held,) = _held(alertmanager, alert_id)
        assert held["labels"]["topic"] == topics.SLA_ALERTS and held["status"]["state"] == "active"
    letters = [json.loads(r.value) for r in read_topic(settings, topics.NOTIFY_DEAD_LETTERS)]
    (bad,) = [x for x in letters if x["event_id"] == "bridge-bad-1"]
    assert (bad["reason"], bad["subscription_id"], bad["notification_text"]) == \
        ("record-unreadable", "alertmanager", "{not json")
    status = json.loads((settings.state_dir / "run" / "notify-alertmanager.json").read_text())
    assert status["failing"] is False and status["sent"] >= 2


@pytest.mark.timeout(300)
def test_alertmanager_down_keeps_the_records_and_a_restart_sends_each_once(  # type: ignore[no-untyped-def]
        broker, settings, contracts, alertmanager: str, tmp_path: Path) -> None:  # noqa: F811
    first = cli("notify", "alertmanager", "--url", alertmanager, "--exit-when-idle", "3", env_extra=ENV)
    assert first.returncode == 0, first.stdout + first.stderr   # caught up with what earlier tests left
    before = _committed(settings)
    (alert_id,) = _sla_alerts(settings, contracts, 1)

    nobody = f"http://127.0.0.1:{free_port()}"   # Alertmanager down: nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")} | TEST_ENV | ENV
    exe = str(Path(sys.executable).with_name("citybrain"))
    down = subprocess.Popen([exe, "notify", "alertmanager", "--url", nobody, "--retry-base", "0.2", "--retry-max",
                             "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status_file = settings.state_dir / "run" / "notify-alertmanager.json"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(status_file.read_text()) if status_file.exists() else {}
            if status.get("failing") and status.get("retries", 0) >= 2:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"the bridge did not report Alertmanager failing: {status}")
    finally:
        down.send_signal(signal.SIGTERM)
        out, err = down.communicate(timeout=60)
    assert down.returncode == 0, out + err
    assert "ConnectionRefusedError" in status["last_error"] and _committed(settings) == before   # nothing committed

    again = cli("notify", "alertmanager", "--url", alertmanager, "--exit-when-idle", "3", env_extra=ENV)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(_held(alertmanager, alert_id)) == 1
    sent = int(again.stdout.splitlines()[1].split("\t")[0])
    assert sent == 1, again.stdout   # the new record only: the first run's offsets were committed
