"""Fusion keyed by area (``citybrain.streams.shares``): raw records routed to their district's partition of the
by-area topic, reference data to every partition, the city's districts spread evenly, and a worker's shares
created when gained and dropped when lost."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone

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
