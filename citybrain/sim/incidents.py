"""Injected incidents: what happens to the city, and the ground truth of what should be detected.

Each incident bends the city's normal behaviour through ``Effects`` (more rain, louder
nights, more calls, a stuck gauge) or sends records of its own (police reports, spoofed
readings, a flood of readings from one gateway), and writes down, for the ground-truth
file, where and when it happened and what the platform is expected to detect.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Callable

from citybrain.contracts.topics import (AIR_QUALITY, INSPECTIONS, NOISE_LEVEL, POLICE_INCIDENTS, SERVICE_REQUESTS,
                                        TRAFFIC_FLOW, WATER_LEVEL, contract_id)
from citybrain.city.model import City, Device, Poi
from citybrain.times import iso
from citybrain.sim.model import Effects, Emission, SimConfig
from citybrain.sim.sensors import vendor_slug
from citybrain.sim.weather import Storm, Weather

log = logging.getLogger(__name__)

Scheduled = list[tuple[datetime, Emission]]


def bump(start: datetime, peak: datetime, end: datetime, height: float) -> Callable[[datetime], float]:
    """A rate that rises from 0 at ``start`` to ``height`` at ``peak`` and falls to 0 at ``end``."""
    def rate(t: datetime) -> float:
        if t <= start or t >= end:
            return 0.0
        if t <= peak:
            return height * math.sin(math.pi / 2 * (t - start) / (peak - start))
        return height * math.cos(math.pi / 2 * (t - peak) / (end - peak))
    return rate


def complaint_peak(times: list[datetime], window: timedelta = timedelta(hours=1)) -> datetime:
    """The middle of the one-hour window holding the most complaints (the earliest such window)."""
    ordered = sorted(times)
    best, best_start, j = 0, ordered[0], 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + window:
            j += 1
        if j - i > best:
            best, best_start = j - i, start
    return best_start + window / 2


class Incident:
    kind = "incident"
    title_zh = title_en = ""

    def __init__(self, number: int, city: City, start: datetime, end: datetime, rng: random.Random) -> None:
        self.id = f"INC-{number:03d}-{self.kind}"
        self.city, self.rng = city, rng
        self.run_start, self.run_end = start, end
        self.span = end - start
        self.start, self.end = start, end
        self.street_code: str | None = None
        self.location: tuple[float, float] | None = None
        self.devices: list[str] = []
        self.evidence: dict[str, Any] = {}
        self.tickets: list[tuple[str, datetime]] = []

    @classmethod
    def missing(cls, city: City) -> str | None:
        """What the city lacks for this incident (a place, a device, a service), or None when it can happen."""
        return None

    def departments_of(self, category: str) -> list[str]:
        """Who the city's routing rule sends a city event of ``category`` to (lead first)."""
        rule = next((r for r in self.city.routing() if r.get("rule_id") == f"event.{category}"), None)
        return [rule["department"], *rule.get("co_departments", [])] if rule else []

    def at(self, share: float) -> datetime:
        """The time ``share`` of the way through the simulated window."""
        return self.run_start + self.span * share

    def install(self, effects: Effects, weather: Weather) -> None:
        """Register this incident's effects on the city's normal behaviour."""

    def extra(self, t: datetime, interval: timedelta, depts: Any) -> Scheduled:
        """Records this incident sends itself during the tick ending at ``t``."""
        return []

    def observe(self, e: Emission) -> None:
        if e.contract == contract_id(SERVICE_REQUESTS) and e.value["lifecycle_state"] == "received":
            self.tickets.append((e.value["service_request_id"], datetime.fromisoformat(e.value["requested_datetime"])))

    def expected(self) -> list[dict[str, Any]]:
        return []

    def truth(self) -> dict[str, Any]:
        street = self.city.street(self.street_code) if self.street_code else None
        out: dict[str, Any] = {
            "incident_id": self.id, "kind": self.kind, "title_zh": self.title_zh, "title_en": self.title_en,
            "start": iso(self.start), "end": iso(self.end),
        }
        if street:
            out.update(district_code=street.district_code, district_name=self.city.district(street.district_code).name,
                       street_code=street.code, street_name=street.name)
        if self.location:
            out.update(long=self.location[0], lat=self.location[1])
        out["devices"] = self.devices
        out["expected"] = self.expected()
        evidence = dict(self.evidence)
        if self.tickets:
            evidence["tickets"] = [tid for tid, _ in self.tickets]
            evidence["complaint_peak"] = iso(complaint_peak([at for _tid, at in self.tickets]))
            evidence["first_complaint"] = iso(min(at for _tid, at in self.tickets))
        out["evidence"] = evidence
        return out


