"""The sensor fleet: FIWARE keyValues observations driven by time of day, weather and incidents.

Traffic follows rush hours and loses capacity in rain; noise follows traffic and the
night; air quality follows a regional pollution level, heating hours and rain washout;
water levels fill with rain and drain away. Real fleets misbehave, so some devices get
stuck, drift, drop out or run on a skewed clock, and some readings spike, repeat or
arrive late and out of order. Every fault is listed for the ground truth.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

from citybrain.contracts.topics import (AIR_QUALITY, NOISE_LEVEL, REF_DEVICES, TRAFFIC_FLOW, WATER_LEVEL, WEATHER,
                                        contract_id)
from citybrain.sim.city import VENDORS
from citybrain.city.model import City, Device
from citybrain.sim.reference import device_record
from citybrain.sim.clock import local_hour, traffic_demand
from citybrain.times import iso
from citybrain.sim.model import Effects, Emission, SimConfig
from citybrain.sim.weather import Weather

VENDOR_SLUG = {zh: slug for pairs in VENDORS.values() for zh, slug in pairs}


def vendor_slug(vendor: str) -> str:
    """A vendor's gateway name: the simulated city's own, else the vendor's ASCII letters, else a digest."""
    import hashlib
    import re

    if vendor in VENDOR_SLUG:
        return VENDOR_SLUG[vendor]
    ascii_name = re.sub(r"[^a-z0-9]+", "-", vendor.lower()).strip("-")
    return ascii_name[:30] or "v" + hashlib.sha256(vendor.encode()).hexdigest()[:8]
FIWARE_TYPE = {"air_quality": "AirQualityObserved", "noise": "NoiseLevelObserved",
               "traffic_flow": "TrafficFlowObserved", "water_level": "FloodMonitoring", "weather": "WeatherObserved"}
CONTRACT = {"air_quality": contract_id(AIR_QUALITY), "noise": contract_id(NOISE_LEVEL),
            "traffic_flow": contract_id(TRAFFIC_FLOW), "water_level": contract_id(WATER_LEVEL),
            "weather": contract_id(WEATHER)}
NOISE_BASE = {  # site type: (day, night) LAeq in dB(A)
    "residential": (53, 43), "arterial": (68, 60), "commercial": (61, 49), "school": (56, 41),
    "hospital": (51, 42), "construction": (66, 46),
}
WATER_GAIN = {"underpass": 0.0025, "street": 0.0015, "drain": 0.012, "river": 0.004}  # m per mm of runoff
CLASS_DEMAND = {"arterial": 1.0, "secondary": 0.8, "branch": 0.55}
_PM25_BP = [(0, 0), (35, 50), (75, 100), (115, 150), (150, 200), (250, 300), (350, 400), (500, 500)]
_PM10_BP = [(0, 0), (50, 50), (150, 100), (250, 150), (350, 200), (420, 300), (500, 400), (600, 500)]
AQI_LEVELS = [(50, "excellent"), (100, "good"), (150, "lightly_polluted"), (200, "moderately_polluted"),
              (300, "heavily_polluted"), (500, "severely_polluted")]


def iaqi(value: float, breakpoints: list[tuple[float, int]]) -> int:
    """Individual air quality index by linear interpolation (HJ 633-2012)."""
    for (c0, i0), (c1, i1) in zip(breakpoints, breakpoints[1:]):
        if value <= c1:
            return round(i0 + (i1 - i0) * (value - c0) / (c1 - c0))
    return 500


def aqi_level(aqi: int) -> str:
    return next(level for limit, level in AQI_LEVELS if aqi <= limit)


