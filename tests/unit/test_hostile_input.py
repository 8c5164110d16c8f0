"""Hostile input at every edge: nothing lost, nothing doubled, never a 500 (issue 32).

The gateway's real aiohttp app (with test_gateway_server's stand-in producer, which validates and keeps
what it is sent) and the file loader's readers and validated producer on files in tmp_path. Each bad
input must end as a 4xx (or a per-entity error in a batch's answer) and a dead letter with a named rule
of citybrain.contracts.validate.FIXES; every entity sent is accounted for as accepted or dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import FIXES, Rejection, excerpt
from citybrain.gateway.book import SERVICES_TOPIC
from citybrain.gateway.idempotency import Attempt, IdempotencyKeys
from citybrain.gateway.pipeline import RequestPipeline
from citybrain.gateway.server import TRACE_HEADER, build_app
from citybrain.ingest.feeds import load_feed, read_feed
from citybrain.ingest.producer import DLQ_TOPIC, ValidatedProducer, dead_letter_message
from citybrain.ingest.readers import RawRecord, read_csv, read_jsonl
from citybrain.ingest.strict_json import JsonRefused, dumps_record, id_problem, loads
from citybrain.settings import PROJECT_ROOT, load_settings
from tests.conftest import write_bytes
from tests.unit.test_gateway_server import KEY, KeepingProducer, entity

AUTH = {"X-Api-Key": KEY}
V2 = "/v2/entities?options=keyValues"
V2_BATCH = "/v2/op/update?options=keyValues"
LD = "/ngsi-ld/v1/entities"
LD_UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
OPEN311 = "/open311/v2/requests.json"
CITY = {"jurisdiction_id": "yunzhou.gov.cn", "name": "云州市"}
SERVICE = {"service_code": "road.damage", "name": "道路破损", "group": "roads", "category": "road_damage",
           "department": "transport", "sla_hours": 24, "priority": "normal", "keywords": []}


def make_pipeline(contracts: dict[str, Contract], **env: str) -> RequestPipeline:
    """The pipeline over the stand-in producer; its request book knows a city with one service (Open311 POSTs
    open tickets)."""
    settings = load_settings({"CITYBRAIN_GATEWAY_API_KEYS": f"district-app:{KEY}", "CITYBRAIN_GATEWAY_BURST": "100000",
                              "CITYBRAIN_GATEWAY_RATE_PER_S": "100000", **env})
    p = RequestPipeline(settings, contracts)
    p.producer = KeepingProducer()  # type: ignore[assignment]
    p.book._city = CITY
    p.book._reference[SERVICES_TOPIC] = {SERVICE["service_code"]: SERVICE}
    return p


@pytest.fixture()
def pipeline(contracts: dict[str, Contract]) -> RequestPipeline:
    return make_pipeline(contracts)


Answer = tuple[int, dict[str, str], Any]


def send(pipeline: RequestPipeline, method: str, path: str, body: Any = None, ctype: str = "application/json",
         headers: dict[str, str] | None = None) -> Answer:
    """One request to the real app; (status, headers, the body as JSON, or as text when it is not JSON)."""
    async def go() -> Answer:
        app = build_app(pipeline)
        app.on_startup.remove(pipeline.start)
        app.on_cleanup.remove(pipeline.stop)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, data=data, headers={"Content-Type": ctype, **(headers or {})})
            raw = await resp.read()
            try:
                return resp.status, dict(resp.headers), json.loads(raw) if raw else None
            except ValueError:
                return resp.status, dict(resp.headers), raw.decode(errors="replace")
    return asyncio.run(go())


def kept(pipeline: RequestPipeline) -> KeepingProducer:
    assert isinstance(pipeline.producer, KeepingProducer)
    return pipeline.producer


def dead_rules(pipeline: RequestPipeline) -> list[str]:
    """The rule of every record the stand-in producer dead-lettered (invalid items and unroutable ones)."""
    producer = kept(pipeline)
    rules = [rejection.rule for _t, _r, rejection in producer.dead]
    for topic, record in producer.produced:
        contract = next(c for c in pipeline.contracts.values() if c.topic == topic)
        rejection = record.rejection or producer.validator(contract)(record.value)
        if rejection is not None:
            rules.append(rejection.rule)
    return rules


def accepted(pipeline: RequestPipeline) -> list[RawRecord]:
    producer = kept(pipeline)
    return [r for t, r in producer.produced if r.rejection is None and
            producer.validator(next(c for c in pipeline.contracts.values() if c.topic == t))(r.value) is None]


def ld(**extra: Any) -> dict[str, Any]:
    """A normalized NGSI-LD entity (application/json, no @context)."""
    return {"id": "urn:ngsi-ld:AirQualityObserved:aq-0001:ld", "type": "AirQualityObserved",
            "dateObserved": {"type": "Property", "value": "2026-11-23T08:00:00Z"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [117.45, 38.70]}},
            "refDevice": {"type": "Relationship", "object": "aq-0001"},
            "pm25": {"type": "Property", "value": 31.0}, **extra}


def body_with(entity_json: str, before: dict[str, Any], field: str) -> bytes:
    """``before`` as JSON with ``field`` set to raw JSON text (what json.dumps cannot write: NaN, a lone surrogate)."""
    text = json.dumps({**before, field: "@@"})
    return text.replace('"@@"', entity_json).encode()


# -- one poisoned entity: a 4xx naming the rule and a dead letter, never a 500 ------------------


POISONS = [
    ("a lone surrogate", V2, body_with('"aq\\ud800"', entity(), "refDevice"), "lone-surrogate"),
    ("a lone surrogate in a key", V2, json.dumps(entity())[:-1].encode() + b', "\\udc00": 1}', "lone-surrogate"),
    ("NaN", V2, body_with("NaN", entity(), "pm25"), "json-number"),
    ("Infinity", V2, body_with("-Infinity", entity(), "pm25"), "json-number"),
    ("a number beyond a double", V2, body_with("1e400", entity(), "pm25"), "json-number"),
    ("a duplicate key", V2, json.dumps(entity())[:-1].encode() + b', "pm25": 999}', "duplicate-key"),
    ("nesting past the cap", V2, body_with("[" * 100 + "]" * 100, entity(), "note"), "json-depth"),
    ("a zero-width id", V2, json.dumps(entity(id="urn:a\u200bb")).encode(), "id-characters"),
    ("a right-to-left override in an id", V2, json.dumps(entity(id="urn:\u202eab")).encode(), "id-characters"),
    ("a newline in an id", V2, json.dumps(entity(id="urn:a\nb")).encode(), "id-characters"),
    ("an NGSI-LD type that is an object", LD, json.dumps(ld(type={"a": 1})).encode(), "type"),
    ("an NGSI-LD type that is a list", LD, json.dumps(ld(type=["AirQualityObserved"])).encode(), "type"),
    ("a languageMap that is not an object", LD, json.dumps(ld(name={"type": "LanguageProperty",
                                                                     "languageMap": ["云州"]})).encode(), "type"),
    ("mixed-type observedAt", LD, json.dumps(ld(pm25={"type": "Property", "value": 31.0, "observedAt": 5},
                                                pm10={"type": "Property", "value": 40.0,
                                                      "observedAt": "2026-11-23T08:00:00Z"})).encode(), "type"),
    ("a lone surrogate in NGSI-LD", LD, body_with('"aq\\ud800"', ld(), "id"), "lone-surrogate"),
]


@pytest.mark.parametrize(("what", "path", "body", "rule"), POISONS, ids=[p[0] for p in POISONS])
def test_a_poisoned_entity_is_refused_with_its_rule_and_dead_lettered(
        pipeline: RequestPipeline, what: str, path: str, body: bytes, rule: str) -> None:
    status, _, answer = send(pipeline, "POST", path, body, headers=AUTH)
    assert 400 <= status < 500, (what, status, answer)
    assert rule in json.dumps(answer)
    assert dead_rules(pipeline) == [rule] and accepted(pipeline) == []
    assert rule in FIXES


def test_nan_is_refused_not_written_as_a_literal(pipeline: RequestPipeline) -> None:
    """`{"pm25": NaN}` answered 201 and the topic held NaN, which is not JSON."""
    status, _, answer = send(pipeline, "POST", V2, body_with("NaN", entity(), "pm25"), headers=AUTH)
    assert status == 400 and answer["errors"][0]["field"] == "pm25" and answer["errors"][0]["rule"] == "json-number"
    with pytest.raises(JsonRefused, match="number JSON cannot write"):
        dumps_record({"pm25": float("nan")})


def test_a_duplicate_key_is_refused_not_taken_last_wins(pipeline: RequestPipeline) -> None:
    status, _, answer = send(pipeline, "POST", V2, json.dumps(entity())[:-1].encode() + b', "pm25": 999}', headers=AUTH)
    assert status == 400 and answer["errors"][0]["field"] == "pm25" and "more than once" in answer["errors"][0]["description"]


def test_a_body_nested_past_what_the_parser_reaches_is_refused_whole_and_dead_lettered(
        pipeline: RequestPipeline) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    status, _, answer = send(pipeline, "POST", V2, deep, headers=AUTH)
    assert status == 400 and answer["error"] == "ParseError" and answer["errors"][0]["rule"] == "json-depth"
    status, _, answer = send(pipeline, "POST", LD_UPSERT, deep, headers=AUTH)
    assert status == 400 and answer["errors"][0]["rule"] == "json-depth"
    assert dead_rules(pipeline) == ["json-depth", "json-depth"]


def test_a_malformed_or_non_utf8_body_is_dead_lettered_for_a_known_partner_only(pipeline: RequestPipeline) -> None:
    status, _, answer = send(pipeline, "POST", V2, b'{"id": "\xff"}', headers=AUTH)
    assert status == 400 and answer["errors"][0]["rule"] == "encoding"
    status, _, answer = send(pipeline, "POST", OPEN311, b"{not json", headers=AUTH)
    assert status == 400 and answer[0]["rule"] == "json-syntax"
    status, _, answer = send(pipeline, "POST", OPEN311, b"{not json")      # no key: answered, not kept
    assert status == 400 and answer[0]["rule"] == "json-syntax"
    status, _, answer = send(pipeline, "POST", OPEN311, b"service_code=\xff\xfe", "application/x-www-form-urlencoded",
                             AUTH)
    assert status == 400 and answer[0]["rule"] == "encoding"
    assert [t for t, _r, _rej in kept(pipeline).dead] == ["fiware:(body)", "raw.hotline.service_request.v1",
                                                           "raw.hotline.service_request.v1"]


def test_a_batch_envelope_giving_entities_twice_is_refused_whole(pipeline: RequestPipeline) -> None:
    body = b'{"actionType": "append", "entities": [' + json.dumps(entity(1)).encode() + b'], "entities": [' + \
        json.dumps(entity(2)).encode() + b"]}"
    status, _, answer = send(pipeline, "POST", V2_BATCH, body, headers=AUTH)
    assert status == 400 and answer["errors"][0]["rule"] == "duplicate-key"
    assert accepted(pipeline) == [] and dead_rules(pipeline) == ["duplicate-key"]


def test_open311_refuses_a_boolean_latitude_nan_and_a_zero_width_account(pipeline: RequestPipeline) -> None:
    """`lat: true` was read as 1.0."""
    base = {"service_code": "road.damage", "description": "路面有坑", "address_string": "幸福路"}
    for bad, field, rule in (({"lat": True, "long": 117.45}, "lat", "type"),
                             ({"lat": "nan", "long": 117.45}, "lat", "type"),
                             ({"account_id": "acc\u200b1"}, "account_id", "id-characters")):
        status, _, answer = send(pipeline, "POST", OPEN311, {**base, **bad}, headers=AUTH)
        assert status == 400 and (answer[0]["field"], answer[0]["rule"]) == (field, rule), answer
    status, _, answer = send(pipeline, "POST", OPEN311, body_with("NaN", base, "long"), headers=AUTH)
    assert status == 400 and answer[0]["rule"] == "json-number"
    assert dead_rules(pipeline) == ["type", "type", "id-characters", "json-number"]


# -- batches: each entity alone --------------------------------------------------------------


def test_one_poisoned_entity_in_a_thousand_is_the_only_one_refused(pipeline: RequestPipeline) -> None:
    """One such entity failed a whole 1,000-entity upsert with a 500."""
    good = [json.dumps({**ld(), "id": f"urn:ngsi-ld:AirQualityObserved:aq-0001:{n}"}) for n in range(999)]
    poison = json.dumps({**ld(), "id": "urn:ngsi-ld:AirQualityObserved:aq-0001:poison", "pm25": "@@"}).replace(
        '"@@"', '{"type": "Property", "value": "\\ud800"}')
    body = ("[" + ",".join(good[:500] + [poison] + good[500:]) + "]").encode()
    assert pipeline.settings.gateway_max_body_bytes >= len(body)
    status, _, answer = send(pipeline, "POST", LD_UPSERT, body, headers=AUTH)
    assert status == 207 and len(answer["success"]) == 999
    assert [(e["index"], e["error"]["errors"][0]["rule"]) for e in answer["errors"]] == [(500, "lone-surrogate")]
    assert len(accepted(pipeline)) == 999 and dead_rules(pipeline) == ["lone-surrogate"]
    assert pipeline.counts["accepted"] == 999 and pipeline.counts["dead_lettered"] == 1


def test_one_poisoned_entity_in_an_ngsi_v2_batch_is_the_only_one_refused(pipeline: RequestPipeline) -> None:
    entities = [json.dumps(entity(n)) for n in range(20)]
    entities[7] = json.dumps({**entity(7), "type": {"nested": "type"}})
    entities[9] = json.dumps(entity(9))[:-1] + ', "pm25": NaN}'
    body = ('{"actionType": "append", "entities": [' + ",".join(entities) + "]}").encode()
    status, _, answer = send(pipeline, "POST", V2_BATCH, body, headers=AUTH)
    assert status == 207 and (answer["accepted"], answer["rejected"]) == (18, 2)
    assert sorted(dead_rules(pipeline)) == ["duplicate-key", "type"]


def test_a_body_one_byte_over_the_limit_is_refused_whole(contracts: dict[str, Contract]) -> None:
    p = make_pipeline(contracts, CITYBRAIN_GATEWAY_MAX_BODY_BYTES="2048")
    body = json.dumps(entity()).encode()
    body = body[:-1] + b', "note": "' + b"x" * (2048 - len(body) - 12) + b'"}'
    assert len(body) == 2048
    status, _, _ = send(p, "POST", V2, body, headers=AUTH)
    assert status == 422                     # at the limit: read, and judged by its contract (note is unknown)
    status, _, answer = send(p, "POST", V2, body[:-2] + b'x"}', headers=AUTH)
    assert status == 413 and "CITYBRAIN_GATEWAY_MAX_BODY_BYTES" in answer["description"]
    assert len(kept(p).produced) == 1 and kept(p).dead == []


def test_a_batch_of_the_limit_plus_one_is_refused_whole(contracts: dict[str, Contract]) -> None:
    p = make_pipeline(contracts, CITYBRAIN_GATEWAY_MAX_BATCH="10")
    status, _, answer = send(p, "POST", V2_BATCH, {"actionType": "append",
                                                   "entities": [entity(n) for n in range(11)]}, headers=AUTH)
    assert status == 413 and "at most 10" in answer["description"]
    status, _, answer = send(p, "POST", LD_UPSERT, [ld(id=f"urn:x:{n}") for n in range(11)], headers=AUTH)
    assert status == 413 and "at most 10" in answer["detail"]
    status, _, answer = send(p, "POST", V2_BATCH, {"actionType": "append",
                                                   "entities": [entity(n) for n in range(10)]}, headers=AUTH)
    assert status == 200 and answer["accepted"] == 10
    assert len(kept(p).produced) == 10


# -- Open311 retries ---------------------------------------------------------------------------


def test_an_open311_retry_with_the_same_key_gets_the_first_ticket(pipeline: RequestPipeline) -> None:
    """Each retried POST got a new server-side id: a retry after a 503 opened a second ticket."""
    form = b"service_code=road.damage&address_string=%E5%B9%B8%E7%A6%8F%E8%B7%AF&description=pothole"
    keyed = {**AUTH, "Idempotency-Key": "a6f3-retry-1"}
    status, _, first = send(pipeline, "POST", OPEN311, form, "application/x-www-form-urlencoded", keyed)
    assert status == 201
    status, headers, again = send(pipeline, "POST", OPEN311, form, "application/x-www-form-urlencoded", keyed)
    assert status == 201 and again == first and headers["Idempotent-Replayed"] == "true"
    status, _, via_field = send(pipeline, "POST", OPEN311, form + b"&idempotency_key=a6f3-retry-1",
                                "application/x-www-form-urlencoded", AUTH)
    assert status == 201 and via_field == first
    requests = [r for t, r in kept(pipeline).produced if t == "raw.hotline.service_request.v1"]
    assert len(requests) == 1
    status, _, other = send(pipeline, "POST", OPEN311, form, "application/x-www-form-urlencoded", AUTH)
    assert status == 201 and other[0]["service_request_id"] != first[0]["service_request_id"]   # no key: a new one
    status, _, answer = send(pipeline, "POST", OPEN311, form + b"x", "application/x-www-form-urlencoded", keyed)
    assert status == 422 and answer[0]["rule"] == "idempotency-key"


def test_an_open311_retry_after_the_broker_failed_sends_the_same_ticket(pipeline: RequestPipeline) -> None:
    form = b"service_code=road.damage&address_string=x&description=pothole"
    keyed = {**AUTH, "Idempotency-Key": "after-503"}
    kept(pipeline).fail = True
    status, _, answer = send(pipeline, "POST", OPEN311, form, "application/x-www-form-urlencoded", keyed)
    assert status == 503 and "Idempotency-Key" in answer[0]["description"]
    kept(pipeline).fail = False
    status, _, reply = send(pipeline, "POST", OPEN311, form, "application/x-www-form-urlencoded", keyed)
    assert status == 201
    [record] = [r for t, r in kept(pipeline).produced if t == "raw.hotline.service_request.v1"]
    assert record.value["service_request_id"] == reply[0]["service_request_id"]
    assert pipeline.attempts.get("district-app", "after-503").reply == reply  # type: ignore[union-attr]


def test_a_bad_idempotency_key_is_refused(pipeline: RequestPipeline) -> None:
    status, _, answer = send(pipeline, "POST", OPEN311, {"service_code": "road.damage", "address_string": "x"},
                             headers={**AUTH, "Idempotency-Key": "x" * 300})
    assert status == 400 and answer[0]["rule"] == "idempotency-key"


def test_idempotency_keys_are_bounded_and_expire() -> None:
    now = [0.0]
    keys = IdempotencyKeys(ttl_s=10, max_keys=2, clock=lambda: now[0])
    for k in ("a", "b", "c"):
        keys.put("p", k, Attempt(k, {}))
    assert len(keys) == 2 and keys.get("p", "a") is None and keys.get("q", "b") is None   # least recent out; per partner
    assert keys.get("p", "b") is not None
    now[0] = 11.0
    assert keys.get("p", "b") is None and len(keys) == 1


# -- the catch-all ---------------------------------------------------------------------------


def test_an_error_escaping_a_handler_is_a_json_500_with_a_trace_id_and_no_detail(
        pipeline: RequestPipeline, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("/srv/secret/path.py")

    monkeypatch.setattr(pipeline, "check_entity", broken)
    with caplog.at_level(logging.ERROR, logger="citybrain.gateway.server"):
        status, headers, answer = send(pipeline, "POST", V2, entity(), headers=AUTH)
        status311, _, answer311 = send(pipeline, "GET", "/health?x=1", None)
    assert status == 500 and answer["error"] == "InternalError"
    trace = headers[TRACE_HEADER]
    assert trace in answer["description"] and "secret" not in json.dumps(answer) and "KeyError" not in json.dumps(answer)
    assert [r for r in caplog.records if trace in r.getMessage() and r.exc_info]
    assert status311 == 200


def test_aiohttp_s_own_http_errors_pass_through_the_catch_all(pipeline: RequestPipeline,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    async def conflict(*_args: Any) -> Any:
        raise web.HTTPConflict()

    monkeypatch.setattr(pipeline, "health", conflict)
    assert send(pipeline, "GET", "/health")[0] == 409


# -- random structure: never a 5xx, every entity accounted for ------------------------------------


def json_values() -> st.SearchStrategy[Any]:
    text = st.text(st.characters(blacklist_categories=()), max_size=8)   # surrogates, controls, bidi included
    scalars = st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats() | text
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                        max_leaves=12)


KEYS = st.sampled_from(["id", "type", "pm25", "location", "dateObserved", "refDevice", "pm10", "@context",
                        "languageMap", "observedAt", "value", "unitCode"])
ENTITIES = st.one_of(
    json_values(),
    st.builds(lambda base, extra: {**base, **extra}, st.just(entity()), st.dictionaries(KEYS, json_values(), max_size=3)),
    st.builds(lambda base, extra: {**base, **extra}, st.just(ld()), st.dictionaries(KEYS, json_values(), max_size=3)),
)


def _fuzz(contracts: dict[str, Contract], path: str, batch: list[Any], wrap: bool) -> None:
    p = make_pipeline(contracts)
    body = json.dumps({"actionType": "append", "entities": batch} if wrap else batch).encode()
    status, _, answer = send(p, "POST", path, body, headers=AUTH)
    assert status < 500, answer
    producer = kept(p)
    if status in (200, 201, 207, 422) and isinstance(answer, (dict, list)):
        assert len(producer.produced) + len(producer.dead) == len(batch)
        assert len(accepted(p)) + len(dead_rules(p)) == len(batch)


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])
@given(batch=st.lists(ENTITIES, min_size=1, max_size=5))
def test_random_ngsi_v2_batches_never_fail_and_lose_nothing(contracts: dict[str, Contract], batch: list[Any]) -> None:
    _fuzz(contracts, V2_BATCH, batch, wrap=True)


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])
@given(batch=st.lists(ENTITIES, min_size=1, max_size=5))
def test_random_ngsi_ld_upserts_never_fail_and_lose_nothing(contracts: dict[str, Contract], batch: list[Any]) -> None:
    _fuzz(contracts, LD_UPSERT + "?options=keyValues", batch, wrap=False)


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200) | json_values().map(lambda v: json.dumps(v).encode()),
       path=st.sampled_from([V2, LD, OPEN311]))
def test_random_bodies_are_never_a_server_error(contracts: dict[str, Contract], body: bytes, path: str) -> None:
    p = make_pipeline(contracts)
    status, _, answer = send(p, "POST", path, body, headers=AUTH)
    assert status < 500, answer
    assert len(kept(p).produced) + len(kept(p).dead) <= 1


# -- the file loader -----------------------------------------------------------------------------


def test_jsonl_lines_the_strict_reading_refuses_each_get_their_rule(tmp_path: Path) -> None:
    """Deep nesting raised RecursionError past the reader; each bad line is now one rejection."""
    path = write_bytes(
        tmp_path / "feed.jsonl",
        b'{"ok": 1}',
        b'{"a": "\\ud800"}',
        b'{"a": 1, "a": 2}',
        b'{"a": Infinity}',
        b'{"a": 1e999}',
        b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}",
        b'{"a": "\xed\xa0\x80"}',       # a surrogate encoded as UTF-8 bytes
        b'{"ok": 2}',
    )
    records = list(read_jsonl(path, 1024 * 1024))
    assert [r.rejection.rule if r.rejection else "ok" for r in records] == [
        "ok", "lone-surrogate", "duplicate-key", "json-number", "json-number", "json-depth", "json-depth", "encoding",
        "ok"]
    assert [r.source for r in records][5] == "feed.jsonl:6"
    assert list(read_jsonl(path, 1024 * 1024, max_depth=64))[6].rejection is None


def test_a_feed_line_nested_deep_or_with_a_lone_surrogate_is_rejected_alone(contracts: dict[str, Contract],
                                                                            tmp_path: Path) -> None:
    feed = load_feed(PROJECT_ROOT / "infra" / "feeds" / "device_registry.yaml", contracts)
    row = {"device_id": "aq-0001", "kind": "AQ", "owner": "ecology_environment", "lat": 38.7, "lon": 117.45,
           "state": "在用", "updated": "2026-11-22 08:00:00"}
    path = write_bytes(tmp_path / "devices.jsonl",
                       json.dumps(row, ensure_ascii=False).encode(),
                       json.dumps({**row, "vendor": "@@"}).replace('"@@"', '"x\\udfff"').encode(),
                       json.dumps({**row, "vendor": "@@"}).replace('"@@"', "[" * 3000 + "]" * 3000).encode(),
                       json.dumps({**row, "lat": True}).encode(),
                       json.dumps({**row, "lat": "@@"}).replace('"@@"', "NaN").encode())
    records = list(read_feed(feed, path, "utf-8", 1024 * 1024))
    assert [r.rejection.rule if r.rejection else "ok" for r in records] == [
        "ok", "lone-surrogate", "json-depth", "type", "json-number"]


def test_csv_json_cells_are_read_strictly(contracts: dict[str, Contract], tmp_path: Path) -> None:
    contract = next(c for c in contracts.values()
                    if any(p.get("type") in ("object", "array") for p in c.schema.get("properties", {}).values()))
    name = next(n for n, p in contract.schema["properties"].items() if p.get("type") in ("object", "array"))
    required = [f for f in contract.schema.get("required", []) if f != name]
    header = ",".join([*required, name])
    cell = '"[1, NaN]"' if contract.schema["properties"][name]["type"] == "array" else '"{""a"": NaN}"'
    path = write_bytes(tmp_path / "x.csv", header.encode(), (",".join(["1"] * len(required) + [cell])).encode())
    [record] = list(read_csv(path, contract, 4096))
    assert record.rejection is not None and record.rejection.field == name
    assert record.rejection.rule in ("json-number", "type")


class _Future:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def add_callback(self, f: Any) -> _Future:
        f(None)
        return self

    def add_errback(self, _f: Any) -> _Future:
        return self

    def failed(self) -> bool:
        return False


class _FakeKafka:
    """kafka-python's producer as the validated producer uses it; every send acknowledged, every value kept."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []

    def partitions_for(self, _topic: str) -> set[int]:
        return {0}

    def send(self, topic: str, value: bytes, key: Any = None, headers: Any = None, timestamp_ms: Any = None) -> _Future:
        self.sent.append((topic, value, headers or []))
        return _Future()

    def flush(self) -> None:
        return None


