"""Every DAG imports cleanly into a real Airflow DagBag and is scheduled on what it reads."""

from __future__ import annotations

import pytest

from citybrain.orchestration.local import dag_order
from citybrain.scenarios.datasets import DATASETS
from citybrain.settings import PROJECT_ROOT


@pytest.fixture(scope="module")
def dagbag():  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def test_every_dag_imports_without_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == sorted(dag_order())
    assert len([d for d in dagbag.dag_ids if d.startswith("publish_")]) == len(DATASETS) >= 6


def test_scenario_dags_are_scheduled_on_the_assets_they_read(dagbag) -> None:  # type: ignore[no-untyped-def]
    def uris(dag_id: str) -> set[str]:
        return {a.name for a in dagbag.dags[dag_id].timetable.asset_condition.objects}

    assert uris("publish_traffic_congestion_index") == {"citybrain://lake/bronze/checked"}
    assert uris("publish_respond_on_receipt_kpis") == {"citybrain://lake/bronze/checked", "citybrain://lake/silver/checked"}
    assert "citybrain://lake/gold/flood_risk_by_street" in uris("publish_district_safety_index")
    # data_quality runs on new data: either layer's asset event (posted by the lake's bridge) starts it.
    assert uris("data_quality") == {"citybrain://lake/bronze", "citybrain://lake/silver"}
    assert type(dagbag.dags["data_quality"].timetable.asset_condition).__name__ == "AssetAny"
    outlets = {o.name for t in dagbag.dags["data_quality"].tasks for o in t.outlets}
    assert outlets == {"citybrain://lake/bronze/checked", "citybrain://lake/silver/checked"}
