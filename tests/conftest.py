"""Shared fixtures: the real contracts of the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from citybrain.contracts.model import Contract, load_all
from citybrain.settings import PROJECT_ROOT

SCHEMAS = PROJECT_ROOT / "schemas"


@pytest.fixture(scope="session")
def contracts() -> dict[str, Contract]:
    return load_all(SCHEMAS)


@pytest.fixture(scope="session")
def air(contracts: dict[str, Contract]) -> Contract:
    return contracts["raw.sensor.air_quality.v1"]


def write_bytes(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
