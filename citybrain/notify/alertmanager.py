"""The platform's own alert records as Alertmanager alerts, so a duty officer gets one stream of alerts.

Prometheus' rules (``infra/prometheus/rules.yml``) watch the services; the ``alert.*`` topics carry what the
platform itself finds: failed data-quality checks, security findings, early warnings, tickets past their SLA.
:func:`to_alertmanager` turns one such record into the body Alertmanager's API v2 takes
(``POST /api/v2/alerts``), labelled as the rules' alerts are (``alertname``, ``service``, ``severity``), so the
same route, grouping and silences apply.

A record is an event, not a state: nothing ever says a quality failure is over. The alert fires from the
record's detection time for ``hold`` and then resolves by itself. Its labels include the record's id, so each
record is one alert and a record sent twice (delivery is at least once) is the same alert, not a second one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

from citybrain.contracts import topics
from citybrain.errors import InputError
from citybrain.times import iso, parse_time

__all__ = ["BRIDGED", "HOLD", "RUNBOOK", "to_alertmanager"]

#: How long an alert made from a record fires before it resolves by itself.
HOLD = timedelta(hours=4)
#: Where the duty officer reads what to do about the bridged alerts.
RUNBOOK = "docs/how-to/operator/alerts.md#alerts-from-the-platforms-topics"

Record = dict[str, Any]


def _quality(record: Record) -> tuple[dict[str, str], str]:
    labels = {"alertname": "DataQualityFailed", "service": "data-quality", "severity": "warning",
              "alert_id": record["alert_id"], "dataset": record["dataset"], "layer": record["layer"],
              "check": record["check"], "action": record["action"]}
    if record.get("partition"):
        labels["partition"] = record["partition"]
    where = f"{record['layer']} {record['dataset']}" + (f" {record['partition']}" if record.get("partition") else "")
    return labels, f"{record['check']} failed on {where} ({record['action']})"


def _security(record: Record) -> tuple[dict[str, str], str]:
    labels = {"alertname": "SecurityFinding", "service": "security",
              "severity": "critical" if record["severity"] in ("high", "critical") else "warning",
              "alert_id": record["finding_id"], "finding_severity": record["severity"], "kind": record["kind"],
              "subject": record["subject"]}
    return labels, record["summary"]


def _early_warning(record: Record) -> tuple[dict[str, str], str]:
    area = record.get("street_code") or record.get("district_code") or ""
    labels = {"alertname": "EarlyWarning", "service": "early-warning",
              "severity": "critical" if record["severity"] >= 4 else "warning",
              "alert_id": record["warning_id"], "risk_level": str(record["severity"]), "kind": record["kind"],
              "category": record["category"], "area_code": area}
    return labels, record["explanation"]


def _sla(record: Record) -> tuple[dict[str, str], str]:
    labels = {"alertname": "TicketSLA", "service": "sla",
              "severity": "critical" if record["kind"] == "breached" else "warning",
              "alert_id": record["alert_id"], "kind": record["kind"], "department": record["department"]}
    state = "is past" if record["kind"] == "breached" else "is about to pass"
    return labels, (f"ticket {record['service_request_id']} at {record['department']} {state} its SLA deadline "
                    f"{record['sla_deadline']} ({record['overdue_min']} min overdue)")


#: The alert topics bridged, and how each record becomes labels and a summary.
BRIDGED: dict[str, Callable[[Record], tuple[dict[str, str], str]]] = {
    topics.QUALITY_ALERTS: _quality,
    topics.SECURITY_FINDINGS: _security,
    topics.EARLY_WARNINGS: _early_warning,
    topics.SLA_ALERTS: _sla,
}


def to_alertmanager(topic: str, record: Record, *, hold: timedelta = HOLD) -> Record:
    """The Alertmanager API v2 alert for ``record`` of ``topic`` (a record valid against its contract).

    It fires from the record's ``detected_at`` until ``hold`` later; a record older than that is sent already
    resolved (``endsAt`` in the past), so a replay does not page anyone again."""
    try:
        describe = BRIDGED[topic]
    except KeyError:
        raise InputError(f"topic {topic!r} is not an alert topic bridged to Alertmanager; the bridged topics are "
                         f"{', '.join(sorted(BRIDGED))}. Fix: subscribe the bridge to those only.") from None
    labels, summary = describe(record)
    detected = parse_time(record["detected_at"])
    return {
        "labels": {"topic": topic, **labels},
        "annotations": {"summary": summary, "runbook": RUNBOOK},
        "startsAt": iso(detected),
        "endsAt": iso(detected + hold),
    }
