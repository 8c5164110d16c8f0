"""The edge gateway over HTTP on localhost, checked against the records on the real broker."""

from __future__ import annotations

import json
import os
from collections import Counter
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from citybrain.ingest.producer import DLQ_TOPIC
from citybrain.kafka.topics import read_topic
from tests.integration.conftest import TEST_ENV

pytestmark = pytest.mark.integration

KEY = "test-partner-key-0001"
FLOOD_KEY = "flood-partner-key-0002"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method: str, url: str, body: bytes | None = None, ctype: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, data=body, method=method, headers={**({"Content-Type": ctype} if ctype else {}),
                                                                         **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, dict(exc.headers), json.loads(raw) if raw else None


def _import_city(settings, contracts, directory: Path, extra_service: dict[str, Any] | None = None) -> None:  # type: ignore[no-untyped-def]
    """The simulated city's pack imported (only what changed is published), optionally with one more service."""
    from citybrain.sim.city import build_city
    from citybrain.city.pack import pack_from_city
    from citybrain.city.pack_import import import_pack

    pack = pack_from_city(build_city(7), grids=False)
    if extra_service:
        pack.services.append(extra_service)
        pack.routing.append({"rule_id": extra_service["service_code"], "category": extra_service["category"],
                             "service_code": extra_service["service_code"], "department": extra_service["department"],
                             "sla_hours": extra_service["sla_hours"], "priority": extra_service["priority"]})
    pack.write(directory)
    import_pack(settings, contracts, directory)


@pytest.fixture(scope="module")
def gateway(broker, settings, contracts, tmp_path_factory):  # type: ignore[no-untyped-def]
    _import_city(settings, contracts, tmp_path_factory.mktemp("citypack"))   # the gateway serves the imported city
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(TEST_ENV)
    env.update({"CITYBRAIN_GATEWAY_API_KEYS": f"district-app:{KEY},flood-gw:{FLOOD_KEY}",
                "CITYBRAIN_GATEWAY_RATE_PER_S": "5", "CITYBRAIN_GATEWAY_BURST": "60",
                "CITYBRAIN_GATEWAY_MAX_BODY_BYTES": "200000"})
    exe = Path(sys.executable).with_name("citybrain")
    proc = subprocess.Popen([str(exe), "gateway", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            status, _, health = call("GET", base + "/health")
            if status == 200 and health["request_book_caught_up"]:
                break
        except OSError:
            pass
        if proc.poll() is not None:
            pytest.fail(f"gateway exited: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("gateway did not become healthy within 60 s")
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def _records(settings, topic: str, **match: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    out = []
    for r in read_topic(settings, topic):
        value = json.loads(r.value)
        headers = {k: v.decode() for k, v in r.headers or []}
        if all(value.get(k) == v or headers.get(k) == v for k, v in match.items()):
            out.append({"value": value, "headers": headers})
    return out


def _entity(device: str = "aq-0001", **extra: Any) -> dict[str, Any]:
    stamp = "2026-11-23T08:00:00Z"
    return {"id": f"urn:ngsi-ld:AirQualityObserved:{device}:{stamp}:{uuid.uuid4().hex[:8]}", "type": "AirQualityObserved",
            "dateObserved": stamp, "location": {"type": "Point", "coordinates": [117.45, 38.70]}, "refDevice": device,
            "pm25": 31.0, **extra}


def test_open311_services_and_a_standard_form_request_end_on_the_broker(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    status, _, listed = call("GET", gateway + "/open311/v2/services.json")
    assert status == 200 and {"water.waterlogging", "noise.construction"} <= {s["service_code"] for s in listed}
    form = urllib.parse.urlencode({"api_key": KEY, "service_code": "water.waterlogging", "lat": "38.70",
                                   "long": "117.45", "description": "下穿隧道积水很深", "first_name": "伟",
                                   "last_name": "王", "phone": "13800001111"}).encode()
    status, _, reply = call("POST", gateway + "/open311/v2/requests.json", form, "application/x-www-form-urlencoded")
    assert status == 201, reply
    rid = reply[0]["service_request_id"]
    stored = _records(settings, "raw.hotline.service_request.v1", service_request_id=rid)
    assert len(stored) == 1
    assert stored[0]["value"]["caller_phone"] == "13800001111" and stored[0]["value"]["lifecycle_state"] == "received"
    assert stored[0]["headers"]["producer"] == "gateway.district-app"
    assert len(_records(settings, "raw.hotline.ticket_event.v1", service_request_id=rid)) == 1

    status, _, view = call("GET", gateway + f"/open311/v2/requests/{rid}.json")
    assert status == 200 and view[0]["status"] == "open" and view[0]["service_code"] == "water.waterlogging"
    assert "caller_phone" not in view[0] and "description" not in view[0]
    status, _, found = call("GET", gateway + f"/open311/v2/requests.json?service_request_id={rid}&status=open")
    assert [r["service_request_id"] for r in found] == [rid]


def test_a_service_added_to_the_city_pack_is_offered_without_a_restart(gateway, settings, contracts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    probe = {"service_code": "probe.gateway", "name": "网关探针", "group": "test", "category": "gateway_probe",
             "department": "data_bureau", "sla_hours": 24, "priority": "normal"}
    status, _, listed = call("GET", gateway + "/open311/v2/services.json")
    assert status == 200 and "probe.gateway" not in {s["service_code"] for s in listed}
    assert {s["jurisdiction_id"] for s in listed} == {"yunzhou.gov.cn"}
    _import_city(settings, contracts, tmp_path / "pack", extra_service=probe)
    deadline = time.time() + 30
    while time.time() < deadline:
        status, _, listed = call("GET", gateway + "/open311/v2/services.json")
        if "probe.gateway" in {s["service_code"] for s in listed}:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the imported service did not appear in services.json within 30 s")
    status, _, definition = call("GET", gateway + "/open311/v2/services/probe.gateway.json")
    assert status == 200 and definition == {"service_code": "probe.gateway", "attributes": []}


def test_open311_status_follows_what_the_platform_knows(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"api_key": KEY, "service_code": "road.damage", "lat": 38.70, "long": 117.45,
                       "description": "路面有大坑"}).encode()
    status, _, reply = call("POST", gateway + "/open311/v2/requests.json", body, "application/json")
    assert status == 201
    rid = reply[0]["service_request_id"]
    state = _records(settings, "raw.hotline.service_request.v1", service_request_id=rid)[0]["value"]
    closed = {**state, "status": "closed", "lifecycle_state": "closed", "dispatch_department": "transport",
              "updated_datetime": "2099-01-01T00:00:00Z", "status_notes": "已修复"}
    from citybrain.contracts.model import load_all
    from citybrain.ingest.producer import ValidatedProducer

    contract = load_all(settings.schemas_dir)["raw.hotline.service_request.v1"]
    with ValidatedProducer(settings, "transport.workorders") as producer:
        assert producer.produce_values(contract, [closed]).accepted == 1
    deadline = time.time() + 20
    while time.time() < deadline:
        _, _, view = call("GET", gateway + f"/open311/v2/requests/{rid}.json")
        if view[0]["status"] == "closed":
            break
        time.sleep(0.3)
    assert view[0]["status"] == "closed" and view[0]["agency_responsible"] == "市交通运输局"


def test_open311_bad_request_names_every_bad_field_and_is_dead_lettered(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    marker = uuid.uuid4().hex
    form = urllib.parse.urlencode({"api_key": KEY, "service_code": "water.leak", "lat": "38.7", "long": "117.45",
                                   "description": marker, "email": "not-an-email", "phone": "call me"}).encode()
    status, _, errors = call("POST", gateway + "/open311/v2/requests.json", form, "application/x-www-form-urlencoded")
    assert status == 400
    assert {(e["field"], e["rule"]) for e in errors} == {("email", "pattern"), ("phone", "pattern")}
    assert all(e["code"] == 400 and e["description"] and e["fix"] for e in errors)
    dead = [d for d in _records(settings, DLQ_TOPIC) if marker in d["value"].get("original_text", "")]
    assert len(dead) == 1 and dead[0]["headers"]["dlq-contract"] == "raw.hotline.service_request.v1"

    status, _, errors = call("POST", gateway + "/open311/v2/requests.json",
                             urllib.parse.urlencode({"api_key": KEY, "service_code": "nope", "colour": "red"}).encode(),
                             "application/x-www-form-urlencoded")
    assert status == 400 and {"service_code", "colour"} <= {e["field"] for e in errors}
    status, _, errors = call("GET", gateway + "/open311/v2/requests/NOPE123.json")
    assert status == 404 and errors[0]["code"] == 404


def test_writes_need_a_valid_key(gateway) -> None:  # type: ignore[no-untyped-def]
    status, _, errors = call("POST", gateway + "/open311/v2/requests.json",
                             urllib.parse.urlencode({"service_code": "water.leak"}).encode(),
                             "application/x-www-form-urlencoded")
    assert status == 403 and errors[0]["field"] == "api_key"
    status, _, body = call("POST", gateway + "/v2/entities?options=keyValues", json.dumps(_entity()).encode(),
                           "application/json", {"X-Api-Key": "wrong-key-123"})
    assert status == 403 and body["error"] == "Forbidden"


def test_fiware_single_entity_good_and_bad(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    good = _entity()
    status, headers, _ = call("POST", gateway + "/v2/entities?options=keyValues", json.dumps(good).encode(),
                              "application/json", {"X-Api-Key": KEY})
    assert status == 201 and headers["Location"].startswith("/v2/entities/urn:ngsi-ld:AirQualityObserved")
    assert len(_records(settings, "raw.sensor.air_quality.v1", id=good["id"])) == 1

    bad = _entity(pm25=-4.0, colour="red")
    status, _, body = call("POST", gateway + "/v2/entities?options=keyValues", json.dumps(bad).encode(),
                           "application/json", {"X-Api-Key": KEY})
    assert status == 422 and {(e["field"], e["rule"]) for e in body["errors"]} == {("pm25", "minimum"),
                                                                                   ("colour", "unknown-field")}
    assert not _records(settings, "raw.sensor.air_quality.v1", id=bad["id"])
    assert [d for d in _records(settings, DLQ_TOPIC) if bad["id"] in d["value"].get("original_text", "")]


def test_a_normalized_ngsi_v2_entity_ends_on_its_topic_in_keyvalues_form(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    """NGSI v2's default representation (no options): each attribute {type, value, metadata}."""
    kv = _entity()
    normalized = {"id": kv["id"], "type": kv["type"], "dateObserved": {"type": "DateTime", "value": kv["dateObserved"]},
                  "location": {"type": "geo:json", "value": kv["location"]},
                  "refDevice": {"type": "Relationship", "value": kv["refDevice"]},
                  "pm25": {"type": "Number", "value": kv["pm25"], "metadata": {"unitCode": {"type": "Text", "value": "GQ"}}}}
    status, headers, _ = call("POST", gateway + "/v2/entities", json.dumps(normalized).encode(), "application/json",
                              {"X-Api-Key": KEY})
    assert status == 201 and headers["Location"].startswith("/v2/entities/urn:ngsi-ld:AirQualityObserved")
    stored = _records(settings, "raw.sensor.air_quality.v1", id=kv["id"])
    assert len(stored) == 1 and stored[0]["value"] == kv
    status, _, body = call("POST", gateway + "/v2/op/update", json.dumps(
        {"actionType": "append", "entities": [{**normalized, "id": kv["id"] + "-2"}, _entity()]}).encode(),
        "application/json", {"X-Api-Key": KEY})
    assert status == 207 and [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["errors"][0]["rule"] == "normalized-form"     # plain values without options=keyValues


SDM_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld"


def _ld(kv: dict[str, Any]) -> dict[str, Any]:
    """An entity in NGSI-LD's normalized form, as a FIWARE NGSI-LD broker or vendor sends it."""
    return {"id": kv["id"], "type": kv["type"],
            "dateObserved": {"type": "Property", "value": {"@type": "DateTime", "@value": kv["dateObserved"]}},
            "location": {"type": "GeoProperty", "value": kv["location"]},
            "refDevice": {"type": "Relationship", "object": kv["refDevice"]},
            "pm25": {"type": "Property", "value": kv["pm25"], "unitCode": "GQ", "observedAt": kv["dateObserved"]}}


def test_ngsi_ld_entities_end_on_their_topic_in_keyvalues_form(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    """NGSI-LD: application/ld+json with @context, application/json with a Link header, upsert per entity."""
    kv = _entity()
    body = {**_ld(kv), "@context": ["https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld", SDM_CONTEXT]}
    status, headers, _ = call("POST", gateway + "/ngsi-ld/v1/entities", json.dumps(body).encode(), "application/ld+json",
                              {"X-Api-Key": KEY})
    assert status == 201 and headers["Location"] == f"/ngsi-ld/v1/entities/{kv['id']}"
    stored = _records(settings, "raw.sensor.air_quality.v1", id=kv["id"])
    assert len(stored) == 1 and stored[0]["value"] == kv
    kv2 = _entity("aq-0002")
    link = f'<{SDM_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    status, _, _ = call("POST", gateway + "/ngsi-ld/v1/entities", json.dumps(_ld(kv2)).encode(), "application/json",
                        {"X-Api-Key": KEY, "Link": link})
    assert status == 201 and _records(settings, "raw.sensor.air_quality.v1", id=kv2["id"])[0]["value"] == kv2
    # The media type and the context go together, as the standard says; anything else is 415.
    status, _, problem = call("POST", gateway + "/ngsi-ld/v1/entities", json.dumps(_ld(kv)).encode(),
                              "application/ld+json", {"X-Api-Key": KEY})
    assert status == 400 and problem["type"].endswith("/BadRequestData") and "@context" in problem["detail"]
    status, _, problem = call("POST", gateway + "/ngsi-ld/v1/entities", b"{}", "text/plain", {"X-Api-Key": KEY})
    assert status == 415 and problem["type"].endswith("/UnsupportedMediaType")
    # Upsert: entity by entity; a bad one is named in the BatchOperationResult and dead-lettered as sent.
    good, bad = _ld(_entity("aq-0003")), {**_ld(_entity("aq-0004")), "pm25": {"type": "Number", "value": 12.0}}
    status, _, result = call("POST", gateway + "/ngsi-ld/v1/entityOperations/upsert", json.dumps([good, bad]).encode(),
                             "application/json", {"X-Api-Key": KEY})
    assert status == 207 and result["success"] == [good["id"]]
    assert result["errors"][0]["entityId"] == bad["id"] and result["errors"][0]["error"]["errors"][0]["rule"] == "ngsi-ld-form"
    assert [d for d in _records(settings, DLQ_TOPIC) if bad["id"] in d["value"].get("original_text", "")]
    concise = {**_entity("aq-0005"), "@context": SDM_CONTEXT}
    status, _, ids = call("POST", gateway + "/ngsi-ld/v1/entityOperations/upsert?options=keyValues",
                          json.dumps([concise]).encode(), "application/ld+json", {"X-Api-Key": KEY})
    assert status == 201 and ids == [concise["id"]]


def test_the_models_known_defects_are_accepted_with_named_warnings(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    """As vendors copy the models' examples: text coordinates, an interval for dateObserved, a JSON Schema type
    on an NGSI-LD attribute. Each is corrected, named in the answer and counted in its header."""
    noise = {"id": f"urn:ngsi-ld:NoiseLevelObserved:nl-0001:{uuid.uuid4().hex[:8]}", "type": "NoiseLevelObserved",
             "dateObserved": "2026-11-23T08:00:00Z/2026-11-23T08:05:00Z", "refDevice": "nl-0001", "LAeq": 58.5,
             "location": {"type": "Point", "coordinates": ["117.45", "38.70"]}}
    status, headers, body = call("POST", gateway + "/v2/op/update?options=keyValues", json.dumps(
        {"actionType": "append", "entities": [noise, _entity()]}).encode(), "application/json", {"X-Api-Key": KEY})
    assert status == 200 and headers["X-CityBrain-Lint-Warnings"] == "2"
    assert [w["rule"] for w in body["results"][0]["warnings"]] == ["coordinates-as-text", "date-interval"]
    assert "warnings" not in body["results"][1]
    stored = _records(settings, "raw.sensor.noise_level.v1", id=noise["id"])[0]["value"]
    assert stored["dateObservedTo"] == "2026-11-23T08:05:00Z" and stored["location"]["coordinates"] == [117.45, 38.70]
    flood = {"id": f"urn:ngsi-ld:FloodMonitoring:wl-0001:{uuid.uuid4().hex[:8]}", "type": "FloodMonitoring",
             "dateObserved": {"type": "Property", "value": "2026-11-23T08:00:00Z"},
             "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [117.45, 38.7]}},
             "refDevice": {"type": "Relationship", "object": "wl-0001"},
             "currentLevel": {"type": "Property", "value": 0.3, "unitCode": "MTR"},
             "floodLevelStatus": {"type": "string", "value": "warning"}}   # as the model's own example types it
    status, headers, _ = call("POST", gateway + "/ngsi-ld/v1/entities", json.dumps(flood).encode(), "application/json",
                              {"X-Api-Key": KEY})
    assert status == 201 and headers["X-CityBrain-Lint-Warnings"] == "1"
    assert _records(settings, "raw.sensor.water_level.v1", id=flood["id"])[0]["value"]["floodLevelStatus"] == "warning"


#: Each form the Smart Data Models publish an example in, and how a vendor sends it.
EXAMPLE_FORMS = {
    "example.json": ("/v2/entities?options=keyValues", "application/json"),        # NGSI v2 keyValues
    "example-normalized.json": ("/v2/entities", "application/json"),               # NGSI v2 normalized
    "example.jsonld": ("/ngsi-ld/v1/entities", "application/ld+json"),             # NGSI-LD concise, @context inside
    "example-normalized.jsonld": ("/ngsi-ld/v1/entities", "application/ld+json"),  # NGSI-LD normalized
}
#: What the gateway corrects in the models' own examples (citybrain.gateway.lint), per model.
EXAMPLE_WARNINGS = {
    "AirQualityObserved": {"attribute-name-case", "time-without-offset", "boolean-for-number", "angle-range"},
    "TrafficFlowObserved": {"location-not-a-point", "date-interval", "time-without-offset"},
    "FloodMonitoring": {"ngsi-ld-attribute-type"},
    "NoiseLevelObserved": set(), "WeatherObserved": set(),
}


def test_every_official_example_of_the_five_models_in_every_form_is_accepted_and_on_its_topic(  # type: ignore[no-untyped-def]
        gateway, settings, contracts) -> None:
    """Issue 18's check, as a sensor vendor tries it: the 20 examples the Smart Data Models publish (pinned in
    schemas/fiware/), each posted as it is but for a fresh id (so a rerun on the same broker finds its own)."""
    from citybrain.contracts.validate import RecordValidator
    from citybrain.gateway.fiware import ENTITY_CONTRACTS

    fiware = Path(__file__).resolve().parents[2] / "schemas" / "fiware"
    before = call("GET", gateway + "/health")[2]["lint_warnings"]
    posted: dict[str, tuple[str, str]] = {}
    warned: Counter[str] = Counter()
    for model, expected_warnings in EXAMPLE_WARNINGS.items():
        for form, (path, ctype) in EXAMPLE_FORMS.items():
            entity = json.loads((fiware / model / "examples" / form).read_text(encoding="utf-8"))
            entity["id"] = f"{entity['id']}:{uuid.uuid4().hex[:8]}"
            status, headers, problem = call("POST", gateway + path, json.dumps(entity).encode(), ctype, {"X-Api-Key": KEY})
            assert status == 201, (model, form, problem)
            assert headers["Location"].startswith(path.split("?")[0] + "/" + entity["id"])
            warned.update({model: int(headers["X-CityBrain-Lint-Warnings"])})
            posted[entity["id"]] = (model, form)
    assert len(posted) == 20
    for model, expected_warnings in EXAMPLE_WARNINGS.items():
        assert bool(warned[model]) == bool(expected_warnings), model
    after = call("GET", gateway + "/health")[2]["lint_warnings"]
    grew = {rule for rule, n in after.items() if n > before.get(rule, 0)}
    assert grew == set().union(*EXAMPLE_WARNINGS.values())                      # named, and counted by rule
    for model in EXAMPLE_WARNINGS:
        contract = contracts[f"{ENTITY_CONTRACTS[model]}.v1"]
        check = RecordValidator(contract)
        stored = {r["value"]["id"]: r for r in _records(settings, contract.topic) if r["value"]["id"] in posted}
        assert {posted[i] for i in stored} == {(model, form) for form in EXAMPLE_FORMS}, model
        for record in stored.values():
            assert check(record["value"]) is None
            assert record["headers"]["contract-id"] == contract.id
            assert set(filter(None, record["headers"].get("lint-rules", "").split(","))) <= EXAMPLE_WARNINGS[model]


def test_a_value_in_another_unit_is_converted_and_one_in_a_unit_of_no_meaning_is_dead_lettered(  # type: ignore[no-untyped-def]
        gateway, settings) -> None:
    kv = _entity("aq-0006")
    ld = {**_ld(kv), "pm25": {"type": "Property", "value": 0.031, "unitCode": "GP"}}           # mg/m³
    status, headers, _ = call("POST", gateway + "/ngsi-ld/v1/entities", json.dumps(ld).encode(), "application/json",
                              {"X-Api-Key": KEY})
    assert status == 201 and headers["X-CityBrain-Lint-Warnings"] == "1"
    assert _records(settings, "raw.sensor.air_quality.v1", id=kv["id"])[0]["value"]["pm25"] == 31.0
    bad = _entity("aq-0007")
    v2 = {"id": bad["id"], "type": "AirQualityObserved", "dateObserved": {"type": "DateTime", "value": bad["dateObserved"]},
          "location": {"type": "geo:json", "value": bad["location"]}, "refDevice": {"type": "Text", "value": "aq-0007"},
          "pm25": {"type": "Number", "value": 31.0, "metadata": {"unitCode": {"type": "Text", "value": "MTR"}}}}
    status, _, body = call("POST", gateway + "/v2/entities", json.dumps(v2).encode(), "application/json", {"X-Api-Key": KEY})
    assert status == 422 and body["errors"][0]["rule"] == "unit" and body["errors"][0]["field"] == "pm25"
    assert not _records(settings, "raw.sensor.air_quality.v1", id=bad["id"])
    dead = [d for d in _records(settings, DLQ_TOPIC) if bad["id"] in d["value"].get("original_text", "")]
    assert [d["headers"]["dlq-rule"] for d in dead] == ["unit"]


def test_fiware_batch_is_taken_record_by_record_and_counts_add_up(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    good = [_entity(f"aq-{i:04d}") for i in range(1, 4)]
    flood = {"id": "urn:ngsi-ld:FloodMonitoring:wl-0001:x", "type": "FloodMonitoring",
             "dateObserved": "2026-11-23T08:00:00Z", "location": {"type": "Point", "coordinates": [117.45, 38.7]},
             "refDevice": "wl-0001", "currentLevel": 0.12}
    bad_type = {"id": "w-1", "type": "WaterQualityObserved"}
    bad_value = _entity(pm25="high")
    body = json.dumps({"actionType": "append", "entities": [*good, flood, bad_type, bad_value]}).encode()
    status, _, reply = call("POST", gateway + "/v2/op/update?options=keyValues", body, "application/json",
                            {"X-Api-Key": KEY})
    assert status == 207, reply
    assert (reply["accepted"], reply["rejected"]) == (4, 2)
    assert [r["status"] for r in reply["results"]] == ["accepted"] * 4 + ["rejected"] * 2
    assert reply["results"][4]["errors"][0]["field"] == "type"
    assert reply["results"][5]["errors"][0]["field"] == "pm25"
    for e in good:
        assert len(_records(settings, "raw.sensor.air_quality.v1", id=e["id"])) == 1
    assert len(_records(settings, "raw.sensor.water_level.v1", id=flood["id"])) == 1
    dead = [d for d in _records(settings, DLQ_TOPIC)
            if '"w-1"' in d["value"].get("original_text", "") or bad_value["id"] in d["value"].get("original_text", "")]
    assert {d["headers"]["dlq-contract"] for d in dead} == {"fiware:WaterQualityObserved", "raw.sensor.air_quality.v1"}

    status, _, reply = call("POST", gateway + "/v2/op/update?options=keyValues",
                            json.dumps({"actionType": "append", "entities": [bad_type]}).encode(), "application/json",
                            {"X-Api-Key": KEY})
    assert status == 422 and reply["accepted"] == 0


def test_oversized_malformed_and_misformed_bodies_are_refused_whole(gateway) -> None:  # type: ignore[no-untyped-def]
    huge = json.dumps({"actionType": "append", "entities": [_entity(note="x" * 1000)] * 300}).encode()
    assert len(huge) > 200_000
    status, _, body = call("POST", gateway + "/v2/op/update?options=keyValues", huge, "application/json",
                           {"X-Api-Key": KEY})
    assert status == 413 and "CITYBRAIN_GATEWAY_MAX_BODY_BYTES" in body["description"]
    status, _, body = call("POST", gateway + "/v2/entities?options=keyValues", b"{not json", "application/json",
                           {"X-Api-Key": KEY})
    assert status == 400 and body["error"] == "ParseError"
    status, _, body = call("POST", gateway + "/v2/entities", json.dumps(_entity()).encode(), "application/json",
                           {"X-Api-Key": KEY})   # plain values, but no options=keyValues: read as normalized
    assert status == 400 and body["errors"][0]["rule"] == "normalized-form" and "keyValues" in body["errors"][0]["fix"]
    status, _, body = call("POST", gateway + "/v2/entities?options=values", json.dumps(_entity()).encode(),
                           "application/json", {"X-Api-Key": KEY})
    assert status == 400 and "not supported" in body["description"]
    status, _, body = call("POST", gateway + "/open311/v2/requests.json", b"<xml/>", "application/xml",
                           {"X-Api-Key": KEY})
    assert status == 415 and body[0]["code"] == 415


def test_a_flooding_client_gets_429_with_retry_after_and_others_are_unaffected(gateway) -> None:  # type: ignore[no-untyped-def]
    batch = json.dumps({"actionType": "append", "entities": [_entity() for _ in range(40)]}).encode()
    first, _, _ = call("POST", gateway + "/v2/op/update?options=keyValues", batch, "application/json",
                       {"X-Api-Key": FLOOD_KEY})
    second, headers, body = call("POST", gateway + "/v2/op/update?options=keyValues", batch, "application/json",
                                 {"X-Api-Key": FLOOD_KEY})
    assert first == 200 and second == 429
    assert int(headers["Retry-After"]) >= 1 and "records/s" in body["description"]
    other, _, _ = call("POST", gateway + "/v2/entities?options=keyValues", json.dumps(_entity()).encode(),
                       "application/json", {"X-Api-Key": KEY})
    assert other == 201
