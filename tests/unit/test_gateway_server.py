"""The gateway's app over HTTP, in process and without a broker: the route table, the shared pipeline's
refusals in each protocol's shape, and records produced or dead-lettered by the protocols' handlers.

The broker connection is left out: the pipeline is given a producer that validates as the real one does
and keeps what it was sent (the broker side is tests/integration/test_gateway.py's)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import Rejection, RecordValidator
from citybrain.gateway.pipeline import LINT_HEADER, RequestPipeline, TokenBuckets
from citybrain.gateway.server import build_app
from citybrain.ingest.producer import DLQ_TOPIC, DeliveryError, ProduceSummary
from citybrain.ingest.readers import RawRecord
from citybrain.settings import load_settings
from prometheus_client.parser import text_string_to_metric_families

KEY = "unit-partner-key-0001"
AUTH = {"X-Api-Key": KEY}


class KeepingProducer:
    """ValidatedProducer's part the gateway uses: validators, produce_many, dead_letter; nothing is sent."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.produced: list[tuple[str, RawRecord]] = []
        self.dead: list[tuple[str, RawRecord, Rejection]] = []
        self._validators: dict[str, RecordValidator] = {}

    def validator(self, contract: Contract) -> RecordValidator:
        return self._validators.setdefault(contract.topic, RecordValidator(contract))

    def produce_many(self, items: list[tuple[Contract, RawRecord]]) -> dict[str, ProduceSummary]:
        if self.fail:
            raise DeliveryError("3 records were not acknowledged within 30 s")
        summaries: dict[str, ProduceSummary] = {}
        for contract, record in items:
            s = summaries.setdefault(contract.topic, ProduceSummary(contract.topic))
            ok = record.rejection is None and self.validator(contract)(record.value) is None
            s.read, s.accepted, s.dead_lettered = s.read + 1, s.accepted + ok, s.dead_lettered + (not ok)
            self.produced.append((contract.topic, record))
        return summaries

    def dead_letter(self, target: str, records: list[tuple[RawRecord, Rejection]]) -> int:
        self.dead += [(target, record, rejection) for record, rejection in records]
        return len(records)


@pytest.fixture()
def pipeline(contracts: dict[str, Contract]) -> RequestPipeline:
    settings = load_settings({"CITYBRAIN_GATEWAY_API_KEYS": f"district-app:{KEY}", "CITYBRAIN_GATEWAY_BURST": "5",
                              "CITYBRAIN_GATEWAY_MAX_BODY_BYTES": "2048", "CITYBRAIN_GATEWAY_MAX_IN_FLIGHT": "1"})
    p = RequestPipeline(settings, contracts)
    p.producer = KeepingProducer()  # type: ignore[assignment]
    return p


Answer = tuple[int, dict[str, str], Any]


def call(pipeline: RequestPipeline, method: str, path: str, body: Any = None, ctype: str = "application/json",
         headers: dict[str, str] | None = None, hold_in_flight: bool = False) -> Answer:
    """One request to the gateway's app (without its broker connection); (status, headers, JSON body or None)."""
    async def go() -> Answer:
        app = build_app(pipeline)
        app.on_startup.remove(pipeline.start)
        app.on_cleanup.remove(pipeline.stop)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        async with TestClient(TestServer(app)) as client:
            if hold_in_flight:
                await pipeline.in_flight.acquire()
            resp = await client.request(method, path, data=data, headers={"Content-Type": ctype, **(headers or {})})
            raw = await resp.read()
            return resp.status, dict(resp.headers), json.loads(raw) if raw else None
    return asyncio.run(go())


def entity(n: int = 0, **extra: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:AirQualityObserved:aq-0001:{n}", "type": "AirQualityObserved",
            "dateObserved": "2026-11-23T08:00:00Z", "location": {"type": "Point", "coordinates": [117.45, 38.70]},
            "refDevice": "aq-0001", "pm25": 31.0, **extra}