class SensorFleet:
    """Every active device's readings for one tick; late and duplicate readings scheduled ahead."""

    def __init__(self, city: City, cfg: SimConfig, rng: random.Random, weather: Weather, effects: Effects,
                 start: datetime, keep: set[str]) -> None:
        self.city, self.cfg, self.rng, self.weather, self.effects = city, cfg, rng, weather, effects
        self.interval = timedelta(minutes=cfg.interval_min)
        # Weather stations report apart (WeatherStations): the fleet's random stream is what it was without them.
        fleet = [d for d in city.devices if d.device_type != "weather"]
        self.devices = [d for d in fleet if d.device_id in keep or rng.random() < cfg.scale]
        self.segments = {r.segment_id: r for r in city.roads}
        self.district_of = {s.code: s.district_code for s in city.streets}
        self.location = {d.device_id: {"type": "Point", "coordinates": [d.lon, d.lat]} for d in city.devices}
        self.mult = {d.device_id: math.exp(rng.gauss(0, 0.15)) for d in fleet}
        self.runoff = {x.code: 0.0 for x in city.districts}
        self.river = {x.code: 0.0 for x in city.districts}
        self._decay = 0.93 ** (cfg.interval_min / 5)
        self._river_decay = 0.995 ** (cfg.interval_min / 5)
        hours = int(cfg.hours) + 2
        self._pm = [55.0]
        for _ in range(hours):
            self._pm.append(max(8.0, 55 + 0.9 * (self._pm[-1] - 55) + rng.gauss(0, 9)))
        self.start = start
        self.frozen: dict[str, dict[str, Any]] = {}
        self.faults: list[dict[str, Any]] = []
        self.drift: dict[str, datetime] = {}
        self.dropout: dict[str, tuple[datetime, datetime]] = {}
        self.skew: dict[str, timedelta] = {}
        self.maintenance: dict[str, tuple[datetime, datetime]] = {}
        end = start + timedelta(hours=cfg.hours)
        if cfg.faults:
            self._assign_faults(start, end, keep)

    # -- faults ---------------------------------------------------------------------------

    def _assign_faults(self, start: datetime, end: datetime, keep: set[str]) -> None:
        span = (end - start).total_seconds()
        for d in self.devices:
            if d.device_id in keep:
                continue
            r = self.rng.random()
            at = start + timedelta(seconds=self.rng.uniform(0.1, 0.7) * span)
            if r < 0.003:
                self.effects.stuck[d.device_id] = (at, "")
                self.faults.append({"device_id": d.device_id, "fault": "stuck", "start": iso(at), "end": iso(end)})
            elif r < 0.006:
                self.drift[d.device_id] = at
                self.faults.append({"device_id": d.device_id, "fault": "drift", "start": iso(at), "end": iso(end)})
            elif r < 0.016:
                until = at + timedelta(hours=self.rng.uniform(1, 3))
                self.dropout[d.device_id] = (at, until)
                self.faults.append({"device_id": d.device_id, "fault": "dropout", "start": iso(at),
                                    "end": iso(min(until, end))})
            elif r < 0.030:
                until = at + timedelta(hours=self.rng.uniform(2, 6))
                self.maintenance[d.device_id] = (at, until)
                self.faults.append({"device_id": d.device_id, "fault": "maintenance", "start": iso(at),
                                    "end": iso(min(until, end)), "announced": True})
            elif r < 0.040:
                minutes = self.rng.choice([-1, 1]) * self.rng.uniform(2, 30)
                self.skew[d.device_id] = timedelta(minutes=minutes)
                self.faults.append({"device_id": d.device_id, "fault": "clock_skew", "start": iso(start),
                                    "end": iso(end), "offset_min": round(minutes, 1)})

    # -- one tick -------------------------------------------------------------------------

    def tick(self, t: datetime) -> list[tuple[datetime, Emission]]:
        """(due time, emission) for every reading observed at ``t``."""
        for code in self.runoff:
            rain = self.weather.rain(t, code) * self.cfg.interval_min / 60
            self.runoff[code] = self.runoff[code] * self._decay + rain
            self.river[code] = self.river[code] * self._river_decay + rain
        hour_index = int((t - self.start) / timedelta(hours=1))
        ctx = {
            "demand": traffic_demand(t, self.city.tz), "hour": local_hour(t, self.city.tz), "temp": self.weather.temperature(t),
            "humidity": self.weather.humidity(t), "pm": self._pm[min(hour_index, len(self._pm) - 1)],
        }
        on_the_hour = t.minute == 0 or self.cfg.interval_min == 60
        out: list[tuple[datetime, Emission]] = []
        rng = self.rng
        faults = self.cfg.faults
        for d in self.devices:
            if d.device_type == "air_quality" and not on_the_hour:
                continue
            gap = self.dropout.get(d.device_id) or self.maintenance.get(d.device_id)
            if gap and gap[0] <= t < gap[1]:
                continue
            observed = t + self.skew.get(d.device_id, timedelta(0))
            value = self._reading(d, t, observed, ctx)
            incident = self._incident_of(d, t)
            due = t
            if faults:
                r = rng.random()
                if r < 0.001:
                    self._spike(d, value)
                elif r < 0.004:
                    due = t + timedelta(minutes=rng.choice([15, 30, 45, 60]))   # late: arrives out of order
                elif r < 0.009:
                    out.append((t + self.interval, Emission(CONTRACT[d.device_type], value, self.producer(d), t)))
            out.append((due, Emission(CONTRACT[d.device_type], value, self.producer(d), t, incident)))
        return out

    def registry_updates(self, t: datetime) -> list[tuple[datetime, Emission]]:
        """Device-registry changes during the tick ending at ``t``: devices going into and out of maintenance."""
        out = []
        for d in self.devices:
            window = self.maintenance.get(d.device_id)
            if not window:
                continue
            for when, status in ((window[0], "maintenance"), (window[1], "active")):
                if t - self.interval < when <= t:
                    out.append((when, Emission(contract_id(REF_DEVICES), device_record(self.city, d, status, iso(when)),
                                               "data-bureau.reference", when)))
        return out

    def producer(self, d: Device) -> str:
        return f"gw.{vendor_slug(d.vendor)}"

    def _incident_of(self, d: Device, t: datetime) -> str | None:
        stuck = self.effects.stuck.get(d.device_id)
        if stuck and stuck[1] and t >= stuck[0]:
            return stuck[1]
        gain = self.effects.water_gain.get(d.device_id)
        if gain:
            return gain[1]
        return self.effects.watch.get(d.device_id)

    def _spike(self, d: Device, value: dict[str, Any]) -> None:
        """One wild reading; about half are beyond the contract's range and get dead-lettered."""
        field, top = {"air_quality": ("pm25", 2000), "noise": ("LAeq", 160),
                      "traffic_flow": ("averageVehicleSpeed", 300), "water_level": ("currentLevel", 50)}[d.device_type]
        value[field] = round(top * self.rng.uniform(0.6, 1.6), 1)

    # -- per device type ------------------------------------------------------------------

    def _reading(self, d: Device, t: datetime, observed: datetime, ctx: dict[str, float]) -> dict[str, Any]:
        kind = d.device_type
        stamp = iso(observed)
        base: dict[str, Any] = {"id": f"urn:ngsi-ld:{FIWARE_TYPE[kind]}:{d.device_id}:{stamp}",
                                "type": FIWARE_TYPE[kind]}
        if kind in ("noise", "traffic_flow"):
            base["dateObservedFrom"] = iso(observed - self.interval)
            base["dateObservedTo"] = stamp
        else:
            base["dateObserved"] = stamp
        base["location"] = self.location[d.device_id]
        base["refDevice"] = d.device_id
        stuck = self.effects.stuck.get(d.device_id)
        if stuck and t >= stuck[0]:
            frozen = self.frozen.get(d.device_id)
            if frozen is None:
                frozen = self.frozen[d.device_id] = getattr(self, f"_{kind}")(d, t, ctx)
            return {**base, **frozen}
        measured = getattr(self, f"_{kind}")(d, t, ctx)
        drift_from = self.drift.get(d.device_id)
        if drift_from and t >= drift_from:
            self._apply_drift(kind, measured, (t - drift_from) / timedelta(hours=1))
        return {**base, **measured}

    def _apply_drift(self, kind: str, measured: dict[str, Any], hours: float) -> None:
        if kind == "air_quality":
            measured["pm25"] = round(measured["pm25"] + 6 * hours, 1)
        elif kind == "noise":
            measured["LAeq"] = round(min(159.0, measured["LAeq"] + 1.5 * hours), 1)
        elif kind == "water_level":
            measured["currentLevel"] = round(measured["currentLevel"] + 0.03 * hours, 3)
        else:
            measured["averageVehicleSpeed"] = round(max(0.0, measured["averageVehicleSpeed"] - 2 * hours), 1)

    def _air_quality(self, d: Device, t: datetime, ctx: dict[str, float]) -> dict[str, Any]:
        h = ctx["hour"]
        heating = 1.0 + 0.25 * math.exp(-(((h - 22) % 24) / 3) ** 2) - 0.15 * math.exp(-((h - 14.5) / 2) ** 2)
        washout = 1 - min(0.6, self.weather.rain(t, self.district_of[d.street_code]) / 20)
        pm25 = max(2.0, ctx["pm"] * heating * washout * self.mult[d.device_id] + self.rng.gauss(0, 3))
        pm10 = pm25 * self.rng.uniform(1.4, 1.9)
        aqi = max(iaqi(pm25, _PM25_BP), iaqi(pm10, _PM10_BP))
        return {
            "pm25": round(pm25, 1), "pm10": round(pm10, 1),
            "no2": round(max(2.0, 22 + 48 * ctx["demand"] + self.rng.gauss(0, 6)), 1),
            "o3": round(max(2.0, 18 + 45 * max(0.0, math.sin(math.pi * (h - 7) / 12)) + self.rng.gauss(0, 5)), 1),
            "so2": round(max(1.0, self.rng.gauss(8, 2.5)), 1),
            "co": round(0.4 + pm25 / 120 + abs(self.rng.gauss(0, 0.1)), 2),
            "temperature": round(ctx["temp"] + self.rng.gauss(0, 0.4), 1),
            "relativeHumidity": round(min(1.0, max(0.05, ctx["humidity"] + self.rng.gauss(0, 0.03))), 2),
            "airQualityIndex": aqi, "airQualityLevel": aqi_level(aqi), "reliability": 0.9,
        }

    def _noise(self, d: Device, t: datetime, ctx: dict[str, float]) -> dict[str, Any]:
        day, night = NOISE_BASE[d.site_type]
        level = night + (day - night) * min(1.0, ctx["demand"] / 0.9)
        if d.site_type == "construction" and not 7 <= ctx["hour"] < 20:
            level = night
        level += self.effects.noise_boost(d.device_id, t) + 2 * math.log10(self.mult[d.device_id]) \
            + self.rng.gauss(0, 1.5)
        level = max(25.0, level)
        return {"LAeq": round(level, 1), "LAmax": round(level + self.rng.uniform(8, 18), 1),
                "LAS": round(level + self.rng.uniform(-3, 3), 1),
                "sonometerClass": "1" if d.vendor.startswith("声华") else "2"}

    def _traffic_flow(self, d: Device, t: datetime, ctx: dict[str, float]) -> dict[str, Any]:
        seg = self.segments[d.segment_id or ""]
        rain = self.weather.rain(t, self.district_of[d.street_code])
        capacity = seg.capacity_vph * (0.85 if rain > 2 else 1.0) * self.effects.capacity_factor(seg.segment_id, t)
        vc = ctx["demand"] * CLASS_DEMAND[seg.road_class] * self.mult[d.device_id] * self.rng.uniform(0.9, 1.1)
        vc = vc * seg.capacity_vph / max(capacity, 1.0)
        flow = min(vc, 1.0) * capacity * self.cfg.interval_min / 60
        speed = seg.free_speed_kmh / (1 + 0.15 * vc ** 4) * (0.85 if rain > 2 else 1.0)
        return {
            "refRoadSegment": seg.segment_id, "laneDirection": "forward",
            "intensity": int(flow), "occupancy": round(min(0.95, 0.05 + 0.55 * min(vc, 1.6) ** 1.5 / 1.6), 3),
            "averageVehicleSpeed": round(max(3.0, speed + self.rng.gauss(0, 1.5)), 1),
            "averageVehicleLength": round(self.rng.uniform(4.3, 5.6), 2),
            "congested": speed < 0.5 * seg.free_speed_kmh, "vehicleType": "anyVehicle",
        }

    def _water_level(self, d: Device, t: datetime, ctx: dict[str, float]) -> dict[str, Any]:
        district = self.district_of[d.street_code]
        base, ref = d.base_level or 0.0, d.reference_level or 1.0
        gain = self.effects.water_gain.get(d.device_id, (1.0, ""))[0]
        if d.site_type == "river":
            level = base + WATER_GAIN["river"] * self.river[district]
        else:
            level = base + WATER_GAIN[d.site_type] * gain * self.runoff[district]
        level = max(0.0, level + self.rng.gauss(0, 0.003))
        status = "flooded" if level >= ref else "warning" if level >= base + 0.6 * (ref - base) else "normal"
        return {"currentLevel": round(level, 3), "referenceLevel": ref,
                "measuredDistance": round(max(0.0, ref + 2.5 - level), 3), "floodLevelStatus": status,
                "siteType": d.site_type}


