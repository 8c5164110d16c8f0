"""A US city through the Open311 gateway: its pack's postal codes and language, and requests forwarded from
another 311 system (the MyLA311 export of tests/data/us311) keeping their own number and time."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp.test_utils import TestClient, TestServer

from citybrain.city.pack import Pack
from citybrain.city.pack_import import contract_problems, reference_records
from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.gateway.open311 import Catalogue, public_view, request_record, services
from citybrain.gateway.pipeline import RequestPipeline
from citybrain.gateway.server import build_app
from citybrain.geo import AreaIndex
from citybrain.ingest.feeds import load_feed
from citybrain.settings import PROJECT_ROOT, load_settings

DATA = PROJECT_ROOT / "tests" / "data" / "us311"
ZONE = ZoneInfo("America/Los_Angeles")
TYPES = {"la.bulky_items": ("Bulky Items", "bulky_items", "urban_management", 72),
         "la.graffiti_removal": ("Graffiti Removal", "graffiti", "urban_management", 72),
         "la.illegal_dumping": ("Illegal Dumping Pickup", "garbage", "urban_management", 72),
         "la.metal_appliances": ("Metal/Household Appliances", "bulky_items", "urban_management", 72),
         "la.electronic_waste": ("Electronic Waste", "bulky_items", "urban_management", 72),
         "la.dead_animal": ("Dead Animal Removal", "sanitation", "urban_management", 24),
         "la.homeless_encampment": ("Homeless Encampment", "public_safety", "police", 72),
         "la.streetlight_single": ("Single Streetlight Issue", "streetlight", "transport", 120),
         "la.feedback": ("Feedback", "feedback", "urban_management", 240)}


def _rect(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def los_angeles() -> Pack:
    """A small pack of a US city with its own code schemes: two districts (the San Fernando Valley and the basin)
    of two council districts each (about 260,000 people each), one sanitation sensor, English first."""
    districts = {"LA-SFV": ("San Fernando Valley", 34.12, 34.34, ("LA-CD03", "LA-CD06")),
                 "LA-BASIN": ("Los Angeles Basin", 33.70, 34.12, ("LA-CD11", "LA-CD13"))}
    areas = []
    for code, (name, south, north, streets) in districts.items():
        areas.append({"type": "Feature", "geometry": _rect(-118.70, south, -118.15, north),
                      "properties": {"code": code, "name": name, "level": "district", "parent": None,
                                     "population": 520_000}})
        for street, (west, east) in zip(streets, ((-118.70, -118.425), (-118.425, -118.15))):
            areas.append({"type": "Feature", "geometry": _rect(west, south, east, north),
                          "properties": {"code": street, "name": f"Council District {int(street[-2:])}",
                                         "level": "street", "parent": code, "population": 260_000}})
    departments = [{"department_id": "urban_management", "name": "LA Sanitation and Environment",
                    "name_en": "LA Sanitation and Environment", "remit": ["garbage"]},
                   {"department_id": "transport", "name": "Bureau of Street Lighting",
                    "name_en": "Bureau of Street Lighting", "remit": ["streetlight"]},
                   {"department_id": "police", "name": "Los Angeles Police Department",
                    "name_en": "Los Angeles Police Department", "remit": ["public_safety"]}]
    services = [{"service_code": code, "name": name, "group": "city_services", "category": category,
                 "department": dept, "sla_hours": hours, "priority": "normal"}
                for code, (name, category, dept, hours) in TYPES.items()]
    routing = [{"rule_id": s["service_code"], "category": s["category"], "service_code": s["service_code"],
                "department": s["department"], "sla_hours": s["sla_hours"], "priority": "normal"} for s in services]
    devices = [{"device_id": "LASAN-AQ-017", "device_type": "air_quality", "owner_department": "urban_management",
                "lat": 34.0522, "long": -118.2437}]                     # City Hall, Council District 13 (east basin)
    manifest = {"format": "citybrain.citypack/1", "version": "2026.1.0",
                "city": {"code": "US-CA-LA", "name": "Los Angeles", "name_en": "Los Angeles"},
                "jurisdiction_id": "lacity.org", "timezone": "America/Los_Angeles",
                "postal_code_pattern": "^[0-9]{5}(-[0-9]{4})?$", "languages": ["en", "es"],
                "codes": {"city": "^US-[A-Z]{2}-[A-Z]{2,4}$", "area": "^LA-[A-Z0-9]{2,8}$",
                          "device": "^LASAN-[A-Z]{2}-[0-9]{3}$"}}
    return Pack(manifest, areas, departments, services, routing, devices)


def served(pack: Pack) -> tuple[dict[str, Any], Catalogue, AreaIndex]:
    """The city record, the gateway's catalogue and areas as the imported pack's reference records give them."""
    records = {topic: [r for _w, r in items] for topic, items in reference_records(pack, "2026-01-02T00:00:00Z").items()}
    city = records["raw.ref.city.v1"][0]
    catalogue = Catalogue.of_city(city, {s["service_code"]: s for s in records["raw.ref.service.v1"]},
                                  {d["department_id"]: d for d in records["raw.ref.department.v1"]})
    return city, catalogue, AreaIndex.from_records(records["raw.ref.admin_area.v1"])


def forwarded(contracts: dict[str, Contract]) -> list[dict[str, str]]:
    """The MyLA311 export's rows as MyLA311 would forward them: GeoReport v2 POST parameters with its own
    number and time (an offset of Los Angeles)."""
    codes = load_feed(DATA / "myla311.yaml", contracts).columns["RequestType"].map or {}
    with open(DATA / "myla311_service_requests_excerpt.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        created = datetime.strptime(row["CreatedDate"], "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=ZONE)
        params = {"service_code": codes[row["RequestType"]], "address_string": row["Address"],
                  "description": f"{row['RequestType']} reported to MyLA311", "service_request_id": row["SRNumber"],
                  "requested_datetime": created.isoformat(), "source_system": "MyLA311"}
        params.update({k: row[c] for k, c in (("lat", "Latitude"), ("long", "Longitude"), ("zipcode", "ZipCode"))
                       if row[c]})
        out.append(params)
    return out


def test_the_pack_declares_its_postal_codes_and_languages_onto_the_city_record(contracts: dict[str, Contract]) -> None:
    city, catalogue, _ = served(los_angeles())
    assert contract_problems(los_angeles(), contracts) == []
    assert city["postal_code_pattern"] == "^[0-9]{5}(-[0-9]{4})?$" and city["languages"] == ["en", "es"]
    assert catalogue.postal_codes.pattern == city["postal_code_pattern"] and catalogue.english


def test_a_forwarded_311_export_maps_with_us_zips_its_own_number_and_time(contracts: dict[str, Contract]) -> None:
    _city, catalogue, index = served(los_angeles())
    check = RecordValidator(contracts["raw.hotline.service_request.v1"])
    params = forwarded(contracts)
    results = [request_record(p, "myla311", catalogue, index) for p in params]
    records = [r for r, errors in results if r is not None and not errors and check(r) is None]
    assert len(params) == len(results) == len(records) == 12
    first = records[0]
    assert first["service_request_id"].startswith("GW") and first["source_request_id"] == "1-3449383281"
    assert first["source_system"] == "MyLA311" and first["zipcode"] == "90026"
    assert first["source_requested_datetime"] == "2024-01-01T16:07:31Z"        # 08:07:31 -08:00, in UTC
    assert first["requested_datetime"] > "2026"                                 # the platform's own receive time
    view = public_view({**first, "dispatch_department": "transport"}, index, catalogue)
    assert view["source_request_id"] == "1-3449383281" and view["agency_responsible"] == "Bureau of Street Lighting"
    assert view["address"].endswith("Council District 13")             # Sunset Blvd, coarsened to its street


def test_a_zip_breaking_the_citys_pattern_is_refused_naming_the_field_and_the_fix(contracts: dict[str, Contract]) -> None:
    _city, catalogue, index = served(los_angeles())
    params = forwarded(contracts)
    outcomes = {"accepted": 0, "refused": 0}
    for p, zipcode in zip(params, ["9OO26", "K1A 0B1", "90013-4021"] + [None] * 9):
        _record, errors = request_record({**p, "zipcode": zipcode} if zipcode else p, "myla311", catalogue, index)
        outcomes["refused" if errors else "accepted"] += 1
        if errors:
            assert [(e.field, e.rule, e.code) for e in errors] == [("zipcode", "postal-code", 400)]
            shown = errors[0].as_dict()
            assert "'^[0-9]{5}(-[0-9]{4})?$'" in shown["description"] and "Fix:" in shown["description"]
            assert "postal_code_pattern" in shown["fix"]
    assert outcomes == {"accepted": 10, "refused": 2}
    _record, errors = request_record({**params[0], "requested_datetime": "yesterday"}, "p", catalogue, index)
    assert [(e.field, e.rule) for e in errors] == [("requested_datetime", "format")]


def test_a_forwarded_time_without_an_offset_is_refused_not_read_as_utc(contracts: dict[str, Contract]) -> None:
    """MyLA311's 08:07:31 sent without its -08:00 would land eight hours early as UTC: it is refused instead."""
    _city, catalogue, index = served(los_angeles())
    first = forwarded(contracts)[0]
    local = first["requested_datetime"].removesuffix("-08:00")
    assert local == "2024-01-01T08:07:31"
    record, errors = request_record({**first, "requested_datetime": local}, "myla311", catalogue, index)
    assert record is None and [(e.code, e.field, e.rule) for e in errors] == [(400, "requested_datetime", "format")]
    description = errors[0].as_dict()["description"]
    assert local in description and "with its offset" in description and "in UTC" in description
    for sent in ("2024-01-01T16:07:31Z", first["requested_datetime"]):   # in UTC, or with its offset: taken
        record, errors = request_record({**first, "requested_datetime": sent}, "myla311", catalogue, index)
        assert errors == [] and record is not None and record["source_requested_datetime"] == "2024-01-01T16:07:31Z"


