"""The dispatch contracts: one topic per department, ``dispatch.<dept>.work_order.v1``, one shape.

Contracts are one file per topic, so the built-in roles' dispatch contracts are written from this
template (``citybrain dev contracts dispatch``); a unit test keeps the files and the
template equal. A city pack's own departments get theirs from the same template, written by
``citybrain city import`` into the state's city folder (:mod:`citybrain.city.pack_departments`).
"""

from __future__ import annotations

from pathlib import Path

from citybrain.contracts.departments import DEPARTMENTS
from citybrain.contracts.topics import work_orders

TEMPLATE = """\
# Written by `citybrain dev contracts dispatch` from citybrain/contracts/dispatch.py: edit the template, not this file.
contract: dispatch.{dept}.work_order
version: 1.5.0
title: Work orders dispatched to {en} ({zh})
description: >
  Dispatch (派单) to {zh}: hotline tickets in its remit and the fused city events it must act
  on (lead or support), each with the SLA deadline of its routing rule. The department
  subscribes to this topic only; work orders carry no personal data: the caller's contact
  stays in the restricted raw zone, and `caller_ref` (since 1.1.0) is a keyed pseudonym of
  it, the same for every ticket of the same caller. Since 1.2.0 a ticket's work order names the
  community (社区) its position lies in, where the city's pack declares communities. Since 1.3.0
  `assigned_at` says when the department got the order and `escalated` whether the city's areas
  let the ticket escalate to it first (属地管理: their orders are on dispatch.territorial.work_order);
  a reopened ticket dispatched again is a new order (`-r<n>` after its id). Since 1.5.0
  `sla_clock: working` says the deadline counts only the city's working hours (its rule's
  `sla_clock`); an order without it runs on the calendar.
owner: {dept}
key: work_order_id
event_id: work_order_id
compatibility: backward
topic: {{partitions: 1, cleanup_policy: delete, retention: 400d}}
schema:
  $schema: https://json-schema.org/draft/2020-12/schema
  type: object
  additionalProperties: false
  required: [work_order_id, department, role, source, source_id, category, title, priority, street_code, received_at, sla_deadline, rule_id]
  properties:
    work_order_id: {{type: string, pattern: "^WO-[A-Za-z0-9_:.-]{{4,160}}$", x-classification: internal}}
    department: {{const: {dept}, x-classification: public}}
    role: {{enum: [lead, support], x-classification: public}}
    source: {{enum: [ticket, city_event], x-classification: public}}
    source_id: {{type: string, maxLength: 140, x-classification: internal, description: "service_request_id or city event_id"}}
    category: {{type: string, maxLength: 50, x-classification: public}}
    service_code: {{type: string, maxLength: 40, x-classification: public}}
    title: {{type: string, maxLength: 200, x-classification: public}}
    priority: {{enum: [normal, urgent, emergency], x-classification: public}}
    district_code: {{type: [string, "null"], maxLength: 64, x-classification: public, description: "The city's own scheme (since 1.4.0; at most 12 characters before)"}}
    street_code: {{type: [string, "null"], maxLength: 64, x-classification: public, description: "The city's own scheme (since 1.4.0; at most 12 characters before)"}}
    street_name: {{type: [string, "null"], maxLength: 50, x-classification: public}}
    community_code: {{type: string, pattern: "^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,63}}$", x-classification: public, description: "The community of the ticket's position (since 1.2.0), in the city's own scheme (since 1.4.0; 12 digits before)"}}
    received_at: {{type: string, format: date-time, x-classification: public, description: "When the hotline received the ticket, or fusion detected the city event"}}
    assigned_at: {{type: string, format: date-time, x-classification: public, description: "When the department got the order: at receipt, on the hotline's dispatch or on escalation (since 1.3.0)"}}
    escalated: {{type: boolean, x-classification: public, description: "The ticket came to the department by escalation from the city's areas (since 1.3.0)"}}
    sla_deadline: {{type: string, format: date-time, x-classification: public}}
    sla_hours: {{type: number, exclusiveMinimum: 0, maximum: 2160, x-classification: public}}
    sla_clock: {{enum: [calendar, working], x-classification: public, description: "The clock sla_hours count on: working, only the city's working hours (its pack's working_hours); absent or calendar, every hour (since 1.5.0)"}}
    rule_id: {{type: string, maxLength: 60, x-classification: public}}
    caller_ref: {{type: [string, "null"], pattern: "^psn_[a-z2-7]{{24}}$", x-classification: internal, description: "Keyed pseudonym (HMAC-SHA-256) of the caller's phone, else e-mail; links repeat callers without revealing them (since 1.1.0)"}}
examples:
  - work_order_id: WO-HL20261122000187-{dept}
    department: {dept}
    role: lead
    source: ticket
    source_id: HL20261122000187
    category: example
    title: 示例工单
    priority: normal
    district_code: "990101"
    street_code: "990101001"
    street_name: 天宁街道
    received_at: "2026-11-22T06:32:10Z"
    assigned_at: "2026-11-22T06:40:02Z"
    sla_deadline: "2026-11-23T06:32:10Z"
    sla_hours: 24
    rule_id: example
    caller_ref: psn_k5wxqzc3oyfmsn2dpv6qhe4t
"""


def dispatch_departments() -> list[str]:
    """Departments that receive work orders (the hotline answers its own questions on the call)."""
    return [d for d in DEPARTMENTS if d != "hotline_12345"]


def dispatch_contract_text(dept: str, names: tuple[str, str] | None = None) -> str:
    """The dispatch contract of a built-in role, or of a city's own department given its ``names`` (Chinese,
    English): the same template, version and shape, so the city's departments get their orders as the roles do."""
    zh, en = names or DEPARTMENTS[dept]
    return TEMPLATE.format(dept=dept, zh=zh, en=en)


def stale_dispatch_contracts(schemas_dir: Path) -> list[str]:
    """Departments whose dispatch contract file is missing or differs from the template."""
    stale = []
    for dept in dispatch_departments():
        path = schemas_dir / f"{work_orders(dept)}.yaml"
        if not path.exists() or path.read_text(encoding="utf-8") != dispatch_contract_text(dept):
            stale.append(dept)
    return stale


def write_dispatch_contracts(schemas_dir: Path) -> list[Path]:
    paths = []
    for dept in dispatch_departments():
        path = schemas_dir / f"{work_orders(dept)}.yaml"
        path.write_text(dispatch_contract_text(dept), encoding="utf-8")
        paths.append(path)
    return paths
