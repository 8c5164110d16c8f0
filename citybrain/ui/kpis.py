"""The hotline's three rates (响应率, 解决率, 满意率) of several rows of ``respond_on_receipt_kpis`` combined.

A rate of several districts, departments or days is the share of all their tickets, not the mean of their
shares: a district with 2 tickets must not weigh as much as one with 2,000. Each rate is pooled over the
tickets it rests on (the handled-on-time and resolution rates over the tickets, the satisfaction rate over
the followed-up callers) and handed on with that number, so the page can say what each figure rests on.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping

#: Rate field -> the field counting the tickets it is a share of. A release from before ``followed_up`` was
#: published (2026-12-07) has none: its satisfaction rate is weighted by its tickets then.
RATES = {"handled_on_time_rate": "tickets", "resolution_rate": "tickets", "satisfaction_rate": "followed_up"}


def pooled(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The rows' tickets and each rate over all their tickets, with ``<rate>_n``: the tickets it rests on
    (None for a rate no ticket stands behind)."""
    hits: dict[str, float] = defaultdict(float)
    base: dict[str, int] = defaultdict(int)
    tickets = 0
    for row in rows:
        n = int(row.get("tickets") or 0)
        tickets += n
        for rate, of in RATES.items():
            value, weight = row.get(rate), row.get(of, n)
            if value is None or not weight:
                continue
            hits[rate] += float(value) * int(weight)
            base[rate] += int(weight)
    out: dict[str, Any] = {"tickets": tickets}
    for rate in RATES:
        out[rate] = round(hits[rate] / base[rate], 4) if base[rate] else None
        out[f"{rate}_n"] = base[rate]
    return out


def pooled_by(rows: Iterable[Mapping[str, Any]], key: str) -> list[dict[str, Any]]:
    """:func:`pooled` per value of ``key`` (a department, a district, a day), in the order of the values."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[str(row.get(key))].append(row)
    return [{key: value, **pooled(group)} for value, group in sorted(groups.items())]


def ticket_rates(tickets: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`pooled` over single tickets, each in the shape of ``respond_on_receipt_kpis``' closed loop (``on_time``:
    handled by its deadline, ``resolved``, ``satisfaction``: the follow-up call's answer or None), so an area's rates
    are counted as the dataset counts a district's."""
    return pooled({"tickets": 1, "handled_on_time_rate": 1.0 if t.get("on_time") else 0.0,
                   "resolution_rate": 1.0 if t.get("resolved") else 0.0,
                   "satisfaction_rate": None if t.get("satisfaction") is None
                   else 0.0 if t["satisfaction"] == "dissatisfied" else 1.0,
                   "followed_up": 0 if t.get("satisfaction") is None else 1} for t in tickets)
