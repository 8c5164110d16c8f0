"""The simulated city as reference-topic records (``raw.ref.*``)."""

from __future__ import annotations

from typing import Any

from citybrain.contracts.topics import REF_POIS, REF_ROAD_SEGMENTS, contract_id
from citybrain.city.model import City


def reference_records(city: City, as_of: str) -> dict[str, list[dict[str, Any]]]:
    """Contract id -> records describing the city as of ``as_of`` (RFC 3339 UTC): what its city pack
    publishes (the same records ``citybrain city import`` would), plus the roads and places the
    simulator knows."""
    from citybrain.city.pack_import import reference_records as pack_records

    out = {contract_id(topic): [r for _where, r in items]
           for topic, items in pack_records(city.as_pack(), as_of).items()}
    out[contract_id(REF_ROAD_SEGMENTS)] = [
        {"segment_id": r.segment_id, "name": r.name, "road_class": r.road_class, "lanes": r.lanes,
         "free_speed_kmh": r.free_speed_kmh, "capacity_vph": r.capacity_vph,
         "geometry": {"type": "LineString", "coordinates": [list(p) for p in r.coordinates]},
         **street_of(city, r.street_code), "updated_at": as_of}
        for r in city.roads
    ]
    out[contract_id(REF_POIS)] = [
        {"poi_id": p.poi_id, "name": p.name, "category": p.category, "lat": p.lat, "long": p.lon,
         **street_of(city, p.street_code), "updated_at": as_of}
        for p in city.pois
    ]
    return out


def street_of(city: City, code: str) -> dict[str, str]:
    """A record's ``street_code`` field for the simulator's unit ``code``: none for a district standing in for
    streets (``Street.is_district``), whose records name no street."""
    return {} if city.street(code).is_district else {"street_code": code}


def device_record(city: City, d, status: str, as_of: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A ``raw.ref.device`` record for one device of ``city`` in the given status."""
    return {
        "device_id": d.device_id, "device_type": d.device_type, "owner_department": d.owner_department,
        "lat": d.lat, "long": d.lon, **street_of(city, d.street_code), "site_type": d.site_type, "vendor": d.vendor,
        "serial_number": d.serial_number, "installed_at": d.installed_at, "status": status, "updated_at": as_of,
    }
