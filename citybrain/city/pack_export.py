"""The city as the reference topics hold it now, written back as a city pack (``citybrain city export``).

The inverse of :func:`citybrain.city.pack_import.reference_records`: the latest record per key
of each reference topic a pack feeds, with the import's stamps (``updated_at``,
``effective_from``, a device's ``status``) left out, so a data office can start its next pack
from what the platform serves today. Its positions are WGS84 whatever the imported pack declared
(the topics hold WGS84), and its manifest has no ``geometry``: ``raw.ref.city`` does not keep a
pack's ``geometry.tolerance_m2``, so the default tolerance applies again, and a city imported with
a larger one imports unchanged only once the ``geometry`` block of its last manifest (its
``tolerance_m2``; its ``crs`` is WGS84 now) is carried over.
"""

from __future__ import annotations

from typing import Any, Callable

from citybrain.city.pack import DEVICE_COLUMNS, FORMAT, Pack
from citybrain.city.pack_import import AREAS, CITY, DEPARTMENTS, DEVICES, GRIDS, RULES, SERVICES, TARGETS, is_withdrawn
from citybrain.errors import InputError
from citybrain.settings import Settings

STAMPS = ("updated_at", "effective_from")


def _latest(read: Callable[[str], list[dict[str, Any]]], topic: str) -> list[dict[str, Any]]:
    key = TARGETS[topic][1]
    latest: dict[str, dict[str, Any]] = {}
    for v in read(topic):
        if isinstance(v, dict) and v.get(key) is not None:
            latest[str(v[key])] = {k: x for k, x in v.items() if k not in STAMPS}
    return [latest[k] for k in sorted(latest) if not is_withdrawn(latest[k])]


def pack_of_records(read: Callable[[str], list[dict[str, Any]]]) -> Pack:
    """A pack from the reference records ``read(topic)`` returns (oldest first); raises InputError when no city
    was ever imported."""
    cities = _latest(read, CITY)
    if not cities:
        raise InputError(f"{CITY} holds no city: nothing to export. Fix: `citybrain city import PACK` first (the "
                         "demo imports the simulated city's pack).")
    city = max(read(CITY), key=lambda c: str(c.get("updated_at", "")))
    manifest: dict[str, Any] = {"format": FORMAT, "version": city["pack_version"],
                                "city": {"code": city["city_code"], "name": city["name"],
                                         **({"name_en": city["name_en"]} if city.get("name_en") else {})},
                                "jurisdiction_id": city["jurisdiction_id"], "timezone": city["timezone"]}
    manifest.update({k: city[k] for k in ("description", "postal_code_pattern", "codes", "languages", "working_hours",
                                                "assessment", "reporting")
                     if city.get(k)})
    city_parent = str(city["city_code"]).ljust(6, "0")
    areas = []
    for a in _latest(read, AREAS):
        props = {"code": a["area_code"], "name": a["name"], "level": a["level"],
                 "parent": None if a.get("parent_code") in (None, city_parent) else a["parent_code"]}
        props.update({k: a[k] for k in ("name_en", "population") if k in a})
        areas.append({"type": "Feature", "geometry": a["geometry"], "properties": props})
    order = {"district": 0, "street": 1, "community": 2}
    areas.sort(key=lambda f: (order.get(f["properties"]["level"], 3), f["properties"]["code"]))
    for g in _latest(read, GRIDS):
        props = {"code": g["grid_code"], "name": g["name"], "level": "grid", "parent": g["community_code"],
                 "grid_workers": g.get("grid_workers", [])}
        props.update({k: g[k] for k in ("population",) if k in g})
        areas.append({"type": "Feature", "geometry": g["geometry"], "properties": props})
    devices = [{k: d[k] for k in DEVICE_COLUMNS if d.get(k) not in (None, "")} for d in _latest(read, DEVICES)]
    return Pack(manifest, areas, _latest(read, DEPARTMENTS), _latest(read, SERVICES), _latest(read, RULES), devices)


def export_pack(settings: Settings) -> Pack:
    """The current city from the broker's reference topics."""
    from citybrain.kafka.topics import read_values

    return pack_of_records(lambda topic: read_values(settings, topic, timeout_s=60))