class WeatherStations:
    """The city's automatic weather stations: one WeatherObserved per station on the hour, from the same
    weather that drives the other sensors, so the rain a station measures is the rain that fills the gauges.

    Every station reports whatever the scale (a district has one or two, and fusion reads rain per
    district). Precipitation is the hour's total in mm (the mean rate over the hour before ``dateObserved``).
    """

    def __init__(self, city: City, weather: Weather, rng: random.Random) -> None:
        self.weather, self.rng = weather, rng
        self.stations = city.devices_of("weather")
        self.district_of = {s.code: s.district_code for s in city.streets}

    def tick(self, t: datetime, interval: timedelta) -> list[tuple[datetime, Emission]]:
        if not self.stations or not (t.minute == 0 or interval >= timedelta(hours=1)):
            return []
        out = []
        for d in self.stations:
            district = self.district_of[d.street_code]
            rain = sum(self.weather.rain(t - timedelta(minutes=15 * k), district) for k in range(4)) / 4
            temp = self.weather.temperature(t) + self.rng.gauss(0, 0.3)
            humidity = min(1.0, max(0.05, self.weather.humidity(t) + self.rng.gauss(0, 0.02)))
            # Magnus formula; the prevailing wind is south-easterly in the wet season, north-westerly otherwise.
            gamma = math.log(humidity) + 17.62 * temp / (243.12 + temp)
            stamp = iso(t)
            value = {
                "id": f"urn:ngsi-ld:WeatherObserved:{d.device_id}:{stamp}", "type": "WeatherObserved",
                "dateObserved": stamp, "location": {"type": "Point", "coordinates": [d.lon, d.lat]},
                "refDevice": d.device_id, "precipitation": round(rain, 1),
                "temperature": round(temp, 1), "relativeHumidity": round(humidity, 2),
                "dewPoint": round(243.12 * gamma / (17.62 - gamma), 1),
                "windSpeed": round(max(0.0, 2.5 + abs(self.rng.gauss(0, 1.2)) + 0.2 * rain), 1),
                "windDirection": round(((135 if self.weather.wet else 315) + self.rng.gauss(0, 35)) % 360),
                "atmosphericPressure": round(1013.0 - 0.25 * rain + self.rng.gauss(0, 1.5), 1),
            }
            out.append((t, Emission(CONTRACT["weather"], value, f"gw.{vendor_slug(d.vendor)}", t)))
        return out
