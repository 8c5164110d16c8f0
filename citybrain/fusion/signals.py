"""Normalise and enrich raw records into signals: one shape for every feed.

A signal is what fusion reasons about: what kind of evidence (a reading, a ticket, a
police report, an inspection), its category, when it was observed (UTC), where (WGS84 plus
the district, street and community resolved from the reference areas, as deep as the city's
areas go there: the district alone in a city without streets), and for readings the measured
values and whether the device is suspect (unregistered, or far from its registered place).
Pure functions: the stream workers call them; tests call them on simulator records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from citybrain.contracts import topics
from citybrain.geo import AreaIndex, haversine_m
from citybrain.times import parse_time

#: A device reporting farther than this from its registered position is suspect.
POSITION_TOLERANCE_M = 500.0
SENSOR_TOPICS = {
    topics.AIR_QUALITY: "air_quality", topics.NOISE_LEVEL: "noise", topics.TRAFFIC_FLOW: "traffic_flow",
    topics.WATER_LEVEL: "water_level", topics.WEATHER: "weather",
}
#: Where each model says when it observed, in order of preference (an interval by its end).
OBSERVED_AT = ("dateObserved", "dateObservedTo", "observationDateTime", "dateObservedFrom")
#: A reading's attributes that are not measurements.
#: Text attributes the detectors read (a gauge's site and state, a traffic lane's direction).
MEASURED_TEXT = {"siteType", "floodLevelStatus", "airQualityLevel", "laneDirection", "vehicleType", "sonometerClass"}
NOT_MEASURED = {"id", "type", "location", "refDevice", "stationID", *OBSERVED_AT}


@dataclass
class Signal:
    topic: str
    event_id: str
    kind: str                      # reading | ticket | police | inspection
    category: str                  # device type, hotline category, police or inspection category
    at: datetime                   # observation time, UTC
    lon: float | None = None
    lat: float | None = None
    district_code: str | None = None
    district_name: str | None = None
    street_code: str | None = None      # None where the city has no streets (its pack stops at districts)
    street_name: str | None = None
    community_code: str | None = None   # where the city's pack declares communities
    device_id: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    state: str | None = None       # ticket lifecycle state, police or inspection status

    @property
    def area_code(self) -> str | None:
        """The deepest area fusion groups evidence by: the street, else the district (a city without streets
        there); None for a record with no place in the city."""
        return self.street_code or self.district_code

    @property
    def area_name(self) -> str | None:
        """The name of ``area_code``'s area, where the reference areas gave it."""
        return self.street_name if self.street_code else self.district_name


class Enricher:
    """Turns raw records into signals with the reference data it holds (areas, devices)."""

    def __init__(self, index: AreaIndex | None = None, devices: dict[str, dict[str, Any]] | None = None) -> None:
        self.index = index
        self.devices = devices if devices is not None else {}

    def update_device(self, record: dict[str, Any]) -> None:
        self.devices[record["device_id"]] = record

    def signal(self, topic: str, value: dict[str, Any], event_id: str) -> Signal | None:
        """The signal of one raw record, or None for records that carry no evidence (reference data)."""
        if topic in SENSOR_TOPICS:
            return self._reading(topic, value, event_id)
        if topic == topics.SERVICE_REQUESTS:
            return self._place(Signal(topic, event_id, "ticket", value.get("category") or value["service_code"],
                                      parse_time(value["requested_datetime"]), value.get("long"), value.get("lat"),
                                      values={"service_request_id": value["service_request_id"],
                                              "service_code": value["service_code"],
                                              "service_name": value.get("service_name"),
                                              "priority": value.get("priority", "normal")},
                                      state=value.get("lifecycle_state")))
        if topic == topics.POLICE_INCIDENTS:
            return self._place(Signal(topic, event_id, "police", value["category"], parse_time(value["reported_at"]),
                                      value["long"], value["lat"], values={"incident_id": value["incident_id"]},
                                      state=value["status"]))
        if topic == topics.INSPECTIONS:
            return self._place(Signal(topic, event_id, "inspection", value["category"],
                                      parse_time(value["inspected_at"]), value["long"], value["lat"],
                                      values={"inspection_id": value["inspection_id"]}, state=value["status"]))
        return None

    def _place(self, s: Signal) -> Signal:
        if self.index is not None and s.lon is not None and s.lat is not None:
            found = self.index.resolve(s.lon, s.lat)
            if found:   # as deep as the city's areas go there: a city whose pack stops at districts has no street
                s.district_code, s.district_name = found.district.code, found.district.name
                s.street_code = found.street.code if found.street else None
                s.street_name = found.street.name if found.street else None
                s.community_code = found.community.code if found.community else None
            else:
                s.flags.append("outside_city")
        return s

    def _reading(self, topic: str, value: dict[str, Any], event_id: str) -> Signal:
        # The contracts guarantee an observation time and a position or a device (refDevice, or a
        # FloodMonitoring stationID); a reading without a position is placed where the registry has its device.
        device_id = value.get("refDevice") or value.get("stationID")
        device = self.devices.get(device_id) if device_id else None
        at = parse_time(next(value[k] for k in OBSERVED_AT if value.get(k)))
        location = value.get("location")
        if location:
            lon, lat = location["coordinates"][:2]
        elif device is not None:
            lon, lat = device["long"], device["lat"]
        else:
            lon = lat = None
        # Measurements are the numbers and flags a reading carries; the models' text and structures
        # (address, source, name, ...) are kept in the lake, not reasoned about.
        measures = {k: v for k, v in value.items()
                    if k not in NOT_MEASURED and (isinstance(v, (int, float, bool)) or k in MEASURED_TEXT)}
        s = self._place(Signal(topic, event_id, "reading", SENSOR_TOPICS[topic], at, lon, lat,
                               device_id=device_id, values=measures))
        if lon is None:
            s.flags.append("unplaced")
        if self.devices and device is None:
            s.flags.append("unregistered_device")
        elif device is not None:
            s.values["site_type"] = device.get("site_type")
            if lon is not None and lat is not None and \
                    haversine_m(lon, lat, device["long"], device["lat"]) > POSITION_TOLERANCE_M:
                s.flags.append("position_mismatch")
            if device.get("status") != "active":
                s.flags.append(f"device_{device.get('status')}")
            # The registry, not the reading, says where a trusted device is.
            if "position_mismatch" not in s.flags and device.get("street_code") and s.street_code is None:
                s.street_code = device["street_code"]
        return s
