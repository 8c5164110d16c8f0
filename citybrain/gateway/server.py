"""`citybrain gateway`: the HTTP edge for partner systems and IoT gateways (aiohttp).

Routes:
  GET  /open311/v2/services.json               the hotline's services (GeoReport v2)
  GET  /open311/v2/services/{code}.json        one service's definition
  POST /open311/v2/requests.json               submit a service request (form or JSON)
  GET  /open311/v2/requests.json               requests, filtered as GeoReport v2 says
  GET  /open311/v2/requests/{id}.json          one request, status as the platform knows it
  POST /v2/entities[?options=keyValues]        one FIWARE entity (sensor observation), normalized or keyValues
  POST /v2/op/update[?options=keyValues]       a batch of entities, accepted record by record
  POST /ngsi-ld/v1/entities                    one NGSI-LD entity
  POST /ngsi-ld/v1/entityOperations/upsert     a batch of NGSI-LD entities, accepted record by record
  GET  /health                                 broker connection and request-book state
  GET  /metrics                                Prometheus metrics (citybrain.metrics)

Every record the gateway takes ends on its topic or in the dead-letter topic; each entity of a
batch is judged alone. A request it refuses as a whole (bad key, too large, too many, too fast)
writes nothing and says why; the caller keeps the data and may retry. A body that is not JSON
is refused whole and, from a known partner, dead-lettered. Whatever still fails inside a
handler is answered as a JSON 500 naming a trace id, which the log names with the error.
Every answer carries the security headers of ``hardening.security_headers``; keys go in the
X-Api-Key header only, and the public request reads are rate-limited per address.

This module builds the app: each protocol's handlers (``open311_routes``, ``ngsi_v2_routes``,
``ngsi_ld_routes``) over one shared ``pipeline.RequestPipeline``, the body limit, and the
refusals aiohttp itself raises, answered in the caller's protocol.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from citybrain import metrics
from citybrain.contracts.model import Contract
from citybrain.gateway.hardening import API_CSP, TRACE_HEADER, security_headers
from citybrain.gateway.ngsi_ld_routes import NgsiLdRoutes
from citybrain.gateway.ngsi_v2_routes import NgsiV2Routes
from citybrain.gateway.idempotency import HEADER as IDEMPOTENCY_HEADER, PARAM as IDEMPOTENCY_PARAM
from citybrain.gateway.open311_routes import Open311Routes
from citybrain.gateway.pipeline import RequestPipeline, refusal
from citybrain.ingest.producer import DeliveryError
from citybrain.kafka.headers import new_trace_id
from citybrain.settings import Settings

__all__ = ["PRINCIPAL", "TRACE_HEADER", "build_app", "refusals", "run_gateway"]

log = logging.getLogger(__name__)

#: The broker principal the gateway connects as (infra/access.yaml `services:`): it writes the raw topics it takes
#: feeds for and their dead letters, and reads the requests and reference data it answers from, nothing else.
PRINCIPAL = "svc-gateway"


def refusals(pipeline: RequestPipeline) -> Middleware:
    """Middleware: a body over the limit, too many writes in flight, an unknown route or method, and a broker
    that did not acknowledge, each answered as a refusal in the caller's protocol; anything else a handler
    raises as a JSON 500 with a trace id (never the exception's text), logged under that id."""
    settings = pipeline.settings
    retry = (f"an Open311 request sent with an {IDEMPOTENCY_HEADER} header (or {IDEMPOTENCY_PARAM} field) and "
             f"retried with the same key within {settings.gateway_idempotency_ttl_s:g} s gets its first ticket, not a "
             "second; NGSI entities carry their ids")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            pipeline.counts["refused"] += 1
            return refusal(request, 413, f"the body is larger than {settings.gateway_max_body_bytes} bytes "
                                         "(CITYBRAIN_GATEWAY_MAX_BODY_BYTES); send smaller batches", "(body)", "too-large")
        except web.HTTPServiceUnavailable:
            pipeline.counts["refused"] += 1
            return refusal(request, 503, f"more than {settings.gateway_max_in_flight} writes are in flight "
                                         f"(CITYBRAIN_GATEWAY_MAX_IN_FLIGHT); retry shortly: {retry}",
                           headers={"Retry-After": "1"})
        except web.HTTPNotFound:
            return refusal(request, 404, f"no such resource: {request.method} {request.path} (see GET "
                                         "/open311/v2/services.json, POST /v2/entities, POST /v2/op/update)")
        except web.HTTPMethodNotAllowed as exc:
            return refusal(request, 405, f"{request.method} is not allowed on {request.path}; allowed: "
                                         f"{', '.join(sorted(exc.allowed_methods))}")
        except DeliveryError as exc:
            log.error("broker did not acknowledge: %s", exc)
            return refusal(request, 503, f"the platform could not store the records just now ({exc}); retry: "
                                         f"{retry}", headers={"Retry-After": "5"})
        except web.HTTPException:
            raise
        except Exception:
            trace = new_trace_id()
            log.exception("unhandled error answering %s %s (trace id %s)", request.method, request.path, trace)
            return refusal(request, 500, f"the gateway failed on this request (trace id {trace}); it may have stored "
                                         "none of it: send it again, and if it fails again report the trace id",
                           rule="internal-error", headers={TRACE_HEADER: trace})
    return middleware


def build_app(pipeline: RequestPipeline) -> web.Application:
    """The gateway's app: every protocol's routes over ``pipeline``, which connects on startup."""
    app = web.Application(client_max_size=pipeline.settings.gateway_max_body_bytes,
                          middlewares=[metrics.http_metrics("gateway"), refusals(pipeline)])
    security_headers(app, lambda _request: API_CSP, pipeline.settings.http_behind_tls_proxy)
    app.router.add_get("/health", pipeline.health)
    metrics.metrics_route(app)
    for protocol in (Open311Routes(pipeline), NgsiV2Routes(pipeline), NgsiLdRoutes(pipeline)):
        app.router.add_routes(protocol.routes())
    app.on_startup.append(pipeline.start)
    app.on_cleanup.append(pipeline.stop)
    return app


def run_gateway(settings: Settings, contracts: dict[str, Contract], host: str, port: int) -> None:
    """Serve until interrupted."""
    web.run_app(build_app(RequestPipeline(settings, contracts)), host=host, port=port, print=None, access_log=None)
