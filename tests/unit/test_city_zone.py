"""Fusion judges day and night by the clock of the city it serves: the time zone of its ``raw.ref.city`` record
(its pack's manifest), not the simulated city's Asia/Shanghai."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from citybrain.access.privacy import Protector
from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.fusion.detect import SensorWatch, noise_limit
from citybrain.fusion.pipeline import Pipeline
from citybrain.fusion.signals import Signal
from citybrain.settings import PROJECT_ROOT

#: 临江市's zone, from its pack's manifest (UTC+6), and the simulated 云州市's (UTC+8).
LINJIANG = json.loads((PROJECT_ROOT / "examples" / "citypacks" / "linjiang" / "manifest.json").read_text())
URUMQI, SHANGHAI = ZoneInfo(LINJIANG["timezone"]), ZoneInfo("Asia/Shanghai")
#: 21:00 in Urumqi (day), 23:00 in Shanghai (night), 15:00 UTC.
AT = datetime(2026, 11, 22, 15, 0, tzinfo=timezone.utc)


def _noise(at: datetime, level: float) -> Signal:
    return Signal("raw.sensor.noise_level.v1", f"nz-0001@{at:%H%M}", "reading", "noise", at, district_code="980102",
                  device_id="nz-0001", values={"LAeq": level, "site_type": "residential"})


def _judged(watch: SensorWatch) -> list[str]:
    """The details of what two loud readings five minutes apart (LAeq 63 dB(A)) raise."""
    return [a.detail for t in (AT, AT + timedelta(minutes=5)) for a in watch.check(_noise(t, 63.0))]


def _city(zone: str) -> dict[str, str]:
    return {"city_code": LINJIANG["city"]["code"], "name": LINJIANG["city"]["name"],
            "jurisdiction_id": LINJIANG["jurisdiction_id"], "timezone": zone, "pack_version": LINJIANG["version"],
            "updated_at": "2026-12-01T00:00:00Z"}


def test_the_same_noise_is_night_noise_in_one_citys_zone_and_day_noise_in_anothers() -> None:
    assert LINJIANG["timezone"] == "Asia/Urumqi"
    assert noise_limit("residential", AT, SHANGHAI) == (50, "night")
    assert noise_limit("residential", AT, URUMQI) == (60, "day")
    assert noise_limit("arterial", AT + timedelta(hours=3), URUMQI) == (55, "night")   # 00:00 there
    night = _judged(SensorWatch(SHANGHAI))
    assert len(night) == 1 and "night limit of 50 dB(A)" in night[0]
    assert _judged(SensorWatch(URUMQI)) == []


def test_fusion_takes_its_zone_from_the_citys_record_and_keeps_it_against_an_unknown_zone(
        contracts: dict[str, Contract], caplog: pytest.LogCaptureFixture) -> None:
    pipeline = Pipeline(contracts, Protector.ephemeral())
    record = _city(LINJIANG["timezone"])
    assert RecordValidator(contracts["raw.ref.city.v1"])(record) is None
    pipeline.feed("raw.ref.city.v1", record, "ref")
    assert pipeline.watch.tz == URUMQI and _judged(pipeline.watch) == []
    unknown = _city("Mars/Olympus_Mons")
    assert RecordValidator(contracts["raw.ref.city.v1"])(unknown) is None   # the contract cannot tell
    with caplog.at_level(logging.ERROR, logger="citybrain.fusion.pipeline"):
        pipeline.feed("raw.ref.city.v1", unknown, "ref")
    assert pipeline.watch.tz == URUMQI and "'Mars/Olympus_Mons'" in caplog.text


def test_before_the_city_is_known_day_and_night_are_utcs_and_the_worker_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    """Regression: at 23:00 UTC the test could not tell UTC from Urumqi (05:00 there, night too). At 05:00 UTC it
    is night in UTC and day in both cities (13:00 in Shanghai, 11:00 in Urumqi): 63 dB(A), an exceedance of the
    night limit and not of the day one, is raised only if the zone before the city is known is UTC's."""
    watch = SensorWatch()
    early = AT - timedelta(hours=10)
    assert [noise_limit("residential", early, zone) for zone in (timezone.utc, SHANGHAI, URUMQI)] == [
        (50, "night"), (60, "day"), (60, "day")]
    with caplog.at_level(logging.WARNING, logger="citybrain.fusion.detect"):
        raised = [a for t in (early, early + timedelta(minutes=5)) for a in watch.check(_noise(t, 63.0))]
    assert [a.kind for a in raised] == ["noise_exceedance"] and "night limit of 50 dB(A)" in raised[0].detail
    assert caplog.text.count("no raw.ref.city record yet") == 1


def test_fusion_needs_nothing_of_the_simulator() -> None:
    """Regression: fusion judged day and night with the simulator's clock (Asia/Shanghai, whatever the city)."""
    code = ("import sys, citybrain.fusion.pipeline, citybrain.fusion.keys; "
            "print(sorted(m for m in sys.modules if m.startswith('citybrain.sim')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]"
