"""The gateway's shared request pipeline: what every protocol's handlers do the same way.

A write goes: API key (``partner``) -> body (``read_json``; aiohttp caps its size at
CITYBRAIN_GATEWAY_MAX_BODY_BYTES; read strictly by citybrain.ingest.strict_json) -> rate limit
(``limit``) -> records checked against their contract (``check_entity`` for NGSI entities, each
alone: one poisoned entity is refused, not its batch; its device and area codes must be the imported
city's own, :mod:`citybrain.ingest.codes`; Open311 maps its own) -> ``produce``: valid
records to their topics, the rest to the dead-letter topic, acknowledged before the answer. A body
that is not JSON is refused whole and, from a known partner, dead-lettered (``dead_letter_body``).
Refusals of a whole request are answered in the caller's protocol (``refusal``); ``health`` sums it up.
The protocols' handlers: ``open311_routes``, ``ngsi_v2_routes``, ``ngsi_ld_routes``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Callable

from aiohttp import web

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import Rejection
from citybrain.gateway.book import RequestBook
from citybrain.gateway.hardening import ExpiringLru
from citybrain.gateway.fiware import contract_for, ld_term, ld_to_key_values, to_key_values
from citybrain.gateway.idempotency import IdempotencyKeys
from citybrain.gateway.lint import LintWarning, lint, lint_ld
from citybrain.gateway.open311 import EdgeError
from citybrain.gateway.units import apply_units, unit_codes
from citybrain.contracts.topics import INGEST_DEAD_LETTERS as DLQ_TOPIC
from citybrain.ingest.producer import ValidatedProducer
from citybrain.ingest.readers import RawRecord
from citybrain.ingest.strict_json import JsonRefused, dumps_escaped, dumps_record, find_problem, id_problem, read_document
from citybrain.settings import Settings, api_keys

log = logging.getLogger(__name__)

__all__ = ["LINT_HEADER", "EntityMapper", "RequestPipeline", "TokenBuckets", "ngsi_error", "ngsi_options",
           "open311_error", "read_json", "readable_json", "refusal"]

#: How many of the models' known defects the gateway corrected in a request (citybrain.gateway.lint).
LINT_HEADER = "X-CityBrain-Lint-Warnings"

#: An entity in a protocol's form -> its keyValues form, or the problems that keep it from one.
EntityMapper = Callable[[Any], tuple[dict[str, Any] | None, list[EdgeError]]]


def readable_json(value: Any) -> str:
    """JSON with Chinese text left readable (service names, notices, problem descriptions); what a caller sent
    and an answer echoes (an id, an excerpt) always writable, a lone surrogate as its escape."""
    return dumps_escaped(value).decode("utf-8")


# -- error answers, in the caller's protocol ------------------------------------------------


def open311_error(status: int, errors: list[EdgeError], headers: dict[str, str] | None = None) -> web.Response:
    """A GeoReport v2 error: a JSON array of ``{"code", "description"}`` with CityBrain's field, rule and fix."""
    return web.json_response([e.as_dict() for e in errors], status=status, headers=headers, dumps=readable_json)


