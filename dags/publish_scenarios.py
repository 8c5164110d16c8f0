"""publish_<dataset>: one DAG per scenario dataset, scheduled on the assets it reads.

A dataset reading the lake runs after the data_quality DAG checked the layers it reads; the
district safety index runs after the datasets it is composed of were released. Each run
writes an immutable release (Parquet + manifest) and announces it on
catalog.datasets.release.v1.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import dag, task

from citybrain.scenarios.datasets import DATASETS
from citybrain.orchestration.assets import CHECKED, gold


def _schedule(inputs: dict[str, str]) -> list:
    layers = sorted({p.split("/", 1)[0] for p in inputs.values()})
    assets = [CHECKED[layer] for layer in layers if layer in CHECKED]
    assets += [gold(p.split("/", 1)[1]) for p in inputs.values() if p.startswith("gold/")]
    return assets


def make(name: str, title: str, inputs: dict[str, str]):
    @dag(dag_id=f"publish_{name}", schedule=_schedule(inputs), start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
         catchup=False, max_active_runs=1, tags=["citybrain", "scenario"], doc_md=f"{title}\n\n{__doc__}",
         default_args={"owner": "citybrain-scenarios", "retries": 2, "retry_delay": timedelta(minutes=2)})
    def publish():
        @task(outlets=[gold(name)])
        def release() -> dict:
            from citybrain.orchestration.tasks import publish_dataset

            return publish_dataset(name)

        release()

    return publish()


for _name, _ds in DATASETS.items():
    globals()[f"publish_{_name}"] = make(_name, _ds.title, _ds.inputs)
