"""data_quality: every changed partition of the lake against its Great Expectations suite.

Runs when a lake sink announces new hours of bronze or silver (the asset events of
citybrain://lake/bronze and citybrain://lake/silver), and by hand (`citybrain dags trigger`).

Suites live in expectations/ (generated from the contracts, hand-tuned in tuning.yaml).
Failing partitions are quarantined and alerted on alert.data_quality.failure.v1; results go
to the quality table in the lake and to Great Expectations data docs.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task

from citybrain.orchestration.assets import CHECKED, LAKE

log = logging.getLogger(__name__)


@dag(dag_id="data_quality", schedule=LAKE["bronze"] | LAKE["silver"], start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
     catchup=False, max_active_runs=1, tags=["citybrain", "quality"], doc_md=__doc__,
     default_args={"owner": "citybrain-quality", "retries": 2, "retry_delay": timedelta(minutes=2)})
def data_quality():
    @task(outlets=list(CHECKED.values()))
    def validate_lake() -> dict:
        from citybrain.orchestration.tasks import data_quality as run

        return run()

    @task
    def summarise(result: dict) -> str:
        line = (f"{result['checked']} partition(s) checked, {result['passed']} passed, {result['failed']} quarantined, "
                f"{result['alerts_sent']['accepted']} alert(s) sent; data docs: {result['docs']}")
        log.info("%s", line)
        return line

    summarise(validate_lake())


data_quality()
