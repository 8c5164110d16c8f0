"""Open311 and FIWARE at the edge: parameters to contract records, and errors that name each field."""

from __future__ import annotations

from citybrain.city.build import build_city
from citybrain.city.catalogue import SERVICES
from citybrain.contracts.validate import RecordValidator
from citybrain.gateway.fiware import batch_entities, contract_for
from citybrain.gateway.open311 import public_view, request_record, services

CITY = build_city(7)
GOOD = {"service_code": "water.leak", "lat": "38.70", "long": "117.45", "description": "路面冒水",
        "first_name": "伟", "last_name": "王", "phone": "13800001111", "email": "w@example.cn"}


def test_services_list_the_whole_catalogue_in_georeport_shape() -> None:
    listed = services("yunzhou.gov.cn")
    assert [s["service_code"] for s in listed] == [s.service_code for s in SERVICES]
    assert set(listed[0]) >= {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"}


def test_a_good_request_maps_to_a_valid_contract_record(contracts) -> None:  # type: ignore[no-untyped-def]
    record, errors = request_record(GOOD, "district-app", "yunzhou.gov.cn", CITY.index)
    assert errors == [] and record is not None
    assert RecordValidator(contracts["raw.hotline.service_request.v1"])(record) is None
    assert record["caller_name"] == "王 伟" and record["caller_email"] == "w@example.cn"
    assert record["category"] == "water_leak" and record["lifecycle_state"] == "received"
    street = CITY.index.resolve(117.45, 38.70)
    assert record["address"] == street[0].name + street[1].name  # type: ignore[index]


def test_every_problem_is_named_at_once() -> None:
    record, errors = request_record({"service_code": "nope", "lat": "abc", "long": "117", "colour": "red",
                                     "attribute[x]": "1"}, "p", "yunzhou.gov.cn", CITY.index)
    assert record is None
    named = {(e.field, e.rule) for e in errors}
    assert {("colour", "unknown-field"), ("attribute[x]", "unknown-field"), ("service_code", "enum"),
            ("lat", "type")} <= named
    assert all(e.code == 400 for e in errors)


def test_location_rules_of_georeport_and_the_jurisdiction() -> None:
    _, errors = request_record({"service_code": "water.leak", "description": "x"}, "p", "yunzhou.gov.cn", CITY.index)
    assert [(e.field, e.rule) for e in errors] == [("lat", "required")]
    _, errors = request_record({**GOOD, "lat": "31.2", "long": "121.5"}, "p", "yunzhou.gov.cn", CITY.index)
    assert [(e.field, e.rule) for e in errors] == [("lat", "outside-jurisdiction")]
    _, errors = request_record({**GOOD, "lat": "95"}, "p", "yunzhou.gov.cn", CITY.index)
    assert [(e.field, e.rule) for e in errors] == [("lat", "maximum")]
    _, errors = request_record({**GOOD, "jurisdiction_id": "other.city"}, "p", "yunzhou.gov.cn", CITY.index)
    assert errors[0].code == 404


def test_public_view_shows_no_personal_data_and_only_a_street_level_address() -> None:
    record, _ = request_record({**GOOD, "address_string": "锦绣街道某小区3号楼2单元501"}, "p", "yunzhou.gov.cn", CITY.index)
    view = public_view(record or {}, CITY.index)
    for personal in ("caller_name", "caller_phone", "caller_email", "description", "account_id"):
        assert personal not in view
    assert "单元" not in view["address"] and view["address"].endswith("街道")


def test_fiware_entities_route_by_type_and_normalized_form_is_refused() -> None:
    assert contract_for({"type": "FloodMonitoring"}) == ("raw.sensor.water_level", [])
    _, errors = contract_for({"type": "WeatherObserved"})
    assert errors[0].field == "type" and errors[0].code == 422
    _, errors = contract_for({"type": "AirQualityObserved", "pm25": {"type": "Number", "value": 3}})
    assert errors[0].field == "pm25" and "keyValues" in errors[0].description
    _, errors = contract_for(["not", "an", "entity"])
    assert errors[0].rule == "not-an-object"


def test_batch_body_errors_refuse_the_whole_batch() -> None:
    assert batch_entities({"actionType": "append", "entities": [{}]}, 10)[0] == [{}]
    assert batch_entities({"actionType": "delete", "entities": [{}]}, 10)[1].field == "actionType"  # type: ignore[union-attr]
    assert batch_entities({"actionType": "append", "entities": []}, 10)[1].field == "entities"  # type: ignore[union-attr]
    too_many = batch_entities({"actionType": "append", "entities": [{}] * 11}, 10)[1]
    assert too_many is not None and too_many.code == 413
