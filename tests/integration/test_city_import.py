"""A city pack imported onto the real broker's reference topics: what changed is published, only
that; a broken pack is refused whole with nothing produced; the version is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citybrain.sim.city import build_city
from citybrain.city.pack import Pack, pack_from_city
from citybrain.city.pack_import import AREAS, CITY, DEVICES, RULES, TARGETS, PackError, import_pack, imported
from citybrain.kafka.topics import end_offsets, read_values

pytestmark = pytest.mark.integration

PROBE_SERVICE = {"service_code": "probe.import", "name": "导入探针", "group": "test", "category": "import_probe",
                 "department": "data_bureau", "sla_hours": 24, "priority": "normal"}
PROBE_RULE = {"rule_id": "probe.import", "category": "import_probe", "service_code": "probe.import",
              "department": "data_bureau", "sla_hours": 24, "priority": "normal"}


def _pack(tmp_path: Path, sla_hours: float = 24) -> tuple[Pack, Path]:
    """The simulated city's pack plus a probe service and rule of its own (no other test routes by it)."""
    pack = pack_from_city(build_city(7), version=f"test-{sla_hours:g}", grids=False)
    pack.services.append(PROBE_SERVICE)
    pack.routing.append({**PROBE_RULE, "sla_hours": sla_hours})
    directory = tmp_path / f"pack-{sla_hours:g}"
    pack.write(directory)
    return pack, directory


def test_an_import_publishes_what_changed_and_only_that(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pack, directory = _pack(tmp_path)
    first = import_pack(settings, contracts, directory)
    assert first.unchanged[AREAS] + first.published[AREAS] == sum(1 for f in pack.areas if f["properties"]["level"] != "grid")
    areas = {v["area_code"]: v for v in read_values(settings, AREAS)}
    assert sum(1 for v in areas.values() if v["level"] == "community") == 432      # the third level is on the topic
    again = import_pack(settings, contracts, directory)
    assert sum(again.published.values()) == 0 and again.unchanged == {t: first.published[t] + first.unchanged[t]
                                                                        for t in first.published}
    before = end_offsets(settings, TARGETS)
    _changed, directory2 = _pack(tmp_path, sla_hours=6)
    third = import_pack(settings, contracts, directory2)
    after = end_offsets(settings, TARGETS)
    # one rule changed: one record, and the city record carries the pack's new version
    assert third.published == {t: (1 if t in (RULES, CITY) else 0) for t in TARGETS}
    assert sum(after.values()) - sum(before.values()) == 2
    rule = [v for v in read_values(settings, RULES) if v["rule_id"] == "probe.import"][-1]
    assert rule["sla_hours"] == 6
    recorded = imported(settings)
    assert recorded is not None and recorded["version"] == "test-6" and recorded["published"][RULES] == 1


def test_a_broken_pack_is_refused_whole_and_nothing_is_produced(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pack, directory = _pack(tmp_path, sla_hours=3)
    pack.devices[0].update(lat=39.9, long=116.4)                 # outside the city
    pack.routing[-1]["department"] = "no_such_department"
    pack.write(directory)
    before = end_offsets(settings, TARGETS)
    with pytest.raises(PackError) as refused:
        import_pack(settings, contracts, directory)
    assert {p.rule for p in refused.value.problems} == {"outside-city", "unknown-department"}
    assert end_offsets(settings, TARGETS) == before
    assert [v for v in read_values(settings, DEVICES) if v["device_id"] == pack.devices[0]["device_id"]][-1]["lat"] != 39.9


def test_the_cli_imports_and_names_every_problem(broker, settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.conftest import cli

    _pack_, directory = _pack(tmp_path, sla_hours=12)
    ok = cli("city", "import", str(directory), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["published"][RULES] >= 1
    (directory / "services.jsonl").write_text((directory / "services.jsonl").read_text(encoding="utf-8")
                                              .replace('"sla_hours": 24, ', "", 1), encoding="utf-8")
    bad = cli("city", "import", str(directory))
    assert bad.returncode == 2 and "sla_hours" in bad.stdout and "nothing imported" in bad.stdout


def test_a_pack_that_leaves_out_a_service_open_tickets_ask_for_is_refused_unless_forced(broker, settings, contracts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Removal: refused with the tickets named while they are open; --force (or closing them) withdraws the
    service, which stays on its topic as withdrawn."""
    from citybrain.city.pack_import import SERVICES
    from citybrain.ingest.producer import ValidatedProducer
    from citybrain.devtools.samples import sample_records

    hotline = contracts["raw.hotline.service_request.v1"]
    _pack_, with_probe = _pack(tmp_path, sla_hours=24)
    import_pack(settings, contracts, with_probe)
    ticket = {**sample_records(hotline, 1)[0], "service_request_id": "HL20261202990001", "service_code": "probe.import",
              "status": "open", "category": "import_probe"}
    with ValidatedProducer(settings, producer_id="test-city-import") as producer:
        assert producer.produce_values(hotline, [ticket]).accepted == 1
    without = tmp_path / "without-probe"
    pack_from_city(build_city(7), version="test-without-probe", grids=False).write(without)
    before = end_offsets(settings, TARGETS)
    try:
        with pytest.raises(PackError) as refused:
            import_pack(settings, contracts, without)
        assert [(p.where, p.rule) for p in refused.value.problems] == [("probe.import", "removed-but-referenced")]
        assert "HL20261202990001" in refused.value.problems[0].message
        assert end_offsets(settings, TARGETS) == before                           # nothing half-imported
        forced = import_pack(settings, contracts, without, force=True)
        assert forced.withdrawn[SERVICES] == 1 and forced.withdrawn[RULES] == 1
        probe = [v for v in read_values(settings, SERVICES) if v["service_code"] == "probe.import"][-1]
        assert probe["status"] == "withdrawn"
        again = import_pack(settings, contracts, with_probe)                      # back in the pack: active again
        assert again.published[SERVICES] == 1 and "status" not in \
            [v for v in read_values(settings, SERVICES) if v["service_code"] == "probe.import"][-1]
    finally:   # close the probe ticket, so later imports without the probe service are not refused
        with ValidatedProducer(settings, producer_id="test-city-import") as producer:
            producer.produce_values(hotline, [{**ticket, "status": "closed", "lifecycle_state": "closed"}])
