"""maintenance: the local state kept bounded.

Releases of each dataset beyond the newest few, Great Expectations data-docs pages and
validation results, quarantined partitions, quality results and Airflow logs past their
retention (CITYBRAIN_RETENTION_*) are removed; lake hours a sink left in several files are
compacted once nobody writes them. What was removed and how much space it freed is the
task's result. (The live Airflow's metadata database is cleaned by its own service, `airflow-db`:
Airflow 3 keeps tasks out of the metadata database.)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task


@dag(dag_id="maintenance", schedule=timedelta(days=1), start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
     catchup=False, max_active_runs=1, tags=["citybrain", "maintenance"], doc_md=__doc__,
     default_args={"owner": "citybrain-platform", "retries": 2, "retry_delay": timedelta(minutes=10)})
def maintenance():
    @task
    def retain_and_compact() -> dict:
        from citybrain.orchestration.tasks import maintenance as run

        return run()

    retain_and_compact()


maintenance()
