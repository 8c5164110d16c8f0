"""Hostile input through the real gateway to the real broker (issue 32): nothing lost, nothing doubled, never a 500.

The unit suite (tests/unit/test_hostile_input.py) covers every case against the app in process; here
a few go over HTTP and are checked on the topics themselves. The gateway is test_gateway.py's (its own
process on a free port, serving the imported city)."""

from __future__ import annotations

import json
import urllib.parse
import uuid

import pytest

from citybrain.ingest.producer import DLQ_TOPIC
from tests.integration import test_gateway as gateway_suite
from tests.integration.test_gateway import KEY, _entity, _records, call

pytestmark = pytest.mark.integration

#: test_gateway.py's fixture: the gateway in its own process (one for this module), serving the imported city.
gateway = gateway_suite.gateway

AUTH = {"X-Api-Key": KEY}


def test_one_poisoned_entity_is_dead_lettered_and_its_batch_taken(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    good, poisoned = _entity(), _entity()
    text = json.dumps({"actionType": "append", "entities": [good, {**poisoned, "pm25": "@@"}]})
    body = text.replace('"@@"', "NaN").encode()
    status, _, answer = call("POST", gateway + "/v2/op/update?options=keyValues", body, "application/json", AUTH)
    assert status == 207 and [r["status"] for r in answer["results"]] == ["accepted", "rejected"]
    assert answer["results"][1]["errors"][0]["rule"] == "json-number"
    assert len(_records(settings, "raw.sensor.air_quality.v1", id=good["id"])) == 1
    assert not _records(settings, "raw.sensor.air_quality.v1", id=poisoned["id"])
    dead = [d for d in _records(settings, DLQ_TOPIC) if poisoned["id"] in d["value"].get("original_text", "")]
    assert len(dead) == 1 and dead[0]["headers"]["dlq-rule"] == "json-number"


def test_nan_in_one_entity_is_refused_and_never_on_the_topic(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    poisoned = _entity()
    body = json.dumps({**poisoned, "pm25": "@@"}).replace('"@@"', "NaN").encode()
    status, _, answer = call("POST", gateway + "/v2/entities?options=keyValues", body, "application/json", AUTH)
    assert status == 400 and answer["errors"][0]["field"] == "pm25"
    assert not _records(settings, "raw.sensor.air_quality.v1", id=poisoned["id"])


def test_an_open311_retry_with_the_same_idempotency_key_opens_one_ticket(gateway, settings) -> None:  # type: ignore[no-untyped-def]
    marker = uuid.uuid4().hex
    form = urllib.parse.urlencode({"api_key": KEY, "service_code": "road.damage", "lat": "38.70", "long": "117.45",
                                   "description": f"路面有坑 {marker}"}).encode()
    keyed = {"Idempotency-Key": marker}
    status, _, first = call("POST", gateway + "/open311/v2/requests.json", form, "application/x-www-form-urlencoded", keyed)
    assert status == 201
    status, headers, again = call("POST", gateway + "/open311/v2/requests.json", form,
                                  "application/x-www-form-urlencoded", keyed)
    assert status == 201 and again == first and headers.get("Idempotent-Replayed") == "true"
    stored = [r for r in _records(settings, "raw.hotline.service_request.v1") if marker in r["value"].get("description", "")]
    assert [r["value"]["service_request_id"] for r in stored] == [first[0]["service_request_id"]]


def test_hostile_bodies_never_reach_the_catch_all(gateway) -> None:  # type: ignore[no-untyped-def]
    """Each is a 4xx in its protocol's words; none is the catch-all's 500."""
    entity = json.dumps(_entity())
    bodies = [
        ("/v2/entities?options=keyValues", entity[:-1].encode() + b', "refDevice": "x\\ud800"}'),
        ("/v2/entities?options=keyValues", b"[" * 5000 + b"]" * 5000),
        ("/ngsi-ld/v1/entities", json.dumps({"id": "urn:x", "type": {"a": 1}}).encode()),
        ("/ngsi-ld/v1/entities", json.dumps({"id": "urn:x", "type": "AirQualityObserved", "name": {
            "type": "LanguageProperty", "languageMap": ["云州"]}}).encode()),
        ("/open311/v2/requests.json", json.dumps({"service_code": "road.damage", "lat": True, "long": 117.45}).encode()),
    ]
    for path, body in bodies:
        status, _, answer = call("POST", gateway + path, body, "application/json", AUTH)
        assert 400 <= status < 500, (path, status, answer)