class UnderpassFlood(Incident):
    kind = "underpass_flood"
    title_zh = "暴雨致下穿隧道积水"
    title_en = "Rainstorm floods an underpass"

    @classmethod
    def missing(cls, city: City) -> str | None:
        if not any(p.category == "underpass" for p in city.pois):
            return "no underpass (no water-level gauge with site_type underpass)"
        return None if city.service_of("waterlogging") else "no hotline service of category waterlogging"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.service = self.city.service_of("waterlogging").service_code   # type: ignore[union-attr]
        underpasses = [p for p in self.city.pois if p.category == "underpass"]
        self.poi: Poi = self.rng.choice(underpasses)
        self.street_code = self.poi.street_code
        self.location = (self.poi.lon, self.poi.lat)
        self.gauges = [d for d in self.city.devices if d.site_type == "underpass" and d.street_code == self.street_code]
        self.devices = [d.device_id for d in self.gauges]
        length = min(timedelta(hours=3), self.span * 0.45)
        self.rain_start = min(self.at(0.55), self.run_end - length * 1.2)   # short runs still hold the storm
        self.start, self.end = self.rain_start, min(self.run_end, self.rain_start + length * 1.6)
        self.length = length

    def install(self, effects: Effects, weather: Weather) -> None:
        district = self.city.street(self.street_code or "").district_code
        weather.storms.append(Storm(frozenset({district}), self.rain_start, self.rain_start + self.length, 45.0))
        for d in self.gauges:
            effects.water_gain[d.device_id] = (3.5, self.id)
        s, L = self.rain_start, self.length
        effects.ticket_rates.append((self.street_code or "", self.service,
                                     bump(s + L * 0.3, s + L * 0.6, s + L * 1.4, 14.0), self.id, self.location))
        for seg in self.city.roads:
            if seg.street_code == self.street_code:
                effects.capacity.setdefault(seg.segment_id, []).append((s + L * 0.25, s + L * 1.3, 0.35))
        self.police_at = [s + L * f for f in (0.35, 0.45, 0.6, 0.8)]

    def extra(self, t: datetime, interval: timedelta, depts: Any) -> Scheduled:
        out: Scheduled = []
        for at in self.police_at:
            if t - interval < at <= t:
                lon, lat = self.location or (0.0, 0.0)
                out += depts.police_report(t, "waterlogged_road", round(lon + self.rng.uniform(-4e-4, 4e-4), 6),
                                           round(lat + self.rng.uniform(-4e-4, 4e-4), 6), self.poi.name,
                                           f"{self.poi.name}积水约{self.rng.randint(30, 60)}厘米，有车辆熄火", self.id)
        return out

    def observe(self, e: Emission) -> None:
        super().observe(e)
        if e.contract == contract_id(WATER_LEVEL) and e.value.get("floodLevelStatus") == "flooded":
            seen = self.evidence.get("first_flooded_reading")
            if seen is None or e.value["dateObserved"] < seen:
                self.evidence["first_flooded_reading"] = e.value["dateObserved"]
        if e.contract == contract_id(POLICE_INCIDENTS) and e.value["status"] == "dispatched":
            self.evidence.setdefault("police_incidents", []).append(e.value["incident_id"])

    def expected(self) -> list[dict[str, Any]]:
        return [
            {"output": "city.event", "category": "flood", "street_code": self.street_code,
             "departments": self.departments_of("flood")},
            {"output": "alert.early_warning", "kind": "sensor_precedes_complaints", "category": "waterlogging",
             "street_code": self.street_code, "before": "evidence.complaint_peak"},
        ]


