"""The wire format of times (``citybrain.times``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from citybrain.times import iso


@pytest.mark.parametrize("t", [
    datetime(2013, 2, 28, 21, tzinfo=timezone.utc), datetime(2026, 12, 7, 14, 5, 9, 999_999, tzinfo=timezone.utc),
    datetime(2017, 3, 1, 0, 30, tzinfo=ZoneInfo("Asia/Shanghai")), datetime(1000, 1, 1, tzinfo=timezone.utc),
    datetime(999, 12, 31, 23, 59, 59, tzinfo=timezone.utc), datetime(1, 1, 1, 5, tzinfo=timezone(timedelta(hours=3))),
    datetime(9999, 12, 31, 23, 59, 59, 1, tzinfo=timezone.utc), datetime(2026, 3, 29, 1, 30, fold=1,
                                                                          tzinfo=ZoneInfo("Europe/Berlin")),
])
def test_iso_writes_what_strftime_writes(t: datetime) -> None:
    """Every wire time as it was written before: microseconds dropped, offsets to UTC, years before 1000 as
    strftime writes them (unpadded)."""
    assert iso(t) == t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_iso_is_the_rfc_3339_second() -> None:
    assert iso(datetime(2017, 3, 1, 8, 0, 0, 500, tzinfo=ZoneInfo("Asia/Shanghai"))) == "2017-03-01T00:00:00Z"