@pytest.fixture()
def offline_producer() -> Iterator[tuple[ValidatedProducer, _FakeKafka]]:
    producer = ValidatedProducer.__new__(ValidatedProducer)
    producer.settings = load_settings({})
    producer.producer_id = "test"
    producer._validators = {}
    fake = _FakeKafka()
    producer._producer = fake  # type: ignore[assignment]
    yield producer, fake


def test_the_producer_dead_letters_a_value_json_cannot_write_instead_of_aborting_the_run(
        offline_producer: tuple[ValidatedProducer, _FakeKafka], contracts: dict[str, Contract]) -> None:
    """A lone surrogate aborted the whole run at produce time, with no flush and no summary; NaN was written."""
    producer, fake = offline_producer
    device = contracts["raw.ref.device.v1"]
    good = {"device_id": "aq-0001", "device_type": "air_quality", "owner_department": "ecology_environment",
            "lat": 38.7, "long": 117.45, "status": "active", "updated_at": "2026-11-22T00:00:00Z"}
    assert producer.validator(device)(good) is None
    values = [good, {**good, "vendor": "x\ud800"}, {**good, "lat": float("nan")}, {**good, "device_id": "aq-0002"}]
    summary = producer.produce_values(device, values)
    assert (summary.read, summary.accepted, summary.dead_lettered) == (4, 2, 2)
    assert dict(summary.by_rule) == {"lone-surrogate": 1, "json-number": 1}
    for topic, value, headers in fake.sent:
        json.loads(value.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"{c} written to {topic}"))
        assert all(isinstance(v, bytes) for _k, v in headers)
    assert [t for t, _v, _h in fake.sent].count(DLQ_TOPIC) == 2


