"""The simulated city's parts: districts, streets, roads, points of interest, devices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from citybrain.city.catalogue import SERVICES, Service
from citybrain.city.working_time import WorkingTime
from citybrain.contracts.departments import DEPARTMENTS
from citybrain.geo import Area, AreaIndex


@dataclass(frozen=True)
class District:
    code: str              # 6 digits
    name: str
    name_en: str
    geometry: dict[str, Any]
    population: int


@dataclass(frozen=True)
class Street:
    code: str              # 9 digits: district code + 3
    district_code: str
    name: str
    name_en: str
    geometry: dict[str, Any]
    population: int
    centre: tuple[float, float]   # lon, lat
    communities: tuple[str, ...]  # residential compounds, for addresses
    zipcode: str

    @property
    def is_district(self) -> bool:
        """A district standing in for streets its city's pack does not have there: the simulator's unit is the
        street, and such a district is its own (its code is the district's; its records name no street)."""
        return self.code == self.district_code


@dataclass(frozen=True)
class RoadSegment:
    segment_id: str
    name: str
    road_class: str        # arterial | secondary | branch
    lanes: int
    free_speed_kmh: float
    coordinates: tuple[tuple[float, float], tuple[float, float]]
    street_code: str

    @property
    def midpoint(self) -> tuple[float, float]:
        (x0, y0), (x1, y1) = self.coordinates
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def capacity_vph(self) -> int:
        return self.lanes * 1800


@dataclass(frozen=True)
class Poi:
    poi_id: str
    name: str
    category: str          # school | hospital | park | market | construction_site | elderly_care_centre | underpass | metro_station
    lon: float
    lat: float
    street_code: str


@dataclass(frozen=True)
class Device:
    device_id: str         # aq-0001, nz-0001, tf-0001, wl-0001, ws-0001
    device_type: str       # air_quality | noise | traffic_flow | water_level | weather
    owner_department: str
    lon: float
    lat: float
    street_code: str
    site_type: str
    vendor: str
    serial_number: str
    installed_at: str
    segment_id: str | None = None
    reference_level: float | None = None   # water level: flooded above this (m)
    base_level: float | None = None        # water level: dry-weather level (m)


@dataclass
class City:
    """A whole simulated city, deterministic from its seed."""

    seed: int
    name: str
    name_en: str
    jurisdiction_id: str
    districts: list[District]
    streets: list[Street]
    roads: list[RoadSegment]
    pois: list[Poi]
    devices: list[Device]
    timezone: str = "Asia/Shanghai"
    #: The hotline's services and the departments, with the city's own names (department id -> (zh, en)).
    services: tuple[Service, ...] = SERVICES
    departments: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(DEPARTMENTS))
    #: The city pack this city was read from (``citybrain.city.pack.Pack``); None for the generated 云州市.
    pack: Any = field(default=None, repr=False)
    _index: AreaIndex | None = field(default=None, repr=False)

    @property
    def population(self) -> int:
        return sum(s.population for s in self.streets)

    def street(self, code: str) -> Street:
        return self._streets[code]

    def district(self, code: str) -> District:
        return self._districts[code]

    @property
    def _streets(self) -> dict[str, Street]:
        cache = self.__dict__.setdefault("_street_map", {})
        if not cache:
            cache.update({s.code: s for s in self.streets})
        return cache

    @property
    def _districts(self) -> dict[str, District]:
        cache = self.__dict__.setdefault("_district_map", {})
        if not cache:
            cache.update({d.code: d for d in self.districts})
        return cache

    @property
    def index(self) -> AreaIndex:
        """Point -> (district, street, community, grid) lookup over this city's polygons, as deep as the city's
        areas go: a city whose pack stops at districts places points in its districts."""
        if self._index is None:
            areas = [Area(d.code, d.name, "district", None, d.geometry) for d in self.districts]
            areas += [Area(s.code, s.name, "street", s.district_code, s.geometry) for s in self.streets
                      if not s.is_district]
            areas += [Area(f["properties"]["code"], f["properties"]["name"], f["properties"]["level"],
                           f["properties"]["parent"], f["geometry"]) for f in self.as_pack().areas
                      if f["properties"]["level"] in ("community", "grid")]
            self._index = AreaIndex(areas)
        return self._index

    def grid_at(self, lon: float, lat: float, street_code: str) -> tuple[str, list[str]] | None:
        """(grid code, its grid workers' ids) of the grid of ``street_code`` containing the point, where the
        city's pack declares grids; None elsewhere."""
        from citybrain.geo import point_in_geometry

        for code, workers, geometry in self._grids.get(street_code, ()):
            if point_in_geometry(lon, lat, geometry):
                return code, workers
        return None

    def areas_at(self, lon: float, lat: float, street_code: str | None = None) -> dict[str, str]:
        """The codes of the areas of every level containing a point, by level: district, street and, where the
        city's pack declares them, community and grid. With ``street_code`` the point is one of that street
        (the simulator's own choice, even on its border; a district standing in for streets gives the district
        alone); without it the city's polygons place it, as deep as they go there (a city whose pack stops at
        districts: its district only; outside the city: nothing)."""
        if street_code is None:
            place = self.index.resolve(lon, lat)
            return {level: area.code for level, area in (place._asdict() if place else {}).items() if area is not None}
        if self.street(street_code).is_district:
            return {"district": street_code}
        out = {"district": self.street(street_code).district_code, "street": street_code}
        community = self.index.community_at(lon, lat, self.index.areas[street_code])
        if community is not None:
            out["community"] = community.code
        grid = self.grid_at(lon, lat, street_code)
        if grid is not None:
            out["grid"] = grid[0]
        return out

    def area_name(self, code: str) -> str:
        """The name of an area of any level (its code if the city does not know it)."""
        names = self.__dict__.get("_area_names")
        if names is None:
            names = self.__dict__["_area_names"] = {f["properties"]["code"]: f["properties"]["name"]
                                                    for f in self.as_pack().areas}
        return names.get(code, code)

    @property
    def _grids(self) -> dict[str, list[tuple[str, list[str], dict[str, Any]]]]:
        cache = self.__dict__.get("_grid_map")
        if cache is None:
            features = self.as_pack().areas
            street_of = {f["properties"]["code"]: f["properties"]["parent"] for f in features
                         if f["properties"]["level"] == "community"}
            cache = {}
            for f in features:
                p = f["properties"]
                if p["level"] == "grid" and p["parent"] in street_of:
                    cache.setdefault(street_of[p["parent"]], []).append((p["code"], list(p.get("grid_workers", [])),
                                                                         f["geometry"]))
            self.__dict__["_grid_map"] = cache
        return cache

    @property
    def tz(self) -> ZoneInfo:
        """The city's time zone: the rhythms of its day and its local dates."""
        return ZoneInfo(self.timezone)

    @property
    def working(self) -> WorkingTime | None:
        """The city's working time, as its pack's manifest declares it (``working_hours``), in which the SLAs of
        rules with ``sla_clock: working`` run; None: every SLA on the calendar (the simulated 云州市)."""
        if "_working" not in self.__dict__:
            block = self.as_pack().manifest.get("working_hours")
            self.__dict__["_working"] = WorkingTime.from_block(block, self.tz) if block else None
        return self.__dict__["_working"]  # type: ignore[no-any-return]

    def as_pack(self) -> Any:
        """The city as a city pack (``citybrain.city.pack.Pack``): the pack it was read from, else the generated
        city's, built once."""
        cached = self.__dict__.get("_as_pack")
        if cached is None:
            from citybrain.city.pack import pack_from_city

            cached = self.__dict__["_as_pack"] = pack_from_city(self)
        return cached

    def routing(self) -> list[dict[str, Any]]:
        """The routing rules of dispatch, as the city's pack declares them."""
        return list(self.as_pack().routing)

    def service_of(self, *categories: str) -> Service | None:
        """The first of the city's services in the first of ``categories`` it offers, or None."""
        for category in categories:
            for s in self.services:
                if s.category == category:
                    return s
        return None

    def devices_of(self, device_type: str) -> list[Device]:
        return [d for d in self.devices if d.device_type == device_type]
