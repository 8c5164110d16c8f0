"""Air pollution as a duty officer reads it: the gauge's first hour over the limit, in the city's language.

The detector (:mod:`citybrain.fusion.detect`) finds a gauge's first hour over the AQI limit that stands out from
the city's other gauges; fusion (:mod:`citybrain.fusion.fuse`) warns of it before residents call. This module says
it: one sentence naming the gauge, its reading and the limit (HJ 633-2012), and for a street next to an air event one
naming the street it may come from, in Chinese for a city whose first language is Chinese, else in English, as the
call-driven warnings' summaries are (:mod:`citybrain.fusion.calls`).
"""

from __future__ import annotations

from typing import Mapping

from citybrain.geo import bearing_deg

__all__ = ["CALM_M_S", "DOWNWIND_HALF_ANGLE", "downwind", "say_over_limit", "say_spreading", "say_wind"]

#: Below this wind speed (m/s; Beaufort's light air) a plume spreads every way; above, it drifts downwind.
CALM_M_S = 1.5
#: A neighbour is downwind when the bearing to it from the polluted street lies within this of where the wind blows
#: to: three of the sixteen compass points either side (a wind's direction is an hour's mean; a plume fans out).
DOWNWIND_HALF_ANGLE = 67.5


def say_over_limit(language: str, place: str, gauge: str, facts: Mapping[str, float]) -> str:
    """The gauge's hour over the limit (``facts``: aqi, limit and, where known, the city's median that hour and the
    gauge's usual share of it)."""
    aqi, limit, median, usual = facts["aqi"], facts["limit"], facts.get("median"), facts.get("usual")
    if language.split("-")[0] == "zh":
        than = f"，为全市同一小时中位数{median:.0f}的{aqi / median:.1f}倍" if median else ""
        than += f"（平时约{usual:.1f}倍）" if median and usual else ""
        return (f"{place}空气质量监测点{gauge}小时AQI为{aqi:.0f}，超过{limit:.0f}（HJ 633-2012中度污染及以上）{than}："
                "居民投诉前请排查污染源。")
    than = f", {aqi / median:.1f} times the city's median of {median:.0f} that hour" if median else ""
    than += f" (usually {usual:.1f} times)" if median and usual else ""
    return (f"Air gauge {gauge} in {place} reads an hourly AQI of {aqi:.0f}, over the limit of {limit:.0f} "
            f"(HJ 633-2012: moderately polluted or worse){than}: look for the source before residents complain.")


def downwind(source: tuple[float, float] | None, target: tuple[float, float] | None,
             wind: tuple[float, float, str] | None) -> bool:
    """Whether a plume over the area centred at ``source`` (lon, lat) may drift to the one centred at ``target``
    with ``wind`` (degrees it blows from, m/s, station): yes in a calm, without a wind measured or without the
    areas' centres (every neighbour is in its path), else when ``target`` lies downwind."""
    if wind is None or wind[1] < CALM_M_S or source is None or target is None:
        return True
    towards = (wind[0] + 180) % 360
    off = abs((bearing_deg(*source, *target) - towards + 180) % 360 - 180)
    return off <= DOWNWIND_HALF_ANGLE


def say_wind(language: str, wind: tuple[float, float, str] | None) -> str:
    """The wind a spreading warning was judged with, as a clause of its summary ('' without one)."""
    if wind is None:
        return ""
    direction, speed, station = wind
    if language.split("-")[0] == "zh":
        return f"（气象站{station}：风向{direction:.0f}°，风速{speed:.1f}米/秒）" if speed >= CALM_M_S else \
            f"（气象站{station}：静风{speed:.1f}米/秒）"
    return (f" (weather station {station}: wind from {direction:.0f}° at {speed:.1f} m/s)" if speed >= CALM_M_S else
            f" (weather station {station}: calm, {speed:.1f} m/s)")


def say_spreading(language: str, place: str, source: str, event_id: str, wind: tuple[float, float, str] | None,
                  ) -> str:
    """The warning to ``place``, next to (and, with a wind, downwind of) the air event ``event_id``'s ``source``."""
    said = say_wind(language, wind)
    if language.split("-")[0] == "zh":
        where = "下风向的" if wind is not None and wind[1] >= CALM_M_S else ""
        return (f"相邻的{source}正发生空气污染事件（{event_id}，AQI超过150），可能扩散至{where}{place}{said}："
                "请关注本街道监测点和居民来电。")
    where = " downwind" if wind is not None and wind[1] >= CALM_M_S else ""
    return (f"Air pollution in {source} next door (event {event_id}, AQI over 150) may spread to {place}{where}{said}: "
            "watch its gauges and its residents' calls.")
