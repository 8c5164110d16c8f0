"""security_monitoring: the platform watching itself.

Abnormal traffic per producer and consumer group against robust baselines, failed
authentications and denied operations from the broker's log, spoofed or unregistered
devices and replayed readings, personal data outside the restricted zones, grants that
drifted from infra/access.yaml. Findings go to alert.security.finding.v1 and into the
daily report in the lake (reports/security/date=.../report.md).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task

log = logging.getLogger(__name__)


@dag(dag_id="security_monitoring", schedule=timedelta(hours=1), start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
     catchup=False, max_active_runs=1, tags=["citybrain", "security"], doc_md=__doc__,
     default_args={"owner": "citybrain-security", "retries": 2, "retry_delay": timedelta(minutes=2)})
def security_monitoring():
    @task
    def run_checks() -> dict:
        from citybrain.orchestration.tasks import security_monitoring as run

        return run()

    @task
    def summarise(result: dict) -> str:
        line = (f"security {result['date']}: {result['by_severity']} "
                f"({', '.join(result['kinds']) or 'no findings'}); {result['findings_sent']['accepted']} sent")
        log.info("%s", line)
        return line

    summarise(run_checks())


security_monitoring()
