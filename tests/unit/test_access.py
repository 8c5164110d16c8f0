"""The access file's rules: every department reaches its own work orders, and nothing with personal
data is granted without a justification."""

from __future__ import annotations

import importlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from citybrain import access
from citybrain.contracts.dispatch import dispatch_departments
from citybrain.settings import load_settings


def _write(tmp_path: Path, principals: dict) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "principals": principals}, allow_unicode=True))
    return path


def test_the_committed_access_file_loads_and_gives_each_department_its_work_orders(contracts) -> None:  # type: ignore[no-untyped-def]
    model = access.load(access.ACCESS_FILE, contracts)
    for dept in dispatch_departments():
        principal = model.principal_of(dept)
        assert f"dispatch.{dept}.work_order.v1" in access.topics_of(model, principal, [c.topic for c in contracts.values()])
    # Another department's work orders are nobody else's.
    readers = {g.principal for g in access.who_can(model, "dispatch.water.work_order.v1")}
    assert readers & set(model.departments) == {"dept-water"}
    # Raw topics holding personal data: among departments only the hotline, on its own calls, with a justification.
    for topic in ("raw.hotline.service_request.v1", "raw.civil_affairs.elderly_care.v1", "raw.police.incident_110.v1"):
        grants = access.who_can(model, topic)
        assert all(g.justification for g in grants), topic
    readers = {g.principal for g in access.who_can(model, "raw.hotline.service_request.v1")}
    assert readers & set(model.departments) == {"dept-hotline_12345"}
    assert {g.principal for g in access.who_can(model, "raw.civil_affairs.elderly_care.v1")} == {"svc-lake-bronze"}


def test_declared_acls_are_in_the_security_dag_grant_format(contracts) -> None:  # type: ignore[no-untyped-def]
    acls = access.declared_acl_set(access.load(access.ACCESS_FILE, contracts))
    assert ("User:dept-police", "TOPIC", "dispatch.police.work_order.v1", "LITERAL", "READ") in acls
    assert ("User:dept-police", "GROUP", "dept-police.", "PREFIXED", "READ") in acls
    departments = {a for a in acls if a[0].startswith("User:dept-")}
    assert not [a for a in departments if a[4] == "WRITE"]       # departments deliver through the edge
    assert not any(a[1] == "TOPIC" and a[2] == "raw.hotline.service_request.v1" and a[0] != "User:dept-hotline_12345"
                   for a in departments)


def test_reading_personal_data_needs_a_justification(contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, {"dept-police": {"department": "police",
                                             "grants": [{"read": "raw.hotline.service_request.v1"}]}})
    with pytest.raises(access.AccessError) as err:
        access.load(path, contracts)
    text = str(err.value)
    assert "principals.dept-police.grants[0]" in text and "caller_phone" in text and "justification" in text
    # A prefix that sweeps raw topics in is caught the same way.
    path = _write(tmp_path, {"dept-police": {"department": "police", "grants": [{"read": "raw.", "pattern": "prefixed"}]}})
    with pytest.raises(access.AccessError, match="raw.civil_affairs.elderly_care.v1"):
        access.load(path, contracts)


def test_every_broken_rule_is_reported_with_its_fix(contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, {
        "dept-nowhere": {"department": "ministry_of_magic"},
        "citybrain-admin": {"department": "police"},
        "dept-water": {"department": "water", "grants": [{"read": "dispatch.water.work_orders.v1"},
                                                         {"read": "x", "write": "y"},
                                                         {"read": "dispatch.", "pattern": "glob"}]},
    })
    with pytest.raises(access.AccessError) as err:
        access.load(path, contracts)
    text = str(err.value)
    assert "5 problem(s)" in text
    assert "ministry_of_magic" in text and "not a department" in text
    assert "citybrain-admin" in text
    assert "no contract topic is 'dispatch.water.work_orders.v1'" in text
    assert "grants[1]" in text and "grants[2].pattern" in text
    assert text.count("Fix:") >= 5