def test_every_protocol_route_is_on_the_app(pipeline: RequestPipeline) -> None:
    """The route table the split must keep: Open311, NGSI v2, NGSI-LD and /health, GETs answering HEAD too."""
    routes = {(r.method, r.resource.canonical) for r in build_app(pipeline).router.routes() if r.resource}
    assert routes == {
        ("GET", "/health"), ("HEAD", "/health"), ("GET", "/metrics"), ("HEAD", "/metrics"),
        ("GET", "/open311/v2/services.json"), ("HEAD", "/open311/v2/services.json"),
        ("GET", "/open311/v2/services/{code}.json"), ("HEAD", "/open311/v2/services/{code}.json"),
        ("POST", "/open311/v2/requests.json"), ("GET", "/open311/v2/requests.json"),
        ("HEAD", "/open311/v2/requests.json"),
        ("GET", "/open311/v2/requests/{rid}.json"), ("HEAD", "/open311/v2/requests/{rid}.json"),
        ("POST", "/v2/entities"), ("POST", "/v2/op/update"),
        ("POST", "/ngsi-ld/v1/entities"), ("POST", "/ngsi-ld/v1/entityOperations/upsert"),
    }


def test_refusals_answer_in_the_callers_protocol(pipeline: RequestPipeline) -> None:
    status, _, body = call(pipeline, "GET", "/open311/v2/nowhere.json")
    assert status == 404 and body[0]["code"] == 404 and "no such resource" in body[0]["description"]
    status, _, body = call(pipeline, "GET", "/v2/nowhere")
    assert status == 404 and body["error"] == "NotFound"
    status, _, body = call(pipeline, "DELETE", "/open311/v2/requests.json")
    assert status == 405 and body[0]["description"].endswith("allowed: GET, HEAD, POST")
    status, _, body = call(pipeline, "GET", "/ngsi-ld/v1/entities")
    assert status == 405 and body["error"] == "MethodNotAllowed"


def test_a_write_without_a_valid_key_is_refused_and_counted(pipeline: RequestPipeline) -> None:
    status, _, body = call(pipeline, "POST", "/v2/entities?options=keyValues", entity())
    assert status == 403 and body["error"] == "Forbidden" and "no api_key was sent" in body["description"]
    status, _, body = call(pipeline, "POST", "/open311/v2/requests.json", b"service_code=x&api_key=not-a-key",
                           "application/x-www-form-urlencoded")
    assert status == 403 and body[0]["field"] == "api_key" and "not valid" in body[0]["description"]
    assert pipeline.counts["refused"] == 2


def test_a_body_over_the_limit_is_refused_whole_in_each_protocol(pipeline: RequestPipeline) -> None:
    big = entity(note="x" * 4000)
    status, _, body = call(pipeline, "POST", "/v2/entities?options=keyValues", big, headers=AUTH)
    assert status == 413 and "CITYBRAIN_GATEWAY_MAX_BODY_BYTES" in body["description"]
    status, _, body = call(pipeline, "POST", "/open311/v2/requests.json", b"x" * 4000, "text/plain", AUTH)
    assert status == 413 and body[0]["rule"] == "too-large"   # the size, before the Content-Type, is what is wrong
    assert pipeline.producer.produced == [] and pipeline.counts["refused"] == 2  # type: ignore[union-attr]


def test_malformed_bodies_are_named_in_each_protocols_words(pipeline: RequestPipeline) -> None:
    status, _, body = call(pipeline, "POST", "/open311/v2/requests.json", b"{not json", headers=AUTH)
    assert status == 400 and body[0]["rule"] == "json-syntax" and body[0]["description"].startswith("malformed JSON")
    status, _, body = call(pipeline, "POST", "/v2/entities", b"{not json", headers=AUTH)
    assert status == 400 and body["error"] == "ParseError"
    status, _, body = call(pipeline, "POST", "/ngsi-ld/v1/entities", b"{not json", headers=AUTH)
    assert status == 400 and body["type"] == "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"
    status, _, body = call(pipeline, "POST", "/v2/entities", b"{}", "text/plain", AUTH)
    assert status == 415 and body["error"] == "UnsupportedMediaType"


def test_open311_without_an_imported_city_says_how_to_import_one(pipeline: RequestPipeline) -> None:
    status, headers, body = call(pipeline, "GET", "/open311/v2/services.json")
    assert status == 503 and headers["Retry-After"] == "30" and body[0]["rule"] == "no-city"
    assert "citybrain city import" in body[0]["description"]