class NightConstructionNoise(Incident):
    kind = "night_construction_noise"
    title_zh = "工地夜间违规施工噪声扰民"
    title_en = "Night-time construction noise"

    @classmethod
    def missing(cls, city: City) -> str | None:
        if not any(p.category == "construction_site" for p in city.pois):
            return "no construction site (no noise gauge with site_type construction)"
        return None if city.service_of("noise") else "no hotline service of category noise"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.service = self.city.service_of("noise").service_code   # type: ignore[union-attr]
        sites = [p for p in self.city.pois if p.category == "construction_site"]
        self.poi = self.rng.choice(sites)
        self.street_code = self.poi.street_code
        self.location = (self.poi.lon, self.poi.lat)
        self.gauges = [d for d in self.city.devices if d.site_type == "construction" and d.street_code == self.street_code]
        self.devices = [d.device_id for d in self.gauges]
        self.nights: list[tuple[datetime, datetime]] = []
        local = self.run_start.astimezone(self.city.tz)
        night = local.replace(hour=22, minute=0, second=0, microsecond=0) - timedelta(days=1)
        while night.astimezone(self.run_start.tzinfo) < self.run_end:
            s = night.astimezone(self.run_start.tzinfo)
            if s + timedelta(hours=4) > self.run_start + timedelta(minutes=30):   # nights overlapping the window
                self.nights.append((max(s, self.run_start), min(self.run_end, s + timedelta(hours=4))))
            night += timedelta(days=1)
        if not self.nights:   # a window without a night (short test runs): the noise comes when it comes
            s = self.at(0.2)
            self.nights.append((s, min(self.run_end, s + min(timedelta(hours=4), self.span * 0.5))))
        self.start, self.end = self.nights[0][0], self.nights[-1][1]

    def install(self, effects: Effects, weather: Weather) -> None:
        for d in self.gauges:
            effects.noise_db.setdefault(d.device_id, []).extend((s, e, 20.0) for s, e in self.nights)
        for s, e in self.nights:
            length = e - s
            effects.ticket_rates.append((self.street_code or "", self.service,
                                         bump(s + length * 0.1, s + length * 0.35, e, 6.0), self.id, self.location))
        self.inspections = [s + (e - s) * 0.4 for s, e in self.nights]

    def extra(self, t: datetime, interval: timedelta, depts: Any) -> Scheduled:
        out: Scheduled = []
        for at in self.inspections:
            if t - interval < at <= t:
                lon, lat = self.location or (0.0, 0.0)
                out += depts.inspection(t, "night_construction", lon, lat, self.street_code, self.poi.name,
                                        f"{self.poi.name}夜间仍在机械作业，未见夜间施工许可", self.id)
        return out

    def observe(self, e: Emission) -> None:
        super().observe(e)
        if e.contract == contract_id(INSPECTIONS) and e.value["status"] == "assigned":
            self.evidence.setdefault("inspections", []).append(e.value["inspection_id"])

    def truth(self) -> dict[str, Any]:
        out = super().truth()
        out["windows"] = [{"start": iso(s), "end": iso(e)} for s, e in self.nights]
        return out

    def expected(self) -> list[dict[str, Any]]:
        return [
            {"output": "city.event", "category": "noise_disturbance", "street_code": self.street_code,
             "departments": self.departments_of("noise_disturbance")},
            {"output": "alert.early_warning", "kind": "sensor_precedes_complaints", "category": "noise",
             "street_code": self.street_code, "before": "evidence.complaint_peak"},
        ]


class ComplaintHotspot(Incident):
    kind = "complaint_hotspot"
    title_zh = "投诉热点持续升温"
    title_en = "A complaint hotspot that keeps growing"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        street = self.rng.choice(self.city.streets)
        self.street_code = street.code
        self.location = street.centre
        month = self.run_start.astimezone(self.city.tz).month
        preferred = ("heating", "garbage") if month in (11, 12, 1, 2, 3) else ("garbage", "heating")
        service = self.city.service_of(*preferred) or self.city.services[0]
        self.service, self.category = service.service_code, service.category
        self.start = self.at(0.1)

    def install(self, effects: Effects, weather: Weather) -> None:
        start, end = self.start, self.end

        def rate(t: datetime) -> float:   # 0.5 calls/h growing to 8 calls/h: exponential growth
            if t < start:
                return 0.0
            return 0.5 * 16 ** ((t - start) / (end - start))
        effects.ticket_rates.append((self.street_code or "", self.service, rate, self.id, None))

    def expected(self) -> list[dict[str, Any]]:
        return [{"output": "alert.early_warning", "kind": "trending_hotspot", "category": self.category,
                 "street_code": self.street_code}]

    def truth(self) -> dict[str, Any]:
        out = super().truth()
        out["service_code"] = self.service
        return out


