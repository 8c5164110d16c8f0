"""Topics from contracts (idempotent, updates printed) and the contract catalog on the broker."""

from __future__ import annotations

import copy
import json

import pytest

from citybrain.contracts.model import Contract
from citybrain.kafka.topics import CATALOG_TOPIC, apply_topics, plan_topics, read_topic
from tests.integration.conftest import cli

pytestmark = pytest.mark.integration


def test_apply_is_idempotent(broker, settings, contracts) -> None:  # type: ignore[no-untyped-def]
    changes = apply_topics(settings, contracts.values())
    assert {c.action for c in changes} == {"unchanged"}
    proc = cli("topics", "apply")
    assert proc.returncode == 0, proc.stderr
    assert f"0 change(s), {len(contracts)} topic(s) already as declared" in proc.stdout


def test_apply_adds_partitions_and_changes_retention(broker, settings, contracts) -> None:  # type: ignore[no-untyped-def]
    raw = copy.deepcopy(contracts["raw.police.incident_110.v1"].raw)
    raw["topic"].update(partitions=4, retention="90d")
    changed = Contract(raw=raw)
    planned = plan_topics(settings, [changed])
    assert {c.action for c in planned} == {"partitions", "config"}
    assert {c.action for c in apply_topics(settings, [changed])} == {"partitions", "config"}
    assert {c.action for c in apply_topics(settings, [changed])} == {"unchanged"}
    # and back to what the contract says (retention; partitions cannot shrink and are reported)
    actions = {c.action for c in apply_topics(settings, [contracts["raw.police.incident_110.v1"]])}
    assert actions == {"config", "warning"}


def test_catalog_lets_a_consumer_discover_every_contract(broker, settings, contracts) -> None:  # type: ignore[no-untyped-def]
    proc = cli("topics", "apply")
    assert proc.returncode == 0, proc.stderr
    latest = {r.key.decode(): json.loads(r.value) for r in read_topic(settings, CATALOG_TOPIC)}
    assert set(latest) == set(contracts)
    hotline = latest["raw.hotline.service_request.v1"]
    assert "caller_phone" in hotline["personal_fields"]
    assert hotline["document"]["schema"]["properties"]["status"]["enum"] == ["open", "closed"]