def test_open311_shows_a_known_request_without_personal_data(pipeline: RequestPipeline) -> None:
    pipeline.book.put({"service_request_id": "GW20261123A1", "status": "open", "service_code": "water.leak",
                       "requested_datetime": "2026-11-23T08:00:00Z", "caller_phone": "13800001111"})
    status, _, body = call(pipeline, "GET", "/open311/v2/requests/GW20261123A1.json")
    assert status == 200 and body[0]["service_request_id"] == "GW20261123A1" and "caller_phone" not in body[0]
    status, _, body = call(pipeline, "GET", "/open311/v2/requests/NOPE.json")
    assert status == 404 and body[0]["field"] == "service_request_id"
    status, _, body = call(pipeline, "GET", "/open311/v2/requests.json?start_date=yesterday&status=lost")
    assert status == 400 and {e["field"] for e in body} == {"start_date", "status"}


def test_an_ngsi_v2_entity_goes_to_its_topic_and_a_bad_one_to_the_dead_letter_topic(pipeline: RequestPipeline) -> None:
    producer = pipeline.producer
    status, headers, _ = call(pipeline, "POST", "/v2/entities?options=keyValues", entity(1), headers=AUTH)
    assert status == 201 and headers["Location"] == f"/v2/entities/{entity(1)['id']}?type=AirQualityObserved"
    assert headers[LINT_HEADER] == "0"
    status, _, body = call(pipeline, "POST", "/v2/entities?options=keyValues", entity(2, pm25=-4.0), headers=AUTH)
    assert status == 422 and body["error"] == "Unprocessable" and body["errors"][0]["field"] == "pm25"
    assert DLQ_TOPIC in body["description"]
    assert [(t, r.value["id"]) for t, r in producer.produced] == [  # type: ignore[union-attr]
        ("raw.sensor.air_quality.v1", entity(1)["id"]), ("raw.sensor.air_quality.v1", entity(2)["id"])]
    assert pipeline.counts == {"accepted": 1, "dead_lettered": 1, "refused": 0}


def test_an_ngsi_v2_batch_is_taken_record_by_record(pipeline: RequestPipeline) -> None:
    unknown = {"id": "w-1", "type": "WaterQualityObserved"}
    status, _, body = call(pipeline, "POST", "/v2/op/update?options=keyValues",
                           {"actionType": "append", "entities": [entity(1), unknown]}, headers=AUTH)
    assert status == 207 and (body["accepted"], body["rejected"]) == (1, 1)
    assert body["results"][1]["errors"][0]["field"] == "type"
    assert [t for t, _r, _rej in pipeline.producer.dead] == ["fiware:WaterQualityObserved"]  # type: ignore[union-attr]
    status, _, body = call(pipeline, "POST", "/v2/op/update?options=keyValues",
                           {"actionType": "append", "entities": [entity(n) for n in range(6)]}, headers=AUTH)
    assert status == 413 and "CITYBRAIN_GATEWAY_BURST" in body["description"]


def test_an_ngsi_ld_upsert_answers_the_standards_batch_result(pipeline: RequestPipeline) -> None:
    good = {**entity(1), "@context": "https://example.org/context.jsonld"}
    bad = {**entity(2, pm25="high"), "@context": "https://example.org/context.jsonld"}
    status, headers, body = call(pipeline, "POST", "/ngsi-ld/v1/entityOperations/upsert?options=keyValues",
                                 [good, bad], "application/ld+json", AUTH)
    assert status == 207 and body["success"] == [good["id"]] and headers[LINT_HEADER] == "0"
    assert body["errors"][0]["entityId"] == bad["id"] and body["errors"][0]["error"]["errors"][0]["field"] == "pm25"
    status, _, body = call(pipeline, "POST", "/ngsi-ld/v1/entities", [good], "application/ld+json", AUTH)
    assert status == 400 and "takes one entity" in body["detail"]


def test_a_full_pipeline_asks_to_retry_and_writes_nothing(pipeline: RequestPipeline) -> None:
    status, headers, body = call(pipeline, "POST", "/v2/entities?options=keyValues", entity(), headers=AUTH,
                                 hold_in_flight=True)
    assert status == 503 and headers["Retry-After"] == "1" and "CITYBRAIN_GATEWAY_MAX_IN_FLIGHT" in body["description"]
    assert pipeline.producer.produced == [] and pipeline.counts["refused"] == 1  # type: ignore[union-attr]


