"""A city's own code schemes (``citybrain.ingest.codes``): the Los Angeles pack of test_gateway_us311, with its
city, area and device codes, imports, checks and places positions; a code breaking the declared scheme is
refused by ``city check``, the gateway and the loader, each naming the field, the pattern and the fix; the
operations view rolls areas up by their parents; a city that declares nothing keeps China's schemes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from citybrain.city.pack import pack_from_city
from citybrain.city.pack_check import check_pack
from citybrain.city.pack_export import pack_of_records
from citybrain.city.pack_import import contract_problems, reference_records
from citybrain.contracts.model import Contract
from citybrain.gateway.pipeline import RequestPipeline
from citybrain.geo import AreaIndex
from citybrain.ingest.codes import DEFAULTS, SAFE_CODE, CodeSchemes, pattern_problem
from citybrain.ingest.feeds import load_feed, read_feed
from citybrain.settings import PROJECT_ROOT, load_settings
from citybrain.sim.city import build_city
from citybrain.ui.drill import CITY, hierarchy, way_up
from tests.unit.test_gateway_server import KeepingProducer
from tests.unit.test_gateway_us311 import los_angeles, served

LA_CODES = los_angeles().manifest["codes"]


def _problems(tmp_path: Path, pack: Any) -> list[tuple[str, str, str]]:
    pack.write(tmp_path)
    _pack, problems = check_pack(tmp_path)
    for p in problems:
        assert p.fix and p.message, p
    return [(p.file, p.where, p.rule) for p in problems]


def test_a_city_declaring_nothing_keeps_todays_chinese_schemes() -> None:
    assert DEFAULTS == {"city": "^[0-9]{4,6}$", "area": "^[0-9]{6,16}$", "device": "^[a-z]{2}-[0-9]{4,8}$"}
    pack = pack_from_city(build_city(7))
    assert "codes" not in pack.manifest
    records = reference_records(pack, "2026-12-07T00:00:00Z")
    assert "codes" not in records["raw.ref.city.v1"][0][1]                    # the city record as before 1.2.0
    codes = CodeSchemes.of_city(records["raw.ref.city.v1"][0][1])
    assert codes.patterns == DEFAULTS and codes.declared == frozenset()
    for topic in ("raw.ref.city.v1", "raw.ref.admin_area.v1", "raw.ref.device.v1"):
        assert [codes.record_problems(r) for _w, r in records[topic] if codes.record_problems(r)] == []
    assert codes.record_problems({"device_id": "LASAN-AQ-017", "street_code": "LA-CD13"}) != []
    assert codes.record_problems({"refDevice": "Aotizhongxin"}) == []      # a station of another system, as before


def test_a_declared_pattern_must_be_a_regex_inside_the_platforms_codes() -> None:
    for kind, pattern in [*DEFAULTS.items(), *LA_CODES.items()]:
        assert pattern_problem(kind, pattern) is None
    assert "not a regular expression" in str(pattern_problem("area", "^LA-[0-9"))
    assert "admits codes outside" in str(pattern_problem("area", "^LA/[0-9]{2}$"))        # a slash: no file name
    assert "admits codes outside" in str(pattern_problem("device", "^[A-Z0-9-]{2,80}$"))   # longer than 64
    assert "cannot be shown" in str(pattern_problem("city", "^.+$"))
    assert "regular expression (text)" in str(pattern_problem("city", 6501))
    assert SAFE_CODE in str(pattern_problem("area", "^LA/[0-9]{2}$"))


def test_the_los_angeles_pack_with_its_own_schemes_imports_checks_and_places_positions(
        tmp_path: Path, contracts: dict[str, Contract]) -> None:
    pack = los_angeles()
    assert _problems(tmp_path, pack) == []
    assert contract_problems(pack, contracts) == []
    records = {t: [r for _w, r in items] for t, items in reference_records(pack, "2026-12-07T00:00:00Z").items()}
    city = records["raw.ref.city.v1"][0]
    assert city["city_code"] == "US-CA-LA" and city["codes"] == LA_CODES
    assert records["raw.ref.device.v1"][0]["street_code"] == "LA-CD13"      # City Hall, placed by its position
    place = AreaIndex.from_records(records["raw.ref.admin_area.v1"]).resolve(-118.2606, 34.0772)
    assert place is not None and (place.district.code, place.street.code) == ("LA-BASIN", "LA-CD13")
    exported = pack_of_records(lambda topic: records.get(topic, []))
    assert exported.manifest["codes"] == LA_CODES and exported.manifest["city"]["code"] == "US-CA-LA"


def test_codes_breaking_the_declared_schemes_are_refused_at_check_naming_file_record_field_and_pattern(
        tmp_path: Path) -> None:
    pack = los_angeles()
    pack.manifest["city"]["code"] = "US-CA-L"
    street = next(f for f in pack.areas if f["properties"]["code"] == "LA-CD03")
    street["properties"]["code"] = "LA_CD03"
    pack.devices[0]["device_id"] = "aq-0017"
    found = _problems(tmp_path, pack)
    assert sorted(found) == [("areas.geojson", "feature 2 (LA_CD03)", "code-scheme"),
                             ("devices.csv", "line 2", "code-scheme"), ("manifest.json", "", "code-scheme")]
    _pack, problems = check_pack(tmp_path)
    device = next(p for p in problems if p.file == "devices.csv")
    assert "device_id 'aq-0017'" in device.message and LA_CODES["device"] in device.message
    assert "codes.device" in device.fix


def test_a_scheme_the_platform_cannot_carry_is_refused_at_check(tmp_path: Path) -> None:
    pack = los_angeles()
    pack.manifest["codes"] = {"city": "^US/[A-Z]+$", "area": "^LA-[0-9", "device": "^.*$"}
    found = _problems(tmp_path, pack)
    assert sorted(found) == [("manifest.json", "", "code-pattern")] * 3      # the records are not judged by them


def test_the_gateway_refuses_a_reading_of_a_device_outside_the_citys_scheme(contracts: dict[str, Contract]) -> None:
    pipeline = RequestPipeline(load_settings({}), contracts)
    pipeline.producer = KeepingProducer()  # type: ignore[assignment]
    city, _catalogue, index = served(los_angeles())
    pipeline.book._city, pipeline.book.index = city, index
    reading = dict(contracts["raw.sensor.air_quality.v1"].raw["examples"][0])
    outcomes = {}
    for device in ("LASAN-AQ-017", "urn:ngsi-ld:Device:LASAN-AQ-017", "aq-0001"):
        result, item, _dead = pipeline.check_entity({**reading, "refDevice": device}, 0, "unit", "partner")
        outcomes[device] = result["status"]
        if result["status"] == "rejected":
            assert item is not None and item[1].rejection is not None            # dead-lettered with its problem
            [error] = result["errors"]
            assert (error["field"], error["rule"]) == ("refDevice", "code-scheme")
            assert LA_CODES["device"] in error["description"] and "codes" in error["fix"]
    assert outcomes == {"LASAN-AQ-017": "accepted", "urn:ngsi-ld:Device:LASAN-AQ-017": "accepted",
                        "aq-0001": "rejected"}


def test_the_loader_refuses_device_ids_and_area_codes_outside_the_citys_scheme(
        tmp_path: Path, contracts: dict[str, Contract]) -> None:
    feed = load_feed(PROJECT_ROOT / "infra" / "feeds" / "device_registry.yaml", contracts)
    row = {"device_id": "LASAN-AQ-017", "kind": "AQ", "owner": "urban_management", "lat": 34.0522, "lon": -118.2437,
           "street_code": "LA-CD13", "state": "在用", "updated": "2026-12-07 08:00:00"}
    export = tmp_path / "devices.jsonl"
    export.write_text("\n".join(json.dumps({**row, **change}) for change in (
        {}, {"device_id": "aq-0017"}, {"street_code": "440106001"}, {"device_id": "la-1", "street_code": "CD13"})))
    la = CodeSchemes.of_city(los_angeles().manifest)
    records = list(read_feed(feed, export, "utf-8", 1 << 20, codes=la))
    assert [[(p.field, p.rule) for p in r.problems] for r in records] == [
        [], [("device_id", "code-scheme")], [("street_code", "code-scheme")],
        [("street_code", "code-scheme"), ("device_id", "code-scheme")]]
    assert LA_CODES["area"] in records[2].problems[0].message and "Fix:" in records[2].problems[0].message
    chinese = list(read_feed(feed, export, "utf-8", 1 << 20, codes=CodeSchemes.of_city({})))
    assert [(p.field, p.rule) for p in chinese[0].problems] == [("street_code", "code-scheme"),
                                                                  ("device_id", "code-scheme")]
    assert "default pattern '^[a-z]{2}-[0-9]{4,8}$'" in chinese[0].problems[1].message
    unknown_city = list(read_feed(feed, export, "utf-8", 1 << 20))             # no city known: the contract alone
    assert [r.problems for r in unknown_city] == [(), (), (), ()]


def test_the_operations_view_rolls_areas_up_by_their_parents_not_their_digits() -> None:
    """The drill-down's way up from an area (citybrain/ui/drill.py): by parent links, whatever the codes spell; a
    district's parent_code, the city's own code as `city import` writes it, is the city."""
    records = reference_records(los_angeles(), "2026-12-07T00:00:00Z")["raw.ref.admin_area.v1"]
    found: dict[str, dict[str, Any]] = {r["area_code"]: r for _w, r in records}
    found["LA-NC-ECHO"] = {"area_code": "LA-NC-ECHO", "level": "community", "parent_code": "LA-CD13"}
    grids = {"LA-G-7": {"grid_code": "LA-G-7", "community_code": "LA-NC-ECHO"}}
    areas = hierarchy(found, grids)
    assert way_up("LA-G-7", areas) == ["LA-G-7", "LA-NC-ECHO", "LA-CD13", "LA-BASIN", CITY]
    assert way_up("LA-CD03", areas) == ["LA-CD03", "LA-SFV", CITY]
    assert sorted(c for c, a in areas.items() if a["parent"] == CITY) == ["LA-BASIN", "LA-SFV"]
    chinese = hierarchy({"990101": {"level": "district", "parent_code": "990100"},
                         "990101001": {"level": "street", "parent_code": "990101"},
                         "990102001001": {"level": "community", "parent_code": "990101001"},
                         "990102": {"level": "district", "parent_code": "990100"}}, {})
    assert way_up("990102001001", chinese) == ["990102001001", "990101001", "990101", CITY]   # not under 990102


def test_the_loader_takes_the_schemes_the_city_last_imported_declared(tmp_path: Path) -> None:
    from citybrain.city.pack_import import imported_codes

    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    assert imported_codes(settings) is None                              # no city imported: the contracts alone
    settings.city_dir.mkdir(parents=True, exist_ok=True)
    record = {"version": "1", "city": {"code": "6501", "name": "临江市"}, "jurisdiction_id": "linjiang.gov.cn"}
    (settings.city_dir / "imported.json").write_text(json.dumps(record), encoding="utf-8")
    chinese = imported_codes(settings)                                   # recorded before they were kept
    assert chinese is not None and chinese.patterns == DEFAULTS and chinese.declared == frozenset()
    record.update(city={"code": "US-CA-LA", "name": "Los Angeles"}, codes={"device": LA_CODES["device"]})
    (settings.city_dir / "imported.json").write_text(json.dumps(record), encoding="utf-8")
    la = imported_codes(settings)
    assert la is not None and la.declared == {"device"} and la.patterns["device"] == LA_CODES["device"]
    assert la.patterns["area"] == DEFAULTS["area"]
