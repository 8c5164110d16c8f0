"""The area key of a raw record: the district whose fusion state it belongs to.

Fusion correlates evidence of one place: a street's cases (a district's, where the city has no streets
there), a district's rain with its gauges, a device's run of readings, a ticket with its lifecycle events
and its orders. All of these stay within one district, so the district is the key that lets fusion be
split across workers (each owning a share of the districts) without losing a correlation:

- a sensor reading goes with its device's registered place (so a spoofed or drifting reading stays with
  its device's history), else with where it says it is;
- a ticket, a police report or an inspection with the place it reports;
- a ticket's lifecycle event with its ticket (remembered by ``service_request_id``);
- a record with no place in the city (outside it, unplaced) has no key: it goes to the first share.

What needs the whole city is the trending-hotspot detector's baseline (a street's calls against the rest
of the city's calls of that category) and the city-level metrics; ``citybrain dev evaluate --replay --shards N``
measures what splitting does to detection.
"""

from __future__ import annotations

import zlib
from typing import Any

from citybrain.contracts import topics
from citybrain.fusion.signals import SENSOR_TOPICS, Enricher
from citybrain.geo import AreaIndex, changed


class AreaKeys:
    """Keys raw records by district, from the reference data it is fed (areas, devices) and the tickets it saw."""

    def __init__(self) -> None:
        self.enricher = Enricher()
        self.areas: dict[str, dict[str, Any]] = {}
        self.tickets: dict[str, str] = {}
        #: A device's district from its registered place (None: unplaced), until the reference data changes.
        self.device_districts: dict[str, str | None] = {}
        self._dirty = False

    def reference(self, topic: str, value: dict[str, Any]) -> None:
        if topic == topics.REF_AREAS:
            if changed(self.areas.get(value["area_code"]), value):
                self._dirty = True
                self.device_districts.clear()
            self.areas[value["area_code"]] = value
        elif topic == topics.REF_DEVICES:
            if changed(self.enricher.devices.get(value.get("device_id", "")), value):
                self.device_districts.pop(value.get("device_id", ""), None)
            self.enricher.update_device(value)

    def key(self, topic: str, value: dict[str, Any]) -> str | None:
        """The district code ``value`` (a record of ``topic``) belongs to, or None when it has no place."""
        if self._dirty:
            self.enricher.index = AreaIndex.from_records(self.areas.values())
            self._dirty = False
        if topic == topics.TICKET_EVENTS:
            return self.tickets.get(str(value.get("service_request_id")))
        if topic in SENSOR_TOPICS:
            device_id = value.get("refDevice") or value.get("stationID") or ""
            if device_id in self.device_districts:
                district = self.device_districts[device_id]
            else:
                district = self._registered_district(device_id)
                if device_id in self.enricher.devices:   # registered devices only: unknown ids are not kept
                    self.device_districts[device_id] = district
            if district:
                return district
        try:
            signal = self.enricher.signal(topic, value, "")
        except (KeyError, TypeError, ValueError):   # the pipeline dead-letters what it cannot read
            return None
        district = signal.district_code if signal is not None else None
        if topic == topics.SERVICE_REQUESTS and district:
            self.tickets[str(value["service_request_id"])] = district
        return district

    def _registered_district(self, device_id: str) -> str | None:
        device = self.enricher.devices.get(device_id)
        if device is None or self.enricher.index is None or device.get("long") is None or device.get("lat") is None:
            return None
        found = self.enricher.index.resolve(float(device["long"]), float(device["lat"]))
        return found.district.code if found else None


def share_of(key: str | None, shares: int) -> int:
    """Which of ``shares`` a key falls in (stable across processes and runs); no key: the first."""
    if key is None or shares <= 1:
        return 0
    return zlib.crc32(key.encode()) % shares


def partition_of(key: str | None, partitions: int) -> int:
    """The partition of the fusion worker's by-area topic a key goes to (stable across processes and runs).

    District codes are the administrative division's numbers (GB/T 2260: a city's districts are consecutive),
    so the number modulo ``partitions`` spreads a city's districts evenly; a hash of the same twelve codes put
    five of them on one of six partitions. Any other key is hashed; no key: the first partition."""
    if key is None or partitions <= 1:
        return 0
    if key.isdigit():
        return int(key) % partitions
    return zlib.crc32(key.encode()) % partitions
