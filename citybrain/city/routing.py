"""The routing rules of dispatch as one lookup, and the escalation of a ticket through the city's levels.

A routing rule (``raw.ref.routing_rule``, a pack's ``routing.jsonl``) says which department acts
on a hotline service or a city-event category, within which SLA, and optionally only in one area
(``area_code``: a district, street or community). Its ``escalation`` names the levels a ticket
passes through in turn when a level lets its deadline pass (网格 -> 社区 -> 街道 -> 区 -> department):
the hotline's system dispatches the ticket to the first level its position has, and escalates it
to the next on breach, each step a ``dispatched`` or ``escalated`` ticket event. Each level has
``level_hours[level]`` hours, by default an equal share of the rule's ``sla_hours``; the caller's
promise (``expected_datetime``) stays received + ``sla_hours``. A rule without ``escalation`` goes
to its department at once. Hours count on the rule's ``sla_clock``: the calendar, or the city's working
time (:mod:`citybrain.city.working_time`). The simulator and the fusion worker read the same rules through this
module, so both agree on who holds a ticket when.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple

#: The levels of the city below its departments, from the smallest.
AREA_LEVELS = ("grid", "community", "street", "district")


class Level(NamedTuple):
    """One step of a ticket's escalation: the level, the area holding it (None for the department) and
    the hours it has."""

    level: str
    area_code: str | None
    hours: float


def escalates(rule: dict[str, Any]) -> bool:
    """Does a ticket under this rule go to the city's areas before its department?"""
    return any(level in AREA_LEVELS for level in rule.get("escalation") or ())


def _levels(rule: dict[str, Any]) -> list[str]:
    names = [level for level in rule.get("escalation") or () if level in AREA_LEVELS or level == "department"]
    if "department" not in names:
        names.append("department")
    return names


def level_hours(rule: dict[str, Any], level: str) -> float:
    """The hours ``level`` has under ``rule``: its ``level_hours``, else an equal share of ``sla_hours`` over
    the levels the rule names (whether a ticket's position has them all or not)."""
    given = rule.get("level_hours") or {}
    return float(given.get(level, float(rule["sla_hours"]) / len(_levels(rule))))


def chain(rule: dict[str, Any], areas: dict[str, str | None]) -> list[Level]:
    """The levels a ticket under ``rule`` passes through in turn, from ``areas`` (level -> area code of the
    ticket's position; a level the position lacks, e.g. a community without grids, is skipped). The
    department always comes last, whether the rule names it or not."""
    return [Level(level, areas.get(level) if level != "department" else None, level_hours(rule, level))
            for level in _levels(rule) if level == "department" or areas.get(level)]


class Routing:
    """The rules as the reference topic has them now: by service (and area), by category, city-event rules."""

    def __init__(self, rules: Iterable[dict[str, Any]] = ()) -> None:
        self.by_service: dict[str, dict[str, Any]] = {}
        #: Rules limited to one area: (service code or category, area code) -> rule.
        self.by_area: dict[tuple[str, str], dict[str, Any]] = {}
        self.by_category: dict[str, dict[str, Any]] = {}
        #: Rules for city events (``rule_id`` ``event.<category>``), by category.
        self.by_event: dict[str, dict[str, Any]] = {}
        for rule in rules:
            self.update(rule)

    def update(self, rule: dict[str, Any]) -> None:
        """Take a rule as the reference topic has it now; a withdrawn rule routes nothing any more."""
        if rule.get("status") == "withdrawn":
            for table in (self.by_service, self.by_area, self.by_category, self.by_event):
                for k in [k for k, r in table.items() if r.get("rule_id") == rule["rule_id"]]:
                    del table[k]   # type: ignore[arg-type]
            return
        if rule.get("area_code"):
            self.by_area[(rule.get("service_code") or rule["category"], rule["area_code"])] = rule
            return
        if rule.get("service_code"):
            self.by_service[rule["service_code"]] = rule
        self.by_category.setdefault(rule["category"], rule)
        if str(rule["rule_id"]).startswith("event."):
            self.by_category[rule["category"]] = rule
            self.by_event[rule["category"]] = rule

    def ticket_rule(self, service_code: str, category: str | None, area_codes: Iterable[str | None] = ()
                    ) -> dict[str, Any] | None:
        """The rule for a ticket of ``service_code`` (else its category) at a position in ``area_codes``
        (smallest area first): a rule of the smallest of those areas wins over the city-wide one."""
        for code in area_codes:
            if code:
                rule = self.by_area.get((service_code, code)) or self.by_area.get((category or "", code))
                if rule is not None:
                    return rule
        return self.by_service.get(service_code) or self.by_category.get(category or "")
