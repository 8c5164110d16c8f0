"""FIWARE NGSI v2 over HTTP: sensor observations as Smart Data Models entities.

  POST /v2/entities[?options=keyValues]        one entity, normalized or keyValues
  POST /v2/op/update[?options=keyValues]       a batch of entities, accepted record by record

What an entity means for a contract is ``citybrain.gateway.fiware``'s; the check and the
writes are the shared pipeline's (``RequestPipeline.check_entity``, ``produce``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from citybrain.gateway.fiware import batch_entities
from citybrain.gateway.open311 import EdgeError
from citybrain.gateway.pipeline import LINT_HEADER, EntityRoutes, ngsi_error, ngsi_options, read_json, readable_json
from citybrain.contracts.topics import INGEST_DEAD_LETTERS as DLQ_TOPIC
from citybrain.ingest.strict_json import envelope_problem

__all__ = ["NgsiV2Routes"]

#: The ``?options=`` NGSI v2 entities may come with.
OPTIONS = {"keyValues", "upsert"}


def key_values(request: web.Request) -> bool:
    """NGSI v2: keyValues with ``options=keyValues``, else the normalized representation."""
    return "keyValues" in ngsi_options(request)


class NgsiV2Routes(EntityRoutes):
    """NGSI v2 handlers over the shared pipeline."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v2/entities", self.post_entity), web.post("/v2/op/update", self.post_batch)]

    async def _body(self, request: web.Request, partner: str) -> tuple[Any, web.Response | None]:
        """The JSON body of an NGSI v2 write, or the 400/415 that says what is wrong with it."""
        options = ngsi_options(request)
        if options - OPTIONS:
            return None, ngsi_error(400, "BadRequest", f"options {', '.join(sorted(options - OPTIONS))} "
                                                       "not supported; send entities normalized (no options) or with "
                                                       "?options=keyValues")
        if request.content_type != "application/json":
            return None, ngsi_error(415, "UnsupportedMediaType",
                                    f"Content-Type {request.content_type or '(none)'} is not accepted; send application/json")
        body, malformed = await read_json(request)
        if malformed:
            await self.pipeline.dead_letter_body(request, "fiware:(body)", f"fiware:{partner}", partner, malformed)
            return None, ngsi_error(400, "ParseError", f"{malformed.message}; the body was dead-lettered to "
                                                       f"{DLQ_TOPIC}", [EdgeError(400, malformed.message, "(body)",
                                                                                  malformed.rule)])
        return body, None

    async def post_entity(self, request: web.Request) -> web.Response:
        """``POST /v2/entities``: one entity; 201 with its Location, or the problems (the entity dead-lettered)."""
        pipeline = self.pipeline
        partner, entity, refused = await self.admit(request)
        if refused:
            return refused
        limited = pipeline.limit_partner(request, partner, 1)
        if limited:
            return limited
        result, item, unroutable = pipeline.check_entity(entity, 0, f"fiware:{partner}", f"gateway.{partner}",
                                                         normalized=not key_values(request))
        await pipeline.produce([item] if item else [], [unroutable] if unroutable else [])
        if result["status"] == "accepted":
            return web.Response(status=201, headers={"Location": f"/v2/entities/{result['id']}?type={result['type']}",
                                                     LINT_HEADER: str(len(result.get("warnings", [])))})
        errors = [EdgeError(e["code"], e["description"], e.get("field", ""), e.get("rule", "")) for e in result["errors"]]
        status = 400 if any(e.code == 400 for e in errors) else 422
        return ngsi_error(status, "BadRequest" if status == 400 else "Unprocessable",
                          f"the entity was refused ({len(errors)} problem(s)) and dead-lettered to {DLQ_TOPIC}", errors)

    async def post_batch(self, request: web.Request) -> web.Response:
        """``POST /v2/op/update``: entity by entity; 200 when all were taken, 207 when some, 422 when none."""
        pipeline = self.pipeline
        partner, body, refused = await self.admit(request)
        if refused:
            return refused
        entities, error = batch_entities(body, pipeline.settings.gateway_max_batch)
        envelope = envelope_problem(body, "entities", pipeline.settings.json_max_depth) if entities else None
        if envelope is not None:
            error = EdgeError.from_rejection(envelope.rejection(), 400)
            await pipeline.dead_letter_body(request, "fiware:(body)", f"fiware:{partner}", partner, envelope)
        if error:
            pipeline.counts["refused"] += 1
            return ngsi_error(error.code, "RequestEntityTooLarge" if error.code == 413 else "BadRequest",
                              error.description, [error])
        assert entities is not None
        limited = pipeline.limit_partner(request, partner, len(entities))
        if limited:
            return limited
        results, items, unroutable = [], [], []
        for i, entity in enumerate(entities):
            result, item, dead = pipeline.check_entity(entity, i, f"fiware:{partner}", f"gateway.{partner}",
                                                       normalized=not key_values(request))
            results.append(result)
            if item:
                items.append(item)
            if dead:
                unroutable.append(dead)
        await pipeline.produce(items, unroutable)
        accepted = sum(r["status"] == "accepted" for r in results)
        status = 200 if accepted == len(results) else 422 if accepted == 0 else 207
        return web.json_response({"accepted": accepted, "rejected": len(results) - accepted,
                                  "dead_letter_topic": DLQ_TOPIC, "results": results}, status=status,
                                 headers={LINT_HEADER: str(sum(len(r.get("warnings", [])) for r in results))},
                                 dumps=readable_json)
