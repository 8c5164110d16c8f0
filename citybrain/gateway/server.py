"""`citybrain gateway`: the HTTP edge for partner systems and IoT gateways (aiohttp).

Routes:
  GET  /open311/v2/services.json               the hotline's services (GeoReport v2)
  GET  /open311/v2/services/{code}.json        one service's definition
  POST /open311/v2/requests.json               submit a service request (form or JSON)
  GET  /open311/v2/requests.json               requests, filtered as GeoReport v2 says
  GET  /open311/v2/requests/{id}.json          one request, status as the platform knows it
  POST /v2/entities[?options=keyValues]        one FIWARE entity (sensor observation), normalized or keyValues
  POST /v2/op/update[?options=keyValues]       a batch of entities, accepted record by record
  GET  /health                                 broker connection and request-book state

Every record the gateway takes ends on its topic or in the dead-letter topic. A request it
refuses as a whole (malformed body, bad key, too large, too many, too fast) writes nothing
and says why; the caller keeps the data and may retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import Rejection
from citybrain.gateway.book import RequestBook
from citybrain.gateway.fiware import batch_entities, contract_for, ld_term, ld_to_key_values, to_key_values
from citybrain.gateway.lint import LintWarning, lint, lint_ld
from citybrain.gateway.units import apply_units, unit_codes
from citybrain.gateway.open311 import PARAM_OF_FIELD, Catalogue, EdgeError, public_view, received_event, request_record, service_definition, services
from citybrain.ingest.producer import DLQ_TOPIC, DeliveryError, ValidatedProducer
from citybrain.ingest.readers import RawRecord
from citybrain.settings import Settings, api_keys
from citybrain.times import parse_time

log = logging.getLogger(__name__)

NO_CITY = ("no city has been imported on this broker, so the gateway knows no jurisdiction, services or areas. "
           "Fix: `citybrain city import PACK` (the demo imports the simulated city's pack); the gateway picks it up "
           "without a restart.")
MAX_RESULTS = 1000


class TokenBuckets:
    """Per-client rate limits: ``rate`` records a second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str, n: int = 1) -> float:
        """0 when ``n`` tokens were taken, else the seconds to wait before retrying."""
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if n > self.burst:
            return -1.0
        if tokens >= n:
            self._buckets[client] = (tokens - n, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (n - tokens) / self.rate


def _open311_error(status: int, errors: list[EdgeError], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response([e.as_dict() for e in errors], status=status, headers=headers,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _ngsi_error(status: int, kind: str, description: str, errors: list[EdgeError] | None = None,
                headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": kind, "description": description}
    if errors:
        body["errors"] = [e.as_dict() for e in errors]
    return web.json_response(body, status=status, headers=headers, dumps=lambda v: json.dumps(v, ensure_ascii=False))


LD_ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
#: How many of the models' known defects the gateway corrected in a request (citybrain.gateway.lint).
LINT_HEADER = "X-CityBrain-Lint-Warnings"


def _ld_error(status: int, kind: str, detail: str, errors: list[dict[str, Any]] | None = None) -> web.Response:
    """An NGSI-LD error: RFC 7807 ProblemDetails with the standard's error type."""
    body: dict[str, Any] = {"type": LD_ERRORS + kind, "title": kind, "detail": detail}
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=status, content_type="application/json",
                             dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _is_open311(request: web.Request) -> bool:
    return request.path.startswith("/open311/")


def _refusal(request: web.Request, status: int, description: str, field: str = "", rule: str = "",
             headers: dict[str, str] | None = None) -> web.Response:
    if _is_open311(request):
        return _open311_error(status, [EdgeError(status, description, field, rule)], headers)
    kind = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed", 406: "NotAcceptable",
            413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 429: "TooManyRequests",
            503: "ServiceUnavailable"}.get(status, "Error")
    return _ngsi_error(status, kind, description, headers=headers)


class Gateway:
    """The application: shared producer, request book, limits, and the handlers."""

    def __init__(self, settings: Settings, contracts: dict[str, Contract]) -> None:
        self.settings = settings
        self.contracts = {c.id: c for c in contracts.values()}
        self.keys = api_keys(settings)
        self.buckets = TokenBuckets(settings.gateway_rate_per_s, settings.gateway_burst)
        self.in_flight = asyncio.Semaphore(settings.gateway_max_in_flight)
        self.producer: ValidatedProducer | None = None
        self.book = RequestBook(settings)
        self.counts = {"accepted": 0, "dead_lettered": 0, "refused": 0}
        #: Known model defects corrected in accepted records, by lint rule (also a lint-rules header on each record).
        self.lint_counts: Counter[str] = Counter()

    # -- wiring --------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.gateway_max_body_bytes,
                              middlewares=[self._errors])
        app.router.add_get("/health", self.health)
        app.router.add_get("/open311/v2/services.json", self.list_services)
        app.router.add_get("/open311/v2/services/{code}.json", self.get_service)
        app.router.add_post("/open311/v2/requests.json", self.post_request)
        app.router.add_get("/open311/v2/requests.json", self.list_requests)
        app.router.add_get("/open311/v2/requests/{rid}.json", self.get_request)
        app.router.add_post("/v2/entities", self.post_entity)
        app.router.add_post("/v2/op/update", self.post_batch)
        app.router.add_post("/ngsi-ld/v1/entities", self.post_ld_entity)
        app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", self.post_ld_upsert)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self.producer = await loop.run_in_executor(None, lambda: ValidatedProducer(self.settings, "citybrain-gateway"))
        self.book.start()

    async def _cleanup(self, _app: web.Application) -> None:
        self.book.stop()
        if self.producer:
            await asyncio.get_running_loop().run_in_executor(None, self.producer.close)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            self.counts["refused"] += 1
            return _refusal(request, 413, f"the body is larger than {self.settings.gateway_max_body_bytes} bytes "
                                          "(CITYBRAIN_GATEWAY_MAX_BODY_BYTES); send smaller batches", "(body)", "too-large")
        except web.HTTPServiceUnavailable:
            self.counts["refused"] += 1
            return _refusal(request, 503, f"more than {self.settings.gateway_max_in_flight} writes are in flight "
                                          "(CITYBRAIN_GATEWAY_MAX_IN_FLIGHT); retry shortly", headers={"Retry-After": "1"})
        except web.HTTPNotFound:
            return _refusal(request, 404, f"no such resource: {request.method} {request.path} (see GET "
                                          "/open311/v2/services.json, POST /v2/entities, POST /v2/op/update)")
        except web.HTTPMethodNotAllowed as exc:
            return _refusal(request, 405, f"{request.method} is not allowed on {request.path}; allowed: "
                                          f"{', '.join(sorted(exc.allowed_methods))}")
        except DeliveryError as exc:
            log.error("broker did not acknowledge: %s", exc)
            return _refusal(request, 503, f"the platform could not store the records just now ({exc}); retry "
                                          "(records carry their ids, so a retry is safe)", headers={"Retry-After": "5"})

    # -- shared steps --------------------------------------------------------------------

    def _partner(self, request: web.Request, form: dict[str, Any] | None = None) -> tuple[str | None, web.Response | None]:
        """(partner, None) when the caller may write, else (None, a 403 response)."""
        if not self.keys:
            return "anonymous", None
        key = request.headers.get("X-Api-Key") or request.query.get("api_key") or (form or {}).get("api_key")
        partner = self.keys.get(str(key)) if key else None
        if partner is None:
            self.counts["refused"] += 1
            what = "no api_key was sent" if not key else "the api_key is not valid"
            return None, _refusal(request, 403, f"{what}; ask the city data office for a partner key and send it as "
                                                "api_key (or the X-Api-Key header)", "api_key", "required")
        return partner, None

    def _limit(self, request: web.Request, client: str, n: int) -> web.Response | None:
        wait = self.buckets.take(client, n)
        if wait == 0:
            return None
        self.counts["refused"] += 1
        if wait < 0:
            return _refusal(request, 413, f"{n} records in one request exceed the burst of {self.buckets.burst} "
                                          "(CITYBRAIN_GATEWAY_BURST); split it", "entities", "maxItems")
        return _refusal(request, 429, f"client {client} sends more than {self.buckets.rate:g} records/s "
                                      f"(burst {self.buckets.burst}); retry after {wait:.1f} s",
                        headers={"Retry-After": str(max(1, round(wait + 0.5)))})

    async def _produce(self, items: list[tuple[Contract, RawRecord]], unroutable: list[tuple[str, RawRecord, Rejection]]
                       ) -> None:
        """Send records (valid ones to their topics, invalid ones to the dead-letter topic) and wait for acks."""
        if self.in_flight.locked():
            raise web.HTTPServiceUnavailable()
        async with self.in_flight:
            loop = asyncio.get_running_loop()
            producer = self.producer
            assert producer is not None

            def work() -> None:
                if items:
                    summaries = producer.produce_many(items)
                    for s in summaries.values():
                        self.counts["accepted"] += s.accepted
                        self.counts["dead_lettered"] += s.dead_lettered
                for target, record, rejection in unroutable:
                    self.counts["dead_lettered"] += producer.dead_letter(target, [(record, rejection)])
            await loop.run_in_executor(None, work)

    # -- health --------------------------------------------------------------------------

    async def health(self, _request: web.Request) -> web.Response:
        catalogue = self.book.catalogue()
        return web.json_response({
            "jurisdiction_id": catalogue.jurisdiction_id if catalogue else None,
            "services": len(catalogue.services) if catalogue else 0,
            "status": "ok" if self.book.error is None else "degraded", "bootstrap": self.settings.bootstrap,
            "requests_known": len(self.book), "request_book_caught_up": self.book.caught_up.is_set(),
            "request_book_error": self.book.error, "areas_loaded": bool(self.book.index and self.book.index.areas),
            "counts": self.counts, "lint_warnings": dict(sorted(self.lint_counts.items())), "dead_letter_topic": DLQ_TOPIC,
        })

    # -- Open311 -------------------------------------------------------------------------

    def _catalogue(self, request: web.Request) -> tuple[Catalogue, None] | tuple[None, web.Response]:
        """The imported city's catalogue, or the 503 that says no city was imported yet."""
        catalogue = self.book.catalogue()
        if catalogue is None:
            return None, _refusal(request, 503, NO_CITY, rule="no-city", headers={"Retry-After": "30"})
        return catalogue, None

    async def list_services(self, request: web.Request) -> web.Response:
        catalogue, refused = self._catalogue(request)
        if refused:
            return refused
        return web.json_response(services(catalogue), dumps=lambda v: json.dumps(v, ensure_ascii=False))

    async def get_service(self, request: web.Request) -> web.Response:
        catalogue, refused = self._catalogue(request)
        if refused:
            return refused
        definition = service_definition(request.match_info["code"], catalogue)
        if definition is None:
            return _open311_error(404, [EdgeError(404, f"service_code {request.match_info['code']!r} not found",
                                                  "service_code", "enum")])
        return web.json_response(definition)

    async def post_request(self, request: web.Request) -> web.Response:
        body = await request.read()
        params, problem = await self._open311_params(request, body)
        if problem:
            return problem
        partner, denied = self._partner(request, params)
        if denied:
            return denied
        limited = self._limit(request, partner or request.remote or "?", 1)
        if limited:
            return limited
        contract = self.contracts["raw.hotline.service_request"]
        source = f"open311:{partner}"
        fields = {k: v for k, v in params.items() if k != "api_key"}
        catalogue, refused = self._catalogue(request)
        if refused:
            return refused
        record, errors = request_record(fields, partner or "anonymous", catalogue, self.book.index)
        producer_id = f"gateway.{partner}"
        if record is None:
            first = errors[0]
            raw = RawRecord(source, json.dumps(fields, ensure_ascii=False).encode(), producer=producer_id,
                            rejection=Rejection(first.rule or "invalid", first.field or "(record)", first.description))
            await self._produce([(contract, raw)], [])
            status = 404 if any(e.code == 404 for e in errors) else 400
            return _open311_error(status, errors)
        assert self.producer is not None
        problems = self.producer.validator(contract).explain_all(record) if self.producer.validator(contract)(record) else []
        items = [(contract, RawRecord(source, b"", value=record, producer=producer_id))]
        if problems:
            await self._produce(items, [])
            return _open311_error(400, [EdgeError.from_rejection(p, 400, PARAM_OF_FIELD) for p in problems])
        items.append((self.contracts["raw.hotline.ticket_event"],
                      RawRecord(source, b"", value=received_event(record), producer=producer_id)))
        await self._produce(items, [])
        self.book.put(record)
        reply: dict[str, Any] = {"service_request_id": record["service_request_id"],
                                 "service_notice": f"已受理，工单号 {record['service_request_id']}；"
                                                   "status at GET /open311/v2/requests/{id}.json"}
        if record.get("account_id"):
            reply["account_id"] = record["account_id"]
        return web.json_response([reply], status=201, dumps=lambda v: json.dumps(v, ensure_ascii=False))

    async def _open311_params(self, request: web.Request, body: bytes) -> tuple[dict[str, Any], web.Response | None]:
        ctype = request.content_type
        if ctype == "application/x-www-form-urlencoded" or ctype == "multipart/form-data":
            form = await request.post()
            params: dict[str, Any] = {}
            for k in form:
                values = form.getall(k)
                if len(values) > 1:
                    return {}, _open311_error(400, [EdgeError(400, f"parameter `{k}` is given {len(values)} times; "
                                                                   "send it once", k, "maxItems")])
                params[k] = values[0] if isinstance(values[0], str) else ""
            return params, None
        if ctype == "application/json":
            try:
                value = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                return {}, _open311_error(400, [EdgeError(400, f"malformed JSON body: {exc}", "(body)", "json-syntax")])
            if not isinstance(value, dict):
                return {}, _open311_error(400, [EdgeError(400, "the JSON body must be an object of GeoReport v2 "
                                                               "parameters", "(body)", "not-an-object")])
            return value, None
        return {}, _open311_error(415, [EdgeError(415, f"Content-Type {ctype or '(none)'} is not accepted; send "
                                                       "application/x-www-form-urlencoded (GeoReport v2) or "
                                                       "application/json", "(body)", "type")])

    async def list_requests(self, request: web.Request) -> web.Response:
        q = request.query
        errors: list[EdgeError] = []
        times = {}
        for name in ("start_date", "end_date"):
            if q.get(name):
                try:
                    times[name] = parse_time(q[name])
                except ValueError:
                    errors.append(EdgeError(400, f"{name} {q[name]!r} is not a W3C date-time, e.g. "
                                                 "2026-11-23T00:00:00Z", name, "format"))
        statuses = {s for s in q.get("status", "").split(",") if s}
        if statuses - {"open", "closed"}:
            errors.append(EdgeError(400, f"status must be open and/or closed, got {q['status']!r}", "status", "enum"))
        if errors:
            return _open311_error(400, errors)
        ids = {i for i in q.get("service_request_id", "").split(",") if i} or None
        codes = {c for c in q.get("service_code", "").split(",") if c} or None
        end = times.get("end_date")
        start = times.get("start_date")
        if ids is None and start is None:
            start = (end or datetime.now(timezone.utc)) - timedelta(days=90)   # GeoReport v2 default window
        found = self.book.query(ids, codes, statuses or None, start, end, MAX_RESULTS)
        catalogue = self.book.catalogue()
        return web.json_response([public_view(r, self.book.index, catalogue) for r in found],
                                 dumps=lambda v: json.dumps(v, ensure_ascii=False))

    async def get_request(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        state = self.book.get(rid)
        if state is None:
            return _open311_error(404, [EdgeError(404, f"service_request_id {rid!r} not found", "service_request_id",
                                                  "enum")])
        return web.json_response([public_view(state, self.book.index, self.book.catalogue())], dumps=lambda v: json.dumps(v, ensure_ascii=False))

    # -- FIWARE NGSI v2 ------------------------------------------------------------------

    @staticmethod
    def _options(request: web.Request) -> set[str]:
        return set(filter(None, request.query.get("options", "").split(",")))

    def _key_values(self, request: web.Request) -> bool:
        """NGSI v2: keyValues with ``options=keyValues``, else the normalized representation."""
        return "keyValues" in self._options(request)

    async def _ngsi_body(self, request: web.Request) -> tuple[Any, web.Response | None]:
        options = self._options(request)
        if options - {"keyValues", "upsert"}:
            return None, _ngsi_error(400, "BadRequest", f"options {', '.join(sorted(options - {'keyValues', 'upsert'}))} "
                                                        "not supported; send entities normalized (no options) or with "
                                                        "?options=keyValues")
        if request.content_type != "application/json":
            return None, _ngsi_error(415, "UnsupportedMediaType",
                                     f"Content-Type {request.content_type or '(none)'} is not accepted; send application/json")
        body = await request.read()
        try:
            return json.loads(body), None
        except (ValueError, UnicodeDecodeError) as exc:
            return None, _ngsi_error(400, "ParseError", f"malformed JSON body: {exc}")

    def _check_entity(self, entity: Any, index: int, source: str, producer: str, normalized: bool = False,
                      mapper: Callable[[Any], tuple[dict[str, Any] | None, list[EdgeError]]] | None = None,
                      ) -> tuple[dict[str, Any], tuple[Contract, RawRecord] | None, tuple[str, RawRecord, Rejection] | None]:
        """(per-record result, item to produce, or unroutable dead letter); a ``normalized`` entity (or one
        ``mapper`` maps, NGSI-LD's) is taken in its keyValues form, and dead-lettered as it was sent."""
        base = {"index": index, "id": entity.get("id") if isinstance(entity, dict) else None,
                "type": ld_term(entity.get("type")) if isinstance(entity, dict) else None}
        raw = json.dumps(entity, ensure_ascii=False).encode()
        codes = unit_codes(entity) if (mapper is not None or normalized) else {}
        contract_id, errors = None, []
        if mapper is None and normalized:
            mapper = to_key_values
        warnings: list[LintWarning] = []
        if mapper is ld_to_key_values:
            entity, warnings = lint_ld(entity)
        if mapper is not None:
            entity, errors = mapper(entity)
        if not errors:
            contract_id, errors = contract_for(entity)
        unit_problem = None
        if contract_id is not None and isinstance(entity, dict):
            props = self.contracts[contract_id].schema.get("properties", {})
            entity, more = lint(entity, props)
            warnings += more
            entity, more, unit_problem = apply_units(entity, codes, props)
            warnings += more
            if warnings:
                base["warnings"] = [w.as_dict() for w in warnings]
        if contract_id is None:
            first = errors[0]
            rejection = Rejection(first.rule, first.field, first.description)
            return ({**base, "status": "rejected", "errors": [e.as_dict() for e in errors]}, None,
                    (f"fiware:{base['type'] or 'unknown'}", RawRecord(source, raw, producer=producer), rejection))
        contract = self.contracts[contract_id]
        assert self.producer is not None
        validator = self.producer.validator(contract)
        item = (contract, RawRecord(f"{source}#{index}", raw, value=entity, producer=producer,
                                    lint=tuple(w.rule for w in warnings), rejection=unit_problem))
        if unit_problem is not None:
            return ({**base, "status": "rejected", "topic": contract.topic,
                     "errors": [EdgeError.from_rejection(unit_problem, 422).as_dict()]}, item, None)
        if validator(entity) is None:
            for w in warnings:
                self.lint_counts[w.rule] += 1
            return {**base, "status": "accepted", "topic": contract.topic}, item, None
        problems = validator.explain_all(entity)
        return ({**base, "status": "rejected", "topic": contract.topic,
                 "errors": [EdgeError.from_rejection(p, 422).as_dict() for p in problems]}, item, None)

    async def post_entity(self, request: web.Request) -> web.Response:
        partner, denied = self._partner(request)
        if denied:
            return denied
        entity, problem = await self._ngsi_body(request)
        if problem:
            return problem
        limited = self._limit(request, partner or request.remote or "?", 1)
        if limited:
            return limited
        result, item, unroutable = self._check_entity(entity, 0, f"fiware:{partner}", f"gateway.{partner}",
                                                      normalized=not self._key_values(request))
        await self._produce([item] if item else [], [unroutable] if unroutable else [])
        if result["status"] == "accepted":
            return web.Response(status=201, headers={"Location": f"/v2/entities/{result['id']}?type={result['type']}",
                                                     LINT_HEADER: str(len(result.get("warnings", [])))})
        errors = [EdgeError(e["code"], e["description"], e.get("field", ""), e.get("rule", "")) for e in result["errors"]]
        status = 400 if any(e.code == 400 for e in errors) else 422
        return _ngsi_error(status, "BadRequest" if status == 400 else "Unprocessable",
                           f"the entity was refused ({len(errors)} problem(s)) and dead-lettered to {DLQ_TOPIC}", errors)

    async def post_batch(self, request: web.Request) -> web.Response:
        partner, denied = self._partner(request)
        if denied:
            return denied
        body, problem = await self._ngsi_body(request)
        if problem:
            return problem
        entities, error = batch_entities(body, self.settings.gateway_max_batch)
        if error:
            self.counts["refused"] += 1
            return _ngsi_error(error.code, "RequestEntityTooLarge" if error.code == 413 else "BadRequest",
                               error.description, [error])
        assert entities is not None
        limited = self._limit(request, partner or request.remote or "?", len(entities))
        if limited:
            return limited
        results, items, unroutable = [], [], []
        for i, entity in enumerate(entities):
            result, item, dead = self._check_entity(entity, i, f"fiware:{partner}", f"gateway.{partner}",
                                                    normalized=not self._key_values(request))
            results.append(result)
            if item:
                items.append(item)
            if dead:
                unroutable.append(dead)
        await self._produce(items, unroutable)
        accepted = sum(r["status"] == "accepted" for r in results)
        status = 200 if accepted == len(results) else 422 if accepted == 0 else 207
        return web.json_response({"accepted": accepted, "rejected": len(results) - accepted,
                                  "dead_letter_topic": DLQ_TOPIC, "results": results}, status=status,
                                 headers={LINT_HEADER: str(sum(len(r.get("warnings", [])) for r in results))},
                                 dumps=lambda v: json.dumps(v, ensure_ascii=False))


    # -- NGSI-LD (ETSI GS CIM 009) ------------------------------------------------------------

    async def _ld_body(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """The body of an NGSI-LD request: application/ld+json with its @context in the body, or application/json
        without one (the context, if any, in a Link header)."""
        options = self._options(request) | set(filter(None, request.query.get("format", "").split(",")))
        if options - {"keyValues", "simplified", "concise", "normalized", "update", "replace"}:
            return None, _ld_error(400, "BadRequestData", f"options {', '.join(sorted(options))} not supported")
        if request.content_type not in ("application/ld+json", "application/json"):
            return None, _ld_error(415, "UnsupportedMediaType", f"Content-Type {request.content_type or '(none)'} is not "
                                   "accepted; send application/ld+json (with @context) or application/json")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            return None, _ld_error(400, "InvalidRequest", f"malformed JSON body: {exc}")
        entities = body if isinstance(body, list) else [body]
        with_context = [isinstance(e, dict) and "@context" in e for e in entities]
        if request.content_type == "application/ld+json" and not all(with_context):
            return None, _ld_error(400, "BadRequestData", "an application/ld+json entity must carry its @context; "
                                   "add it, or send application/json with the context in a Link header")
        if request.content_type == "application/json" and any(with_context):
            return None, _ld_error(400, "BadRequestData", "an application/json entity must not carry @context; send "
                                   "it as application/ld+json, or move the context into a Link header")
        return body, None

    def _ld_mapper(self, request: web.Request) -> Callable[[Any], tuple[dict[str, Any] | None, list[EdgeError]]]:
        concise = ({"keyValues", "simplified", "concise"} & self._options(request)) or \
            request.query.get("format") in ("simplified", "concise")
        if not concise:
            return ld_to_key_values

        def plain(entity: Any) -> tuple[dict[str, Any] | None, list[EdgeError]]:
            if not isinstance(entity, dict):
                return ld_to_key_values(entity)
            return {ld_term(k): (ld_term(v) if k == "type" else v) for k, v in entity.items() if k != "@context"}, []
        return plain

    async def post_ld_entity(self, request: web.Request) -> web.Response:
        """``POST /ngsi-ld/v1/entities``: one entity; 201 with its Location, or the problems."""
        partner, denied = self._partner(request)
        if denied:
            return denied
        entity, problem = await self._ld_body(request)
        if problem:
            return problem
        if isinstance(entity, list):
            return _ld_error(400, "BadRequestData", "POST /ngsi-ld/v1/entities takes one entity; send arrays to "
                             "/ngsi-ld/v1/entityOperations/upsert")
        limited = self._limit(request, partner or request.remote or "?", 1)
        if limited:
            return limited
        result, item, unroutable = self._check_entity(entity, 0, f"ngsi-ld:{partner}", f"gateway.{partner}",
                                                      mapper=self._ld_mapper(request))
        await self._produce([item] if item else [], [unroutable] if unroutable else [])
        if result["status"] == "accepted":
            return web.Response(status=201, headers={"Location": f"/ngsi-ld/v1/entities/{result['id']}",
                                                     LINT_HEADER: str(len(result.get("warnings", [])))})
        return _ld_error(400, "BadRequestData", f"the entity was refused ({len(result['errors'])} problem(s)) and "
                         f"dead-lettered to {DLQ_TOPIC}", result["errors"])

    async def post_ld_upsert(self, request: web.Request) -> web.Response:
        """``POST /ngsi-ld/v1/entityOperations/upsert``: entity by entity; 201 with the ids when all were taken,
        else 207 with the standard's BatchOperationResult (success ids, errors per entity)."""
        partner, denied = self._partner(request)
        if denied:
            return denied
        body, problem = await self._ld_body(request)
        if problem:
            return problem
        if not isinstance(body, list) or not body:
            return _ld_error(400, "BadRequestData", "the body must be a non-empty JSON array of entities")
        if len(body) > self.settings.gateway_max_batch:
            return _ld_error(413, "RequestEntityTooLarge", f"a batch may hold at most {self.settings.gateway_max_batch} "
                             f"entities, this one has {len(body)} (CITYBRAIN_GATEWAY_MAX_BATCH); split it")
        limited = self._limit(request, partner or request.remote or "?", len(body))
        if limited:
            return limited
        mapper, success, failed, items, unroutable = self._ld_mapper(request), [], [], [], []
        warnings: list[dict[str, Any]] = []
        for i, entity in enumerate(body):
            result, item, dead = self._check_entity(entity, i, f"ngsi-ld:{partner}", f"gateway.{partner}", mapper=mapper)
            warnings += [{"entityId": result["id"], **w} for w in result.get("warnings", [])]
            if item:
                items.append(item)
            if dead:
                unroutable.append(dead)
            if result["status"] == "accepted":
                success.append(result["id"])
            else:
                failed.append({"entityId": result["id"], "index": i, "error": {
                    "type": f"{LD_ERRORS}BadRequestData", "title": "the entity was refused and dead-lettered",
                    "detail": "; ".join(e["description"] for e in result["errors"])[:2000], "errors": result["errors"]}})
        await self._produce(items, unroutable)
        lint_header = {LINT_HEADER: str(len(warnings))}
        if not failed:
            return web.json_response(success, status=201, headers=lint_header)
        return web.json_response({"success": success, "errors": failed, "warnings": warnings,
                                  "dead_letter_topic": DLQ_TOPIC}, status=207, headers=lint_header,
                                 dumps=lambda v: json.dumps(v, ensure_ascii=False))


def run_gateway(settings: Settings, contracts: dict[str, Contract], host: str, port: int) -> None:
    """Serve until interrupted."""
    gateway = Gateway(settings, contracts)
    web.run_app(gateway.app(), host=host, port=port, print=None, access_log=None)
