"""The audit trail's way to its topic: a service's :class:`~citybrain.access.trail.AuditTrail` whose records go
to ``audit.trail.event.v1`` through the validated producer (a record the contract refuses is dead-lettered).

A record the broker does not take is logged as an error, not raised: the action it records already
happened, and the writer's chain has moved on, so the lost record shows as a gap that
``citybrain audit verify`` names.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from citybrain.access.trail import AuditTrail, Sink
from citybrain.contracts.topics import AUDIT_EVENTS
from citybrain.settings import Settings

__all__ = ["audit_dir", "kafka_sink", "service_trail"]

log = logging.getLogger(__name__)


def audit_dir(settings: Settings) -> Path:
    """Where the writers keep each trail's end (``<state_dir>/audit``)."""
    return settings.state_dir / "audit"


def kafka_sink(settings: Settings, trail: str) -> Sink:
    """A sink that sends each record to the audit topic, one validated producer opened on first use."""
    from citybrain.contracts.model import load_all, resolve
    from citybrain.contracts.topics import contract_id
    from citybrain.ingest.producer import ValidatedProducer

    held: dict[str, Any] = {}

    def send(record: dict[str, Any]) -> None:
        try:
            if "producer" not in held and not _reachable(settings.bootstrap):
                raise ConnectionError(f"no broker answers at {settings.bootstrap}")
            if "producer" not in held:
                held["contract"] = resolve(load_all(settings.schemas_dir), contract_id(AUDIT_EVENTS))
                held["producer"] = ValidatedProducer(settings, producer_id=f"audit-{trail}")
            summary = held["producer"].produce_values(held["contract"], [record], source=f"audit-{trail}")
            if summary.accepted != 1:
                log.error("audit %s #%d was dead-lettered (%s): fix the writer; verify will name the gap",
                          trail, record["seq"], summary.by_rule)
        except Exception as exc:   # noqa: BLE001 - the action happened; the gap stays visible to verify
            log.error("audit %s #%d (%s %s) did not reach %s: %s; `citybrain audit verify` will name the gap",
                      trail, record["seq"], record["actor"], record["action"], AUDIT_EVENTS, exc)

    return send


def _reachable(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """Whether a bootstrap server takes a connection: a command run with the broker down (`citybrain query` reads
    only the lake) waits a second for it, not the producer's half a minute of bootstrap retries."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def service_trail(settings: Settings, trail: str) -> AuditTrail:
    """The writer of a service's trail, sending to the audit topic."""
    return AuditTrail(trail, audit_dir(settings), kafka_sink(settings, trail))