def test_a_city_without_a_declared_language_or_pattern_keeps_chinese_and_six_digits() -> None:
    pack = los_angeles()
    del pack.manifest["postal_code_pattern"], pack.manifest["languages"]
    city, catalogue, index = served(pack)
    assert "postal_code_pattern" not in city and "languages" not in city        # the record as before 1.1.0
    assert not catalogue.english and services(catalogue)[0]["description"].endswith("小时内办理。")
    _record, errors = request_record({"service_code": "la.feedback", "address_string": "200 N SPRING ST",
                                      "zipcode": "90012"}, "p", catalogue, index)
    assert [(e.field, e.rule) for e in errors] == [("zipcode", "postal-code")]


def test_a_service_counted_in_working_hours_says_so_in_english_and_chinese(contracts: dict[str, Contract]) -> None:
    """services.json tells callers a working-clock service's hours are working hours; the others stay as they were."""
    pack = los_angeles()
    pack.manifest["working_hours"] = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "17:00"}
    bulky = next(s for s in pack.services if s["service_code"] == "la.bulky_items")
    bulky["sla_clock"] = "working"
    assert contract_problems(pack, contracts) == []
    _city, catalogue, _index = served(pack)
    listed = {s["service_code"]: s["description"] for s in services(catalogue)}
    assert listed["la.bulky_items"] == "Bulky Items. Handled by LA Sanitation and Environment within 72 working hours."
    assert listed["la.feedback"].endswith(" h.") and "working" not in listed["la.feedback"]
    pack.manifest["languages"] = ["zh"]
    _city, catalogue, _index = served(pack)
    listed = {s["service_code"]: s["description"] for s in services(catalogue)}
    assert listed["la.bulky_items"] == "Bulky Items。由LA Sanitation and Environment在 72 个工作小时内办理。"
    assert listed["la.feedback"].endswith(" 小时内办理。") and "工作" not in listed["la.feedback"]


