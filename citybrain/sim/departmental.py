"""Departmental feeds: police 110 incidents, urban-management inspections, the elderly-care register."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any

from citybrain.contracts.topics import ELDERLY_CARE, INSPECTIONS, POLICE_INCIDENTS, contract_id
from citybrain.city.model import City
from citybrain.sim.clock import local_hour, traffic_demand
from citybrain.times import iso
from citybrain.sim.hotline import poisson, random_point
from citybrain.sim.model import REFERENCE_POPULATION, Emission, SimConfig
from citybrain.sim.people import People
from citybrain.sim.reference import street_of
from citybrain.sim.weather import Weather

POLICE = "police.dispatch-110"
URBAN = "urban-management.grid"
CIVIL = "civil-affairs.register"
#: category: (share of a day's reports, time profile, summary template)
POLICE_CATEGORIES = {
    "traffic_accident": (0.30, "traffic", "{place}附近两车剐蹭，无人员受伤"),
    "public_disturbance": (0.20, "night", "{place}有人酒后吵闹滋事"),
    "theft": (0.15, "day", "{place}电动车被盗"),
    "medical": (0.10, "day", "{place}有老人摔倒，需要协助"),
    "road_obstruction": (0.08, "traffic", "{place}路段有货物散落，影响通行"),
    "missing_person": (0.03, "day", "{place}一名儿童与家人走散"),
    "fire": (0.02, "day", "{place}有烟雾冒出"),
    "other": (0.12, "day", "{place}群众求助"),
}
URBAN_CATEGORIES = {
    "garbage": (0.35, "{place}垃圾桶满溢未及时清运"),
    "street_vending": (0.2, "{place}有流动摊贩占道经营"),
    "damaged_facility": (0.15, "{place}护栏破损"),
    "illegal_parking": (0.15, "{place}共享单车堆积占用盲道"),
    "illegal_construction": (0.05, "{place}疑似违规搭建"),
    "other": (0.10, "{place}其他市容问题"),
}
NEEDS = ["meals", "cleaning", "medical_visit", "companionship", "emergency_call", "rehabilitation"]


#: Inspection categories a grid worker can fix on patrol.
SMALL_THINGS = frozenset({"garbage", "street_vending", "illegal_parking", "damaged_facility"})


class Departments:
    """Background departmental records; incidents add their own through the same helpers."""

    def __init__(self, city: City, cfg: SimConfig, rng: random.Random, weather: Weather) -> None:
        self.city, self.cfg, self.rng, self.weather = city, cfg, rng, weather
        self.people = People(rng, city)
        self.weights = [s.population for s in city.streets]
        self.police_seq = 0
        self.urban_seq = 0
        # A city without the department has no feed of it (a pack may list fewer departments).
        size = city.population / REFERENCE_POPULATION
        self.police_per_day = 900 * cfg.scale * size * ("police" in city.departments)
        self.urban_per_day = 800 * cfg.scale * size * ("urban_management" in city.departments)
        self.residents: list[dict[str, Any]] = []

    def tick(self, t: datetime) -> list[tuple[datetime, Emission]]:
        out: list[tuple[datetime, Emission]] = []
        hours = self.cfg.interval_min / 60
        h = local_hour(t, self.city.tz)
        rain = self.weather.rain(t, self.city.districts[0].code)
        for category, (share, profile, _template) in POLICE_CATEGORIES.items():
            weight = {"traffic": traffic_demand(t, self.city.tz) / 0.36 * (1.6 if rain > 2 else 1.0),
                      "night": 2.5 if h >= 20 or h < 2 else 0.5, "day": 1.4 if 7 <= h < 22 else 0.3}[profile]
            for _ in range(poisson(self.rng, self.police_per_day * share / 24 * weight * hours)):
                street = self.rng.choices(self.city.streets, weights=self.weights)[0]
                out += self.police_report(t, category, *random_point(self.rng, street),
                                          self.rng.choice(street.communities))
        if 8 <= h < 18:
            for category, (share, _template) in URBAN_CATEGORIES.items():
                for _ in range(poisson(self.rng, self.urban_per_day * share / 10 * hours)):
                    street = self.rng.choices(self.city.streets, weights=self.weights)[0]
                    lon, lat = random_point(self.rng, street)
                    out += self.inspection(t, category, lon, lat, street.code, self.rng.choice(street.communities))
        for resident in self.residents:
            if self.rng.random() < 0.01 / 24 * hours:   # about 1% of the register changes per day
                resident.update(care_level=self.rng.choice(["self_care", "partial_assistance", "full_assistance"]),
                                updated_at=iso(t))
                out.append((t, Emission(contract_id(ELDERLY_CARE), dict(resident), CIVIL, t)))
        return out

    def police_report(self, t: datetime, category: str, lon: float, lat: float, place: str,
                      summary: str | None = None, incident: str | None = None) -> list[tuple[datetime, Emission]]:
        if "police" not in self.city.departments:
            return []
        rng = self.rng
        self.police_seq += 1
        reported = t - timedelta(seconds=rng.uniform(0, self.cfg.interval_min * 60))
        record: dict[str, Any] = {
            "incident_id": f"110-{reported.astimezone(self.city.tz):%Y%m%d}-{self.cfg.seed % 100:02d}{self.police_seq:05d}",
            "reported_at": iso(reported), "category": category, "severity": rng.choice([1, 1, 2, 2, 3]),
            "lat": lat, "long": lon, "location_text": place,
            "summary": summary or POLICE_CATEGORIES[category][2].format(place=place),
            "caller_phone": self.people.mobile(), "unit_id": f"PATROL-{rng.randint(1, 80):02d}", "status": "dispatched",
        }
        closed = reported + timedelta(minutes=rng.uniform(20, 150))
        done = {**record, "status": "resolved", "closed_at": iso(closed)}
        return [(reported, Emission(contract_id(POLICE_INCIDENTS), record, POLICE, reported, incident)),
                (closed, Emission(contract_id(POLICE_INCIDENTS), done, POLICE, closed, incident))]

    def inspection(self, t: datetime, category: str, lon: float, lat: float, street_code: str, place: str,
                   finding: str | None = None, incident: str | None = None) -> list[tuple[datetime, Emission]]:
        if "urban_management" not in self.city.departments:
            return []
        rng = self.rng
        self.urban_seq += 1
        at = t - timedelta(seconds=rng.uniform(0, self.cfg.interval_min * 60))
        grid = self.city.grid_at(lon, lat, street_code)
        if grid is None:   # a city without grids: a patrol of the street
            inspector, grid_code = f"grid-{street_code[-5:]}-{rng.randint(1, 40):03d}", f"G{street_code}-{rng.randint(1, 30):02d}"
        else:
            grid_code, workers = grid
            inspector = rng.choice(workers) if workers else f"gw-{grid_code}"
        # A grid worker fixes a third of the small things on patrol (就地处置); the rest are assigned.
        on_the_spot = incident is None and category in SMALL_THINGS and rng.random() < 0.35
        record: dict[str, Any] = {
            "inspection_id": f"UM-{at.astimezone(self.city.tz):%Y%m%d}-{self.cfg.seed % 100:02d}{self.urban_seq:06d}",
            "inspected_at": iso(at), "inspector_id": inspector, "grid_code": grid_code,
            "category": category, "lat": lat, "long": lon,
            "finding": finding or URBAN_CATEGORIES.get(category, (0, "{place}发现问题"))[1].format(place=place),
            "status": "rectified" if on_the_spot else "assigned", "deadline": iso(at + timedelta(hours=24)),
            "handled_on_the_spot": on_the_spot,
        }
        if on_the_spot:
            return [(at, Emission(contract_id(INSPECTIONS), record, URBAN, at, incident))]
        fixed_at = at + timedelta(hours=rng.uniform(2, 20))
        return [(at, Emission(contract_id(INSPECTIONS), record, URBAN, at, incident)),
                (fixed_at, Emission(contract_id(INSPECTIONS), {**record, "status": "rectified"}, URBAN,
                                    fixed_at, incident))]

    def elderly_register(self, t: datetime) -> list[tuple[datetime, Emission]]:
        """The register's current state, sent once at the start (the topic is compacted)."""
        rng = self.rng
        if "civil_affairs" not in self.city.departments:
            return []
        n = max(1, int(self.cfg.elderly_residents * self.cfg.scale * self.city.population / REFERENCE_POPULATION))
        out = []
        for k in range(n):
            street = rng.choices(self.city.streets, weights=self.weights)[0]
            birth = date(rng.randint(1930, 1960), rng.randint(1, 12), rng.randint(1, 28))
            resident = {
                "resident_key": f"EC-{self.cfg.seed % 100:02d}{k + 1:06d}", "name": self.people.full_name(),
                "id_number": self.people.id_number(street, birth), "phone": self.people.mobile(),
                "home_address": self.people.address(street), **street_of(self.city, street.code),
                "birth_year": birth.year,
                "living_alone": rng.random() < 0.35,
                "care_level": rng.choices(["self_care", "partial_assistance", "full_assistance"], weights=(5, 3, 1))[0],
                "needs": sorted(rng.sample(NEEDS, rng.randint(1, 3))), "updated_at": iso(t),
            }
            self.residents.append(resident)
            out.append((t, Emission(contract_id(ELDERLY_CARE), dict(resident), CIVIL, t)))
        return out
