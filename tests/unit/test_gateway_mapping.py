"""Open311 and FIWARE at the edge: parameters to contract records, and errors that name each field."""

from __future__ import annotations

from citybrain.sim.city import build_city
from citybrain.city.catalogue import SERVICES
from citybrain.city.model import City
from citybrain.sim.reference import reference_records
from citybrain.contracts.validate import RecordValidator
from citybrain.gateway.fiware import batch_entities, contract_for
from citybrain.gateway.open311 import Catalogue, public_view, request_record, services

CITY = build_city(7)


def catalogue_of(city: City) -> Catalogue:
    """The gateway's catalogue as the city's reference records give it (what the request book reads)."""
    ref = reference_records(city, "2026-11-23T00:00:00Z")
    return Catalogue(ref["raw.ref.city"][0]["jurisdiction_id"], {s["service_code"]: s for s in ref["raw.ref.service"]},
                     {d["department_id"]: d for d in ref["raw.ref.department"]})


YUNZHOU = catalogue_of(CITY)
GOOD = {"service_code": "water.leak", "lat": "38.70", "long": "117.45", "description": "路面冒水",
        "first_name": "伟", "last_name": "王", "phone": "13800001111", "email": "w@example.cn"}


def test_services_list_the_whole_catalogue_in_georeport_shape() -> None:
    listed = services(YUNZHOU)
    assert [s["service_code"] for s in listed] == sorted(s.service_code for s in SERVICES)
    assert {s["jurisdiction_id"] for s in listed} == {"yunzhou.gov.cn"}
    assert set(listed[0]) >= {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"}


def test_a_good_request_maps_to_a_valid_contract_record(contracts) -> None:  # type: ignore[no-untyped-def]
    record, errors = request_record(GOOD, "district-app", YUNZHOU, CITY.index)
    assert errors == [] and record is not None
    assert RecordValidator(contracts["raw.hotline.service_request.v1"])(record) is None
    assert record["caller_name"] == "王 伟" and record["caller_email"] == "w@example.cn"
    assert record["category"] == "water_leak" and record["lifecycle_state"] == "received"
    street = CITY.index.resolve(117.45, 38.70)
    assert record["address"] == street[0].name + street[1].name  # type: ignore[index]


def test_every_problem_is_named_at_once() -> None:
    record, errors = request_record({"service_code": "nope", "lat": "abc", "long": "117", "colour": "red",
                                     "attribute[x]": "1"}, "p", YUNZHOU, CITY.index)
    assert record is None
    named = {(e.field, e.rule) for e in errors}
    assert {("colour", "unknown-field"), ("attribute[x]", "unknown-field"), ("service_code", "enum"),
            ("lat", "type")} <= named
    assert all(e.code == 400 for e in errors)


def test_location_rules_of_georeport_and_the_jurisdiction() -> None:
    _, errors = request_record({"service_code": "water.leak", "description": "x"}, "p", YUNZHOU, CITY.index)
    assert [(e.field, e.rule) for e in errors] == [("lat", "required")]
    _, errors = request_record({**GOOD, "lat": "31.2", "long": "121.5"}, "p", YUNZHOU, CITY.index)
    assert [(e.field, e.rule) for e in errors] == [("lat", "outside-jurisdiction")]
    _, errors = request_record({**GOOD, "lat": "95"}, "p", YUNZHOU, CITY.index)
    assert [(e.field, e.rule) for e in errors] == [("lat", "maximum")]
    _, errors = request_record({**GOOD, "jurisdiction_id": "other.city"}, "p", YUNZHOU, CITY.index)
    assert errors[0].code == 404


def test_public_view_shows_no_personal_data_and_only_a_street_level_address() -> None:
    record, _ = request_record({**GOOD, "address_string": "锦绣街道某小区3号楼2单元501"}, "p", YUNZHOU, CITY.index)
    view = public_view(record or {}, CITY.index, YUNZHOU)
    for personal in ("caller_name", "caller_phone", "caller_email", "description", "account_id"):
        assert personal not in view
    assert "单元" not in view["address"] and view["address"].endswith("街道")


def test_a_normalized_ngsi_v2_entity_is_taken_in_its_keyvalues_form(contracts) -> None:  # type: ignore[no-untyped-def]
    """NGSI v2's default representation, as IoT agents send it: each attribute {type, value, metadata}."""
    from citybrain.gateway.fiware import to_key_values

    normalized = {"id": "urn:ngsi-ld:FloodMonitoring:wl-0001:2026-11-23T08:00:00Z", "type": "FloodMonitoring",
                  "dateObserved": {"type": "DateTime", "value": "2026-11-23T08:00:00Z"},
                  "location": {"type": "geo:json", "value": {"type": "Point", "coordinates": [117.45, 38.70]}},
                  "refDevice": {"type": "Relationship", "value": "wl-0001"},
                  "currentLevel": {"type": "Number", "value": 0.12, "metadata": {"unitCode": {"type": "Text", "value": "MTR"}}}}
    entity, errors = to_key_values(normalized)
    assert errors == [] and entity == {"id": normalized["id"], "type": "FloodMonitoring", "dateObserved": "2026-11-23T08:00:00Z",
                                       "location": {"type": "Point", "coordinates": [117.45, 38.70]}, "refDevice": "wl-0001",
                                       "currentLevel": 0.12}
    assert contract_for(entity) == ("raw.sensor.water_level", [])
    assert RecordValidator(contracts["raw.sensor.water_level.v1"])(entity) is None
    point, _ = to_key_values({**normalized, "location": {"type": "geo:point", "value": "38.70, 117.45"}})
    assert point is not None and point["location"] == {"type": "Point", "coordinates": [117.45, 38.70]}
    _, errors = to_key_values({**normalized, "currentLevel": 0.12, "refDevice": {"type": "Relationship", "valu": "wl-1"}})
    assert [(e.field, e.rule) for e in errors] == [("refDevice", "normalized-form"), ("currentLevel", "normalized-form")]
    assert "options=keyValues" in errors[0].as_dict()["fix"]


def test_fiware_entities_route_by_type_and_normalized_attributes_sent_as_keyvalues_are_refused() -> None:
    assert contract_for({"type": "FloodMonitoring"}) == ("raw.sensor.water_level", [])
    assert contract_for({"type": "WeatherObserved"}) == ("raw.sensor.weather", [])
    _, errors = contract_for({"type": "WaterQualityObserved"})
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


def test_another_citys_pack_is_served_with_its_own_jurisdiction_services_and_areas(contracts) -> None:  # type: ignore[no-untyped-def]
    """Issue 13's symptom: a request of another city was refused as outside yunzhou.gov.cn."""
    from citybrain.sim.from_pack import read_city
    from citybrain.settings import PROJECT_ROOT

    linjiang = read_city(PROJECT_ROOT / "examples" / "citypacks" / "linjiang")
    catalogue = catalogue_of(linjiang)
    assert catalogue.jurisdiction_id == "linjiang.gov.cn"
    assert {s["service_code"] for s in services(catalogue)} == {s.service_code for s in linjiang.services}
    request = {"service_code": "lj.street.flooding", "lat": "43.78", "long": "87.55", "jurisdiction_id": "linjiang.gov.cn",
               "description": "巷子里积水很深"}
    record, errors = request_record(request, "p", catalogue, linjiang.index)
    assert errors == [] and record is not None and record["address"] == "西城区红山街道"
    assert RecordValidator(contracts["raw.hotline.service_request.v1"])(record) is None
    _, errors = request_record({**request, "service_code": "water.leak"}, "p", catalogue, linjiang.index)
    assert [(e.field, e.rule) for e in errors] == [("service_code", "enum")]          # 云州市's service is not offered
    _, errors = request_record({**request, "lat": "38.70", "long": "117.45"}, "p", catalogue, linjiang.index)
    assert [(e.field, e.rule) for e in errors] == [("lat", "outside-jurisdiction")]   # nor is a place in 云州市
    view = public_view({**record, "dispatch_department": "water"}, linjiang.index, catalogue)
    assert view["agency_responsible"] == "临江市水利局"


def test_ngsi_ld_normalized_entities_map_to_keyvalues_as_the_standard_relates_them() -> None:
    from citybrain.gateway.fiware import ld_to_key_values

    entity = {"id": "urn:ngsi-ld:NoiseLevelObserved:nl-0001:1", "@context": ["ctx"],
              "type": "https://smartdatamodels.org/dataModel.Environment/NoiseLevelObserved",
              "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [117.4, 38.6]}},
              "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:nl-0001"},
              "dateObservedFrom": {"type": "Property", "value": {"@type": "DateTime", "@value": "2026-12-03T10:00:00Z"}},
              "LAeq": {"type": "Property", "value": 61.2, "unitCode": "2N", "observedAt": "2026-12-03T10:05:00Z"},
              "name": {"type": "LanguageProperty", "languageMap": {"zh": "天宁街道噪声"}}}
    kv, errors = ld_to_key_values(entity)
    assert errors == []
    assert kv == {"id": entity["id"], "type": "NoiseLevelObserved", "location": entity["location"]["value"],
                  "refDevice": "urn:ngsi-ld:Device:nl-0001", "dateObservedFrom": "2026-12-03T10:00:00Z", "LAeq": 61.2,
                  "name": "天宁街道噪声", "dateObservedTo": "2026-12-03T10:05:00Z"}   # the end from observedAt
    concise = {"id": entity["id"], "type": "NoiseLevelObserved", "LAeq": 61.2, "dateObservedFrom": "2026-12-03T10:00:00Z",
               "location": {"type": "Point", "coordinates": [117.4, 38.6]}, "refDevice": "urn:ngsi-ld:Device:nl-0001"}
    assert ld_to_key_values(concise) == (concise, [])                  # NGSI-LD 1.6's concise form: values as they are
    bad = {"id": "x", "type": "NoiseLevelObserved", "LAeq": {"type": "Number", "value": 61.2}, "refDevice": {"type": "Relationship"},
           "location": {"type": "GeoProperty", "value": {}, "colour": "red"}}
    kv, errors = ld_to_key_values(bad)
    assert kv is None
    assert {(e.field, e.rule) for e in errors} == {("LAeq", "ngsi-ld-form"), ("refDevice", "required"),
                                                  ("location", "unknown-field")}


