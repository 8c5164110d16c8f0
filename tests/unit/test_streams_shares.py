"""Fusion keyed by area (``citybrain.streams.shares``): raw records routed to their district's partition of the
by-area topic, reference data to every partition, the city's districts spread evenly, and a worker's shares
created when gained and dropped when lost."""

from __future__ import annotations

import json
from collections import Counter

from citybrain.sim.city import build_city
from citybrain.sim.reference import reference_records
from citybrain.contracts.model import load_all
from citybrain.fusion.keys import partition_of
from citybrain.fusion.pipeline import Pipeline
from citybrain.kafka.replay import Backlog
from citybrain.access.privacy import Protector
from citybrain.settings import PROJECT_ROOT
from citybrain.streams.shares import Repartitioner, Shares, source_of

CITY = build_city(7)


def _repartitioner(partitions: int = 12) -> Repartitioner:
    r = Repartitioner(partitions)
    for contract, records in reference_records(CITY, "2026-11-22T00:00:00Z").items():
        for record in records:
            r.reference(f"{contract}.v1", record)
    return r


def test_the_citys_districts_spread_evenly_over_the_partitions() -> None:
    codes = [d.code for d in CITY.districts]
    assert Counter(partition_of(c, 12) for c in codes).most_common(1)[0][1] == 1
    assert set(Counter(partition_of(c, 6) for c in codes).values()) == {2}
    assert partition_of(None, 12) == 0 and partition_of("not-a-code", 12) == partition_of("not-a-code", 12)


def test_a_reading_goes_to_its_devices_district_with_where_it_came_from() -> None:
    r = _repartitioner()
    gauge = CITY.devices[0]
    reading = {"id": "x", "refDevice": gauge.device_id, "dateObserved": "2026-11-22T01:00:00Z"}
    partitions, (key, value, ts, headers) = r.route("raw.sensor.water_level.v1", 4, 17, 1_000, [("event-id", b"e1")],
                                                    json.dumps(reading).encode())
    district = r.keys.key("raw.sensor.water_level.v1", reading)
    assert district and partitions == [partition_of(district, 12)] and key == district.encode()
    assert ts == 1_000 and source_of("by-area", partitions[0], 99, dict(headers)) == ("raw.sensor.water_level.v1", 4, 17)
    assert dict(headers)["event-id"] == b"e1"


def test_reference_data_goes_to_every_partition_and_unreadable_records_to_the_first() -> None:
    r = _repartitioner(5)
    area = reference_records(CITY, "2026-11-22T00:00:00Z")["raw.ref.admin_area"][0]
    assert r.route("raw.ref.admin_area.v1", 0, 0, 0, [], json.dumps(area).encode())[0] == [0, 1, 2, 3, 4]
    assert r.route("raw.sensor.noise_level.v1", 0, 0, 0, [], b"{not json")[0] == [0]


def test_a_share_is_created_when_gained_and_dropped_when_lost() -> None:
    contracts = {c.topic: c for c in load_all(PROJECT_ROOT / "schemas").values()}
    made = []
    shares = Shares(contracts, lambda: made.append(1) or Pipeline(contracts, Protector.ephemeral(), auto_sweep=False))

    class M:
        def __init__(self, topic: str, partition: int, offset: int) -> None:
            self.topic, self.partition, self.offset = topic, partition, offset

    gained = shares.missing([M("t", 0, 5), M("t", 0, 6), M("t", 3, 9)])
    assert gained == {("t", 0): 5, ("t", 3): 9}
    assert shares.gain(Backlog(None, "", set(), lambda t: 0.0, ends=gained)) == 0   # type: ignore[arg-type]
    assert set(shares.owned) == {("t", 0), ("t", 3)} and len(made) == 2
    assert shares.missing([M("t", 0, 7)]) == {}
    assert shares.keep_only([("t", 3)]) == [("t", 0)] and set(shares.owned) == {("t", 3)}
