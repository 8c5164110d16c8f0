"""The city's working time, and SLA deadlines counted in it (工作日/工作时间).

China's 12345 rules give most tickets "3 or 5 working days" while emergencies run on the calendar
clock. A city pack declares its working time in its manifest::

    "working_hours": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00",
                      "holidays": ["2026-10-01", ...], "workdays": ["2026-10-10", ...]}

``holidays`` are dates off although their weekday works; ``workdays`` are make-up working dates (调休)
although their weekday does not. A routing rule with ``sla_clock: working`` has its ``sla_hours``
counted only in that time; the window is read on the city's own clock (its IANA zone), so a day that
changes its UTC offset (DST) still opens and closes at its local hours, and deadlines leave here in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, Iterator, Mapping

from citybrain.errors import InputError

__all__ = ["CLOCKS", "DAYS", "WorkingHoursError", "WorkingTime", "deadline", "working_hours_problems"]

#: The clocks an SLA may run on: every hour of the calendar, or the city's working time only.
CLOCKS = ("calendar", "working")
#: Day names as the manifest writes them, Monday first (``date.weekday()`` order).
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_EXAMPLE = '"working_hours": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"}'


class WorkingHoursError(InputError, ValueError):
    """A ``working_hours`` block the clock cannot count with; the message names the field and the fix."""


def working_hours_problems(block: Any) -> list[tuple[str, str, str]]:
    """(field, what is wrong, fix) for each problem of a ``working_hours`` block; none: it can be counted in."""
    if not isinstance(block, Mapping):
        return [("working_hours", f"must be an object, not {block!r}.", f"write it as {_EXAMPLE}.")]
    out: list[tuple[str, str, str]] = []
    unknown = sorted(set(block) - {"days", "start", "end", "holidays", "workdays"})
    out += [(f"working_hours/{k}", "is not a field of working_hours.",
             "remove it; the fields are days, start, end, holidays and workdays.") for k in unknown]
    days = block.get("days")
    if not isinstance(days, list) or not days:
        out.append(("working_hours/days", f"must list at least one day, not {days!r}.", f"list day names of {list(DAYS)}."))
    else:
        out += [(f"working_hours/days/{i}", f"{d!r} is not a day name.", f"use one of {list(DAYS)}.")
                for i, d in enumerate(days) if d not in DAYS]
        if len(set(map(str, days))) != len(days):
            out.append(("working_hours/days", "names a day twice.", "name each working day once."))
    times = {}
    for key in ("start", "end"):
        value = block.get(key)
        if not isinstance(value, str) or not _TIME.match(value):
            out.append((f"working_hours/{key}", f"{value!r} is not a time of day as HH:MM (00:00 to 23:59).",
                        'write it with two digits each, e.g. "09:00" or "17:30".'))
        else:
            times[key] = value
    if len(times) == 2 and times["end"] <= times["start"]:
        out.append(("working_hours/end", f"{times['end']} is not after start {times['start']}: a working day opens "
                    "and closes on the same date.", "give an end later than the start, e.g. 09:00 to 18:00."))
    dates: dict[str, set[str]] = {}
    for key in ("holidays", "workdays"):
        values = block.get(key, [])
        if not isinstance(values, list):
            out.append((f"working_hours/{key}", f"must be a list of dates, not {values!r}.", 'write e.g. ["2026-10-01"].'))
            continue
        dates[key] = set()
        for i, v in enumerate(values):
            if _date(v) is None:
                out.append((f"working_hours/{key}/{i}", f"{v!r} is not a date as YYYY-MM-DD.", 'write e.g. "2026-10-01".'))
            else:
                dates[key].add(v)
    both = sorted(dates.get("holidays", set()) & dates.get("workdays", set()))
    if both:
        out.append(("working_hours/workdays", f"{', '.join(both)} is both a holiday and a make-up working day.",
                    "keep each date in one list: holidays for days off, workdays for make-up working days (调休)."))
    return out


def _date(value: Any) -> date | None:
    """A calendar date written YYYY-MM-DD; None for anything else."""
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:          # 2026-02-30
        return None


@dataclass(frozen=True)
class WorkingTime:
    """When the city works: ``days`` (weekday numbers, Monday 0) from ``start`` to ``end`` on its clock ``zone``,
    but not on ``holidays``, and also on the make-up ``workdays``."""

    zone: tzinfo
    days: frozenset[int]
    start: time
    end: time
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()

    @classmethod
    def from_block(cls, block: Mapping[str, Any], zone: tzinfo) -> WorkingTime:
        """The working time of a manifest's (or ``raw.ref.city`` record's) ``working_hours`` block in the city's
        ``zone``; raises :class:`WorkingHoursError` naming the first problem's field and fix."""
        problems = working_hours_problems(block)
        if problems:
            field, message, fix = problems[0]
            raise WorkingHoursError(f"{field}: {message} Fix: {fix}")
        return cls(zone, frozenset(DAYS.index(d) for d in block["days"]), time.fromisoformat(block["start"]),
                   time.fromisoformat(block["end"]), frozenset(map(date.fromisoformat, block.get("holidays", ()))),
                   frozenset(map(date.fromisoformat, block.get("workdays", ()))))

    def works_on(self, day: date) -> bool:
        """Is ``day`` (a local date) a working day: a make-up workday, or a working weekday not a holiday."""
        return day in self.workdays or (day.weekday() in self.days and day not in self.holidays)

    def windows(self, since: datetime) -> Iterator[tuple[datetime, datetime]]:
        """The working windows (UTC opening, UTC closing) from the local day of ``since`` on, without end. A
        local time a DST change skips is read with the offset before the change (as ``zoneinfo`` does)."""
        day = since.astimezone(self.zone).date()
        while True:
            if self.works_on(day):
                yield (datetime.combine(day, self.start, self.zone).astimezone(timezone.utc),
                       datetime.combine(day, self.end, self.zone).astimezone(timezone.utc))
            day += timedelta(days=1)

    def add(self, start: datetime, hours: float) -> datetime:
        """The moment ``hours`` of working time after ``start`` (aware), in UTC: time outside the windows does
        not count, and a deadline that falls on a window's closing stays there rather than the next opening."""
        left = timedelta(hours=hours)
        at = start.astimezone(timezone.utc)
        for opens, closes in self.windows(at):
            begin = max(opens, at)
            if begin >= closes:
                continue
            if closes - begin >= left:
                return begin + left
            left -= closes - begin
        raise AssertionError("unreachable: windows() never ends")  # pragma: no cover

    def between(self, start: datetime, end: datetime) -> timedelta:
        """The working time from ``start`` to ``end`` (zero when ``end`` is not after ``start``)."""
        total = timedelta()
        for opens, closes in self.windows(start):
            if opens >= end:
                return total
            total += max(timedelta(), min(closes, end) - max(opens, start))
        raise AssertionError("unreachable: windows() never ends")  # pragma: no cover


def deadline(rule: Mapping[str, Any], at: datetime, hours: float, working: WorkingTime | None) -> datetime:
    """When ``hours`` of a routing ``rule``'s SLA run out from ``at``: on the calendar, or in the city's ``working``
    time when the rule says ``sla_clock: working`` (the calendar while the city has declared none)."""
    if rule.get("sla_clock") == "working" and working is not None:
        return working.add(at, hours)
    return at + timedelta(hours=hours)