def test_the_models_known_defects_are_read_with_a_named_warning_and_the_rest_left_to_the_contract() -> None:
    from citybrain.gateway.lint import lint, lint_ld

    noise = {"id": "n-1", "type": "NoiseLevelObserved", "dateObserved": "2026-12-03T10:00:00Z/2026-12-03T10:05:00Z",
             "location": {"type": "Point", "coordinates": ["117.45", "38.70"]}, "refDevice": "nl-0001", "LAeq": 61.0}
    fixed, warnings = lint(noise)
    assert fixed["dateObservedFrom"] == "2026-12-03T10:00:00Z" and fixed["dateObservedTo"] == "2026-12-03T10:05:00Z"
    assert "dateObserved" not in fixed and fixed["location"]["coordinates"] == [117.45, 38.70]
    assert [w.rule for w in warnings] == ["coordinates-as-text", "date-interval"]
    traffic = {"id": "t-1", "type": "TrafficFlowObserved",
               "location": {"type": "LineString", "coordinates": [[117.4, 38.6], [117.41, 38.61], [117.42, 38.62]]}}
    fixed, warnings = lint(traffic)
    assert fixed["location"] == {"type": "Point", "coordinates": [117.41, 38.61]} and warnings[0].rule == "location-not-a-point"
    air = {"id": "a-1", "type": "AirQualityObserved", "dateObserved": "2026-12-03T10:00:00Z/2026-12-03T11:00:00Z"}
    assert lint(air)[0]["dateObserved"] == "2026-12-03T11:00:00Z"      # the end of the observed hour
    not_numbers = {"id": "a-2", "type": "AirQualityObserved", "location": {"type": "Point", "coordinates": ["east", "38"]}}
    assert lint(not_numbers) == (not_numbers, [])                       # no meaning to guess: the contract refuses it
    clean = {"id": "a-3", "type": "AirQualityObserved", "dateObserved": "2026-12-03T10:00:00Z",
             "location": {"type": "Point", "coordinates": [117.45, 38.7]}}
    assert lint(clean) == (clean, [])
    ld, warnings = lint_ld({"id": "f-1", "type": "FloodMonitoring", "stationID": {"type": "string", "value": "FWR013"},
                            "currentLevel": {"type": "Property", "value": 0.2}})
    assert ld["stationID"] == {"type": "Property", "value": "FWR013"} and [w.field for w in warnings] == ["stationID"]