def ngsi_error(status: int, kind: str, description: str, errors: list[EdgeError] | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    """An NGSI v2 error: ``{"error", "description"}``, with each problem when there are several."""
    body: dict[str, Any] = {"error": kind, "description": description}
    if errors:
        body["errors"] = [e.as_dict() for e in errors]
    return web.json_response(body, status=status, headers=headers, dumps=readable_json)


#: HTTP status -> the NGSI error name a refusal carries.
NGSI_KINDS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed", 406: "NotAcceptable",
              409: "Conflict", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Unprocessable",
              429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


def refusal(request: web.Request, status: int, description: str, field: str = "", rule: str = "",
            headers: dict[str, str] | None = None) -> web.Response:
    """A request refused as a whole: an Open311 error under /open311/, an NGSI error elsewhere."""
    if request.path.startswith("/open311/"):
        return open311_error(status, [EdgeError(status, description, field, rule)], headers)
    return ngsi_error(status, NGSI_KINDS.get(status, "Error"), description, headers=headers)


# -- reading a request ----------------------------------------------------------------------


async def read_json(request: web.Request) -> tuple[Any, JsonRefused | None]:
    """(the body as JSON, None), or (None, why it cannot be read) for the protocol to word its refusal.

    Values the strict reading refuses (NaN, a key given twice, a lone surrogate, too deep) are marked in
    place, for ``check_entity`` to refuse their entity alone (``strict_json.find_problem``). A body over
    the app's ``client_max_size`` raises aiohttp's HTTPRequestEntityTooLarge, which the app answers as a
    413 refusal (citybrain.gateway.server)."""
    try:
        return read_document(await request.read()), None
    except JsonRefused as exc:
        return None, exc


def ngsi_options(request: web.Request) -> set[str]:
    """NGSI's ``?options=`` list (keyValues, upsert, ...), shared by v2 and NGSI-LD."""
    return set(filter(None, request.query.get("options", "").split(",")))


#: Where a partner's key goes: a header, never the URL (proxies, access logs and browsers' histories keep URLs).
KEY_HEADER = "X-Api-Key"
#: Wrong keys one client address may send at once, and how fast it earns another try (one each 30 s).
BAD_KEY_BURST, BAD_KEY_RATE = 10, 1 / 30


class TokenBuckets:
    """Per-client rate limits: ``rate`` tokens a second, bursts up to ``burst``; the ``max_clients`` most recently
    seen clients are remembered (a forgotten client starts again with a full bucket), so made-up clients cannot
    grow the table without bound."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: ExpiringLru[str, tuple[float, float]] = ExpiringLru(max_clients, burst / rate)

    def _tokens(self, client: str, now: float) -> float:
        tokens, last = self._buckets.get(client) or (float(self.burst), now)
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def take(self, client: str, n: int = 1) -> float:
        """0 when ``n`` tokens were taken, -1 when ``n`` exceeds the burst, else the seconds to wait."""
        now = time.monotonic()
        tokens = self._tokens(client, now)
        if n > self.burst:
            return -1.0
        if tokens >= n:
            self._buckets.put(client, (tokens - n, now))
            return 0.0
        self._buckets.put(client, (tokens, now))
        return (n - tokens) / self.rate

    def wait(self, client: str) -> float:
        """Seconds until ``client`` has a token again, without taking one (0: it has one now)."""
        return max(0.0, (1 - self._tokens(client, time.monotonic())) / self.rate)

    def __len__(self) -> int:
        return len(self._buckets)


class RequestPipeline:
    """The state every protocol shares: the producer, the request book, partner keys, limits and counts."""

    def __init__(self, settings: Settings, contracts: dict[str, Contract]) -> None:
        self.settings = settings
        self.contracts = {c.id: c for c in contracts.values()}
        self.keys = api_keys(settings)
        self.buckets = TokenBuckets(settings.gateway_rate_per_s, settings.gateway_burst)
        #: Wrong API keys per client address, so keys cannot be guessed at speed.
        self.bad_keys = TokenBuckets(BAD_KEY_RATE, BAD_KEY_BURST)
        #: Public reads per client address (the Open311 request list and one request).
        self.reads = TokenBuckets(settings.gateway_read_rate_per_s, settings.gateway_read_burst)
        self.in_flight = asyncio.Semaphore(settings.gateway_max_in_flight)
        self.producer: ValidatedProducer | None = None
        self.book = RequestBook(settings)
        #: Open311 POSTs by Idempotency-Key, so a retry answers the first ticket (citybrain.gateway.idempotency).
        self.attempts = IdempotencyKeys(settings.gateway_idempotency_ttl_s, settings.gateway_idempotency_keys)
        self.counts = {"accepted": 0, "dead_lettered": 0, "refused": 0}
        #: Known model defects corrected in accepted records, by lint rule (also a lint-rules header on each record).
        self.lint_counts: Counter[str] = Counter()

    async def start(self, _app: web.Application) -> None:
        """Connect the producer (off the event loop: it waits for the broker) and start reading the request book."""
        loop = asyncio.get_running_loop()
        self.producer = await loop.run_in_executor(None, lambda: ValidatedProducer(self.settings, "citybrain-gateway"))
        self.book.start()

    async def stop(self, _app: web.Application) -> None:
        """Stop the request book and close the producer (flushing what it holds)."""
        self.book.stop()
        if self.producer:
            await asyncio.get_running_loop().run_in_executor(None, self.producer.close)

    # -- refusals of a whole request ---------------------------------------------------------

    def partner(self, request: web.Request, form: dict[str, Any] | None = None
                ) -> tuple[str | None, web.Response | None]:
        """(partner, None) when the caller may write, else (None, the refusal): 400 for a key in the URL, 429 while
        its address has sent too many wrong keys (before the key is even looked at), 403 for a missing or wrong key.

        The key is read from the X-Api-Key header, or from an Open311 form or JSON body's ``api_key`` field."""
        if not self.keys:
            return "anonymous", None
        if "api_key" in request.query:
            self.counts["refused"] += 1
            return None, refusal(request, 400, f"an API key in the URL is refused: URLs end up in logs and histories; "
                                               f"send it in the {KEY_HEADER} header (and retire this key with the city "
                                               "data office, it has been exposed)", "api_key", "key-in-url")
        address = request.remote or "?"
        wait = self.bad_keys.wait(address)
        if wait > 0:
            self.counts["refused"] += 1
            return None, refusal(request, 429, f"client {address} sent more than {BAD_KEY_BURST} wrong API keys; "
                                               f"retry after {wait:.0f} s with the key the city data office issued",
                                 "api_key", "too-many-wrong-keys", headers={"Retry-After": str(max(1, round(wait + 0.5)))})
        key = request.headers.get(KEY_HEADER) or (form or {}).get("api_key")
        partner = self.keys.get(str(key)) if key else None
        if partner is None:
            self.counts["refused"] += 1
            if key:
                self.bad_keys.take(address)
                log.warning("gateway: wrong API key from %s", address)
            what = "no api_key was sent" if not key else "the api_key is not valid"
            return None, refusal(request, 403, f"{what}; ask the city data office for a partner key and send it in "
                                               f"the {KEY_HEADER} header (or an Open311 body's api_key field)",
                                 "api_key", "required")
        return partner, None

    def known_partner(self, request: web.Request) -> str | None:
        """The partner whose key the request's header carries, without refusing or counting anything."""
        if not self.keys:
            return "anonymous"
        key = request.headers.get(KEY_HEADER)
        return self.keys.get(key) if key else None

    def limit_reads(self, request: web.Request) -> web.Response | None:
        """None when the caller's address may read now, else the 429 refusal (public reads carry no key)."""
        address = request.remote or "?"
        wait = self.reads.take(address)
        if wait == 0:
            return None
        self.counts["refused"] += 1
        return refusal(request, 429, f"client {address} reads more than {self.reads.rate:g} times a second "
                                     f"(burst {self.reads.burst}, CITYBRAIN_GATEWAY_READ_RATE_PER_S); retry after "
                                     f"{wait:.1f} s", headers={"Retry-After": str(max(1, round(wait + 0.5)))})

    def limit_partner(self, request: web.Request, partner: str | None, n: int) -> web.Response | None:
        """:meth:`limit` for a partner, or for the caller's address where requests carry no key."""
        return self.limit(request, partner or request.remote or "?", n)

    def limit(self, request: web.Request, client: str, n: int) -> web.Response | None:
        """None when ``client`` may send ``n`` records now, else the 413 (over the burst) or 429 refusal."""
        wait = self.buckets.take(client, n)
        if wait == 0:
            return None
        self.counts["refused"] += 1
        if wait < 0:
            return refusal(request, 413, f"{n} records in one request exceed the burst of {self.buckets.burst} "
                                         "(CITYBRAIN_GATEWAY_BURST); split it", "entities", "maxItems")
        return refusal(request, 429, f"client {client} sends more than {self.buckets.rate:g} records/s "
                                     f"(burst {self.buckets.burst}); retry after {wait:.1f} s",
                       headers={"Retry-After": str(max(1, round(wait + 0.5)))})

    # -- records -------------------------------------------------------------------------

    def check_entity(self, entity: Any, index: int, source: str, producer: str, normalized: bool = False,
                     mapper: EntityMapper | None = None,
                     ) -> tuple[dict[str, Any], tuple[Contract, RawRecord] | None, tuple[str, RawRecord, Rejection] | None]:
        """(per-record result, item to produce, or unroutable dead letter) for one NGSI entity.

        A ``normalized`` entity (or one ``mapper`` maps, NGSI-LD's) is taken in its keyValues form,
        and dead-lettered as it was sent."""
        kind = entity.get("type") if isinstance(entity, dict) else None
        base = {"index": index, "id": entity.get("id") if isinstance(entity, dict) else None,
                "type": ld_term(kind) if isinstance(kind, str) else None}
        raw = dumps_escaped(entity)
        poison = find_problem(entity, self.settings.json_max_depth)
        if poison is None and isinstance(entity, dict):
            poison = id_problem(entity.get("id"))
        if poison is not None:
            return self._unroutable(base, EdgeError.from_rejection(poison.rejection(), 400), source=source, raw=raw,
                                    producer=producer)
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
            return self._unroutable(base, *errors, source=source, raw=raw, producer=producer)
        contract = self.contracts[contract_id]
        assert self.producer is not None
        validator = self.producer.validator(contract)
        item = (contract, RawRecord(f"{source}#{index}", raw, value=entity, producer=producer,
                                    lint=tuple(w.rule for w in warnings), rejection=unit_problem))
        if unit_problem is not None:
            return ({**base, "status": "rejected", "topic": contract.topic,
                     "errors": [EdgeError.from_rejection(unit_problem, 422).as_dict()]}, item, None)
        problem = validator(entity)
        catalogue = self.book.catalogue()
        foreign = catalogue.codes.record_problems(entity) if catalogue is not None else []
        if problem is None and foreign:   # the contract takes any city's codes; this city declares its own
            item = (contract, RawRecord(f"{source}#{index}", raw, value=entity, producer=producer,
                                        lint=tuple(w.rule for w in warnings), rejection=foreign[0],
                                        problems=tuple(foreign)))
            return ({**base, "status": "rejected", "topic": contract.topic,
                     "errors": [EdgeError.from_rejection(p, 422).as_dict() for p in foreign]}, item, None)
        if problem is None:
            try:
                dumps_record(entity)   # what a mapping made of the values (a unit converted) is still JSON
            except JsonRefused as exc:
                problem = exc.rejection()
                item = (contract, RawRecord(f"{source}#{index}", raw, producer=producer, rejection=problem))
                return ({**base, "status": "rejected", "topic": contract.topic,
                         "errors": [EdgeError.from_rejection(problem, 422).as_dict()]}, item, None)
            for w in warnings:
                self.lint_counts[w.rule] += 1
            return {**base, "status": "accepted", "topic": contract.topic}, item, None
        problems = validator.explain_all(entity)
        return ({**base, "status": "rejected", "topic": contract.topic,
                 "errors": [EdgeError.from_rejection(p, 422).as_dict() for p in problems]}, item, None)

    def _unroutable(self, base: dict[str, Any], *errors: EdgeError, source: str, raw: bytes, producer: str
                    ) -> tuple[dict[str, Any], None, tuple[str, RawRecord, Rejection]]:
        """The result of an entity refused before it had a contract, and its dead letter (by its type, if any)."""
        first = errors[0]
        rejection = Rejection(first.rule or "invalid", first.field or "(record)", first.description)
        return ({**base, "status": "rejected", "errors": [e.as_dict() for e in errors]}, None,
                (f"fiware:{base['type'] or 'unknown'}", RawRecord(source, raw, producer=producer), rejection))

    async def dead_letter_body(self, request: web.Request, target: str, source: str, partner: str | None,
                               problem: JsonRefused) -> None:
        """Dead-letter a body refused whole (not JSON, not UTF-8, nested past reading), when a known partner sent
        it: the caller keeps its data, the city keeps the evidence. A stranger's body is answered, not kept."""
        if partner is None:
            return
        raw = RawRecord(source, await request.read(), producer=f"gateway.{partner}")
        await self.produce([], [(target, raw, problem.rejection())])

    async def produce(self, items: list[tuple[Contract, RawRecord]], unroutable: list[tuple[str, RawRecord, Rejection]]
                      ) -> None:
        """Send records (valid ones to their topics, invalid ones to the dead-letter topic) and wait for acks.

        Raises HTTPServiceUnavailable when CITYBRAIN_GATEWAY_MAX_IN_FLIGHT writes are already waiting."""
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

    # -- summary -------------------------------------------------------------------------

    async def health(self, _request: web.Request) -> web.Response:
        """``GET /health``: the served city, the request book's state and the counts since start."""
        catalogue = self.book.catalogue()
        return web.json_response({
            "jurisdiction_id": catalogue.jurisdiction_id if catalogue else None,
            "services": len(catalogue.services) if catalogue else 0,
            "status": "ok" if self.book.error is None else "degraded", "bootstrap": self.settings.bootstrap,
            "requests_known": len(self.book), "request_book_caught_up": self.book.caught_up.is_set(),
            "request_book_error": self.book.error, "areas_loaded": bool(self.book.index and self.book.index.areas),
            "counts": self.counts, "lint_warnings": dict(sorted(self.lint_counts.items())), "dead_letter_topic": DLQ_TOPIC,
        })


class EntityRoutes:
    """What the NGSI v2 and NGSI-LD writes share: the caller's key checked, then the body as the protocol reads it."""

    def __init__(self, pipeline: RequestPipeline) -> None:
        self.pipeline = pipeline

    async def _body(self, request: web.Request, partner: str) -> tuple[Any, web.Response | None]:
        """The request's body, or the refusal in the protocol's shape (each protocol reads its own); a body that
        cannot be read is dead-lettered under ``partner``."""
        raise NotImplementedError

    async def admit(self, request: web.Request) -> tuple[str | None, Any, web.Response | None]:
        """(partner, body, None) for a write the pipeline takes on, else (.., .., the 403/400/415 refusal)."""
        partner, denied = self.pipeline.partner(request)
        if denied or partner is None:
            return None, None, denied
        body, problem = await self._body(request, partner)
        return partner, body, problem
