"""The platform's alert records as Alertmanager alerts: routed like the Prometheus rules' alerts, one alert per
record (a repeat is the same alert), resolving by themselves after the hold."""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from typing import Any

import pytest

from citybrain.contracts import topics
from citybrain.contracts.model import load_contract
from citybrain.errors import InputError
from citybrain.notify.alertmanager import BRIDGED, HOLD, RUNBOOK, to_alertmanager
from citybrain.settings import PROJECT_ROOT
from citybrain.times import iso, parse_time

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def example(topic: str) -> dict[str, Any]:
    """The contract's first example: a real-shaped, valid record of ``topic``."""
    return copy.deepcopy(load_contract(PROJECT_ROOT / "schemas" / f"{topic}.yaml").examples[0])


def test_every_alert_topic_is_bridged() -> None:
    alert_topics = {p.stem for p in (PROJECT_ROOT / "schemas").glob("alert.*.yaml")}
    assert set(BRIDGED) == alert_topics


@pytest.mark.parametrize("topic", sorted(BRIDGED))
def test_a_record_becomes_an_alert_routed_like_the_rules(topic: str) -> None:
    record = example(topic)
    alert = to_alertmanager(topic, record)
    labels = alert["labels"]
    assert {"alertname", "service", "severity", "alert_id"} <= set(labels) and labels["topic"] == topic
    assert labels["severity"] in ("critical", "warning")
    assert all(LABEL_NAME.match(name) and isinstance(value, str) and value for name, value in labels.items()), labels
    assert alert["annotations"]["runbook"] == RUNBOOK and alert["annotations"]["summary"]
    assert alert["startsAt"] == record["detected_at"]
    assert alert["endsAt"] == iso(parse_time(record["detected_at"]) + HOLD)
    # Delivered twice, a record is the same alert; another record is another alert.
    assert to_alertmanager(topic, copy.deepcopy(record)) == alert
    other = copy.deepcopy(record)
    id_field = next(k for k in ("alert_id", "finding_id", "warning_id") if k in other)
    other[id_field] = other[id_field][:-1] + ("X" if other[id_field][-1] != "X" else "Y")
    assert to_alertmanager(topic, other)["labels"] != labels


def test_severity_follows_the_record() -> None:
    finding = example(topics.SECURITY_FINDINGS)
    for severity, expected in (("low", "warning"), ("medium", "warning"), ("high", "critical"), ("critical", "critical")):
        finding["severity"] = severity
        labels = to_alertmanager(topics.SECURITY_FINDINGS, finding)["labels"]
        assert (labels["severity"], labels["finding_severity"]) == (expected, severity)
    sla = example(topics.SLA_ALERTS)
    assert to_alertmanager(topics.SLA_ALERTS, {**sla, "kind": "breached"})["labels"]["severity"] == "critical"
    assert to_alertmanager(topics.SLA_ALERTS, {**sla, "kind": "about_to_breach"})["labels"]["severity"] == "warning"
    warning = example(topics.EARLY_WARNINGS)
    assert [to_alertmanager(topics.EARLY_WARNINGS, {**warning, "severity": s})["labels"]["severity"] for s in (1, 2, 3, 4)] \
        == ["warning", "warning", "warning", "critical"]


def test_a_district_only_warning_names_its_district() -> None:
    warning = {**example(topics.EARLY_WARNINGS), "district_code": "990103"}
    del warning["street_code"]
    assert to_alertmanager(topics.EARLY_WARNINGS, warning)["labels"]["area_code"] == "990103"


def test_the_quality_alert_names_dataset_layer_check_and_partition() -> None:
    record = example(topics.QUALITY_ALERTS)
    alert = to_alertmanager(topics.QUALITY_ALERTS, record, hold=timedelta(minutes=30))
    assert alert["labels"]["partition"] == record["partition"] and alert["labels"]["check"] == record["check"]
    assert record["dataset"] in alert["annotations"]["summary"] and record["partition"] in alert["annotations"]["summary"]
    assert "partition" not in to_alertmanager(topics.QUALITY_ALERTS, {k: v for k, v in record.items() if k != "partition"})["labels"]


def test_a_topic_that_is_not_an_alert_topic_is_refused_by_name() -> None:
    with pytest.raises(InputError, match=r"'city\.event\.incident\.v1' is not an alert topic.*Fix"):
        to_alertmanager(topics.CITY_EVENTS, {"detected_at": "2026-11-22T02:00:00Z"})