def test_a_false_for_a_number_and_a_bearing_past_180_are_read_with_warnings_the_rest_refused(contracts) -> None:  # type: ignore[no-untyped-def]
    from citybrain.gateway.lint import lint

    air = contracts["raw.sensor.air_quality.v1"]
    props, check = air.schema["properties"], RecordValidator(air)
    fixed, warnings = lint({**air.examples[0], "precipitation": False, "windDirection": 186}, props)
    assert (fixed["precipitation"], fixed["windDirection"]) == (0, -174) and check(fixed) is None
    assert [(w.field, w.rule) for w in warnings] == [("precipitation", "boolean-for-number"), ("windDirection", "angle-range")]
    # no plain meaning: true is no amount of rain, 400° is no bearing; the contract refuses them by name
    for field, value, rule in (("precipitation", True, "type"), ("windDirection", 400, "maximum")):
        fixed, warnings = lint({**air.examples[0], field: value}, props)
        assert warnings == [] and (check(fixed).field, check(fixed).rule) == (field, rule)  # type: ignore[union-attr]
    weather = contracts["raw.sensor.weather.v1"]        # a model that ranges bearings 0..360 keeps 186
    fixed, warnings = lint({**weather.examples[0], "windDirection": 186}, weather.schema["properties"])
    assert fixed["windDirection"] == 186 and warnings == []


