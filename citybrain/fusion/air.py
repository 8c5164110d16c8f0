"""Air pollution as a duty officer reads it: the gauge's first hour over the limit, in the city's language.

The detector (:mod:`citybrain.fusion.detect`) finds a gauge's first hour over the AQI limit that stands out from
the city's other gauges; fusion (:mod:`citybrain.fusion.fuse`) warns of it before residents call. This module says
it: one sentence naming the gauge, its reading and the limit (HJ 633-2012), and for a street next to an air event one
naming the street it may come from, in Chinese for a city whose first language is Chinese, else in English, as the
call-driven warnings' summaries are (:mod:`citybrain.fusion.calls`).
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["say_over_limit", "say_spreading"]


def say_over_limit(language: str, place: str, gauge: str, facts: Mapping[str, float]) -> str:
    """The gauge's hour over the limit (``facts``: aqi, limit and, where known, the city's median that hour)."""
    aqi, limit, median = facts["aqi"], facts["limit"], facts.get("median")
    if language.split("-")[0] == "zh":
        than = f"，为全市同一小时中位数{median:.0f}的{aqi / median:.1f}倍" if median else ""
        return (f"{place}空气质量监测点{gauge}小时AQI为{aqi:.0f}，超过{limit:.0f}（HJ 633-2012中度污染及以上）{than}："
                "居民投诉前请排查污染源。")
    than = f", {aqi / median:.1f} times the city's median of {median:.0f} that hour" if median else ""
    return (f"Air gauge {gauge} in {place} reads an hourly AQI of {aqi:.0f}, over the limit of {limit:.0f} "
            f"(HJ 633-2012: moderately polluted or worse){than}: look for the source before residents complain.")


def say_spreading(language: str, place: str, source: str, event_id: str) -> str:
    """The warning to ``place``, next to the air event ``event_id``'s street ``source``."""
    if language.split("-")[0] == "zh":
        return f"相邻的{source}正发生空气污染事件（{event_id}，AQI超过150），可能扩散至{place}：请关注本街道监测点和居民来电。"
    return (f"Air pollution in {source} next door (event {event_id}, AQI over 150) may spread to {place}: watch its "
            "gauges and its residents' calls.")
