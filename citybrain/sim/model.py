"""What the simulator's parts share: its options, what it emits, and the incidents' effects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable
from citybrain.errors import InputError

#: Tick lengths that divide an hour, so hourly sensors report on the hour.
INTERVALS = (1, 2, 3, 5, 10, 15, 20, 30, 60)
INCIDENT_KINDS = ("underpass_flood", "night_construction_noise", "complaint_hotspot", "broken_sensor",
                  "spoofed_device", "gateway_flood", "consumer_surge")


class SimError(InputError):
    """The simulator's options do not make sense; the message names the option and the fix."""


#: Residents of 云州市 (city seed 7), for whom the volumes below are set; a city of another size gets its
#: share (a pack's city of 850,000 gets 11 % of the tickets, police reports and inspections).
REFERENCE_POPULATION = 7_561_178


@dataclass(frozen=True)
class SimConfig:
    seed: int = 7                          # the simulation's randomness
    city_seed: int = 7                     # the city itself: one city per broker, whatever the run's seed
    start: datetime | None = None          # UTC; default: yesterday's local midnight
    hours: float = 24.0
    interval_min: int = 5
    scale: float = 1.0                     # share of devices and tickets simulated
    tickets_per_day: int = 10_000          # at scale 1 in a city of REFERENCE_POPULATION; others by population
    elderly_residents: int = 3_000         # at scale 1
    incidents: tuple[str, ...] = INCIDENT_KINDS
    faults: bool = True                    # fleet faults: stuck, drift, dropouts, spikes, duplicates, late, skew
    #: The city's areas, departments, routing rules and device registry came from an imported city pack:
    #: do not publish them again at the start (roads, points of interest and registry updates still are).
    city_from_pack: bool = False
    #: Simulate this city pack (a folder) instead of the generated 云州市 (``city_seed`` then seeds only
    #: what the pack does not hold: roads and places).
    city_pack: str | None = None

    def check(self) -> None:
        if self.interval_min not in INTERVALS:
            raise SimError(f"--interval-min {self.interval_min} is not allowed: use one of "
                           f"{', '.join(map(str, INTERVALS))} (minutes that divide an hour).")
        if not 0 < self.hours <= 24 * 31:
            raise SimError(f"--hours {self.hours} is out of range: simulate more than 0 and at most 744 hours.")
        if not 0 < self.scale <= 4:
            raise SimError(f"--scale {self.scale} is out of range: use a share above 0 and at most 4 "
                           "(0.1 = a tenth of the devices and tickets).")
        unknown = sorted(set(self.incidents) - set(INCIDENT_KINDS))
        if unknown:
            raise SimError(f"unknown incident kind(s) {', '.join(unknown)}: choose from {', '.join(INCIDENT_KINDS)}.")


@dataclass(frozen=True)
class Emission:
    """One record the simulator sends: which contract, what, from which producer, when."""

    contract: str
    value: dict[str, Any]
    producer: str
    at: datetime                 # simulated send time (the tick it leaves in)
    incident: str | None = None  # the injected incident it is evidence of, if any


@dataclass
class Effects:
    """How injected incidents bend the city's normal behaviour; read by the generators."""

    noise_db: dict[str, list[tuple[datetime, datetime, float]]] = field(default_factory=dict)
    water_gain: dict[str, tuple[float, str]] = field(default_factory=dict)      # device -> (gain, incident)
    stuck: dict[str, tuple[datetime, str]] = field(default_factory=dict)        # device -> (from, incident)
    watch: dict[str, str] = field(default_factory=dict)                         # device -> incident
    capacity: dict[str, list[tuple[datetime, datetime, float]]] = field(default_factory=dict)  # segment
    #: Extra hotline tickets: (street code, service code, rate per hour at t, incident id, (lon, lat) or None)
    ticket_rates: list[tuple[str, str, Callable[[datetime], float], str, tuple[float, float] | None]] = field(
        default_factory=list)

    def noise_boost(self, device_id: str, t: datetime) -> float:
        return sum(db for start, end, db in self.noise_db.get(device_id, ()) if start <= t < end)

    def capacity_factor(self, segment_id: str | None, t: datetime) -> float:
        factor = 1.0
        for start, end, f in self.capacity.get(segment_id or "", ()):
            if start <= t < end:
                factor *= f
        return factor
