"""The weather that drives the sensors: temperature, humidity, and rain per district."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from citybrain.sim.clock import LOCAL, local_hour


@dataclass(frozen=True)
class Storm:
    """Heavy rain over some districts: ramps up to ``peak_mm_h`` and back down."""

    districts: frozenset[str]
    start: datetime
    end: datetime
    peak_mm_h: float

    def rain(self, t: datetime, district: str) -> float:
        if district not in self.districts or not (self.start <= t < self.end):
            return 0.0
        x = (t - self.start) / (self.end - self.start)
        return self.peak_mm_h * math.sin(math.pi * x) ** 0.7


class Weather:
    """Hourly city weather with a seasonal baseline, plus any storms the incidents add."""

    def __init__(self, rng: random.Random, start: datetime, hours: float, tz: tzinfo = LOCAL) -> None:
        self.tz = tz
        month = start.astimezone(tz).month
        # Northern China: cold dry winters, hot wet summers.
        self.mean_c = [-4, -1, 6, 14, 21, 25, 27, 26, 21, 14, 5, -2][month - 1]
        self.wet = month in (6, 7, 8, 9)
        self.start = start
        self.storms: list[Storm] = []
        n = int(hours) + 2
        self._temp_noise = [0.0] * n
        self._drizzle = [0.0] * n
        for i in range(1, n):
            self._temp_noise[i] = 0.85 * self._temp_noise[i - 1] + rng.gauss(0, 0.6)
        p_rain = 0.08 if self.wet else 0.03
        i = 0
        while i < n:
            if rng.random() < p_rain:
                length = rng.randint(1, 4)
                amount = rng.uniform(0.5, 4.0 if self.wet else 1.5)
                for k in range(i, min(n, i + length)):
                    self._drizzle[k] = amount
                i += length
            i += 1

    def _hour(self, t: datetime) -> int:
        return max(0, min(len(self._drizzle) - 1, int((t - self.start) / timedelta(hours=1))))

    def temperature(self, t: datetime) -> float:
        h = local_hour(t, self.tz)
        return self.mean_c + 5.0 * math.cos(2 * math.pi * (h - 15) / 24) + self._temp_noise[self._hour(t)]

    def humidity(self, t: datetime) -> float:
        rainy = self._drizzle[self._hour(t)] > 0
        base = 0.65 if self.wet else 0.40
        h = local_hour(t, self.tz)
        return min(0.98, base + 0.15 * math.cos(2 * math.pi * (h - 4) / 24) + (0.3 if rainy else 0.0))

    def rain(self, t: datetime, district: str) -> float:
        """Rain in mm/h over a district at ``t``."""
        return self._drizzle[self._hour(t)] + sum(s.rain(t, district) for s in self.storms)
