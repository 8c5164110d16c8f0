"""Topic names come from the contracts: every name in citybrain.contracts.topics has its contract file."""

from __future__ import annotations

import shutil
from pathlib import Path

from citybrain.contracts import topics
from citybrain.contracts.dispatch import dispatch_departments
from citybrain.contracts.model import Contract

from tests.conftest import SCHEMAS


def test_every_topic_name_has_its_contract(contracts: dict[str, Contract]) -> None:
    assert topics.missing(SCHEMAS) == []
    assert all(topics.work_orders(d) in contracts for d in dispatch_departments())


def test_a_name_without_a_contract_file_is_reported(tmp_path: Path) -> None:
    """A constant whose contract was renamed or removed (here: the dead letters' file gone) fails the check."""
    for path in SCHEMAS.glob("*.yaml"):
        if path.name != f"{topics.INGEST_DEAD_LETTERS}.yaml":
            shutil.copy(path, tmp_path / path.name)
    assert topics.missing(tmp_path) == [f"INGEST_DEAD_LETTERS = {topics.INGEST_DEAD_LETTERS}"]
    assert topics.missing(SCHEMAS, {"TYPO": "raw.sensor.air_quality.v2"}) == ["TYPO = raw.sensor.air_quality.v2"]


def test_names_lists_every_topic_constant() -> None:
    found = topics.names()
    assert found["CITY_EVENTS"] == "city.event.incident.v1" and "__all__" not in found
    assert set(found) <= set(topics.__all__)


def test_contract_id_drops_the_major_version() -> None:
    assert topics.contract_id(topics.WEATHER) == "raw.sensor.weather"
    assert topics.contract_id(topics.work_orders("*")) == "dispatch.*.work_order"
