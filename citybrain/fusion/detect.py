"""Sensor anomalies: readings that are evidence of something happening in the city.

Per device, with a little memory: an anomaly needs two consecutive readings over the
limit (one wild reading is a spike, not an event), and a device repeating the same
measurements is reported as stuck. Limits follow the national standards where one exists
(GB 3096-2008 for noise, HJ 633-2012 for AQI, the China Meteorological Administration's 20 mm/h
for short-duration heavy rain). Rain is evidence, not an event: a weather station's hourly
precipitation is remembered per district and named in the flood anomalies of its district's gauges.
Traffic has no limit of its own (an arterial at 55 km/h and a side street at 25 are both normal): a lane's
speed is judged against the lane's own recent normal, and a collapse is an anomaly only when the vehicles
stand over the detector and it holds for several readings (a rush hour slows a road over an hour or two, an
accident or an obstruction stops it within minutes).
Air quality is read from hourly stations, whose AQI is itself an hour's mean (HJ 633-2012): a gauge's first hour
over the limit is already an hour of exceedance, not a spike, and warns at once when it stands out from the city's
other gauges that hour (a local source its street can act on); the city event still waits for the second hour.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo

from citybrain.fusion.signals import Signal

log = logging.getLogger(__name__)

#: GB 3096-2008 (day, night) limits in dB(A): class 4a next to arterials, class 2 elsewhere, class 1 for
#: schools and hospitals.
NOISE_LIMITS = {"arterial": (70, 55), "school": (55, 45), "hospital": (55, 45)}
NOISE_DEFAULT = (60, 50)
#: GB 3096-2008's night: from 22:00 to 06:00 local time.
NIGHT_FROM_H, NIGHT_UNTIL_H = 22, 6
NOISE_MARGIN_DB = 10          # an exceedance worth acting on, not a marginal one
AQI_LIMIT = 150               # above: moderately polluted or worse
#: A gauge's first hour over the AQI limit warns when it stands out from the city's gauges that hour: a local source
#: (a plume, a fire, a stack) in its street, which the street can act on. The whole city over the limit together is a
#: regional episode, for the city's heavy-pollution plan (重污染天气应急预案), not one street's warning: on the simulated
#: city's hazy evenings up to 53 gauges at once are over 150, a street warning for each dozens of false alarms.
#: Standing out: its share of the city's median that hour (its AQI over the median) at least AQI_LOCAL_EXCESS times
#: its usual share (the median of its shares over the hours before, at least AQI_SHARE_HOURS of them: a gauge by an
#: arterial reads above the city every hour, and that is its site, not a source); without that history, at least
#: AQI_LOCAL_RATIO times the median (the dirtiest simulated gauges over the limit read up to 1.7 times it).
AQI_LOCAL_EXCESS = 1.5
AQI_SHARE_HOURS = 3
AQI_LOCAL_RATIO = 2.0
#: The hour's median is known once half the gauges of the hour before, and at least AQI_PEERS, have read in it (in
#: a stream, seconds after the hour's first reading: stations report on the hour); a gauge over the limit waits for
#: them, or for the next hour to begin. Half, not a few: gauges arrive in their gateways' order, a plume's streets'
#: together, and the first dozen may be the plume itself. An hour with fewer than AQI_PEERS (a city with a handful
#: of gauges) cannot tell a plume from a haze: its gauges are judged on the limit alone.
AQI_PEERS = 12
AIR_HOURS_KEPT = timedelta(hours=6)   # hours of the city's AQI readings remembered for the medians
STUCK_READINGS = {"air_quality": 4, "noise": 8, "traffic_flow": 8, "water_level": 8}
FLOOD_SITES = ("underpass", "street")
HEAVY_RAIN_MM_H = 20.0        # 短时强降水: 20 mm or more in an hour (CMA)
RAIN_MEMORY = timedelta(hours=3)   # rain this long before a gauge's reading still explains it
RAIN_KEPT = 240                    # heavy-rain station hours remembered per district, the last received
WIND_MEMORY = timedelta(hours=2)   # a station's wind this long before a moment (or an hour after) still says it
#: A traffic lane's normal: its median speed over the readings of the last TRAFFIC_NORMAL_WINDOW that were no
#: collapse, judged once it has TRAFFIC_NORMAL_MIN of them; one reading per TRAFFIC_SPACING is kept, whatever
#: the lane's interval, so a lane costs the same memory at one reading a minute as at one every five.
TRAFFIC_NORMAL_WINDOW = timedelta(hours=3)
TRAFFIC_SPACING = timedelta(minutes=5)
TRAFFIC_NORMAL_MIN = 6
COLLAPSE_SHARE = 0.3       # a collapse: the speed at most this share of the lane's normal,
OCCUPANCY_HIGH = 0.6       # with a vehicle over the detector this share of the time (a queue, not an empty road),
COLLAPSE_READINGS = 3      # readings in a row: a jam that holds, not a red light or a bus at its stop
STUCK_FIELDS = {"air_quality": ("pm25", "pm10", "no2"), "noise": ("LAeq", "LAmax"),
                "traffic_flow": ("intensity", "averageVehicleSpeed"), "water_level": ("currentLevel",)}


@dataclass(frozen=True)
class Anomaly:
    family: str        # flood | noise | air | traffic | sensor_fault
    kind: str          # water_high | water_rising_in_rain | noise_exceedance | aqi_over_limit | aqi_exceedance
                       # | speed_collapse | stuck_value
    severity: int      # 1..4
    signal: Signal
    detail: str
    #: An early sign, not yet evidence (an air gauge's first hour over the limit, ``aqi_over_limit``): enough for an
    #: early warning; the city event waits for its confirmation (the next reading over the limit, ``aqi_exceedance``).
    provisional: bool = False
    #: The numbers the detail says, for a warning to say them in the city's language (aqi, limit, median, usual).
    facts: dict[str, float] = field(default_factory=dict)


def noise_limit(site_type: str | None, at: datetime, tz: tzinfo) -> tuple[int, str]:
    """(limit in dB(A), "day" or "night") of GB 3096-2008 for a noise reading observed ``at`` by a gauge of
    ``site_type``, day and night as the city's clock in ``tz`` (its IANA zone) has them."""
    day, night = NOISE_LIMITS.get(str(site_type), NOISE_DEFAULT)
    hour = at.astimezone(tz).hour
    return (night, "night") if hour >= NIGHT_FROM_H or hour < NIGHT_UNTIL_H else (day, "day")


