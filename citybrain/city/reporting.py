"""The deadlines of a department summoned by a 督办 (urge) or a 吹哨 (whistle): sign, contact, report (吹哨报到).

A city pack declares them in its manifest (carried on ``raw.ref.city`` since 1.5.0)::

    "reporting": {"sign_hours": 1, "contact_hours": 24, "report_working_days": {"simple": 3, "complex": 5}}

Those are also the defaults, the rule cities run their 12345 hotlines by: sign for the order within an hour,
make contact within 24 hours (both on the calendar), report back within 3 working days, 5 for a complex
matter. Working days are the city's (its ``working_hours``, holidays and make-up days); a city that declares
none works Monday to Friday, 09:00 to 18:00, on its own clock. The day the action is raised does not count:
the report is due when the last working day counted closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Any, Mapping

from citybrain.city.working_time import WorkingTime
from citybrain.errors import InputError

__all__ = ["COMPLEXITIES", "STAGES", "Reporting", "ReportingError", "office_hours"]

#: How complex the matter is: it sets the working days the report may take.
COMPLEXITIES = ("simple", "complex")
#: The steps a summoned department owes, in order: 签收, 联系, 反馈.
STAGES = ("sign", "contact", "report")


class ReportingError(InputError, ValueError):
    """A ``reporting`` block the deadlines cannot be counted with; the message names the field and the fix."""


def office_hours(zone: tzinfo) -> WorkingTime:
    """Monday to Friday, 09:00 to 18:00 on the city's clock: the working days of a city that declares none."""
    return WorkingTime(zone, frozenset(range(5)), time(9), time(18))


@dataclass(frozen=True)
class Reporting:
    """The city's reporting deadlines: calendar hours to sign and to make contact, working days to report."""

    sign_hours: float = 1.0
    contact_hours: float = 24.0
    report_working_days: tuple[tuple[str, int], ...] = (("simple", 3), ("complex", 5))

    @classmethod
    def from_city(cls, city: Mapping[str, Any] | None) -> Reporting:
        """The deadlines a ``raw.ref.city`` record (or a manifest) declares, the defaults for what it leaves out."""
        block = (city or {}).get("reporting") or {}
        if not isinstance(block, Mapping):
            raise ReportingError(f"reporting must be an object, not {block!r}. Fix: write it as "
                                 '{"sign_hours": 1, "contact_hours": 24, "report_working_days": {"simple": 3, '
                                 '"complex": 5}}, or leave it out for those.')
        days = dict(cls.report_working_days) | dict(block.get("report_working_days") or {})
        out = cls(float(block.get("sign_hours", cls.sign_hours)), float(block.get("contact_hours", cls.contact_hours)),
                  tuple((c, days[c]) for c in COMPLEXITIES))
        for name, value in (("sign_hours", out.sign_hours), ("contact_hours", out.contact_hours),
                            *((f"report_working_days/{c}", d) for c, d in out.report_working_days)):
            if not value > 0:
                raise ReportingError(f"reporting/{name} is {value!r}: a deadline must be after the action. "
                                     "Fix: give it a positive number in the pack's manifest and import it again.")
        return out

    def days(self, complexity: str) -> int:
        """The working days a report may take for a matter of ``complexity``."""
        found = dict(self.report_working_days).get(complexity)
        if found is None:
            raise ReportingError(f"complexity {complexity!r} is not one of {list(COMPLEXITIES)}. Fix: send one of them.")
        return found

    def deadlines(self, at: datetime, complexity: str, working: WorkingTime) -> dict[str, datetime]:
        """Each step's deadline (UTC) for an action raised ``at``: sign and contact on the calendar, the report when
        the ``days(complexity)``-th working day after the action's own day closes."""
        at = at.astimezone(timezone.utc)
        day, left = at.astimezone(working.zone).date(), self.days(complexity)
        while left:
            day += timedelta(days=1)
            left -= working.works_on(day)
        report = datetime.combine(day, working.end, working.zone).astimezone(timezone.utc)
        return {"sign": at + timedelta(hours=self.sign_hours), "contact": at + timedelta(hours=self.contact_hours),
                "report": report}
