"""Fusion keyed by area (``citybrain.streams.shares``): raw records routed to their district's partition of the
by-area topic, reference data to every partition, the city's districts spread evenly, and a worker's shares
created when gained and dropped when lost."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import orjson

from citybrain.sim.city import build_city
from citybrain.sim.reference import reference_records
from citybrain.contracts.model import load_all
from citybrain.devtools.bench_keyed import simulated_messages
from citybrain.fusion.keys import AreaKeys, partition_of
from citybrain.fusion.pipeline import REFERENCE, Pipeline
from citybrain.kafka.replay import Backlog
from citybrain.access.privacy import Protector
from citybrain.settings import PROJECT_ROOT
from citybrain.streams.shares import Repartitioner, Routed, Shares, source_of

CITY = build_city(7)


def _raw(topic: str, partition: int, offset: int, at: float, value: object,
         headers: list[tuple[str, bytes]] | None = None) -> SimpleNamespace:
    """A raw record as the repartitioning agent is handed it (Kafka timestamp in seconds)."""
    payload = value if isinstance(value, bytes) else json.dumps(value).encode()
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, timestamp=at, headers=headers or [],
                           value=payload)


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
    ((partition, [(key, value, ts, headers)]),) = r.route([_raw("raw.sensor.water_level.v1", 4, 17, 1.0, reading,
                                                                 [("event-id", b"e1")])]).items()
    district = r.keys.key("raw.sensor.water_level.v1", reading)
    assert district and partition == partition_of(district, 12) and key == district.encode()
    assert ts == 1_000 and source_of("by-area", partition, 99, dict(headers)) == ("raw.sensor.water_level.v1", 4, 17)
    assert dict(headers)["event-id"] == b"e1"


def test_reference_data_goes_to_every_partition_and_unreadable_records_to_the_first() -> None:
    r = _repartitioner(5)
    area = reference_records(CITY, "2026-11-22T00:00:00Z")["raw.ref.admin_area"][0]
    assert list(r.route([_raw("raw.ref.admin_area.v1", 0, 0, 0.0, area)])) == [0, 1, 2, 3, 4]
    assert list(r.route([_raw("raw.sensor.noise_level.v1", 0, 0, 0.0, b"{not json")])) == [0]


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


def _route_before(keys: AreaKeys, partitions: int, topic: str, partition: int, offset: int, timestamp_ms: int,
                  headers: Any, payload: bytes) -> tuple[list[int], Routed]:
    """The repartitioner's routing of one record as it was before it was made cheaper (2026-12-07), kept verbatim
    as the golden reference: the by-area records must not change by a byte."""
    value: Any = None
    try:
        value = orjson.loads(payload)
    except ValueError:
        pass
    out_headers = [*(headers or ()), ("src-topic", topic.encode()), ("src-partition", str(partition).encode()),
                   ("src-offset", str(offset).encode())]
    if topic in REFERENCE and isinstance(value, dict):
        keys.reference(topic, value)
        return list(range(partitions)), (None, payload, timestamp_ms, out_headers)
    key = None
    if isinstance(value, dict):
        try:
            key = keys.key(topic, value)
        except Exception:   # noqa: BLE001 - as it was
            key = None
    return [partition_of(key, partitions)], (key.encode() if key else None, payload, timestamp_ms, out_headers)


def test_the_by_area_records_are_byte_for_byte_those_routed_before() -> None:
    """A simulated hour of the city (reference data, readings, tickets and their lifecycle, police reports,
    inspections; with the simulator's faults) and records built to take every other branch (not JSON, not an
    object, reference data that is not an object, a ticket event of an unknown ticket, a place outside the city,
    a key whose lookup raises) routed fetch by fetch: keys, values, timestamps, headers, partitions and their
    order the same as the routing before."""
    messages = simulated_messages(hours=1, scale=0.1)
    assert {m.topic for m in messages} >= {"raw.ref.admin_area.v1", "raw.ref.device.v1", "raw.sensor.water_level.v1",
                                           "raw.hotline.service_request.v1", "raw.hotline.ticket_event.v1"}
    at = messages[-1].timestamp
    odd = [_raw("raw.sensor.noise_level.v1", 1, 10**12, at, b"{not json"),
           _raw("raw.sensor.noise_level.v1", 2, 0, at, b"[1, 2]", [("event-id", b"e")]),
           _raw("raw.ref.admin_area.v1", 0, 3, at, b'"an area"'),
           _raw("raw.hotline.ticket_event.v1", 0, 4, at, {"service_request_id": "not-seen"}),
           _raw("raw.police.incident_110.v1", 0, 5, at, {"incident_id": "x", "lat": 0.0, "long": 0.0}),
           _raw("raw.sensor.water_level.v1", 0, 6, at, {"refDevice": ["not", "a", "string"]}),
           _raw("raw.sensor.water_level.v1", 0, 7, at, b"")]
    messages[len(messages) // 2:len(messages) // 2] = odd
    for partitions in (1, 4, 12):
        now, before = Repartitioner(partitions), AreaKeys()
        for i in range(0, len(messages), 300):
            fetch = messages[i:i + 300]
            expected: dict[int, list[Routed]] = {}
            for m in fetch:
                targets, record = _route_before(before, partitions, m.topic, m.partition, m.offset,
                                                int(m.timestamp * 1000), m.headers, m.value or b"")
                for p in targets:
                    expected.setdefault(p, []).append(record)
            routed = now.route(fetch)
            assert list(routed) == list(expected)
            assert routed == expected, f"fetch at {i} of {partitions} partition(s) routed differently"
def test_a_shares_stream_time_and_sweeps_follow_its_records_not_the_wall_clock() -> None:
    """Keyed by area a takeover's warm-up must reach the watermarks and sweep at the stream times the live owner
    did: a source partition is quiet once it is ``QUIET_AFTER`` behind the newest record (not after seconds of wall
    clock), and a share sweeps when its watermark enters a new ``SWEEP_EVERY`` span, however the records are batched."""
    from datetime import timedelta
    from types import SimpleNamespace

    from citybrain.fusion.watermark import Clock
    from citybrain.streams.shares import QUIET_AFTER, SWEEP_EVERY, Share

    t0 = datetime(2026, 12, 4, 6, tzinfo=timezone.utc)
    clock = Clock({"raw.a"}, idle_s=0.0, quiet_after=QUIET_AFTER)   # idle_s=0: every partition idle by the wall
    clock.saw("raw.a", 0, t0)
    clock.saw("raw.a", 1, t0 + QUIET_AFTER / 2)
    assert clock.watermark() == t0                          # the partition behind holds time back ...
    clock.saw("raw.a", 1, t0 + QUIET_AFTER * 2)
    assert clock.watermark() == t0 + QUIET_AFTER * 2        # ... until it is QUIET_AFTER behind the newest
    swept: list[datetime] = []
    pipeline = SimpleNamespace(clock=clock, sweep=lambda now: swept.append(now) or [("t", {"at": now})])
    share = Share(pipeline)   # type: ignore[arg-type]
    assert share.sweep_due(t0 + QUIET_AFTER * 2) == [("t", {"at": t0 + QUIET_AFTER * 2})]
    for seconds in (1, 10, SWEEP_EVERY.total_seconds() - 1):   # within the span: nothing to sweep again
        at = (t0 + QUIET_AFTER * 2).replace(second=0) + timedelta(seconds=seconds)
        clock.saw("raw.a", 1, at)
        assert share.sweep_due(at) == []
    clock.saw("raw.a", 1, t0 + QUIET_AFTER * 2 + SWEEP_EVERY)
    assert share.sweep_due(t0 + QUIET_AFTER * 2 + SWEEP_EVERY)
    assert swept == [t0 + QUIET_AFTER * 2, t0 + QUIET_AFTER * 2 + SWEEP_EVERY]


def test_a_shares_watermark_kept_between_records_is_the_one_computed_afresh() -> None:
    """The watermark by stream time is kept from record to record (a share asks after each); partitions moving back
    and forth, the newest falling back, partitions leaving and joining the hour behind the newest: it stays the
    minimum over the partitions within ``quiet_after`` of the newest."""
    import random
    from datetime import timedelta

    from citybrain.fusion.watermark import Clock

    t0 = datetime(2026, 12, 4, tzinfo=timezone.utc)
    for seed in range(300):
        rnd = random.Random(seed)
        clock = Clock({"raw.a"}, quiet_after=timedelta(hours=1))
        for i in range(200):
            clock.saw("raw.a", rnd.randrange(6), t0 + timedelta(minutes=rnd.randrange(240) + i // (1 + seed % 4)))
            if rnd.random() < 0.7:
                times = [t for t, _wall in clock.latest.values()]
                assert clock.watermark() == min(t for t in times if t >= max(times) - timedelta(hours=1)), (seed, i)
