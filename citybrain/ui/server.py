"""The operations view's web server (aiohttp): the page, its login, the JSON routes the page reads, and the two
it acts by, ``POST /api/urge`` and ``/api/whistle`` (督办, 吹哨: :mod:`citybrain.ui.act`).

Every ``/api/`` route but login needs a session, and each hands the viewer to ``citybrain.ui.views``,
which cuts what it returns to the viewer's remit (``Forbidden`` becomes 403). A page's data is
computed off the event loop and reused for ``ui_cache_s`` per viewer, so many screens on the same
day cost one read of the lake. ``/metrics`` (unauthenticated, for Prometheus) counts requests by route
template, logins by outcome and page times by page: nothing of who logged in or what they saw. Who logged in,
out, and read which data page goes on the view's audit trail instead (``audit.trail.event.v1``, trail ``ui``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import time
from pathlib import Path, PurePosixPath
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web

from citybrain import metrics
from citybrain.access.accounts import DATA_OFFICE, DATA_OFFICE_DEPARTMENT
from citybrain.access.grants import AccessModel, load
from citybrain.access.trail import AuditTrail
from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.gateway.hardening import TRACE_HEADER, ExpiringLru, security_headers
from citybrain.ingest.audit import service_trail
from citybrain.kafka.headers import new_trace_id
from citybrain.lake import layout
from citybrain.settings import Settings, packaged
from citybrain.ui import act, drill, orders, views
from citybrain.ui.auth import Authenticator, RateLimited, Viewer
from citybrain.ui.broker_stats import broker_stats
from citybrain.ui.live import LiveFeed

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: Apache ECharts, vendored in the package with its licence (citybrain/data/README.md says which release).
ECHARTS = packaged("echarts")
COOKIE = "cb_session"
#: The page: its own scripts, styles, ECharts and data only, never framed. ECharts writes style attributes into its
#: tooltips (style-src-attr); the page itself has no inline script or style.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")
#: The quality data docs Great Expectations builds (inline scripts, styles and CDN assets): sandboxed, so they run
#: in an origin of their own that cannot read the view's session or its API.
DATA_DOCS_CSP = ("sandbox allow-scripts allow-popups; default-src 'self' https: data: 'unsafe-inline'; "
                 "base-uri 'none'; frame-ancestors 'none'")
#: Page answers cached at once (per viewer, page and argument), each for ui_cache_s.
CACHE_ENTRIES = 512
#: The pages whose reads go on the audit trail: the ones holding tickets, orders, datasets and grants (the city
#: overview and the area map, redrawn on every live event, hold none of them); an area drilled into (its tickets'
#: figures) is, the whole city's drill-down page (the overview again) is not.
AUDITED_PAGES = ("hotline", "orders", "ticket", "area", "data", "broker", "security", "actions")
#: How often an open live stream checks that its session still lives (and still has the remit it started with).
LIVE_RECHECK_S = 15.0
#: Sends an action's record to its contract topic (a test hands in one that keeps them in memory).
Send = Callable[[str, dict[str, Any]], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))


class OperationsView:
    """One running operations view over one lake; ``audit`` is its trail, by default the one sending to the audit
    topic (a test hands in one that keeps its records in memory)."""

    def __init__(self, settings: Settings, contracts: dict[str, Contract], model: AccessModel,
                 audit: AuditTrail | None = None, send: Send | None = None) -> None:
        self.settings, self.contracts, self.model = settings, contracts, model
        self.lake = settings.lake
        self.auth = Authenticator(settings, model, tuple(c.topic for c in contracts.values()),
                                  session_s=settings.ui_session_minutes * 60,
                                  reload=lambda: load(model.source, contracts, settings.city_dir))
        self.audit = audit or service_trail(settings, "ui")   # logins, logouts and data pages read (audit.trail.event)
        self.send = send or self._produce   # urges and whistles to their topics (dispatch.command.*)
        self._producer: Any = None
        self._cache: ExpiringLru[tuple[str, str, str, int], Any] = ExpiringLru(CACHE_ENTRIES, settings.ui_cache_s)
        self.warm_ms: int | None = None   # how long the start-up read of the lake took, once done
        self.live = LiveFeed(settings, [topics.CITY_EVENTS, topics.EARLY_WARNINGS] + sorted(
            c.topic for c in contracts.values() if c.topic.startswith("dispatch.")))

    def app(self) -> web.Application:
        if not (ECHARTS / "echarts.min.js").exists():
            raise FileNotFoundError(f"Apache ECharts is missing from the package ({ECHARTS}). Fix: reinstall "
                                    "citybrain from its wheel (it ships citybrain/data/echarts).")
        app = web.Application(middlewares=[metrics.http_metrics("ui"), self._errors, self._json_only])
        security_headers(app, self._csp, self.settings.http_behind_tls_proxy)
        app.router.add_get("/", self._file(STATIC / "index.html"))
        app.router.add_get("/health", self.health)
        metrics.metrics_route(app)
        app.router.add_post("/api/login", self.login)
        app.router.add_post("/api/logout", self.logout)
        app.router.add_get("/api/me", self.me)
        app.router.add_get("/api/live", self.live_events)
        for kind in (*act.ACTIONS, "reply"):
            app.router.add_post(f"/api/{kind}", self._act(kind))
        for name in ("areas", "city", "area", "hotline", "orders", "ticket", "actions", "data", "broker", "security"):
            app.router.add_get(f"/api/{name}", self._page(name))
        app.router.add_get("/quality-docs/{path:.*}", self.quality_docs)
        app.router.add_get("/favicon.ico", self._no_content)
        app.router.add_static("/static/", STATIC)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        app.router.add_get("/vendor/echarts.min.js", self._file(ECHARTS / "echarts.min.js"))
        app.router.add_get("/vendor/ECHARTS-LICENSE", self._file(ECHARTS / "LICENSE"))
        return app

    async def _startup(self, _app: web.Application) -> None:
        self.live.start()
        self._warm = asyncio.create_task(self._warm_up())

    async def _warm_up(self) -> None:
        started = time.perf_counter()
        try:
            office = self.auth.viewer_of(DATA_OFFICE_DEPARTMENT, DATA_OFFICE)
            if office is not None:
                await asyncio.to_thread(views.warm, self.lake, office)
                await asyncio.to_thread(drill.area, self.lake, office, drill.CITY)   # the City page's first screen
        except Exception as exc:   # the pages compute what they need themselves then
            log.warning("ui warm-up read of the lake failed: %s: %s", type(exc).__name__, exc)
        self.warm_ms = round((time.perf_counter() - started) * 1000)

    async def _cleanup(self, _app: web.Application) -> None:
        await self.live.stop()
        await asyncio.gather(self._warm, return_exceptions=True)

    @staticmethod
    def _csp(request: web.Request) -> str:
        return DATA_DOCS_CSP if request.path.startswith("/quality-docs/") else PAGE_CSP

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except views.Forbidden as exc:
            await self._audit_refused(request)
            return _json({"error": "forbidden", "detail": str(exc)}, 403)
        except views.BadArgument as exc:
            return _json({"error": "bad request", "detail": str(exc)}, 400)
        except views.NotFound as exc:
            return _json({"error": "not found", "detail": str(exc)}, 404)
        except web.HTTPException:
            raise
        except Exception:   # a page must say that it failed, not hang; what failed (paths, values) goes to the log only
            trace = new_trace_id()
            log.exception("ui %s %s failed (trace id %s)", request.method, request.path, trace)
            response = _json({"error": "internal error", "detail": f"the view failed on this page (trace id {trace}); "
                              "report the trace id to the data office", "trace_id": trace}, 500)
            response.headers[TRACE_HEADER] = trace
            return response
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @web.middleware
    async def _json_only(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A call that changes state (POST under /api/) must be JSON: a form or text/plain body, which another site
        can send without asking the browser (login CSRF), is refused with 415."""
        if request.method == "POST" and request.path.startswith("/api/") and request.content_type != "application/json":
            return _json({"error": "unsupported media type", "detail": f"{request.path} takes a JSON body "
                          f"(Content-Type: application/json), not {request.content_type!r}"}, 415)
        return await handler(request)

    # -- audit ---------------------------------------------------------------------------

    async def _audit(self, action: str, actor: str, target: str, outcome: str = "ok", **details: Any) -> None:
        """One record on the view's audit trail, written off the event loop (the send waits for the broker)."""
        await asyncio.to_thread(self.audit.record, action, actor, target, outcome, **details)

    async def _audit_read(self, page: str, principal: str, department: str, outcome: str = "ok", ticket: str = "",
                          area: str = "") -> None:
        """A read of one of the data pages (:data:`AUDITED_PAGES`), served or refused; a ticket's page names the
        ticket read, an area's the area (the whole city's drill-down page, the overview, is not recorded)."""
        if page in AUDITED_PAGES and (page != "area" or area):
            await self._audit("read", principal, f"{page} page", outcome, department=department or None,
                              **({"ticket": ticket} if ticket else {}), **({"area": area} if area else {}))

    async def _audit_refused(self, request: web.Request) -> None:
        """A data page refused to its viewer (a department asking for another's remit)."""
        viewer = self.auth.session(request.cookies.get(COOKIE))
        await self._audit_read(request.path.removeprefix("/api/"), viewer.principal if viewer else "(no session)",
                               request.query.get("department", ""), "denied", request.query.get("id", ""),
                               request.query.get("code", "")[:64])

    # -- acting: 督办 and 吹哨 -------------------------------------------------------------------

    def _produce(self, topic: str, value: dict[str, Any]) -> None:
        """Send one action under its contract, as the view's principal (the platform's, as its audit trail is
        sent); raises ConnectionError when the broker did not take it."""
        from citybrain.ingest.producer import ValidatedProducer

        if self._producer is None:
            self._producer = ValidatedProducer(self.settings, producer_id="ui-actions")
        summary = self._producer.produce_values(self.contracts[topic], [value], source="ui")
        if summary.accepted != 1:
            raise ConnectionError(f"{topic} did not take action {value['action_id']} ({summary.by_rule})")

    def _act(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            viewer = self.viewer(request)
            try:
                body = await request.json()
            except ValueError:
                body = None
            now = datetime.now(timezone.utc)
            try:
                if kind == "reply":   # a summoned department's answer (部门报到)
                    topic, record = await asyncio.to_thread(act.reply, self.lake, viewer, body, now,
                                                            self.live.seen_by(viewer))
                else:
                    topic, record = await asyncio.to_thread(act.action, self.lake, viewer, kind, body, now)
            except act.Problem as exc:
                await self._audit(kind, viewer.principal, "operations view", "failed", department=viewer.department,
                                  field=exc.field)
                return _json({"error": "bad request", "detail": str(exc), "problems": [exc.as_json()]}, 400)
            except (views.Forbidden, views.NotFound) as exc:
                await self._audit(kind, viewer.principal, str(body.get("action_id" if kind == "reply" else "target_id",
                                                                         ""))[:160]
                                  if isinstance(body, dict) else "operations view",
                                  "denied" if isinstance(exc, views.Forbidden) else "failed",
                                  department=viewer.department)
                raise
            target = record.get("target_id") or record["action_id"]
            try:
                await asyncio.to_thread(self.send, topic, record)
            except Exception as exc:   # the broker did not take it: nothing was summoned (or answered), so say so
                log.error("ui %s %s not sent to %s: %s: %s", kind, record.get("reply_id") or record["action_id"], topic,
                          type(exc).__name__, exc)
                await self._audit(kind, viewer.principal, target, "failed", action_id=record["action_id"])
                return _json({"error": "not sent", "detail": f"the broker did not take the {kind} ({type(exc).__name__});"
                              f" nothing was {'answered' if kind == 'reply' else 'summoned'}. Try again; if it "
                              "persists, tell the data office."}, 503)
            self.live.publish(topic, record)   # the pages show it at once, before the feed brings it back
            if kind == "reply":
                await self._audit(kind, viewer.principal, target, "ok", department=viewer.department,
                                  reply_id=record["reply_id"], step=record["step"], on_time=record["on_time"])
            else:
                await self._audit(kind, viewer.principal, target, "ok", department=viewer.department,
                                  action_id=record["action_id"], departments=record["departments"],
                                  reason=record["reason"])
            return _json(record, 201)
        return handler

    # -- login ---------------------------------------------------------------------------

    def viewer(self, request: web.Request) -> Viewer:
        found = self.auth.session(request.cookies.get(COOKIE))
        if found is None:
            raise web.HTTPUnauthorized(text=json.dumps({"error": "login required", "detail": "log in with your "
                                       "account: name, password and the code of your authenticator app "
                                       "(`citybrain accounts add` makes one)"}),
                                       content_type="application/json")
        return found

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            principal, password, code = str(body["principal"]), str(body["password"]), str(body["code"])
        except (ValueError, KeyError, TypeError):
            metrics.UI_LOGINS.labels("bad-request").inc()
            return _json({"error": "bad request", "detail": "send JSON {\"principal\": <account>, \"password\": ..., "
                          "\"code\": <the 6 digits of your authenticator app>}"}, 400)
        try:
            token = await asyncio.to_thread(self.auth.login, principal, password, code, request.remote or "?")
        except RateLimited as exc:
            metrics.UI_LOGINS.labels("rate-limited").inc()
            await self._audit("login_failed", principal, "operations view", "denied", address=request.remote,
                              rate_limited=True)
            return web.json_response({"error": "rate limited", "detail": str(exc)}, status=429,
                                     headers={"Retry-After": str(int(exc.retry_after) + 1)})
        metrics.UI_LOGINS.labels("refused" if token is None else "ok").inc()
        await self._audit("login_ok" if token else "login_failed", principal, "operations view", "ok" if token else "failed",
                          address=request.remote)
        if token is None:
            return _json({"error": "login failed", "detail": "unknown account, wrong password or wrong one-time code "
                          "(each code is good once)"}, 401)
        response = _json(self.auth.session(token).as_json())   # type: ignore[union-attr]
        # Secure whenever the page is served over HTTPS (behind the city's TLS proxy), so no cookie goes out in clear.
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                            secure=self.settings.http_behind_tls_proxy, max_age=int(self.settings.ui_session_minutes * 60))
        return response

    async def logout(self, request: web.Request) -> web.Response:
        viewer = self.auth.session(request.cookies.get(COOKIE))
        await self._audit("logout", viewer.principal if viewer else "(no session)", "operations view",
                          address=request.remote)
        self.auth.logout(request.cookies.get(COOKIE))
        response = _json({"logged_out": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def live_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each new record of the live feed the viewer may read, as it arrives, while the session
        lives (checked every LIVE_RECHECK_S: a password or grant change ends the stream too)."""
        viewer = self.viewer(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        queue = self.live.subscribe(viewer)
        checked = time.monotonic()
        try:
            await response.write(f"event: hello\ndata: {json.dumps({'status': self.live.status})}\n\n".encode())
            while True:
                if time.monotonic() - checked > LIVE_RECHECK_S:
                    if self.auth.session(request.cookies.get(COOKIE)) != viewer:
                        break
                    checked = time.monotonic()
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=15)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if item is None:   # the feed stopped, or this page fell behind: it reconnects
                    break
                topic, value = item
                data = json.dumps({"topic": topic, "record": views._event_row(value)}, ensure_ascii=False)
                await response.write(f"event: record\ndata: {data}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.live.unsubscribe(queue)
        return response

    async def me(self, request: web.Request) -> web.Response:
        """The viewer, and the city it watches with the zone the page shows times in (UTC stays on the wire)."""
        viewer = self.viewer(request)
        return _json(viewer.as_json() | {"city": await asyncio.to_thread(views.the_city, self.lake)})

    # -- pages ---------------------------------------------------------------------------

    @staticmethod
    def _file(path: Path) -> Handler:
        async def handler(_request: web.Request) -> web.FileResponse:
            return web.FileResponse(path)
        return handler

    async def quality_docs(self, request: web.Request) -> web.StreamResponse:
        """The data_quality DAG's Great Expectations data docs, for the data office."""
        if not self.viewer(request).admin:
            raise views.Forbidden("the quality data docs are the data office's")
        if not self.lake.local:   # the copy the data_quality DAG keeps in the lake
            rel = PurePosixPath(request.match_info["path"])
            page = layout.data_docs_dir(self.lake) / str(rel)
            if ".." in rel.parts or rel.is_absolute() or not await asyncio.to_thread(page.is_file):
                raise web.HTTPNotFound(text="no such data docs page (run the data_quality DAG to build them)")
            body = await asyncio.to_thread(page.read_bytes)
            return web.Response(body=body, content_type=mimetypes.guess_type(page.name)[0] or "application/octet-stream")
        root = layout.gx_data_docs_dir(self.lake, self.settings.state_dir).resolve()
        path = (root / request.match_info["path"]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise web.HTTPNotFound(text="no such data docs page (run the data_quality DAG to build them)")
        return web.FileResponse(path)

    @staticmethod
    async def _no_content(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def health(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok", "lake": self.lake.exists(), "warm_ms": self.warm_ms, "live": self.live.status})

    def _page(self, name: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            started = time.perf_counter()
            viewer = self.viewer(request)
            query = dict(request.query)
            department, ticket, area = query.get("department", ""), query.get("id", ""), query.get("code", "")[:64]
            arg = json.dumps(sorted(query.items()), ensure_ascii=False)
            key = (name, viewer.principal, arg, self.live.published if name in ("city", "area", "actions") else 0)
            hit = self._cache.get(key)
            if hit is not None:
                metrics.UI_PAGE_SECONDS.labels(name, "yes").observe(time.perf_counter() - started)
                await self._audit_read(name, viewer.principal, department, ticket=ticket, area=area)
                return _json(hit)
            try:
                value = await asyncio.to_thread(self._compute, name, viewer, query)
            except FileNotFoundError:   # a sink compacted an hour's files while they were read: read again
                value = await asyncio.to_thread(self._compute, name, viewer, query)
            self._cache.put(key, value)
            metrics.UI_PAGE_SECONDS.labels(name, "no").observe(time.perf_counter() - started)
            await self._audit_read(name, viewer.principal, department, ticket=ticket, area=area)
            return _json(value)
        return handler

    def _compute(self, name: str, viewer: Viewer, query: dict[str, str]) -> Any:
        """A page's data for ``viewer``; ``query``: the page's arguments (the orders' filters, a ticket's id, an
        area's code)."""
        if name == "areas":
            return views.areas(self.lake)
        if name == "city":
            return views.city(self.lake, viewer, self.live.seen_by(viewer))
        if name == "area":
            return drill.area(self.lake, viewer, query.get("code", ""), self.live.seen_by(viewer))
        if name == "hotline":
            return views.hotline(self.lake, viewer)
        if name == "orders":
            return orders.order_list(self.lake, viewer, query)
        if name == "ticket":
            return orders.ticket(self.lake, viewer, query.get("id", ""))
        if name == "actions":
            return orders.actions(self.lake, viewer, self.live.seen_by(viewer))
        if name == "data":
            return views.data(self.lake, viewer, self.contracts, self.settings.state_dir)
        if name == "broker":
            if not viewer.admin:
                raise views.Forbidden(f"{viewer.principal}: the broker's figures are the data office's.")
            return broker_stats(self.settings, [c.topic for c in self.contracts.values()])
        return views.security(self.lake, viewer, self.auth.current_model()) | {"ui_refused_logins": list(self.auth.refused)[-100:]}


def run_ui(settings: Settings, contracts: dict[str, Contract], model: AccessModel, host: str, port: int) -> None:
    """Serve until interrupted."""
    web.run_app(OperationsView(settings, contracts, model).app(), host=host, port=port, print=None, access_log=None)
