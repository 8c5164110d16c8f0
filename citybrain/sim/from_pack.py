"""Any city pack as a city the simulator can run: its areas, devices, services and departments.

A pack holds what a data office knows (areas, departments, services, routing, the device
registry); the simulator also needs roads for traffic gauges and places for incidents. Those
are derived, deterministically from the seed: one branch road across every street and a short
road segment under each traffic gauge; a school, park, market and elderly-care centre in every
street; an underpass where the registry has underpass water gauges, a construction site where
it has construction noise gauges. Nothing of the generated 云州市 leaks in: names, codes,
services and departments are the pack's own.

The simulator's unit is the street. A district the pack does not divide into streets (a pack that stops at
districts, or one district of a pack that does) stands in as its own street (``Street.is_district``): its
devices, roads, places, calls and residents are the district's, and its records name the district, no street.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from citybrain.sim.city import ROAD_CLASSES, WATER_SITES
from citybrain.city.catalogue import SERVICES, Service
from citybrain.city.model import City, Device, District, Poi, RoadSegment, Street
from citybrain.city.pack import Pack
from citybrain.geo import Area, AreaIndex, bbox, point_in_geometry

#: A device's site type when the registry gives none.
DEFAULT_SITE = {"air_quality": "urban_background", "noise": "residential", "traffic_flow": "secondary",
                "water_level": "street", "weather": "weather_station"}
#: What a caller says of a service the pack describes only by name.
TEMPLATES = ("{place}附近{name}问题，请尽快处理。", "{place}反映：{name}，已经持续一段时间了。",
             "{place}居民投诉{name}，希望相关部门尽快到场。")
#: Points of interest every street has, by category and name suffix.
STREET_PLACES = (("school", "小学"), ("park", "公园"), ("market", "农贸市场"), ("elderly_care_centre", "养老照料中心"))
#: A traffic gauge's road segment: half its length in degrees of longitude (~400 m in all).
SEGMENT_HALF_DEG = 0.0025


def _centre(geometry: dict[str, Any], rng: random.Random) -> tuple[float, float]:
    """A point inside the polygon: its vertex mean when that is inside, else a sampled one."""
    ring = (geometry["coordinates"][0] if geometry["type"] == "Polygon" else geometry["coordinates"][0][0])[:-1]
    x, y = sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)
    return (round(x, 6), round(y, 6)) if point_in_geometry(x, y, geometry) else _inside(geometry, rng)


def _inside(geometry: dict[str, Any], rng: random.Random) -> tuple[float, float]:
    x0, y0, x1, y1 = bbox(geometry)
    for _ in range(500):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if point_in_geometry(x, y, geometry):
            return round(x, 6), round(y, 6)
    return round((x0 + x1) / 2, 6), round((y0 + y1) / 2, 6)


def _services(pack: Pack) -> tuple[Service, ...]:
    """The pack's services, with the volume, daily rhythm and call texts of the generated city's service of the
    same category (a pack says what is offered, not how often it is called); an unknown category gets the
    median share and the pack's name in generic texts."""
    like: dict[str, list[Service]] = {}
    for s in SERVICES:
        like.setdefault(s.category, []).append(s)
    median = sorted(s.daily_share for s in SERVICES)[len(SERVICES) // 2]
    in_pack: dict[str, int] = {}
    for s in pack.services:
        in_pack[s["category"]] = in_pack.get(s["category"], 0) + 1
    out = []
    for s in pack.services:
        twins = like.get(s["category"], [])
        share = sum(t.daily_share for t in twins) / in_pack[s["category"]] if twins else median
        templates = tuple(x for t in twins for x in t.templates) or tuple(x.replace("{name}", s["name"]) for x in TEMPLATES)
        out.append(Service(
            service_code=s["service_code"], service_name=s["name"], service_name_en=s.get("name_en", s["name"]),
            category=s["category"], group=s["group"], department=s["department"], sla_hours=float(s["sla_hours"]),
            priority=s.get("priority", "normal"), co_departments=tuple(s.get("co_departments", ())),
            keywords=tuple(s.get("keywords", ())), daily_share=share, profile=twins[0].profile if twins else "day",
            templates=templates))
    return tuple(out)


def city_of_pack(pack: Pack, seed: int = 7) -> City:
    """The pack's city, with roads and places derived from ``seed``; identical for the same pack and seed."""
    rng = random.Random(f"citybrain-pack-city-{pack.manifest['city']['code']}-{seed}")
    props = [(f["properties"], f["geometry"]) for f in pack.areas]
    communities: dict[str, list[str]] = {}
    for p, _g in props:
        if p["level"] == "community":
            communities.setdefault(p["parent"], []).append(p["name"])
    divided = {p["parent"] for p, _g in props if p["level"] == "street"}
    streets = []
    for p, g in props:
        if p["level"] == "street" or (p["level"] == "district" and p["code"] not in divided):
            streets.append(Street(
                code=p["code"], district_code=p["parent"] if p["level"] == "street" else p["code"], name=p["name"],
                name_en=p.get("name_en", p["name"]), geometry=g, population=int(p.get("population") or 30_000),
                centre=_centre(g, rng), communities=tuple(communities.get(p["code"]) or [p["name"]]),
                zipcode=p["parent"] if p["level"] == "street" else p["code"]))
    districts = [District(p["code"], p["name"], p.get("name_en", p["name"]), g,
                          int(p.get("population") or sum(s.population for s in streets if s.district_code == p["code"])))
                 for p, g in props if p["level"] == "district"]
    by_code = {s.code: s for s in streets}

    roads: list[RoadSegment] = []
    for s in streets:
        x0, _y0, x1, _y1 = bbox(s.geometry)
        cx, cy = s.centre
        a = (round(max(x0, cx - (cx - x0) * 0.8), 6), cy)
        b = (round(min(x1, cx + (x1 - cx) * 0.8), 6), cy)
        roads.append(RoadSegment(f"seg-{len(roads) + 1:04d}", s.name + "支路", "branch", 2, 30.0, (a, b), s.code))
    pois: list[Poi] = []

    def place(name: str, category: str, lon: float, lat: float, street: str) -> None:
        pois.append(Poi(f"poi-{len(pois) + 1:05d}", name, category, lon, lat, street))

    def base(street: str) -> str:
        return by_code[street].name.removesuffix("街道").removesuffix("镇")

    for s in streets:
        for category, suffix in STREET_PLACES:
            place(base(s.code) + suffix, category, *_inside(s.geometry, rng), s.code)

    devices = []
    underpasses: dict[str, tuple[float, float]] = {}
    sites: dict[str, tuple[float, float]] = {}
    units = AreaIndex(Area(s.code, s.name, "street", s.district_code, s.geometry) for s in streets)
    for d in pack.devices:
        lon, lat = float(d["long"]), float(d["lat"])
        street = d.get("street_code") or getattr(units.street_at(lon, lat), "code", "")
        if street not in by_code:
            continue   # outside every street and undivided district: `city check` refuses such a pack
        kind = d["device_type"]
        site = d.get("site_type") or DEFAULT_SITE.get(kind, "street")
        segment = None
        if kind == "traffic_flow":
            road_class = site if site in ROAD_CLASSES else "secondary"
            lanes, speed = ROAD_CLASSES[road_class]
            segment = f"seg-{len(roads) + 1:04d}"
            roads.append(RoadSegment(segment, f"{by_code[street].name}{d['device_id']}路段", road_class, lanes, speed,
                                     ((round(lon - SEGMENT_HALF_DEG, 6), lat), (round(lon + SEGMENT_HALF_DEG, 6), lat)),
                                     street))
        base_level = reference_level = None
        if kind == "water_level":
            base_level, reference_level = WATER_SITES.get(site, WATER_SITES["street"])
            if site == "underpass":
                underpasses.setdefault(street, (lon, lat))
        if kind == "noise" and site == "construction":
            sites.setdefault(street, (lon, lat))
        devices.append(Device(
            device_id=d["device_id"], device_type=kind, owner_department=d["owner_department"], lon=lon, lat=lat,
            street_code=street, site_type=site, vendor=d.get("vendor") or "unknown",
            serial_number=d.get("serial_number") or "", installed_at=d.get("installed_at") or "2020-01-01T00:00:00Z",
            segment_id=segment, reference_level=reference_level, base_level=base_level))
    for street, (lon, lat) in underpasses.items():
        place(base(street) + "下穿隧道", "underpass", lon, lat, street)
    for street, (lon, lat) in sites.items():
        place(base(street) + "项目工地", "construction_site", lon, lat, street)

    m = pack.manifest
    return City(seed=seed, name=m["city"]["name"], name_en=m["city"].get("name_en", m["city"]["name"]),
                jurisdiction_id=m["jurisdiction_id"], districts=districts, streets=streets, roads=roads, pois=pois,
                devices=devices, timezone=m["timezone"], services=_services(pack),
                departments={d["department_id"]: (d["name"], d.get("name_en", d["name"])) for d in pack.departments},
                pack=pack)


def read_city(directory: Path, seed: int = 7) -> City:
    """The city of the pack in ``directory``; raises PackError listing every problem of a broken pack."""
    from citybrain.city.pack_check import check_pack
    from citybrain.city.pack_import import PackError

    pack, problems = check_pack(directory)
    if problems or pack is None:
        raise PackError(problems)
    return city_of_pack(pack, seed)
