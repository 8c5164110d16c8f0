"""The platform's Prometheus metrics: every name, help text and label set, defined once.

Every service exposes these on ``/metrics`` (the gateway and the operations view on their own HTTP
port, the fusion worker, the lake sinks, the notifier and the Alertmanager bridge on a port of their own from
``CITYBRAIN_METRICS_PORT``, see :func:`serve`). Names start with ``citybrain_``; labels take only
values from a bounded set (a topic, a contract rule, a route template, a status class, a page, a
subscription id from the deployment's file), never a ticket id, a path as sent, an address or a user
name, so a flood of distinct requests cannot make the series grow without end.

A foundation module beside ``times`` and ``geo``: the edge (ingest, gateway), the streams, the lake
and the outbound edge all count into it, so it must sit below all of them and import none of them.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:  # pragma: no cover
    from aiohttp import web
    from aiohttp.typedefs import Handler, Middleware

__all__ = [
    "ALERTMANAGER_POSTS", "ALERTS_BRIDGED", "CONSUMER_LAG", "CONTENT_TYPE", "DELIVERIES", "DELIVERY_FAILURES", "FUSION_BATCH_SECONDS",
    "FUSION_END_TO_END_SECONDS", "HTTP_REQUESTS", "HTTP_REQUEST_SECONDS", "RECORDS_DEAD_LETTERED", "RECORDS_IN",
    "RECORDS_OUT", "SERVICE_OFFSETS", "SINK_BYTES", "SINK_CHECKPOINT_TIME", "SINK_FILES", "UI_LOGINS",
    "UI_PAGE_SECONDS", "UNMATCHED", "exposition", "http_metrics", "metrics_route", "route_of", "serve", "status_class",
]

log = logging.getLogger(__name__)

#: What a scrape answers with (Prometheus' text format).
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: The route label of a request no route matched (a 404 for any path a caller makes up).
UNMATCHED = "(unmatched)"
#: Methods counted by name; any other a caller sends is counted as ``OTHER``.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The services without an HTTP server of their own, and their port's offset from ``CITYBRAIN_METRICS_PORT``.
SERVICE_OFFSETS = {"fusion": 0, "lake-bronze": 1, "lake-silver": 2, "notify": 3, "notify-alertmanager": 4}

# -- records through the validated producers (citybrain.ingest.producer) and the fusion worker -------------------
RECORDS_IN = Counter("citybrain_records_in", "Records judged against their contract before they are produced, by "
                     "the topic they were sent for.", ["topic"])
RECORDS_OUT = Counter("citybrain_records_out", "Records the broker acknowledged on their contract's topic.",
                      ["topic"])
RECORDS_DEAD_LETTERED = Counter("citybrain_records_dead_lettered", "Records refused and sent to a dead-letter "
                                "topic, by the topic they were sent for and the rule they broke.", ["topic", "rule"])

# -- consumers (lake sinks, notifier, fusion worker) ----------------------------------------------------------------
CONSUMER_LAG = Gauge("citybrain_consumer_lag", "Records on the topic not read yet by this consumer (end offset "
                     "minus position, summed over the partitions it holds).", ["consumer", "topic"])

# -- fusion ---------------------------------------------------------------------------------------------------------
FUSION_BATCH_SECONDS = Histogram("citybrain_fusion_batch_seconds", "Time the fusion worker took for one fetch, "
                                 "from its start to its outputs acknowledged.", ["kind"],
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30))
FUSION_END_TO_END_SECONDS = Histogram("citybrain_fusion_end_to_end_seconds", "Time from a record's Kafka timestamp "
                                      "to the fusion worker's outputs for it acknowledged.", ["topic"],
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900))

# -- lake sinks -----------------------------------------------------------------------------------------------------
SINK_FILES = Counter("citybrain_sink_files_written", "Parquet files a lake sink wrote (batches, not compactions).",
                     ["layer", "topic"])
SINK_BYTES = Counter("citybrain_sink_bytes_written", "Bytes of the Parquet files a lake sink wrote.",
                     ["layer", "topic"])
SINK_CHECKPOINT_TIME = Gauge("citybrain_sink_checkpoint_timestamp_seconds", "When a lake sink last moved a "
                             "partition's checkpoint, as a Unix time (age: time() minus this).", ["layer", "topic"])

# -- gateway and operations view (HTTP) -----------------------------------------------------------------------------
HTTP_REQUESTS = Counter("citybrain_http_requests", "HTTP requests answered, by service, route template (never the "
                        "path as sent), method and status class.", ["service", "route", "method", "status"])
HTTP_REQUEST_SECONDS = Histogram("citybrain_http_request_seconds", "Time to answer an HTTP request, by service and "
                                 "route template.", ["service", "route"])
UI_LOGINS = Counter("citybrain_ui_logins", "Logins to the operations view, by outcome (ok, refused, "
                    "rate-limited, bad-request); never by user.", ["outcome"])
UI_PAGE_SECONDS = Histogram("citybrain_ui_page_seconds", "Time the operations view took for a page's data, by page "
                            "and whether it came from the cache.", ["page", "cached"])

# -- notifier -------------------------------------------------------------------------------------------------------
DELIVERIES = Counter("citybrain_notify_deliveries", "Notifications a department's endpoint took, by subscription.",
                     ["subscription"])
DELIVERY_FAILURES = Counter("citybrain_notify_delivery_failures", "Tries of a department's endpoint that failed, by "
                            "subscription and status class (none: no answer).", ["subscription", "status"])

# -- the alert topics' bridge to Alertmanager -----------------------------------------------------------------------
ALERTS_BRIDGED = Counter("citybrain_alertmanager_alerts", "Records of the alert topics the bridge handled, by topic "
                         "and outcome: sent (Alertmanager took it), expired (its alert had ended: not sent), "
                         "dead-lettered.", ["topic", "outcome"])
ALERTMANAGER_POSTS = Counter("citybrain_alertmanager_posts", "Posts of alert batches to Alertmanager, by status class "
                             "(none: no answer).", ["status"])


def status_class(status: int) -> str:
    """An HTTP status as its class (``2xx``...), or ``none`` for no answer (0): a label of five values."""
    return f"{status // 100}xx" if 100 <= status < 600 else "none"


def exposition(registry: CollectorRegistry = REGISTRY) -> bytes:
    """The registry's metrics in Prometheus' text format, as ``/metrics`` answers."""
    return generate_latest(registry)


def serve(service: str, host: str, base_port: int) -> int | None:
    """Start ``/metrics`` of a service without an HTTP server (a thread of prometheus_client) on ``base_port`` plus
    the service's offset; ``base_port`` 0 leaves it off. Returns the port, or None when off or the port is taken
    (logged: a metrics port in use must not stop the records)."""
    if not base_port:
        return None
    if service not in SERVICE_OFFSETS:
        raise ValueError(f"no metrics port for service {service!r}; services with one: {', '.join(SERVICE_OFFSETS)}. "
                         "Fix: add it to citybrain.metrics.SERVICE_OFFSETS")
    port = base_port + SERVICE_OFFSETS[service]
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.error("%s: cannot serve /metrics on %s:%d (%s); running without it. Fix: free the port or set "
                  "CITYBRAIN_METRICS_PORT to another base (0: off)", service, host, port, exc)
        return None
    log.info("%s: /metrics on http://%s:%d/metrics", service, host, port)
    return port


def route_of(request: web.Request) -> str:
    """The route template a request matched (``/open311/v2/requests/{rid}.json``), never its path as sent."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def http_metrics(service: str) -> Middleware:
    """aiohttp middleware (put it first, outside the others): each request counted by route template, method and
    status class (``none`` when the caller went away first), and timed, as ``service``."""
    from aiohttp import web

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 0   # no answer: the caller went away (the handler was cancelled)
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception:
            status = 500   # what aiohttp answers for it
            raise
        finally:
            route = route_of(request)
            method = request.method if request.method in _METHODS else "OTHER"
            HTTP_REQUESTS.labels(service, route, method, status_class(status)).inc()
            HTTP_REQUEST_SECONDS.labels(service, route).observe(time.perf_counter() - started)
    return middleware


def metrics_route(app: web.Application) -> None:
    """``GET /metrics`` on an aiohttp app: this process's metrics, unauthenticated as Prometheus scrapes them (they
    hold no personal data: see the module)."""
    from aiohttp import web

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", handler)
