"""What the Airflow DAGs run: thin functions over the quality, security and scenario modules.

The DAG files in ``dags/`` only wire these into tasks and assets, so the same work runs from
the CLI and the tests. Alerts and announcements are produced under their contracts by the
validated producer: a record its own contract refuses is dead-lettered, not lost.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from citybrain.contracts import topics
from citybrain.contracts.topics import contract_id
from citybrain.contracts.model import load_all, resolve
from citybrain.settings import Settings, get_settings

log = logging.getLogger(__name__)

QUALITY_ALERTS = contract_id(topics.QUALITY_ALERTS)
SECURITY_ALERTS = contract_id(topics.SECURITY_FINDINGS)
RELEASES = contract_id(topics.DATASET_RELEASES)


def keep(settings: Settings, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Keep a task's result as JSON in ``<state>/airflow/results/`` (read by the demo and the tests)."""
    out = settings.airflow_dir / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    return result


def send_all(settings: Settings, contract_id: str, values: list[dict[str, Any]], producer_id: str) -> dict[str, int]:
    """Produce ``values`` under the contract; counts on broker acknowledgement."""
    if not values:
        return {"accepted": 0, "dead_lettered": 0}
    from citybrain.ingest.producer import ValidatedProducer

    contract = resolve(load_all(settings.schemas_dir), contract_id)
    with ValidatedProducer(settings, producer_id=producer_id) as producer:
        summary = producer.produce_values(contract, values, source=producer_id)
    return {"accepted": summary.accepted, "dead_lettered": summary.dead_lettered}


def data_quality(settings: Settings | None = None) -> dict[str, Any]:
    from citybrain.quality.runner import run_quality

    settings = settings or get_settings()
    alerts: list[dict[str, Any]] = []
    report = run_quality(settings.lake, settings.schemas_dir, settings.expectations_dir,
                         send_alert=alerts.append, progress=log.info, state_dir=settings.state_dir,
                         city_contracts_dir=settings.city_contracts_dir)
    sent = send_all(settings, QUALITY_ALERTS, alerts, "airflow.data_quality")
    out = {**report.summary(), "alerts_sent": sent, "volume_not_evaluated": report.volume_not_evaluated}
    log.info("data quality: %s", out)
    return keep(settings, "data_quality", out)


def security_monitoring(settings: Settings | None = None) -> dict[str, Any]:
    from citybrain.ingest.audit import audit_dir, service_trail
    from citybrain.security.audit_trail import broker_logs, record_denials
    from citybrain.security.monitor import run_security

    settings = settings or get_settings()
    findings: list[dict[str, Any]] = []
    denials = record_denials(service_trail(settings, "broker"), broker_logs(settings),
                             audit_dir(settings) / "broker-logs.pos")   # the authoriser's refusals, on the audit trail
    report = run_security(settings, settings.lake, send=findings.append, progress=log.info)
    sent = send_all(settings, SECURITY_ALERTS, findings, "airflow.security_monitoring")
    out = {"date": report["date"], "checks": report["checks"], "by_severity": report["by_severity"],
           "findings_sent": sent, "kinds": sorted({f["kind"] for f in findings}), "denials_audited": denials}
    log.info("security monitoring: %s", out)
    return keep(settings, "security_monitoring", out)


def publish_dataset(name: str, settings: Settings | None = None) -> dict[str, Any]:
    from citybrain.scenarios.datasets import NoInputError
    from citybrain.scenarios.publish import release_dataset

    settings = settings or get_settings()
    announced: list[dict[str, Any]] = []
    try:
        release = release_dataset(settings.lake, name, announce=announced.append)
    except NoInputError as exc:   # the city has no such feed: skipped, and said why, rather than failed
        from airflow.sdk.exceptions import AirflowSkipException

        keep(settings, f"publish_{name}", {"dataset": name, "skipped": str(exc)})
        raise AirflowSkipException(str(exc)) from None
    sent = send_all(settings, RELEASES, announced, f"airflow.publish_{name}")
    out = {"dataset": name, "version": release.version, "rows": release.manifest["rows"],
           "path": str(release.path), "quality": release.manifest["quality"], "announced": sent}
    log.info("released %s", out)
    return keep(settings, f"publish_{name}", out)


def maintenance(settings: Settings | None = None) -> dict[str, Any]:
    """Retention and compaction of the local state (citybrain.orchestration.maintenance)."""
    from citybrain.orchestration.maintenance import maintain

    settings = settings or get_settings()
    out = maintain(settings)
    log.info("maintenance: %s", out)
    return keep(settings, "maintenance", out)
