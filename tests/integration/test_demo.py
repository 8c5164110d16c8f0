"""The README's main command does its whole job against the real broker."""

from __future__ import annotations

import pytest

from tests.integration.conftest import cli

pytestmark = pytest.mark.integration


def test_demo_produces_every_feed_and_counts_add_up(broker, contracts) -> None:  # type: ignore[no-untyped-def]
    proc = cli("demo", "--records", "30", "--hours", "2", "--scale", "0.05")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "counts add up" in proc.stdout and "NO" not in proc.stdout
    raw_feeds = [c for c in contracts.values() if c.zone == "raw"]
    for c in raw_feeds:
        assert c.topic in proc.stdout
    assert f"{len(contracts)} contracts discoverable from the broker" in proc.stdout
    assert "9. lake" in proc.stdout and "exactly once" in proc.stdout