def test_a_broker_that_did_not_acknowledge_is_logged_and_answered_retriable(
        pipeline: RequestPipeline, caplog: pytest.LogCaptureFixture) -> None:
    pipeline.producer = KeepingProducer(fail=True)  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, logger="citybrain.gateway.server"):
        status, headers, body = call(pipeline, "POST", "/ngsi-ld/v1/entities?options=keyValues", entity(), headers=AUTH)
    assert status == 503 and headers["Retry-After"] == "5" and "retry" in body["description"]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("citybrain.gateway.server", "broker did not acknowledge: 3 records were not acknowledged within 30 s")]


def test_token_buckets_refuse_over_the_burst_and_refill_at_the_rate() -> None:
    slow = TokenBuckets(rate=1.0, burst=3)
    assert slow.take("a", 4) == -1.0
    assert slow.take("a", 3) == 0.0
    assert 0.9 < slow.take("a", 1) <= 1.0       # seconds until one token is back
    assert slow.take("b", 3) == 0.0             # each client has its own bucket
    fast = TokenBuckets(rate=1000.0, burst=3)
    assert fast.take("a", 3) == 0.0
    time.sleep(0.01)
    assert fast.take("a", 3) == 0.0


def test_token_buckets_remember_a_bounded_number_of_clients() -> None:
    """Regression: made-up clients (addresses, keys) grew the limiter's table without bound (issue 33)."""
    buckets = TokenBuckets(rate=1.0, burst=3, max_clients=100)
    for n in range(10_000):
        buckets.take(f"made-up-{n}")
    assert len(buckets) == 100
    assert buckets.take("made-up-9999", 3) > 0   # the most recent clients keep their state


SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def test_every_answer_carries_the_security_headers_and_hsts_only_behind_tls(pipeline: RequestPipeline) -> None:
    answers = [call(pipeline, "GET", "/open311/v2/nowhere.json"), call(pipeline, "DELETE", "/open311/v2/requests.json"),
               call(pipeline, "POST", "/v2/entities?options=keyValues", entity())]
    for status, headers, _ in answers:
        assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, status
        assert headers["Content-Security-Policy"].startswith("default-src 'none'") and "frame-ancestors 'none'" in \
            headers["Content-Security-Policy"]
        assert "Strict-Transport-Security" not in headers   # plain HTTP: HSTS would mean nothing
    pipeline.settings = pipeline.settings.model_copy(update={"http_behind_tls_proxy": True})
    _, headers, _ = call(pipeline, "GET", "/open311/v2/nowhere.json")
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_an_api_key_in_the_url_is_refused_naming_the_header(pipeline: RequestPipeline) -> None:
    status, _, body = call(pipeline, "POST", f"/v2/entities?options=keyValues&api_key={KEY}", entity())
    assert status == 400 and "X-Api-Key header" in body["description"] and KEY not in body["description"]
    status, _, body = call(pipeline, "POST", f"/open311/v2/requests.json?api_key={KEY}", b"service_code=x",
                           "application/x-www-form-urlencoded")
    assert status == 400 and body[0]["rule"] == "key-in-url" and body[0]["field"] == "api_key"
    assert pipeline.producer.produced == []  # type: ignore[union-attr]


def test_wrong_keys_are_rate_limited_per_address_before_any_key_is_checked(pipeline: RequestPipeline) -> None:
    """Regression: wrong keys were never limited, so keys could be guessed at the gateway's full speed (issue 33)."""
    from citybrain.gateway.pipeline import BAD_KEY_BURST

    for n in range(BAD_KEY_BURST):
        status, _, _ = call(pipeline, "POST", "/v2/entities?options=keyValues", entity(),
                            headers={"X-Api-Key": f"guess-{n:04d}"})
        assert status == 403
    status, headers, body = call(pipeline, "POST", "/v2/entities?options=keyValues", entity(),
                                 headers={"X-Api-Key": "guess-9999"})
    assert status == 429 and int(headers["Retry-After"]) >= 1 and "wrong API keys" in body["description"]
    status, _, _ = call(pipeline, "POST", "/v2/entities?options=keyValues", entity(), headers=AUTH)
    assert status == 429   # a right key does not answer differently while the address is held back
    pipeline.bad_keys = TokenBuckets(1.0, 1)   # another address, or later: a missing key costs no try
    for _ in range(3):
        assert call(pipeline, "POST", "/v2/entities?options=keyValues", entity())[0] == 403


