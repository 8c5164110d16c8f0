"""Department access on the real, secured broker: granted reads work; other departments' topics,
raw topics holding personal data, bad passwords and revoked grants are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from citybrain import access
from citybrain.devtools.samples import sample_records
from citybrain.ingest.producer import ValidatedProducer
from citybrain.settings import PROJECT_ROOT
from tests.integration.conftest import cli

pytestmark = pytest.mark.integration

EXAMPLE = PROJECT_ROOT / "examples" / "department_consumer.py"


def _config(dept: str, tmp_path: Path) -> Path:
    proc = cli("access", "client-config", dept, "--json")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["security_protocol"] == "SASL_PLAINTEXT" and cfg["sasl_mechanism"] == "SCRAM-SHA-512"
    assert cfg["sasl_username"] == f"dept-{dept}" and len(cfg["sasl_password"]) >= 24
    path = tmp_path / f"{dept}.json"
    path.write_text(json.dumps(cfg))
    return path


def _read(config: Path, topic: str | None = None) -> subprocess.CompletedProcess[str]:
    """The README's department consumer, run as the department would run it."""
    args = [sys.executable, str(EXAMPLE), str(config), "--idle", "4"] + (["--topic", topic] if topic else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def work_order(broker, settings, contracts):  # type: ignore[no-untyped-def]
    contract = contracts["dispatch.police.work_order.v1"]
    with ValidatedProducer(settings) as producer:
        assert producer.produce_values(contract, sample_records(contract, 3)).accepted == 3


def test_a_department_reads_its_own_dispatch_topic(work_order, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = _read(_config("police", tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 record(s) read from dispatch.police.work_order.v1 as dept-police" in proc.stdout


@pytest.mark.parametrize("topic", ["dispatch.water.work_order.v1",          # another department's work orders
                                   "raw.hotline.service_request.v1",         # callers' names, phones, addresses
                                   "raw.civil_affairs.elderly_care.v1"])     # resident ID numbers
def test_a_department_is_refused_topics_it_is_not_granted(work_order, topic: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = _read(_config("police", tmp_path), topic)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"TopicAuthorizationFailed: dept-police is not granted read on {topic}" in proc.stderr


def test_a_wrong_password_is_refused(broker, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = _config("police", tmp_path)
    cfg = json.loads(config.read_text())
    config.write_text(json.dumps({**cfg, "sasl_password": cfg["sasl_password"][::-1]}))
    proc = _read(config)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "SaslAuthenticationFailed" in proc.stderr
    # The broker logged it where the security-monitoring DAG reads it.
    log = (settings.state_dir / "kafka" / "logs" / "server.out").read_text(errors="replace")
    assert "Failed authentication with /127.0.0.1" in log and "invalid credentials" in log


def test_revoking_a_grant_takes_effect_and_is_audited(work_order, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = _config("police", tmp_path)
    assert _read(config).returncode == 0
    doc = yaml.safe_load(access.ACCESS_FILE.read_text())
    doc["principals"]["dept-police"]["grants"] = [g for g in doc["principals"]["dept-police"]["grants"]
                                                  if g.get("read") != "dispatch.police.work_order.v1"]
    revoked = tmp_path / "access.yaml"
    revoked.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        dry = cli("access", "apply", "--file", str(revoked), "--dry-run")
        assert dry.returncode == 0 and "would be applied" in dry.stdout
        assert _read(config).returncode == 0, "a dry run changed the broker"
        proc = cli("access", "apply", "--file", str(revoked), "--actor", "officer-wang")
        assert proc.returncode == 0, proc.stderr
        assert "- revoke User:dept-police" in proc.stdout and "dispatch.police.work_order.v1" in proc.stdout
        refused = _read(config)
        assert refused.returncode == 3 and "TopicAuthorizationFailed" in refused.stderr
        audit = [json.loads(line) for line in cli("access", "audit", "--json").stdout.splitlines()]
        assert {"actor": "officer-wang", "action": "revoke", "principal": "dept-police",
                "resource": "dispatch.police.work_order.v1", "operation": "read", "result": "ok"}.items() \
            <= next(e for e in reversed(audit) if e["action"] == "revoke").items()
        # `show` (from the committed file) flags the declared grant the broker no longer holds.
        who = json.loads(cli("access", "show", "--topic", "dispatch.police.work_order.v1", "--json").stdout)
        assert [(g["principal"], g["on_broker"]) for g in who["grants"] if g["principal"].startswith("dept-")] == [
            ("dept-police", False)]
        # The security DAG's drift check sees the broker and the (real) access file disagree.
        from citybrain.security.checks import grant_drift
        from citybrain.security.monitor import declared_grants
        from datetime import datetime, timezone

        drift = grant_drift(declared_grants(access.ACCESS_FILE), access.broker_acl_set(settings), datetime.now(timezone.utc))
        assert [f["evidence"]["resource"] for f in drift] == ["dispatch.police.work_order.v1"]
    finally:
        restored = cli("access", "apply")
        assert restored.returncode == 0 and "+ grant  User:dept-police" in restored.stdout
    assert _read(config).returncode == 0


def test_show_answers_who_can_read_a_topic_and_what_a_department_can_read(broker) -> None:  # type: ignore[no-untyped-def]
    who = json.loads(cli("access", "show", "--topic", "raw.hotline.service_request.v1", "--json").stdout)
    readers = [g["principal"] for g in who["grants"] if g["operation"] == "read"]
    assert [p for p in readers if p.startswith("dept-")] == ["dept-hotline_12345"]
    assert sorted(p for p in readers if p.startswith("svc-")) == ["svc-gateway", "svc-lake-bronze"]
    assert who["broker_checked"] and all(g["on_broker"] for g in who["grants"])
    assert "caller_phone" in who["personal_fields"]
    what = json.loads(cli("access", "show", "--department", "police", "--json").stdout)
    assert what["dept-police"]["read"] == ["catalog.contracts.registry.v1", "dispatch.command.reply.v1",
                                           "dispatch.command.urge.v1", "dispatch.command.whistle.v1",
                                           "dispatch.police.work_order.v1"]
    assert what["dept-police"]["write"] == []      # feeds arrive through the edge, which checks contracts


def test_rotating_a_password_locks_out_the_old_one(work_order, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old = _config("civil_affairs", tmp_path)
    assert _read(old).returncode == 0
    proc = cli("access", "rotate", "civil_affairs", "--actor", "officer-wang")
    assert proc.returncode == 0 and "new password issued" in proc.stdout, proc.stderr
    refused = _read(old)
    assert refused.returncode == 4 and "SaslAuthenticationFailed" in refused.stderr
    new = tmp_path / "new"
    new.mkdir()
    assert _read(_config("civil_affairs", new)).returncode == 0
    audit = [json.loads(line) for line in cli("access", "audit", "--json").stdout.splitlines()]
    assert any(e["action"] == "rotate_credential" and e["principal"] == "dept-civil_affairs" and e["result"] == "ok"
               for e in audit)
