"""Get the platform ready to take feeds: broker up (when embedded), topics from contracts, catalog,
and on the embedded broker the departments' principals and grants from ``infra/access.yaml``."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from citybrain.contracts.model import Contract
from citybrain.settings import Settings
from citybrain.ingest.catalog import publish_catalog
from citybrain.kafka.topics import apply_topics
from citybrain.errors import ServiceError


class PlatformError(ServiceError):
    """The broker could not be started or the topics not created; the message says how to fix it."""


@dataclass(frozen=True)
class Readiness:
    broker: str
    created: int
    existing: int
    published: int
    #: "N principals, M grants (K changed)" when the access file was applied, else why not.
    access: str = "not applied"


def ensure_ready(settings: Settings, contracts: dict[str, Contract], console: Console) -> Readiness:
    """Idempotent: start the embedded broker if needed, create or align topics, publish the catalog."""
    from kafka.errors import KafkaError

    if settings.embedded:
        from citybrain.broker.local import BrokerError, LocalBroker

        try:
            with console.status("starting the embedded Apache Kafka broker (first run fetches its jars)..."):
                broker = LocalBroker(settings).up().describe()
        except BrokerError as exc:
            raise PlatformError(str(exc)) from exc
    else:
        broker = f"using the cluster at {settings.bootstrap}"
    try:
        changes = apply_topics(settings, contracts.values())
        published = publish_catalog(settings, contracts.values())
    except KafkaError as exc:
        raise PlatformError(f"Kafka at {settings.bootstrap} refused or did not answer: {exc!r}. "
                            "Fix: `citybrain broker status`, or check CITYBRAIN_BOOTSTRAP_SERVERS.") from exc
    created = sum(c.action == "create" for c in changes)
    return Readiness(broker, created, len(changes) - created, published, _apply_access(settings, contracts))


def _apply_access(settings: Settings, contracts: dict[str, Contract]) -> str:
    """The embedded broker gets the declared grants; an external cluster's officer runs `citybrain access apply`."""
    from citybrain import access

    if not settings.embedded:
        return "left to `citybrain access apply` on an external cluster"
    try:
        model = access.load(settings.access_file, contracts)
        result = access.apply(settings, model, actor="citybrain-platform")
    except access.AccessError as exc:
        raise PlatformError(str(exc)) from exc
    return (f"{len(model.departments)} department principals, {len(model.services)} service principals, "
            f"{len(access.declared_acl_set(model))} grants from "
            f"{settings.access_file.name} ({result.changes} changed)")