def test_show_helpers_answer_by_department_or_principal(contracts) -> None:  # type: ignore[no-untyped-def]
    model = access.load(access.ACCESS_FILE, contracts)
    assert model.principal_of("water") == model.principal_of("dept-water") == "dept-water"
    with pytest.raises(access.AccessError, match="neither a principal nor a department"):
        model.principal_of("atlantis")
    alerts = access.topics_of(model, "dept-data_bureau", [c.topic for c in contracts.values()])
    assert {t for t in alerts if t.startswith("alert.")} == {c.topic for c in contracts.values() if c.zone == "alert"}


def test_a_write_grant_becomes_a_write_acl(contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, {"dept-police": {"department": "police", "grants": [
        {"write": "raw.police.incident_110.v1", "justification": "The 110 system's export, checked by its own edge."}]}})
    model = access.load(path, contracts)
    assert ("User:dept-police", "TOPIC", "raw.police.incident_110.v1", "LITERAL", "WRITE") in access.declared_acl_set(model)
    assert [g.principal for g in access.who_can(model, "raw.police.incident_110.v1", "write")] == ["dept-police"]
    assert not access.who_can(model, "raw.police.incident_110.v1", "read")


def test_each_public_name_comes_from_the_module_named_for_it() -> None:
    """``from citybrain import access`` and the module that holds a name give the same object."""
    for name in access.__all__:
        module = importlib.import_module(f"citybrain.access.{access._MODULE_OF[name]}")
        assert getattr(access, name) is getattr(module, name), name
        assert name in module.__all__, name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        access.nothing_here  # noqa: B018


def test_the_stream_workers_privacy_import_leaves_the_grants_and_the_broker_client_unloaded() -> None:
    """The stream workers import ``citybrain.access.privacy``; the package's lazy lookup keeps the grants and
    kafka-python's admin client out of them."""
    code = ("import sys, citybrain.access.privacy; "
            "print(sorted(m for m in ('citybrain.access.grants', 'citybrain.access.acls', 'kafka') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_names_moved_out_of_grants_still_import_from_it() -> None:
    """Callers that import the broker, credential and audit names from ``citybrain.access.grants`` keep working."""
    from citybrain.access import grants

    for name, module in grants._MOVED.items():
        assert getattr(grants, name) is getattr(importlib.import_module(f"citybrain.access.{module}"), name)


def test_a_department_gets_its_client_settings_once_it_has_a_credential(contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var")})
    model = access.load(access.ACCESS_FILE, contracts)
    with pytest.raises(access.AccessError, match="dept-water has no credential yet"):
        access.client_config(settings, model, "water")
    password = access.CredentialStore(settings.access_dir).password("dept-water")
    store = access.CredentialStore(settings.access_dir)          # read back from disk
    assert store.passwords == {"dept-water": password}
    assert stat.S_IMODE(store.path.stat().st_mode) & 0o077 == 0   # owner only
    config = access.client_config(settings, model, "water")
    assert (config["principal"], config["sasl_username"], config["sasl_password"], config["group_prefix"]) == (
        "dept-water", "dept-water", password, "dept-water.")


def test_the_audit_log_keeps_every_change_and_names_the_failures(contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = access.load(access.ACCESS_FILE, contracts)
    log = access.AuditLog(tmp_path, "officer", model)
    acl = ("User:dept-water", "TOPIC", "dispatch.water.work_order.v1", "LITERAL", "READ")
    log.record("grant", "User:dept-water", acl=acl)
    log.record("rotate_credential", "dept-police", error="ResourceNotFound")
    assert log.failures == ["rotate_credential dept-police: ResourceNotFound"]
    entries = access.read_audit(tmp_path)
    assert [(e["action"], e["principal"], e["result"]) for e in entries] == [
        ("grant", "dept-water", "ok"), ("rotate_credential", "dept-police", "failed: ResourceNotFound")]
    assert entries[0]["operation"] == "read" and entries[0]["source_digest"] == model.digest
    lines = access.audit_path(tmp_path).read_text().splitlines()
    assert [json.loads(line)["actor"] for line in lines] == ["officer"] * 2
    assert access.read_audit(tmp_path, last=1) == entries[1:]
