"""The simulation: the city's feeds tick by tick, in time order, plus the ground truth.

Pure generation, no broker: ``Simulation.ticks()`` yields what leaves the city in each
tick, so the same seed and options give the same records (tests rely on it), and the
runner decides how fast to send them.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Iterator

from citybrain.sim.city import build_city
from citybrain.city.model import City
from citybrain.city.pack_import import PACK_CONTRACTS
from citybrain.sim.reference import reference_records
from citybrain.sim.clock import default_start
from citybrain.times import iso
from citybrain.sim.departmental import Departments
from citybrain.sim.hotline import TicketDesk
from citybrain.sim.incidents import KINDS, Incident, plan_incidents
from citybrain.sim.model import Effects, Emission, SimConfig
from citybrain.sim.sensors import SensorFleet, WeatherStations
from citybrain.sim.weather import Weather

GROUND_TRUTH_FORMAT = "citybrain.ground_truth/1"
REFERENCE_PRODUCER = "data-bureau.reference"


class Simulation:
    """One simulated window of city life, deterministic from ``SimConfig``."""

    def __init__(self, cfg: SimConfig, city: City | None = None) -> None:
        cfg.check()
        self.cfg = cfg
        if city is None and cfg.city_pack:
            from pathlib import Path

            from citybrain.sim.from_pack import read_city

            city = read_city(Path(cfg.city_pack), cfg.city_seed)
        self.city = city or build_city(cfg.city_seed)
        self.start = (cfg.start or default_start(tz=self.city.tz)).replace(microsecond=0)
        self.interval = timedelta(minutes=cfg.interval_min)
        self.steps = max(1, round(timedelta(hours=cfg.hours) / self.interval))
        self.end = self.start + self.interval * self.steps

        def rng(part: str) -> random.Random:
            return random.Random(f"citybrain-sim-{cfg.seed}-{part}")

        self.weather = Weather(rng("weather"), self.start, cfg.hours, self.city.tz)
        self.effects = Effects()
        #: Configured incidents the city cannot host, with what it lacks (plan_incidents leaves them out).
        self.not_simulated = {kind: lacks for kind in cfg.incidents if (lacks := KINDS[kind].missing(self.city))}
        self.incidents: list[Incident] = plan_incidents(cfg, self.city, self.start, self.end, rng("incidents"))
        for incident in self.incidents:
            incident.install(self.effects, self.weather)
        keep = {d for i in self.incidents for d in i.devices}
        self.fleet = SensorFleet(self.city, cfg, rng("sensors"), self.weather, self.effects, self.start, keep)
        self.stations = WeatherStations(self.city, self.weather, rng("stations"))
        self.desk = TicketDesk(self.city, cfg, rng("hotline"), self.effects, self.start)
        self.departments = Departments(self.city, cfg, rng("departments"), self.weather)
        self._by_id = {i.id: i for i in self.incidents}
        self.emitted: Counter[str] = Counter()

    def ticks(self) -> Iterator[tuple[datetime, list[Emission]]]:
        """(tick time, records leaving the city in that tick), the reference data first."""
        pending: list[tuple[datetime, int, Emission]] = []
        seq = 0

        def push(items: list[tuple[datetime, Emission]]) -> None:
            nonlocal seq
            for due, emission in items:
                if due < self.end:
                    seq += 1
                    heapq.heappush(pending, (due, seq, emission))

        from_pack = PACK_CONTRACTS if self.cfg.city_from_pack else ()   # the pack published them
        first = [Emission(contract, record, REFERENCE_PRODUCER, self.start)
                 for contract, records in reference_records(self.city, iso(self.start)).items() if contract not in from_pack
                 for record in records]
        first += [e for _due, e in self.departments.elderly_register(self.start)]
        yield self.start, self._account(first)

        for step in range(1, self.steps + 1):
            t = self.start + self.interval * step
            push(self.fleet.tick(t))
            push(self.fleet.registry_updates(t))
            push(self.stations.tick(t, self.interval))
            push(self.desk.tick(t))
            push(self.departments.tick(t))
            for incident in self.incidents:
                push(incident.extra(t, self.interval, self.departments))
            out: list[Emission] = []
            while pending and pending[0][0] <= t:
                out.append(heapq.heappop(pending)[2])
            yield t, self._account(out)

    def _account(self, emissions: list[Emission]) -> list[Emission]:
        for e in emissions:
            self.emitted[e.contract] += 1
            if e.incident:
                self._by_id[e.incident].observe(e)
        return emissions

    def incident(self, kind: str) -> Incident | None:
        return next((i for i in self.incidents if i.kind == kind), None)

    def ground_truth(self, run_id: str, produced: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ground-truth document (docs/reference/ground-truth.md)."""
        return {
            "format": GROUND_TRUTH_FORMAT,
            "run_id": run_id,
            "seed": self.cfg.seed, "city_seed": self.cfg.city_seed,
            "city": {"name": self.city.name, "name_en": self.city.name_en, "districts": len(self.city.districts),
                     "streets": sum(1 for s in self.city.streets if not s.is_district),
                     "devices": len(self.city.devices),
                     "population": self.city.population},
            "start": iso(self.start), "end": iso(self.end), "timezone": self.city.timezone,
            "interval_min": self.cfg.interval_min, "scale": self.cfg.scale,
            "incidents": [i.truth() for i in self.incidents],
            "incidents_not_simulated": self.not_simulated,
            "sensor_faults": self.fleet.faults,
            "emitted": dict(sorted(self.emitted.items())),
            "produced": produced or {},
        }
