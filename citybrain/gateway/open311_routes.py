"""Open311 GeoReport v2 over HTTP: the hotline's services and its service requests.

  GET  /open311/v2/services.json               the hotline's services
  GET  /open311/v2/services/{code}.json        one service's definition
  POST /open311/v2/requests.json               submit a service request (form or JSON); with an Idempotency-Key
                                               header (or idempotency_key field) a retry answers the first ticket
  GET  /open311/v2/requests.json               requests, filtered as GeoReport v2 says
  GET  /open311/v2/requests/{rid}.json         one request, status as the platform knows it

The handlers only speak HTTP; what the parameters mean is ``citybrain.gateway.open311``'s.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.contracts.topics import contract_id
from citybrain.contracts.validate import Rejection
from citybrain.gateway.open311 import (FALLBACK_LANGUAGE, MESSAGES, PARAM_OF_FIELD, Catalogue, EdgeError, public_view,
                                       received_event, request_record, service_definition, services)
from citybrain.gateway.idempotency import HEADER, PARAM, Attempt, fingerprint, idempotency_key
from citybrain.gateway.pipeline import RequestPipeline, open311_error, read_json, readable_json, refusal
from citybrain.ingest.readers import RawRecord
from citybrain.ingest.strict_json import JsonRefused, dumps_escaped, find_problem
from citybrain.times import parse_time

__all__ = ["MAX_RESULTS", "NO_CITY", "Open311Routes"]

NO_CITY = ("no city has been imported on this broker, so the gateway knows no jurisdiction, services or areas. "
           "Fix: `citybrain city import PACK` (the demo imports the simulated city's pack); the gateway picks it up "
           "without a restart.")
#: The most requests one ``GET requests.json`` returns.
MAX_RESULTS = 1000


class Open311Routes:
    """GeoReport v2 handlers over the shared pipeline and its request book."""

    def __init__(self, pipeline: RequestPipeline) -> None:
        self.pipeline = pipeline

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/open311/v2/services.json", self.list_services),
            web.get("/open311/v2/services/{code}.json", self.get_service),
            web.post("/open311/v2/requests.json", self.post_request),
            web.get("/open311/v2/requests.json", self.list_requests),
            web.get("/open311/v2/requests/{rid}.json", self.get_request),
        ]

    def _catalogue(self, request: web.Request) -> tuple[Catalogue, None] | tuple[None, web.Response]:
        """The imported city's catalogue, or the 503 that says no city was imported yet."""
        catalogue = self.pipeline.book.catalogue()
        if catalogue is None:
            return None, refusal(request, 503, NO_CITY, rule="no-city", headers={"Retry-After": "30"})
        return catalogue, None

    async def list_services(self, request: web.Request) -> web.Response:
        catalogue, refused = self._catalogue(request)
        if refused:
            return refused
        return web.json_response(services(catalogue), dumps=readable_json)

    async def get_service(self, request: web.Request) -> web.Response:
        catalogue, refused = self._catalogue(request)
        if refused:
            return refused
        definition = service_definition(request.match_info["code"], catalogue)
        if definition is None:
            return open311_error(404, [EdgeError(404, f"service_code {request.match_info['code']!r} not found",
                                                 "service_code", "enum")])
        return web.json_response(definition)

    async def post_request(self, request: web.Request) -> web.Response:
        """A service request: its record and the "received" ticket event written, or every problem named.

        With an Idempotency-Key, a retry of a request already answered gets the first ticket back
        (citybrain.gateway.idempotency)."""
        pipeline = self.pipeline
        await request.read()   # the body's size limit applies before its Content-Type is looked at
        contract = pipeline.contracts[contract_id(topics.SERVICE_REQUESTS)]
        params, problem = await self._params(request, contract)
        if problem:
            return problem
        partner, denied = pipeline.partner(request, params)
        if denied:
            return denied
        assert partner is not None
        limited = pipeline.limit_partner(request, partner, 1)
        if limited:
            return limited
        source, producer_id = f"open311:{partner}", f"gateway.{partner}"
        fields = {k: v for k, v in params.items() if k not in ("api_key", PARAM)}
        poison = find_problem(params, pipeline.settings.json_max_depth)
        key, bad_key = idempotency_key(request.headers, params)
        if poison is not None or bad_key is not None:
            error = bad_key or EdgeError.from_rejection(poison.rejection(), 400, PARAM_OF_FIELD)  # type: ignore[union-attr]
            return await self._refuse(contract, source, producer_id, fields, [error])
        attempt = pipeline.attempts.get(partner, key) if key else None
        if attempt is not None:
            replay = self._replay(request, attempt, fields)
            if replay is not None:
                return replay
            record = attempt.record   # the first attempt was not stored: the same record, the same ticket id
        else:
            catalogue, refused = self._catalogue(request)
            if refused:
                return refused
            record, errors = request_record(fields, partner, catalogue, pipeline.book.index)
            if record is None:
                return await self._refuse(contract, source, producer_id, fields, errors)
            assert pipeline.producer is not None
            validator = pipeline.producer.validator(contract)
            problems = validator.explain_all(record) if validator(record) else []
            if problems:
                await pipeline.produce([(contract, RawRecord(source, b"", value=record, producer=producer_id))], [])
                return open311_error(400, [EdgeError.from_rejection(p, 400, PARAM_OF_FIELD) for p in problems])
            if key:
                attempt = Attempt(fingerprint(fields), record)
                pipeline.attempts.put(partner, key, attempt)
        items = [(contract, RawRecord(source, b"", value=record, producer=producer_id)),
                 (pipeline.contracts[contract_id(topics.TICKET_EVENTS)],
                  RawRecord(source, b"", value=received_event(record), producer=producer_id))]
        if attempt is not None:
            attempt.busy = True
        try:
            await pipeline.produce(items, [])
        finally:
            if attempt is not None:
                attempt.busy = False
        pipeline.book.put(record)
        catalogue = pipeline.book.catalogue()
        messages = catalogue.messages if catalogue is not None else MESSAGES[FALLBACK_LANGUAGE]
        reply: dict[str, Any] = {"service_request_id": record["service_request_id"],
                                 "service_notice": messages["received"].format(rid=record["service_request_id"])}
        if record.get("account_id"):
            reply["account_id"] = record["account_id"]
        if attempt is not None:
            attempt.reply = [reply]
        return web.json_response([reply], status=201, dumps=readable_json)

    def _replay(self, request: web.Request, attempt: Attempt, fields: dict[str, Any]) -> web.Response | None:
        """The answer to a keyed request seen before: the first ticket, or why the key cannot be used now; None
        when the first attempt was not stored and its record is to be sent again."""
        if attempt.fingerprint != fingerprint(fields):
            return open311_error(422, [EdgeError(422, f"this {HEADER} was first sent with other parameters; send a "
                                                      "new key for a new request", HEADER, "idempotency-key")])
        if attempt.busy:
            return open311_error(409, [EdgeError(409, f"the first request with this {HEADER} is still being "
                                                      "written; retry in a second", HEADER, "idempotency-key")],
                                 headers={"Retry-After": "1"})
        if attempt.reply is not None:
            return web.json_response(attempt.reply, status=201, dumps=readable_json,
                                     headers={"Idempotent-Replayed": "true"})
        return None

    async def _refuse(self, contract: Contract, source: str, producer_id: str, fields: dict[str, Any],
                      errors: list[EdgeError]) -> web.Response:
        """A request refused for what it holds: dead-lettered (as sent) with its first problem, every problem named."""
        first = errors[0]
        raw = RawRecord(source, dumps_escaped(fields), producer=producer_id,
                        rejection=Rejection(first.rule or "invalid", first.field or "(record)", first.description))
        await self.pipeline.produce([(contract, raw)], [])
        status = 404 if any(e.code == 404 for e in errors) else 400
        return open311_error(status, errors)

    async def _params(self, request: web.Request, contract: Contract) -> tuple[dict[str, Any], web.Response | None]:
        """The request's parameters, form-encoded as GeoReport v2 says, or a JSON object.

        A body that cannot be read is refused, and dead-lettered when the header or query names a known partner."""
        ctype = request.content_type
        if ctype == "application/x-www-form-urlencoded" or ctype == "multipart/form-data":
            try:
                form = await request.post()
            except UnicodeDecodeError as exc:
                return {}, await self._unreadable(request, contract, JsonRefused(
                    "encoding", f"the form is not UTF-8 ({exc.reason} at byte {exc.start}); send it UTF-8 encoded"))
            params: dict[str, Any] = {}
            for k in form:
                values = form.getall(k)
                if len(values) > 1:
                    return {}, open311_error(400, [EdgeError(400, f"parameter `{k}` is given {len(values)} times; "
                                                                  "send it once", k, "maxItems")])
                params[k] = values[0] if isinstance(values[0], str) else ""
            return params, None
        if ctype == "application/json":
            value, malformed = await read_json(request)
            if malformed:
                return {}, await self._unreadable(request, contract, malformed)
            if not isinstance(value, dict):
                return {}, open311_error(400, [EdgeError(400, "the JSON body must be an object of GeoReport v2 "
                                                              "parameters", "(body)", "not-an-object")])
            return value, None
        return {}, open311_error(415, [EdgeError(415, f"Content-Type {ctype or '(none)'} is not accepted; send "
                                                      "application/x-www-form-urlencoded (GeoReport v2) or "
                                                      "application/json", "(body)", "type")])

    async def _unreadable(self, request: web.Request, contract: Contract, problem: JsonRefused) -> web.Response:
        """The 400 for a body that cannot be read, dead-lettered when the header or query names a known partner."""
        partner = self.pipeline.known_partner(request)
        await self.pipeline.dead_letter_body(request, contract.topic, f"open311:{partner}", partner, problem)
        return open311_error(400, [EdgeError(400, problem.message, "(body)", problem.rule)])

    async def list_requests(self, request: web.Request) -> web.Response:
        """Requests as the public may see them (:func:`public_view`), at most as often as a client may read."""
        limited = self.pipeline.limit_reads(request)
        if limited:
            return limited
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
            return open311_error(400, errors)
        ids = {i for i in q.get("service_request_id", "").split(",") if i} or None
        codes = {c for c in q.get("service_code", "").split(",") if c} or None
        end = times.get("end_date")
        start = times.get("start_date")
        if ids is None and start is None:
            start = (end or datetime.now(timezone.utc)) - timedelta(days=90)   # GeoReport v2 default window
        book = self.pipeline.book
        found = book.query(ids, codes, statuses or None, start, end, MAX_RESULTS)
        catalogue = book.catalogue()
        return web.json_response([public_view(r, book.index, catalogue) for r in found], dumps=readable_json)

    async def get_request(self, request: web.Request) -> web.Response:
        limited = self.pipeline.limit_reads(request)
        if limited:
            return limited
        rid = request.match_info["rid"]
        book = self.pipeline.book
        state = book.get(rid)
        if state is None:
            return open311_error(404, [EdgeError(404, f"service_request_id {rid!r} not found", "service_request_id",
                                                 "enum")])
        return web.json_response([public_view(state, book.index, book.catalogue())], dumps=readable_json)