class BrokenSensor(Incident):
    kind = "broken_sensor"
    title_zh = "传感器故障（读数卡死）"
    title_en = "A broken sensor stuck on one value"

    @classmethod
    def missing(cls, city: City) -> str | None:
        return None if city.devices_of("air_quality") else "no air-quality sensor"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        candidates = [d for d in self.city.devices if d.device_type == "air_quality"]
        self.device: Device = self.rng.choice(candidates)
        self.devices = [self.device.device_id]
        self.street_code = self.device.street_code
        self.location = (self.device.lon, self.device.lat)
        self.start = self.at(0.3)

    def install(self, effects: Effects, weather: Weather) -> None:
        effects.stuck[self.device.device_id] = (self.start, self.id)

    def observe(self, e: Emission) -> None:
        if e.contract == contract_id(AIR_QUALITY):
            self.evidence["stuck_readings"] = self.evidence.get("stuck_readings", 0) + 1
            self.evidence.setdefault("first_stuck_reading", e.value["dateObserved"])
            self.evidence.setdefault("stuck_pm25", e.value.get("pm25"))

    def expected(self) -> list[dict[str, Any]]:
        return [{"output": "data_quality", "check": "stuck_value", "device_id": self.device.device_id},
                {"output": "city.event", "category": "sensor_fault", "device_id": self.device.device_id,
                 "departments": self.departments_of("sensor_fault")}]


class SpoofedDevice(Incident):
    kind = "spoofed_device"
    title_zh = "设备仿冒与报文重放"
    title_en = "A spoofed device and replayed readings"
    PRODUCER = "gw.unknown-10.8.3.77"

    @classmethod
    def missing(cls, city: City) -> str | None:
        return None if len(city.devices_of("air_quality")) >= 2 else "fewer than two air-quality sensors"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        air = [d for d in self.city.devices if d.device_type == "air_quality"]
        self.victim, self.replayed = self.rng.sample(air, 2)
        known = {d.device_id for d in self.city.devices}
        self.ghost_id = next(f"aq-{n:04d}" for n in range(9901, 100_000) if f"aq-{n:04d}" not in known)
        self.devices = [self.victim.device_id, self.ghost_id, self.replayed.device_id]
        self.street_code = self.victim.street_code
        self.location = (self.victim.lon, self.victim.lat)
        self.start = self.at(0.6)
        self.end = min(self.run_end, self.start + max(timedelta(hours=1), self.span * 0.05))
        self.replay_at = self.end
        self.captured: list[dict[str, Any]] = []
        self.counts = {"spoofed_readings": 0, "unregistered_readings": 0, "replayed_readings": 0}

    def install(self, effects: Effects, weather: Weather) -> None:
        effects.watch[self.replayed.device_id] = self.id

    def extra(self, t: datetime, interval: timedelta, depts: Any) -> Scheduled:
        out: Scheduled = []
        if self.start <= t < self.end:
            stamp = iso(t)
            for device_id, lon, lat, key in ((self.victim.device_id, self.victim.lon + 0.31, self.victim.lat - 0.22,
                                              "spoofed_readings"),
                                             (self.ghost_id, self.victim.lon + 0.002, self.victim.lat, "unregistered_readings")):
                value = {"id": f"urn:ngsi-ld:AirQualityObserved:{device_id}:{stamp}", "type": "AirQualityObserved",
                         "dateObserved": stamp, "location": {"type": "Point", "coordinates": [round(lon, 6), round(lat, 6)]},
                         "refDevice": device_id, "pm25": 4.0, "pm10": 7.0, "airQualityIndex": 7,
                         "airQualityLevel": "excellent", "temperature": 20.0, "relativeHumidity": 0.5}
                self.counts[key] += 1
                out.append((t, Emission(contract_id(AIR_QUALITY), value, self.PRODUCER, t, self.id)))
        if t - interval < self.replay_at <= t:
            for value in self.captured[:12]:
                self.counts["replayed_readings"] += 1
                out.append((t, Emission(contract_id(AIR_QUALITY), value, self.PRODUCER, t, self.id)))
        return out

    def observe(self, e: Emission) -> None:
        if (e.contract == contract_id(AIR_QUALITY) and e.value.get("refDevice") == self.replayed.device_id
                and e.producer != self.PRODUCER and e.at < self.replay_at):
            self.captured.append(e.value)

    def truth(self) -> dict[str, Any]:
        out = super().truth()
        out["producer"] = self.PRODUCER
        out["evidence"] = {**out["evidence"], **self.counts, "replay_at": iso(self.replay_at)}
        return out

    def expected(self) -> list[dict[str, Any]]:
        return [
            {"output": "alert.security", "kind": "device_spoofing", "device_id": self.victim.device_id,
             "why": "reports from tens of kilometres outside the city, far from its registered position"},
            {"output": "alert.security", "kind": "unregistered_device", "device_id": self.ghost_id},
            {"output": "alert.security", "kind": "replayed_messages", "device_id": self.replayed.device_id},
        ]


