"""Unit tests reach no broker: the audit topic's writer is refused here.

The operations view and the audited commands write to the audit topic by default. A unit test hands them an
in-memory trail instead; one that forgets fails here, rather than sending its records to whatever broker
listens on this machine (where they would fork that platform's real trail).
"""

from __future__ import annotations

from typing import Any

import pytest

from citybrain.access.trail import Sink
from citybrain.ingest import audit

#: The audit topic's real writer, for the tests of that writer itself (:func:`audit_topic_writer`).
KAFKA_SINK = audit.kafka_sink


def _refused(_settings: Any, trail: str) -> Sink:
    raise AssertionError(f"a unit test asked for the audit topic's writer (trail {trail!r}); unit tests reach no "
                         "broker. Fix: hand the view an in-memory trail (OperationsView(..., audit=AuditTrail('ui', "
                         "state_dir, records.append))), or replace citybrain.ingest.audit.kafka_sink in the test")


@pytest.fixture(autouse=True)
def no_audit_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "kafka_sink", _refused)


@pytest.fixture
def audit_topic_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit topic's real writer, for its own tests (which replace its producer or name a port nobody serves)."""
    monkeypatch.setattr(audit, "kafka_sink", KAFKA_SINK)