def test_the_public_request_list_shows_coarse_positions_and_is_rate_limited(pipeline: RequestPipeline) -> None:
    """Regression: the list gave the exact lat/long beside the street-level address (issue 33)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    pipeline.book.put({"service_request_id": "GW20261207A1", "status": "open", "service_code": "water.leak",
                       "requested_datetime": now, "lat": 38.703217, "long": 117.451893})
    pipeline.book.put({"service_request_id": "GW20261207A2", "status": "open", "service_code": "water.leak",
                       "requested_datetime": now, "lat": 38.700001, "long": 117.454999})
    status, _, body = call(pipeline, "GET", "/open311/v2/requests.json")
    assert status == 200 and {(r["lat"], r["long"]) for r in body} == {(38.7025, 117.4525)}   # one cell, its centre
    status, _, body = call(pipeline, "GET", "/open311/v2/requests/GW20261207A1.json")
    assert (body[0]["lat"], body[0]["long"]) == (38.7025, 117.4525)
    pipeline.reads = TokenBuckets(rate=0.01, burst=1)
    assert call(pipeline, "GET", "/open311/v2/requests.json")[0] == 200
    status, headers, body = call(pipeline, "GET", "/open311/v2/requests.json")
    assert status == 429 and int(headers["Retry-After"]) >= 1 and "CITYBRAIN_GATEWAY_READ_RATE_PER_S" in body[0]["description"]
    assert call(pipeline, "GET", "/open311/v2/requests/GW20261207A1.json")[0] == 429


def scrape(pipeline: RequestPipeline, *paths: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET each of ``paths`` on the gateway's app, then GET /metrics: its samples, parsed as Prometheus does."""
    async def go() -> str:
        app = build_app(pipeline)
        app.on_startup.remove(pipeline.start)
        app.on_cleanup.remove(pipeline.stop)
        async with TestClient(TestServer(app)) as client:
            for path in paths:
                await (await client.get(path)).read()
            answer = await client.get("/metrics")
            assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
            return await answer.text()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(asyncio.run(go())) for sample in family.samples}


def requests_of(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[tuple[str, str, str], float]:
    return {(dict(labels)["route"], dict(labels)["method"], dict(labels)["status"]): v
            for (name, labels), v in samples.items()
            if name == "citybrain_http_requests_total" and dict(labels)["service"] == "gateway"}


def test_gateway_metrics_count_requests_by_route_template_and_status_class(pipeline: RequestPipeline) -> None:
    pipeline.book.put({"service_request_id": "GW20261123B1", "status": "open", "service_code": "water.leak",
                       "requested_datetime": "2026-11-23T08:00:00Z"})
    before = requests_of(scrape(pipeline))
    after = requests_of(scrape(pipeline, "/open311/v2/requests/GW20261123B1.json", "/open311/v2/requests/NOPE.json",
                               "/health", "/no/such/path"))
    moved = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert moved == {("/open311/v2/requests/{rid}.json", "GET", "2xx"): 1, ("/open311/v2/requests/{rid}.json", "GET", "4xx"): 1,
                     ("/health", "GET", "2xx"): 1, ("(unmatched)", "GET", "4xx"): 1,
                     ("/metrics", "GET", "2xx"): 1}   # the scrape before this one


def test_a_thousand_ticket_ids_and_paths_make_no_thousand_series(pipeline: RequestPipeline) -> None:
    """Labels are route templates and status classes: distinct ids and made-up paths add to a few series only."""
    first = scrape(pipeline, "/open311/v2/requests/GW2026999999.json", "/probe/first")
    paths = [f"/open311/v2/requests/GW2026{n:06d}.json" for n in range(500)] + [f"/probe/{n}" for n in range(500)]
    samples = scrape(pipeline, *paths)
    assert len(samples) == len(first)   # the same series, counted on
    assert requests_of(samples)[("(unmatched)", "GET", "4xx")] - requests_of(first)[("(unmatched)", "GET", "4xx")] == 500
    text = repr(samples)
    assert "GW2026000123" not in text and "/probe/" not in text