class GatewayFlood(Incident):
    kind = "gateway_flood"
    title_zh = "传感网关流量异常激增"
    title_en = "A sensor gateway suddenly sends 50 times its usual volume"
    FACTOR = 50

    @staticmethod
    def vendor(city: City) -> str | None:
        """The vendor whose gateway floods: the simulated city's small gauge vendor, else the water-level
        vendor with the fewest gauges (a small gateway whose burst stands out)."""
        vendors = Counter(d.vendor for d in city.devices_of("water_level"))
        return "澄波测控" if "澄波测控" in vendors else min(vendors, key=lambda v: (vendors[v], v)) if vendors else None

    @classmethod
    def missing(cls, city: City) -> str | None:
        return None if cls.vendor(city) else "no water-level gauge"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gauges = [d for d in self.city.devices if d.vendor == self.vendor(self.city)]
        self.devices = [d.device_id for d in self.gauges]
        self.producer = f"gw.{vendor_slug(self.gauges[0].vendor)}"
        self.start = self.at(0.35)
        self.end = min(self.run_end, self.start + max(timedelta(minutes=15), self.span * 0.01))
        self.extra_readings = 0

    def extra(self, t: datetime, interval: timedelta, depts: Any) -> Scheduled:
        if not self.start <= t < self.end:
            return []
        out: Scheduled = []
        step = interval / self.FACTOR
        for d in self.gauges:
            for k in range(1, self.FACTOR):
                stamp = iso(t - step * k)
                level = round(max(0.0, (d.base_level or 0.0) + self.rng.gauss(0, 0.004)), 3)
                value = {"id": f"urn:ngsi-ld:FloodMonitoring:{d.device_id}:{stamp}:{k}", "type": "FloodMonitoring",
                         "dateObserved": stamp, "location": {"type": "Point", "coordinates": [d.lon, d.lat]},
                         "refDevice": d.device_id, "currentLevel": level, "referenceLevel": d.reference_level,
                         "floodLevelStatus": "normal", "siteType": d.site_type}
                out.append((t, Emission(contract_id(WATER_LEVEL), value, self.producer, t, self.id)))
        self.extra_readings += len(out)
        return out

    def truth(self) -> dict[str, Any]:
        out = super().truth()
        out["producer"] = self.producer
        out["evidence"] = {**out["evidence"], "extra_readings": self.extra_readings, "factor": self.FACTOR}
        return out

    def expected(self) -> list[dict[str, Any]]:
        return [{"output": "alert.security", "kind": "abnormal_producer_traffic", "producer": self.producer,
                 "factor": self.FACTOR}]


class ConsumerSurge(Incident):
    """Carried out by the runner, which reads from the broker as a department's dashboard."""

    kind = "consumer_surge"
    title_zh = "部门消费者异常大量读取"
    title_en = "A department's consumer suddenly reads far more than usual"
    GROUP = "environment.aq-dashboard"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.start = self.at(0.8)
        self.end = min(self.run_end, self.start + max(timedelta(minutes=30), self.span * 0.02))
        self.normal_topics = [AIR_QUALITY]
        self.surge_topics = [AIR_QUALITY, NOISE_LEVEL, TRAFFIC_FLOW, WATER_LEVEL, SERVICE_REQUESTS]
        self.reads: list[dict[str, Any]] = []
        self.executed = False

    def truth(self) -> dict[str, Any]:
        out = super().truth()
        out["consumer_group"] = self.GROUP
        out["evidence"] = {**out["evidence"], "executed": self.executed, "reads": self.reads}
        return out

    def expected(self) -> list[dict[str, Any]]:
        return [{"output": "alert.security", "kind": "abnormal_consumer_traffic", "consumer_group": self.GROUP,
                 "topics": self.surge_topics}]


KINDS: dict[str, type[Incident]] = {c.kind: c for c in (UnderpassFlood, NightConstructionNoise, ComplaintHotspot,
                                                        BrokenSensor, SpoofedDevice, GatewayFlood, ConsumerSurge)}


def plan_incidents(cfg: SimConfig, city: City, start: datetime, end: datetime, rng: random.Random) -> list[Incident]:
    """The configured incidents this city can host (a city without an underpass has no underpass flood)."""
    out = []
    for n, kind in enumerate(cfg.incidents, 1):
        lacks = KINDS[kind].missing(city)
        if lacks:
            log.warning("incident %s not simulated in %s: %s", kind, city.name, lacks)
            continue
        out.append(KINDS[kind](n, city, start, end, rng))
    return out
