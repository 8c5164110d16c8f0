"""The access file's rules: every department reaches its own work orders, and nothing with personal
data is granted without a justification."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from citybrain import access
from citybrain.contracts.dispatch import dispatch_departments


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
    assert readers == {"dept-water"}
    # Raw topics holding personal data: only the hotline, on its own calls, with a justification.
    for topic in ("raw.hotline.service_request.v1", "raw.civil_affairs.elderly_care.v1", "raw.police.incident_110.v1"):
        grants = access.who_can(model, topic)
        assert all(g.justification for g in grants), topic
    assert {g.principal for g in access.who_can(model, "raw.hotline.service_request.v1")} == {"dept-hotline_12345"}
    assert not access.who_can(model, "raw.civil_affairs.elderly_care.v1")


def test_declared_acls_are_in_the_security_dag_grant_format(contracts) -> None:  # type: ignore[no-untyped-def]
    acls = access.declared_acl_set(access.load(access.ACCESS_FILE, contracts))
    assert ("User:dept-police", "TOPIC", "dispatch.police.work_order.v1", "LITERAL", "READ") in acls
    assert ("User:dept-police", "GROUP", "dept-police.", "PREFIXED", "READ") in acls
    assert not [a for a in acls if a[4] == "WRITE"]       # departments deliver through the edge
    assert not any(a[1] == "TOPIC" and a[2] == "raw.hotline.service_request.v1" and a[0] != "User:dept-hotline_12345"
                   for a in acls)


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
    path = _write(tmp_path, {"dept-police": {"department": "police", "grants": [{"write": "raw.police.incident_110.v1"}]}})
    model = access.load(path, contracts)
    assert ("User:dept-police", "TOPIC", "raw.police.incident_110.v1", "LITERAL", "WRITE") in access.declared_acl_set(model)
    assert [g.principal for g in access.who_can(model, "raw.police.incident_110.v1", "write")] == ["dept-police"]
    assert not access.who_can(model, "raw.police.incident_110.v1", "read")
