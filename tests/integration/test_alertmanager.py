"""Alerts reach the duty officer's webhook through the real Alertmanager (Debian's), with infra/prometheus's
configuration: grouped by alert and service, a service's lag alert inhibited while the service is down, and a
resolved notification when the alert ends. Alertmanager only: no broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from citybrain.contracts import topics
from citybrain.contracts.model import load_contract
from citybrain.devtools.browser import free_port
from citybrain.notify.alertmanager import to_alertmanager
from citybrain.settings import PROJECT_ROOT
from citybrain.times import iso

pytestmark = pytest.mark.integration

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
CONFIG = PROJECT_ROOT / "infra" / "prometheus" / "alertmanager.yml"


class Webhook:
    """A receiver on 127.0.0.1 that keeps each notification Alertmanager posts."""

    def __init__(self) -> None:
        #: Every notification, in the order received.
        self.log: list[dict[str, Any]] = []
        log = self.log

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                log.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/citybrain/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, status: str, group: dict[str, str], timeout: float = 30) -> dict[str, Any]:
        """The first notification of ``group`` with ``status``, waiting for it up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for note in list(self.log):
                if note["status"] == status and note["groupLabels"] == group:
                    return note
            time.sleep(0.1)
        seen = [(note["status"], note["groupLabels"]) for note in self.log]
        raise AssertionError(f"no {status} notification of {group} within {timeout} s; received {seen}")


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture
def alertmanager(webhook: Webhook, tmp_path: Path) -> Iterator[str]:
    """The real Alertmanager on a free port, with the project's configuration but short waits and our webhook."""
    if ALERTMANAGER is None:
        pytest.skip("Alertmanager (Debian's prometheus-alertmanager) is not installed: run infra/prometheus.sh")
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["global"]["resolve_timeout"] = "1m"
    config["route"].update(group_wait="1s", group_interval="2s")
    (hook,) = [c for r in config["receivers"] for c in r["webhook_configs"]]
    hook["url"] = webhook.url
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("w")
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Alertmanager did not start: {(tmp_path / 'alertmanager.log').read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def post(base: str, alerts: list[dict[str, Any]]) -> None:
    """Post alerts to Alertmanager's API v2, as Prometheus does on each evaluation."""
    request = urllib.request.Request(f"{base}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def alert(name: str, service: str, starts: datetime, ends: datetime | None = None, **labels: str) -> dict[str, Any]:
    """An alert as Prometheus posts it for a rule of rules.yml; with ``ends``, the alert resolved."""
    body: dict[str, Any] = {
        "labels": {"alertname": name, "service": service, "severity": "critical", **labels},
        "annotations": {"summary": f"{name} of {service}", "runbook": f"docs/how-to/operator/alerts.md#{name.lower()}"},
        "startsAt": starts.isoformat(), "generatorURL": "http://127.0.0.1:9090/graph",
    }
    if ends is not None:
        body["endsAt"] = ends.isoformat()
    return body


def test_alerts_reach_the_webhook_grouped_inhibited_and_resolved(alertmanager: str, webhook: Webhook) -> None:
    started = datetime.now(timezone.utc) - timedelta(minutes=3)
    down = alert("ServiceDown", "fusion", started, job="fusion", instance="127.0.0.1:9750")
    lag = alert("ConsumerLagGrowing", "fusion", started, topic="raw.hotline.ticket.v1")
    lag["labels"]["severity"] = "warning"
    other = alert("ServiceDown", "gateway", started, job="gateway", instance="127.0.0.1:8311")
    post(alertmanager, [down, lag, other])

    fusion = webhook.next("firing", {"alertname": "ServiceDown", "service": "fusion"})
    assert fusion["receiver"] == "duty-officer"
    assert fusion["commonLabels"] == {"alertname": "ServiceDown", "service": "fusion", "severity": "critical",
                                      "job": "fusion", "instance": "127.0.0.1:9750"}
    (sent,) = fusion["alerts"]
    assert sent["status"] == "firing" and sent["annotations"]["runbook"] == "docs/how-to/operator/alerts.md#servicedown"
    webhook.next("firing", {"alertname": "ServiceDown", "service": "gateway"})

    # The fusion worker's lag is inhibited by its being down: Alertmanager holds it and says why.
    with urllib.request.urlopen(f"{alertmanager}/api/v2/alerts?filter=alertname%3D%22ConsumerLagGrowing%22", timeout=10) as answer:
        (held,) = json.load(answer)
    assert held["status"]["state"] == "suppressed" and held["status"]["inhibitedBy"], held["status"]

    # Prometheus sends a resolved alert with its end time: the duty officer hears that fusion is back.
    time.sleep(3)  # two group intervals in which the inhibited lag could have gone out
    while_down = list(webhook.log)
    post(alertmanager, [alert("ServiceDown", "fusion", started, datetime.now(timezone.utc), job="fusion", instance="127.0.0.1:9750")])
    resolved = webhook.next("resolved", {"alertname": "ServiceDown", "service": "fusion"})
    assert [a["status"] for a in resolved["alerts"]] == ["resolved"]
    assert resolved["alerts"][0]["labels"]["service"] == "fusion"
    # Nothing went out about the lag while fusion was down; back up with its lag still growing, it does.
    assert {note["groupLabels"]["alertname"] for note in while_down} == {"ServiceDown"}
    lagging = webhook.next("firing", {"alertname": "ConsumerLagGrowing", "service": "fusion"})
    assert lagging["alerts"][0]["labels"]["topic"] == "raw.hotline.ticket.v1"


def test_a_platform_alert_record_reaches_the_webhook_as_its_own_group(alertmanager: str, webhook: Webhook) -> None:
    """The bridge's mapping (citybrain.notify.alertmanager) gives alerts Alertmanager takes and routes."""
    finding = load_contract(PROJECT_ROOT / "schemas" / f"{topics.SECURITY_FINDINGS}.yaml").examples[0]
    finding = {**finding, "detected_at": iso(datetime.now(timezone.utc))}
    post(alertmanager, [to_alertmanager(topics.SECURITY_FINDINGS, finding)])
    note = webhook.next("firing", {"alertname": "SecurityFinding", "service": "security"})
    (sent,) = note["alerts"]
    assert sent["labels"]["alert_id"] == finding["finding_id"] and sent["labels"]["severity"] == "critical"
    assert sent["annotations"]["summary"] == finding["summary"]