class SensorWatch:
    """Checks each reading against its limit and its device's recent history. ``tz``: the city's time zone (its
    ``raw.ref.city`` record's), which says when it is night for the noise limits; None until the city is known,
    when day and night are UTC's."""

    def __init__(self, tz: tzinfo | None = None) -> None:
        self.tz = tz
        self._over: dict[str, int] = {}
        self._same: dict[str, tuple[tuple[object, ...], int]] = {}
        self._stuck_reported: set[str] = set()
        #: traffic lane -> [(observed at, km/h)] of its recent readings that were no collapse
        self._speeds: dict[str, deque[tuple[datetime, float]]] = {}
        self._collapsed: dict[str, int] = {}
        #: district -> [(observed at, mm in the hour, station)] of heavy rain, from weather stations
        self._rain: dict[str, deque[tuple[datetime, float, str]]] = {}
        #: district -> (observed at, degrees the wind blows from, m/s, station) of its station's latest reading
        self._wind: dict[str, tuple[datetime, float, float, str]] = {}
        #: hour -> the AQIs the city's gauges read in it; hour -> first hours over the limit waiting for its median;
        #: gauge -> its hours' AQIs, for its usual share of the city's
        self._air_hours: dict[datetime, list[float]] = {}
        self._air_waiting: dict[datetime, list[Signal]] = {}
        self._air_gauge: dict[str, deque[tuple[datetime, float]]] = {}

    def check(self, s: Signal) -> list[Anomaly]:
        if s.kind != "reading" or s.device_id is None or {"unregistered_device", "position_mismatch"} & set(s.flags):
            return []
        if s.category == "weather":
            self._remember_rain(s)
            self._remember_wind(s)
            return []
        out: list[Anomaly] = []
        if s.category == "traffic_flow":
            collapse = self._speed_collapse(s)
            if collapse:
                out.append(collapse)
        over = self._over_limit(s)
        count = self._over.get(s.device_id, 0) + 1 if over else 0
        self._over[s.device_id] = count
        if over and count >= 2:
            family, kind, severity, detail = over
            out.append(Anomaly(family, kind, severity, s, detail))
        if s.category == "air_quality":
            out += self._air_first_hours(s, first=over is not None and count == 1)
        stuck = self._stuck(s)
        if stuck:
            out.append(stuck)
        return out

    def _over_limit(self, s: Signal) -> tuple[str, str, int, str] | None:
        v = s.values
        if s.category == "water_level":
            rain = self.heavy_rain(s.district_code, s.at)
            if v.get("siteType") in FLOOD_SITES and v.get("floodLevelStatus") == "flooded" \
                    and v.get("currentLevel", 0) >= v.get("referenceLevel", 99):
                return ("flood", "water_high", 3,
                        f"{v.get('siteType')} gauge {s.device_id} reads {v['currentLevel']:.2f} m, above its "
                        f"reference level {v['referenceLevel']:.2f} m{_rain_note(rain)}")
            # Rising water while heavy rain falls on the district: the flood before it floods.
            if v.get("siteType") in FLOOD_SITES and v.get("floodLevelStatus") == "warning" and rain is not None:
                return ("flood", "water_rising_in_rain", 2,
                        f"{v.get('siteType')} gauge {s.device_id} reads {v.get('currentLevel', 0):.2f} m, rising "
                        f"towards its reference level {v.get('referenceLevel', 0):.2f} m{_rain_note(rain)}")
        elif s.category == "noise":
            limit, period = noise_limit(v.get("site_type"), s.at, self._zone())
            level = v.get("LAeq", 0)
            if level > limit + NOISE_MARGIN_DB:
                return ("noise", "noise_exceedance", 2,
                        f"noise gauge {s.device_id} reads LAeq {level:.1f} dB(A), {level - limit:.0f} dB over the "
                        f"{period} limit of {limit} dB(A) (GB 3096-2008)")
        elif s.category == "air_quality":
            aqi = v.get("airQualityIndex", 0)
            if aqi > AQI_LIMIT:
                return ("air", "aqi_exceedance", 2, f"air gauge {s.device_id} reads AQI {aqi}")
        return None

    def _air_first_hours(self, s: Signal, first: bool) -> list[Anomaly]:
        """Air gauges' first hours over the AQI limit that stand out from the city's gauges that hour, judged once
        the hour's median is known (see AQI_PEERS, or the next hour begun): ``s`` is one more reading of
        it, ``first`` whether it is its gauge's first over the limit. One hour is enough to warn: a station's hourly
        AQI is the mean of the hour's concentrations (HJ 633-2012), so a reading over the limit is an hour of
        exceedance already, where a minute's noise reading over its limit may be a lorry passing. It is not enough
        for a city event, which sends departments out: a station's hour may still be a fault or a passing puff,
        so the event waits for the second hour in a row, as before; the warning costs a look, the event a crew."""
        aqi = s.values.get("airQualityIndex")
        if not isinstance(aqi, (int, float)):
            return []
        hour = s.at.replace(minute=0, second=0, microsecond=0)
        self._air_hours.setdefault(hour, []).append(float(aqi))
        own = self._air_gauge.setdefault(s.device_id or "", deque(maxlen=int(AIR_HOURS_KEPT / timedelta(hours=1))))
        own.append((hour, float(aqi)))
        if first:
            self._air_waiting.setdefault(hour, []).append(s)
        latest = max(self._air_hours)
        out: list[Anomaly] = []
        for h in sorted(self._air_waiting):
            peers = self._air_hours.get(h, [])
            if h >= latest and len(peers) < max(AQI_PEERS, len(self._air_hours.get(h - timedelta(hours=1), [])) // 2):
                continue         # the hour's other gauges are still reporting
            median = statistics.median(peers) if len(peers) >= AQI_PEERS else None
            for waiting in self._air_waiting.pop(h):
                anomaly = self._local_exceedance(waiting, median, self._usual_share(waiting.device_id or "", h))
                if anomaly:
                    out.append(anomaly)
        for h in [h for h in self._air_hours if h < latest - AIR_HOURS_KEPT]:
            del self._air_hours[h]
        return out

    def _usual_share(self, device: str, hour: datetime) -> float | None:
        """The gauge's usual share of the city's median: the median of its AQI over the city's median in its hours
        before ``hour`` whose median is known; None with fewer than AQI_SHARE_HOURS of them."""
        shares = []
        for h, aqi in self._air_gauge.get(device, ()):
            peers = self._air_hours.get(h, [])
            if h < hour and len(peers) >= AQI_PEERS and statistics.median(peers) > 0:
                shares.append(aqi / statistics.median(peers))
        return statistics.median(shares) if len(shares) >= AQI_SHARE_HOURS else None

    @staticmethod
    def _local_exceedance(s: Signal, median: float | None, usual: float | None) -> Anomaly | None:
        """The first hour over the limit of the gauge that read ``s``, when it stands out from the city's
        ``median`` that hour against its ``usual`` share of it (None: not known; without a median the limit alone
        judges)."""
        aqi = float(s.values["airQualityIndex"])
        need = None if median is None else median * (AQI_LOCAL_EXCESS * usual if usual else AQI_LOCAL_RATIO)
        if need is not None and aqi < need:
            log.debug("air gauge %s reads AQI %.0f at %s with the city's median at %.0f (usually %s times it): a "
                      "regional episode, not a local source", s.device_id, aqi, s.at, median, usual)
            return None
        than = (f", {aqi / median:.1f} times the median of the city's gauges that hour ({median:.0f})"
                if median else "")
        than += f", where it usually reads {usual:.1f} times it" if median and usual else ""
        return Anomaly("air", "aqi_over_limit", 2, s,
                       f"air gauge {s.device_id} reads an hourly AQI of {aqi:.0f}, over the limit of {AQI_LIMIT} "
                       f"(HJ 633-2012: moderately polluted or worse){than}", provisional=True,
                       facts={"aqi": aqi, "limit": AQI_LIMIT, **({"median": median} if median else {}),
                              **({"usual": usual} if median and usual else {})})

    def _speed_collapse(self, s: Signal) -> Anomaly | None:
        """The lane's speed collapsed against its own recent normal with the lane occupied, for the
        COLLAPSE_READINGS-th reading in a row or more; a reading that is no collapse joins the normal."""
        speed, occupancy = s.values.get("averageVehicleSpeed"), s.values.get("occupancy")
        if not isinstance(speed, (int, float)) or not isinstance(occupancy, (int, float)):
            return None
        device = s.device_id or ""
        kept = self._speeds.setdefault(device, deque(maxlen=TRAFFIC_NORMAL_WINDOW // TRAFFIC_SPACING))
        recent = [v for at, v in kept if s.at - TRAFFIC_NORMAL_WINDOW <= at < s.at]
        normal = statistics.median(recent) if len(recent) >= TRAFFIC_NORMAL_MIN else None
        if normal is None or speed > COLLAPSE_SHARE * normal or occupancy < OCCUPANCY_HIGH:
            if not kept or s.at >= kept[-1][0] + TRAFFIC_SPACING:
                kept.append((s.at, float(speed)))
            self._collapsed[device] = 0
            return None
        count = self._collapsed[device] = self._collapsed.get(device, 0) + 1
        if count < COLLAPSE_READINGS:
            return None
        return Anomaly("traffic", "speed_collapse", 3, s,
                       f"traffic gauge {s.device_id} reads {speed:.0f} km/h with the lane occupied {occupancy:.0%} of "
                       f"the time, {count} readings in a row, where its normal over the last "
                       f"{TRAFFIC_NORMAL_WINDOW.total_seconds() / 3600:.0f} h is {normal:.0f} km/h: traffic has "
                       f"stopped ({speed / normal:.0%} of normal)")

    def _zone(self) -> tzinfo:
        """The city's time zone; UTC (said once) while no city record has told it."""
        if self.tz is None:
            log.warning("no raw.ref.city record yet: noise readings are judged by day and night in UTC. Fix: import "
                        "the city's pack (`citybrain city import`), whose manifest gives the city's time zone")
            self.tz = timezone.utc
        return self.tz

    def _remember_rain(self, s: Signal) -> None:
        mm = s.values.get("precipitation")
        if not s.district_code or not isinstance(mm, (int, float)) or mm < HEAVY_RAIN_MM_H:
            return
        # Only heavy rain is evidence: the last RAIN_KEPT station hours of it received per district, not pruned by
        # the newest hour seen, so a day read after a later one (a backlog, a replay) keeps its own rain.
        self._rain.setdefault(s.district_code, deque(maxlen=RAIN_KEPT)).append((s.at, float(mm), s.device_id or ""))

    def _remember_wind(self, s: Signal) -> None:
        direction, speed = s.values.get("windDirection"), s.values.get("windSpeed")
        if not s.district_code or not isinstance(direction, (int, float)) or not isinstance(speed, (int, float)):
            return
        known = self._wind.get(s.district_code)
        if known is None or s.at >= known[0]:
            self._wind[s.district_code] = (s.at, float(direction), float(speed), s.device_id or "")

    def wind(self, district: str | None, at: datetime) -> tuple[float, float, str] | None:
        """(degrees the wind blows from, m/s, station) that ``district``'s weather station last measured, when
        that was within WIND_MEMORY before ``at`` (or up to an hour after); None where the city has no such
        station or it has not reported: the way a plume drifts."""
        known = self._wind.get(district or "")
        if known is None or not at - WIND_MEMORY <= known[0] <= at + timedelta(hours=1):
            return None
        return known[1], known[2], known[3]

    def heavy_rain(self, district: str | None, at: datetime) -> tuple[datetime, float, str] | None:
        """The heaviest hour of rain (≥ HEAVY_RAIN_MM_H) a station of ``district`` measured in the
        RAIN_MEMORY before ``at`` (and up to an hour after: stations report at the end of their hour)."""
        rains = [r for r in self._rain.get(district or "", ())
                 if at - RAIN_MEMORY <= r[0] <= at + timedelta(hours=1) and r[1] >= HEAVY_RAIN_MM_H]
        return max(rains, key=lambda r: r[1]) if rains else None

    def _stuck(self, s: Signal) -> Anomaly | None:
        fields = STUCK_FIELDS.get(s.category, ())
        key = tuple(s.values.get(f) for f in fields)
        # A dry gauge reading 0 and an empty road counting 0 are quiet, not stuck.
        if not fields or all(k is None or k == 0 for k in key):
            self._same.pop(s.device_id or "", None)
            return None
        previous, n = self._same.get(s.device_id or "", ((), 0))
        n = n + 1 if key == previous else 1
        self._same[s.device_id or ""] = (key, n)
        if n >= STUCK_READINGS[s.category] and s.device_id not in self._stuck_reported:
            self._stuck_reported.add(s.device_id or "")
            return Anomaly("sensor_fault", "stuck_value", 2, s,
                           f"{s.category} gauge {s.device_id} has sent the same values {key} {n} times in a row")
        if n == 1:
            self._stuck_reported.discard(s.device_id or "")
        return None


def _rain_note(rain: tuple[datetime, float, str] | None) -> str:
    """The heavy rain that explains a flood anomaly, as its detail names it."""
    if rain is None:
        return ""
    at, mm, station = rain
    return (f", after {mm:.0f} mm of rain in the hour to {at:%H:%M} UTC at weather station {station} "
            f"(heavy rain, ≥{HEAVY_RAIN_MM_H:.0f} mm/h)")
