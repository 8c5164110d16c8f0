"""NGSI-LD (ETSI GS CIM 009) over HTTP: sensor observations as linked-data entities.

  POST /ngsi-ld/v1/entities                    one entity; 201 with its Location, or the problems
  POST /ngsi-ld/v1/entityOperations/upsert     a batch, entity by entity (BatchOperationResult)

Errors are RFC 7807 ProblemDetails with the standard's error types. Entities are mapped to
keyValues by ``citybrain.gateway.fiware`` and checked by the shared pipeline.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from citybrain.gateway.fiware import ld_term, ld_to_key_values
from citybrain.gateway.open311 import EdgeError
from citybrain.gateway.pipeline import (LINT_HEADER, EntityMapper, EntityRoutes, ngsi_options, read_json,
                                        readable_json)
from citybrain.contracts.topics import INGEST_DEAD_LETTERS as DLQ_TOPIC

__all__ = ["LD_ERRORS", "NgsiLdRoutes", "ld_error"]

LD_ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
#: The ``?options=`` and ``?format=`` values an NGSI-LD write may come with.
OPTIONS = {"keyValues", "simplified", "concise", "normalized", "update", "replace"}


def ld_error(status: int, kind: str, detail: str, errors: list[dict[str, Any]] | None = None) -> web.Response:
    """An NGSI-LD error: RFC 7807 ProblemDetails with the standard's error type."""
    body: dict[str, Any] = {"type": LD_ERRORS + kind, "title": kind, "detail": detail}
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=status, content_type="application/json", dumps=readable_json)


def _plain(entity: Any) -> tuple[dict[str, Any] | None, list[EdgeError]]:
    """A concise (keyValues) NGSI-LD entity: its terms without the @context."""
    if not isinstance(entity, dict):
        return ld_to_key_values(entity)
    return {ld_term(k): (ld_term(v) if k == "type" else v) for k, v in entity.items() if k != "@context"}, []


def mapper_for(request: web.Request) -> EntityMapper:
    """The entity mapper the request's representation asks for: normalized (the default) or concise."""
    concise = ({"keyValues", "simplified", "concise"} & ngsi_options(request)) or \
        request.query.get("format") in ("simplified", "concise")
    return _plain if concise else ld_to_key_values


class NgsiLdRoutes(EntityRoutes):
    """NGSI-LD handlers over the shared pipeline."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/ngsi-ld/v1/entities", self.post_entity),
                web.post("/ngsi-ld/v1/entityOperations/upsert", self.post_upsert)]

    async def _body(self, request: web.Request, partner: str) -> tuple[Any, web.Response | None]:
        """The body of an NGSI-LD request: application/ld+json with its @context in the body, or application/json
        without one (the context, if any, in a Link header)."""
        options = ngsi_options(request) | set(filter(None, request.query.get("format", "").split(",")))
        if options - OPTIONS:
            return None, ld_error(400, "BadRequestData", f"options {', '.join(sorted(options))} not supported")
        if request.content_type not in ("application/ld+json", "application/json"):
            return None, ld_error(415, "UnsupportedMediaType", f"Content-Type {request.content_type or '(none)'} is not "
                                  "accepted; send application/ld+json (with @context) or application/json")
        body, malformed = await read_json(request)
        if malformed:
            await self.pipeline.dead_letter_body(request, "ngsi-ld:(body)", f"ngsi-ld:{partner}", partner, malformed)
            return None, ld_error(400, "InvalidRequest", f"{malformed.message}; the body was dead-lettered to "
                                  f"{DLQ_TOPIC}", [EdgeError(400, malformed.message, "(body)", malformed.rule).as_dict()])
        entities = body if isinstance(body, list) else [body]
        with_context = [isinstance(e, dict) and "@context" in e for e in entities]
        if request.content_type == "application/ld+json" and not all(with_context):
            return None, ld_error(400, "BadRequestData", "an application/ld+json entity must carry its @context; "
                                  "add it, or send application/json with the context in a Link header")
        if request.content_type == "application/json" and any(with_context):
            return None, ld_error(400, "BadRequestData", "an application/json entity must not carry @context; send "
                                  "it as application/ld+json, or move the context into a Link header")
        return body, None

    async def post_entity(self, request: web.Request) -> web.Response:
        """``POST /ngsi-ld/v1/entities``: one entity; 201 with its Location, or the problems."""
        pipeline = self.pipeline
        partner, entity, refused = await self.admit(request)
        if refused:
            return refused
        if isinstance(entity, list):
            return ld_error(400, "BadRequestData", "POST /ngsi-ld/v1/entities takes one entity; send arrays to "
                            "/ngsi-ld/v1/entityOperations/upsert")
        limited = pipeline.limit_partner(request, partner, 1)
        if limited:
            return limited
        result, item, unroutable = pipeline.check_entity(entity, 0, f"ngsi-ld:{partner}", f"gateway.{partner}",
                                                         mapper=mapper_for(request))
        await pipeline.produce([item] if item else [], [unroutable] if unroutable else [])
        if result["status"] == "accepted":
            return web.Response(status=201, headers={"Location": f"/ngsi-ld/v1/entities/{result['id']}",
                                                     LINT_HEADER: str(len(result.get("warnings", [])))})
        return ld_error(400, "BadRequestData", f"the entity was refused ({len(result['errors'])} problem(s)) and "
                        f"dead-lettered to {DLQ_TOPIC}", result["errors"])

    async def post_upsert(self, request: web.Request) -> web.Response:
        """``POST /ngsi-ld/v1/entityOperations/upsert``: entity by entity; 201 with the ids when all were taken,
        else 207 with the standard's BatchOperationResult (success ids, errors per entity)."""
        pipeline = self.pipeline
        partner, body, refused = await self.admit(request)
        if refused:
            return refused
        if not isinstance(body, list) or not body:
            return ld_error(400, "BadRequestData", "the body must be a non-empty JSON array of entities")
        max_batch = pipeline.settings.gateway_max_batch
        if len(body) > max_batch:
            return ld_error(413, "RequestEntityTooLarge", f"a batch may hold at most {max_batch} "
                            f"entities, this one has {len(body)} (CITYBRAIN_GATEWAY_MAX_BATCH); split it")
        limited = pipeline.limit_partner(request, partner, len(body))
        if limited:
            return limited
        mapper, success, failed, items, unroutable = mapper_for(request), [], [], [], []
        warnings: list[dict[str, Any]] = []
        for i, entity in enumerate(body):
            result, item, dead = pipeline.check_entity(entity, i, f"ngsi-ld:{partner}", f"gateway.{partner}",
                                                       mapper=mapper)
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
        await pipeline.produce(items, unroutable)
        lint_header = {LINT_HEADER: str(len(warnings))}
        if not failed:
            return web.json_response(success, status=201, headers=lint_header)
        return web.json_response({"success": success, "errors": failed, "warnings": warnings,
                                  "dead_letter_topic": DLQ_TOPIC}, status=207, headers=lint_header,
                                 dumps=readable_json)