def test_a_unitcode_is_read_against_the_contracts_unit_converted_or_refused(contracts) -> None:  # type: ignore[no-untyped-def]
    from citybrain.gateway.units import apply_units, unit_codes

    air = contracts["raw.sensor.air_quality.v1"]
    props = air.schema["properties"]
    v2 = {"pm25": {"type": "Number", "value": 0.0385, "metadata": {"unitCode": {"type": "Text", "value": "GP"}}},
          "co": {"type": "Number", "value": 0.8, "metadata": {"unitCode": {"value": "GP"}}}}
    ld = {"temperature": {"type": "Property", "value": 279.65, "unitCode": "KEL"}}
    assert unit_codes(v2) == {"pm25": "GP", "co": "GP"} and unit_codes(ld) == {"temperature": "KEL"}
    record = {**air.examples[0], "pm25": 0.0385, "co": 0.8, "temperature": 279.65}
    out, warnings, problem = apply_units(record, {"pm25": "GP", "co": "GP", "temperature": "KEL"}, props)
    assert problem is None and (out["pm25"], out["co"], out["temperature"]) == (38.5, 0.8, 6.5)   # co is in mg/m³
    assert [(w.field, w.rule) for w in warnings] == [("pm25", "unit-converted"), ("temperature", "unit-converted")]
    assert RecordValidator(air)(out) is None
    # no meaning to convert: metres of pm25, or a code nobody defined
    for code, words in (("MTR", "unitCode 'MTR' (m)"), ("XYZ", "unitCode 'XYZ', which CityBrain does not know")):
        _, _, problem = apply_units(record, {"pm25": code}, props)
        assert problem is not None and (problem.rule, problem.field) == ("unit", "pm25") and words in problem.message
        assert "µg/m³ (unitCode GQ)" in problem.message
