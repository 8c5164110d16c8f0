"""Sensor anomalies: readings that are evidence of something happening in the city.

Per device, with a little memory: an anomaly needs two consecutive readings over the
limit (one wild reading is a spike, not an event), and a device repeating the same
measurements is reported as stuck. Limits follow the national standards where one exists
(GB 3096-2008 for noise, HJ 633-2012 for AQI).
"""

from __future__ import annotations

from dataclasses import dataclass

from citybrain.fusion.signals import Signal
from citybrain.sim.clock import local_hour

#: GB 3096-2008 (day, night) limits in dB(A): class 4a next to arterials, class 2 elsewhere, class 1 for
#: schools and hospitals.
NOISE_LIMITS = {"arterial": (70, 55), "school": (55, 45), "hospital": (55, 45)}
NOISE_DEFAULT = (60, 50)
NOISE_MARGIN_DB = 10          # an exceedance worth acting on, not a marginal one
AQI_LIMIT = 150               # above: moderately polluted or worse
STUCK_READINGS = {"air_quality": 4, "noise": 8, "traffic_flow": 8, "water_level": 8}
FLOOD_SITES = ("underpass", "street")
STUCK_FIELDS = {"air_quality": ("pm25", "pm10", "no2"), "noise": ("LAeq", "LAmax"),
                "traffic_flow": ("intensity", "averageVehicleSpeed"), "water_level": ("currentLevel",)}


@dataclass(frozen=True)
class Anomaly:
    family: str        # flood | noise | air | sensor_fault
    kind: str          # water_high | noise_exceedance | aqi_exceedance | stuck_value
    severity: int      # 1..4
    signal: Signal
    detail: str


class SensorWatch:
    """Checks each reading against its limit and its device's recent history."""

    def __init__(self) -> None:
        self._over: dict[str, int] = {}
        self._same: dict[str, tuple[tuple[object, ...], int]] = {}
        self._stuck_reported: set[str] = set()

    def check(self, s: Signal) -> list[Anomaly]:
        if s.kind != "reading" or s.device_id is None or {"unregistered_device", "position_mismatch"} & set(s.flags):
            return []
        out: list[Anomaly] = []
        over = self._over_limit(s)
        count = self._over.get(s.device_id, 0) + 1 if over else 0
        self._over[s.device_id] = count
        if over and count >= 2:
            family, kind, severity, detail = over
            out.append(Anomaly(family, kind, severity, s, detail))
        stuck = self._stuck(s)
        if stuck:
            out.append(stuck)
        return out

    def _over_limit(self, s: Signal) -> tuple[str, str, int, str] | None:
        v = s.values
        if s.category == "water_level":
            if v.get("siteType") in FLOOD_SITES and v.get("floodLevelStatus") == "flooded" \
                    and v.get("currentLevel", 0) >= v.get("referenceLevel", 99):
                return ("flood", "water_high", 3,
                        f"{v.get('siteType')} gauge {s.device_id} reads {v['currentLevel']:.2f} m, above its "
                        f"reference level {v['referenceLevel']:.2f} m")
        elif s.category == "noise":
            day, night = NOISE_LIMITS.get(str(v.get("site_type")), NOISE_DEFAULT)
            h = local_hour(s.at)
            limit = night if h >= 22 or h < 6 else day
            level = v.get("LAeq", 0)
            if level > limit + NOISE_MARGIN_DB:
                return ("noise", "noise_exceedance", 2,
                        f"noise gauge {s.device_id} reads LAeq {level:.1f} dB(A), {level - limit:.0f} dB over the "
                        f"{'night' if limit == night else 'day'} limit of {limit} dB(A) (GB 3096-2008)")
        elif s.category == "air_quality":
            aqi = v.get("airQualityIndex", 0)
            if aqi > AQI_LIMIT:
                return ("air", "aqi_exceedance", 2, f"air gauge {s.device_id} reads AQI {aqi}")
        return None

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
