"""The README's main command does its whole job against the real broker."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import cli

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1200)
def test_demo_produces_every_feed_and_counts_add_up(broker, contracts) -> None:  # type: ignore[no-untyped-def]
    proc = cli("demo", "--records", "30", "--hours", "2", "--scale", "0.05", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "counts add up" in proc.stdout and "NO" not in proc.stdout
    raw_feeds = [c for c in contracts.values() if c.zone == "raw"]
    for c in raw_feeds:
        assert c.topic in proc.stdout
    assert f"{len(contracts)} contracts discoverable from the broker" in proc.stdout
    assert "9. lake" in proc.stdout and "exactly once" in proc.stdout
    # Step 11: every DAG ran with the real Airflow on the demo's lake; scenario teams can list and query.
    from citybrain.scenarios.datasets import DATASETS

    assert "11. airflow" in proc.stdout and f"published {len(DATASETS)} scenario datasets" in proc.stdout
    catalog = json.loads(cli("catalog", "--json").stdout)
    assert {d["dataset"] for d in catalog if d.get("latest")} >= set(DATASETS)
    assert all(d["quality"] == "passed" for d in catalog if d.get("latest"))
    rows = json.loads(cli("query", "SELECT count(*) AS streets FROM flood_risk_by_street", "--json").stdout)
    assert rows[0]["streets"] > 0
