"""Shared fixtures: the real contracts of the repository."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from citybrain.contracts.model import Contract, load_all
from citybrain.settings import PROJECT_ROOT

SCHEMAS = PROJECT_ROOT / "schemas"

#: tests/airflow needs Great Expectations and Airflow: `make test` runs it with .venv/airflow's pytest
#: (the stream environment cannot have them, see docs/explanation/architecture.md).
collect_ignore = [] if importlib.util.find_spec("great_expectations") else ["airflow"]


@pytest.fixture(scope="session")
def contracts() -> dict[str, Contract]:
    return load_all(SCHEMAS)


@pytest.fixture(scope="session")
def air(contracts: dict[str, Contract]) -> Contract:
    return contracts["raw.sensor.air_quality.v1"]


def write_bytes(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
