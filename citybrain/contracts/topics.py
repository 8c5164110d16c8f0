"""Every topic name the platform's code uses, in one place.

A topic is its contract's id plus the contract's major version (``<zone>.<domain>.<entity>.v<major>``,
see :mod:`citybrain.contracts.model`); each name here is the topic of a contract file in ``schemas/``
(``tests/unit/test_topic_names.py`` checks them with :func:`missing`). Code that needs a topic imports
its name from here; code that needs the contract id (a lake folder, a simulator emission) takes
:func:`contract_id` of it. A new major version of a contract is a new name here.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AIR_QUALITY", "AUDIT_EVENTS", "CITY_EVENTS", "CITY_METRICS", "CONTRACT_REGISTRY", "DATASET_RELEASES", "EARLY_WARNINGS",
    "ELDERLY_CARE", "INGEST_DEAD_LETTERS", "INSPECTIONS", "LAKE_COMPACTIONS", "NOISE_LEVEL", "NOTIFY_DEAD_LETTERS",
    "POLICE_INCIDENTS", "QUALITY_ALERTS", "REF_AREAS", "REF_CITY", "REF_DEPARTMENTS", "REF_DEVICES", "REF_GRIDS",
    "REF_POIS", "REF_ROAD_SEGMENTS", "REF_ROUTING_RULES", "REF_SERVICES", "REPLIES", "SECURITY_FINDINGS",
    "SERVICE_REQUESTS", "SLA_ALERTS", "TERRITORIAL_WORK_ORDERS", "TICKET_EVENTS", "TRAFFIC_FLOW", "URGES", "WATER_LEVEL",
    "WEATHER", "WHISTLES", "contract_id", "is_work_orders", "missing", "names", "work_orders",
]

# -- raw: the edge's feeds (restricted zone) ------------------------------------------------------
SERVICE_REQUESTS = "raw.hotline.service_request.v1"
TICKET_EVENTS = "raw.hotline.ticket_event.v1"
POLICE_INCIDENTS = "raw.police.incident_110.v1"
INSPECTIONS = "raw.urban_management.inspection.v1"
ELDERLY_CARE = "raw.civil_affairs.elderly_care.v1"
AIR_QUALITY = "raw.sensor.air_quality.v1"
NOISE_LEVEL = "raw.sensor.noise_level.v1"
TRAFFIC_FLOW = "raw.sensor.traffic_flow.v1"
WATER_LEVEL = "raw.sensor.water_level.v1"
WEATHER = "raw.sensor.weather.v1"

# -- raw.ref: the city's reference registers (compacted) ------------------------------------------
REF_CITY = "raw.ref.city.v1"
REF_AREAS = "raw.ref.admin_area.v1"
REF_GRIDS = "raw.ref.grid.v1"
REF_DEPARTMENTS = "raw.ref.department.v1"
REF_SERVICES = "raw.ref.service.v1"
REF_ROUTING_RULES = "raw.ref.routing_rule.v1"
REF_DEVICES = "raw.ref.device.v1"
REF_ROAD_SEGMENTS = "raw.ref.road_segment.v1"
REF_POIS = "raw.ref.poi.v1"

# -- what the streams make: fused events, warnings, work orders, metrics --------------------------
CITY_EVENTS = "city.event.incident.v1"
EARLY_WARNINGS = "alert.early_warning.risk.v1"
SLA_ALERTS = "alert.sla.ticket.v1"
CITY_METRICS = "metrics.city.aggregate.v1"
#: The orders of the city's area offices (grid, community, street, district) for tickets they hold.
TERRITORIAL_WORK_ORDERS = "dispatch.territorial.work_order.v1"

# -- what the operations view's users raise: 督办 and 吹哨, summoning departments with reporting deadlines ----
URGES = "dispatch.command.urge.v1"
WHISTLES = "dispatch.command.whistle.v1"
#: A summoned department's answers to them (报到): sign, contact, report.
REPLIES = "dispatch.command.reply.v1"

# -- what the DAGs and the platform announce ------------------------------------------------------
QUALITY_ALERTS = "alert.data_quality.failure.v1"
SECURITY_FINDINGS = "alert.security.finding.v1"
CONTRACT_REGISTRY = "catalog.contracts.registry.v1"
DATASET_RELEASES = "catalog.datasets.release.v1"
LAKE_COMPACTIONS = "catalog.lake.compacted.v1"
#: The audit trails: who did what to which data, hash-chained per writing service (citybrain.access.trail).
AUDIT_EVENTS = "audit.trail.event.v1"

# -- dead letters ---------------------------------------------------------------------------------
INGEST_DEAD_LETTERS = "dlq.ingest.rejected.v1"
NOTIFY_DEAD_LETTERS = "dlq.notify.undelivered.v1"


def work_orders(department: str) -> str:
    """A department's dispatch topic (``*`` gives the glob of every department's)."""
    return f"dispatch.{department}.work_order.v1"


def is_work_orders(topic: str) -> bool:
    """Whether ``topic`` is a department's (or the area offices') dispatch topic, not another ``dispatch.``
    topic such as the urges and whistles raised in the operations view."""
    return topic.startswith("dispatch.") and topic.endswith(".work_order.v1")


def contract_id(topic: str) -> str:
    """The contract id of a topic: the topic without its major version (``raw.sensor.weather``)."""
    return topic.rsplit(".v", 1)[0]


def names() -> dict[str, str]:
    """Every topic constant of this module: name -> topic."""
    return {name: value for name, value in globals().items() if name.isupper() and isinstance(value, str)}


def missing(schemas_dir: Path, topics: dict[str, str] | None = None) -> list[str]:
    """The constants (of ``topics``, by default this module's) that name no contract file in ``schemas_dir``,
    as ``NAME = topic`` lines; empty when every name has its contract. Contract lint keeps each file named
    ``<topic>.yaml``, so the file stands for its topic."""
    wanted = names() if topics is None else topics
    return [f"{name} = {topic}" for name, topic in sorted(wanted.items())
            if not (schemas_dir / f"{topic}.yaml").is_file()]
