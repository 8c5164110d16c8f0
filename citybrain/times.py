"""CityBrain's one wire time format: RFC 3339 in UTC with a ``Z``, to the second.

Every time a record, a report or a release carries is written by :func:`iso` and read
back by :func:`parse_time`; city-facing rhythms (the local day, rush hours) use the city's
zone, which only the simulator and the reports need.
"""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["iso", "iso_micro", "now_iso", "parse_time"]


def iso(t: datetime) -> str:
    """RFC 3339 UTC with a Z, to the second: the wire format of every CityBrain time.

    Cut from ``isoformat`` (half the time of ``strftime``, once per record of a file); years before 1000, which
    ``strftime`` writes unpadded, go through ``strftime`` so every text stays as it was."""
    utc = t.astimezone(timezone.utc)
    if utc.year >= 1000:
        return utc.isoformat()[:19] + "Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_micro(t: datetime) -> str:
    """The wire format to the microsecond, for times that order events within a second (dead letters)."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    """The wall clock now, in the wire format."""
    return iso(datetime.now(timezone.utc))


def parse_time(text: str) -> datetime:
    """RFC 3339 to an aware UTC datetime (any offset accepted, normalised to UTC; no offset means UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