def test_the_open311_routes_answer_in_english_and_a_retry_keeps_the_first_ticket(contracts: dict[str, Contract]) -> None:
    from tests.unit.test_gateway_server import KeepingProducer

    settings = load_settings({"CITYBRAIN_GATEWAY_API_KEYS": "myla311:unit-partner-key-0311"})
    pipeline = RequestPipeline(settings, contracts)
    producer = KeepingProducer()
    pipeline.producer = producer  # type: ignore[assignment]
    city, catalogue, index = served(los_angeles())
    book = pipeline.book
    book._city, book.index = city, index                            # what the book's reader keeps of the topics
    book._reference["raw.ref.service.v1"].update(catalogue.services)
    book._reference["raw.ref.department.v1"].update(catalogue.departments)
    request = forwarded(contracts)[0]
    headers = {"X-Api-Key": "unit-partner-key-0311", "Idempotency-Key": "myla311-1-3449383281",
               "Content-Type": "application/json"}

    async def go() -> list[tuple[int, Any]]:
        app = build_app(pipeline)
        app.on_startup.remove(pipeline.start)
        app.on_cleanup.remove(pipeline.stop)
        answers = []
        async with TestClient(TestServer(app)) as client:
            for path, body in (("/open311/v2/requests.json", request), ("/open311/v2/requests.json", request),
                               ("/open311/v2/services.json", None)):
                method = client.post if body is not None else client.get
                resp = await method(path, data=json.dumps(body).encode() if body else None, headers=headers)
                answers.append((resp.status, await resp.json()))
        return answers

    (first_status, first), (again_status, again), (_s, listed) = asyncio.run(go())
    assert (first_status, again_status) == (201, 201) and again == first
    rid = first[0]["service_request_id"]
    assert first[0]["service_notice"] == f"Received as ticket {rid}; status at GET /open311/v2/requests/{{id}}.json"
    requests = [r.value for topic, r in producer.produced if topic == "raw.hotline.service_request.v1"]
    assert len(requests) == 1 and requests[0]["source_request_id"] == "1-3449383281"
    assert requests[0]["source_requested_datetime"] == "2024-01-01T16:07:31Z"
    bulky = next(s for s in listed if s["service_code"] == "la.bulky_items")
    assert bulky["description"] == "Bulky Items. Handled by LA Sanitation and Environment within 72 h."