def test_a_dead_letter_of_a_hostile_record_is_always_writable(contracts: dict[str, Contract]) -> None:
    record = RawRecord("file\udcff.jsonl:1", b"", value={"k\ud800": "v"})
    rejection = Rejection("unknown-field", "k\ud800" * 100, "field `k\ud800` is unknown", excerpt("k\ud800"))
    envelope, headers = dead_letter_message("raw.ref.device.v1", record, rejection, "test", None, 4096,
                                            contracts["dlq.ingest.rejected.v1"])
    assert dumps_record(envelope) and len(envelope["field"]) <= 200
    assert all(isinstance(v, bytes) for _k, v in headers)


# -- the rules themselves ------------------------------------------------------------------------


def test_ids_may_not_hold_controls_zero_width_or_bidi_characters_but_may_hold_any_script() -> None:
    assert id_problem("urn:ngsi-ld:AirQualityObserved:云州-01") is None
    for char in ("\u200b", "\u200d", "\u2060", "\ufeff", "\u202e", "\u2066", "\u200f", "\x00", "\x7f", "\u2028"):
        problem = id_problem(f"urn:a{char}b")
        assert problem is not None and problem.rule == "id-characters" and f"U+{ord(char):04X}" in problem.message


def test_booleans_are_not_numbers_to_the_validator(air: Contract) -> None:
    from citybrain.contracts.validate import RecordValidator

    rejection = RecordValidator(air)({**entity(), "pm25": True})
    assert rejection is not None and rejection.rule == "type"


def test_the_depth_cap_is_a_setting_with_a_clear_error() -> None:
    assert load_settings({"CITYBRAIN_JSON_MAX_DEPTH": "8"}).json_max_depth == 8
    with pytest.raises(JsonRefused, match=r"deeper than 3 levels \(CITYBRAIN_JSON_MAX_DEPTH\)"):
        loads(b'{"a": {"b": {"c": {}}}}', max_depth=3)
