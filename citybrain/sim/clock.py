"""Simulated time: UTC on the wire, the city's own time zone (Asia/Shanghai by default) for the rhythms of city life."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

LOCAL = ZoneInfo("Asia/Shanghai")


def local_hour(t: datetime, tz: tzinfo = LOCAL) -> float:
    """Hour of the local day as a float, 0 <= h < 24."""
    lt = t.astimezone(tz)
    return lt.hour + lt.minute / 60 + lt.second / 3600


def is_weekend(t: datetime, tz: tzinfo = LOCAL) -> bool:
    return t.astimezone(tz).weekday() >= 5


def default_start(now: datetime | None = None, tz: tzinfo = LOCAL) -> datetime:
    """Local midnight that began yesterday, in UTC: a simulated day ends at today's midnight."""
    now = (now or datetime.now(timezone.utc)).astimezone(tz)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    return midnight.astimezone(timezone.utc)


def traffic_demand(t: datetime, tz: tzinfo = LOCAL) -> float:
    """Share of peak road demand: two rush hours on weekdays, one broad hump at weekends."""
    h = local_hour(t, tz)
    if is_weekend(t, tz):
        return 0.12 + 0.55 * math.exp(-((h - 15) / 4.5) ** 2)
    return (0.1 + 0.85 * math.exp(-((h - 8) / 1.1) ** 2) + 0.8 * math.exp(-((h - 18) / 1.3) ** 2)
            + 0.45 * math.exp(-((h - 13) / 3.5) ** 2))


def activity(t: datetime, profile: str, tz: tzinfo = LOCAL) -> float:
    """Relative rate of hotline calls by time of day (mean about 1 over a day)."""
    h = local_hour(t, tz)
    if profile == "night":
        d = abs(h - 23)
        return 0.3 + 2.6 * math.exp(-(min(d, 24 - d) / 2.0) ** 2)
    if profile == "evening":
        return 0.25 + 2.0 * math.exp(-((h - 20) / 2.5) ** 2) + 0.6 * math.exp(-((h - 10) / 2.5) ** 2)
    if profile == "flat":
        return 1.0
    return 0.15 + 1.6 * math.exp(-((h - 10) / 2.2) ** 2) + 1.3 * math.exp(-((h - 15.5) / 2.5) ** 2)
