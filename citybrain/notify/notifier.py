"""NGSI-LD notifications out: a department's FIWARE system receives its records without a Kafka client.

Subscriptions are code, like the grants (``infra/subscriptions.yaml``, reviewed like code): each names
the department principal it serves, the topic, and the endpoint of the department's system. A
subscription is only taken for a topic the principal may read (``infra/access.yaml``), and the notifier
reads each topic *as that principal*, with its own credentials and consumer group
(``<principal>.notify.<id>``), so the broker's ACLs hold whatever the file says.

Each record goes out as an NGSI-LD Notification (ETSI GS CIM 009 §5.3.1: ``id``, ``type: Notification``,
``subscriptionId``, ``notifiedAt``, ``data``) holding the record as one entity, normalized (Property,
GeoProperty for the position) or concise as the subscription asks; ``application/ld+json`` carries the
``@context`` in the body, ``application/json`` in a ``Link`` header, as the standard relates them.
The notification id is derived from the subscription and the record's event id, so a receiver can
drop a repeat.

A subscription sends what its topic receives from the first time it ran (as an NGSI-LD subscription
notifies of changes after it is made, not a topic's whole retention); from then on its committed
offsets carry it over restarts, so nothing is skipped while the notifier is down.
Delivery is at least once, in order per partition: a record's offset is committed once the endpoint
took it (2xx) or it was dead-lettered. A failure the endpoint may recover from (no connection, a
timeout, 408, 429, 5xx) is retried with a backoff doubling from ``RETRY_BASE_S``, up to
``MAX_ATTEMPTS`` tries; anything else (another 4xx) is not retried. What is not delivered goes to
``dlq.notify.undelivered.v1`` with the reason, the attempts and the notification itself, so nothing
is lost. An endpoint that failed ``FAILING_AFTER`` records in a row is *failing* (the standard's
subscription status ``failed``): each further record is tried once, and dead-lettered at once if that
fails, so one dead endpoint neither stalls for hours nor hides its losses; the first success clears it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Coroutine

import aiohttp
import yaml

from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.errors import InputError
from citybrain.kafka.follow import Follower, StatusFile, Stopped
from citybrain.kafka.headers import read_headers, record_event_id
from citybrain.settings import PROJECT_ROOT, Settings
from citybrain.times import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

SUBSCRIPTIONS_FILE = PROJECT_ROOT / "infra" / "subscriptions.yaml"
DLQ_TOPIC = topics.NOTIFY_DEAD_LETTERS
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
ACCEPT = ("application/ld+json", "application/json")
FORMATS = ("normalized", "concise")
MAX_ATTEMPTS = 5
RETRY_BASE_S = 0.5
RETRY_MAX_S = 8.0
FAILING_AFTER = 3
TIMEOUT_S = 10.0
NOTIFICATION_NS = uuid.UUID("2b1f6c0e-6f3a-5d7c-8e9a-1b2c3d4e5f60")
#: The NGSI-LD entity type of each notifiable topic family.
ENTITY_TYPES = {"dispatch.": "WorkOrder", "city.event.incident.": "CityEvent", "alert.early_warning.": "EarlyWarning",
                "alert.sla.": "SlaAlert"}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


class SubscriptionError(InputError):
    """A subscriptions file the notifier cannot take."""


@dataclass(frozen=True)
class Subscription:
    id: str
    principal: str
    topic: str
    endpoint: str
    accept: str = "application/ld+json"
    format: str = "normalized"

    @property
    def urn(self) -> str:
        return f"urn:ngsi-ld:Subscription:{self.id}"

    @property
    def group(self) -> str:
        return f"{self.principal}.notify.{self.id}"


def load_subscriptions(path: Path, contracts: dict[str, Contract], access_model: Any) -> list[Subscription]:
    """The subscriptions of ``path``, each checked: a known principal, a notifiable contract topic the
    principal may read, an http(s) endpoint; an error names the entry, the field, the rule and the fix."""
    from citybrain.access.grants import topics_of

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SubscriptionError(f"{path.name}: no such file. Fix: create it (see infra/subscriptions.yaml).") from None
    except yaml.YAMLError as exc:
        raise SubscriptionError(f"{path.name}: not YAML ({exc}).") from None
    entries = doc.get("subscriptions") or []
    if doc.get("version") != 1 or not isinstance(entries, list):
        raise SubscriptionError(f"{path.name}: needs `version: 1` and a list `subscriptions`.")
    out, seen = [], set()
    for n, e in enumerate(entries):
        where = f"{path.name} subscription {n + 1}"
        if not isinstance(e, dict):
            raise SubscriptionError(f"{where}: must be a mapping with id, principal, topic, endpoint.")
        unknown = sorted(set(e) - {"id", "principal", "topic", "endpoint", "accept", "format"})
        if unknown:
            raise SubscriptionError(f"{where}: unknown key(s) {', '.join(unknown)}. Fix: leave them out.")
        sid = str(e.get("id") or "")
        if not ID_RE.match(sid) or sid in seen:
            raise SubscriptionError(f"{where}: `id` {sid!r} must be unique, lower case letters, digits and dashes. "
                                    "Fix: e.g. water-duty-desk.")
        seen.add(sid)
        where = f"{path.name} subscription {sid!r}"
        principal = str(e.get("principal") or "")
        if principal not in access_model.departments:
            raise SubscriptionError(f"{where}: `principal` {principal!r} is not in {access_model.source.name}. Fix: one "
                                    f"of {', '.join(sorted(access_model.departments))}.")
        topic = str(e.get("topic") or "")
        contract = contracts.get(topic)
        if contract is None or not any(topic.startswith(p) for p in ENTITY_TYPES):
            raise SubscriptionError(f"{where}: `topic` {topic!r} is not a notifiable contract topic. Fix: a "
                                    f"dispatch.<department>.work_order, city.event.incident, alert.early_warning or "
                                    f"alert.sla topic.")
        if topic not in topics_of(access_model, principal, [topic]):
            raise SubscriptionError(f"{where}: {principal} may not read {topic} (no grant in "
                                    f"{access_model.source.name}): a subscription sends nothing a department is not "
                                    "entitled to. Fix: subscribe to a topic it may read, or grant it first.")
        endpoint = str(e.get("endpoint") or "")
        parsed = urllib.parse.urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SubscriptionError(f"{where}: `endpoint` {endpoint!r} is not an http(s) URL. Fix: the URL of the "
                                    "department system's notification endpoint.")
        accept, form = e.get("accept", ACCEPT[0]), e.get("format", FORMATS[0])
        if accept not in ACCEPT or form not in FORMATS:
            raise SubscriptionError(f"{where}: `accept` is one of {', '.join(ACCEPT)}, `format` one of "
                                    f"{', '.join(FORMATS)}. Fix: leave them out for the defaults.")
        out.append(Subscription(sid, principal, topic, endpoint, accept, form))
    return out


def entity_of(topic: str, value: dict[str, Any], event_id: str, form: str) -> dict[str, Any]:
    """A record as an NGSI-LD entity: its fields as Properties (or plain values, concise), its position as
    a GeoProperty ``location``, its id a URN of its entity type and event id."""
    kind = next(t for prefix, t in ENTITY_TYPES.items() if topic.startswith(prefix))
    entity: dict[str, Any] = {"id": f"urn:ngsi-ld:{kind}:{event_id}", "type": kind}
    lon, lat = value.get("long"), value.get("lat")
    for name, v in value.items():
        if name in ("long", "lat") or v is None:
            continue
        entity[name] = v if form == "concise" else {"type": "Property", "value": v}
    if isinstance(lon, (int, float)) and isinstance(lat, (int, float)):
        point = {"type": "Point", "coordinates": [lon, lat]}
        entity["location"] = point if form == "concise" else {"type": "GeoProperty", "value": point}
    return entity


def notification(sub: Subscription, topic: str, value: dict[str, Any], event_id: str) -> dict[str, Any]:
    body = {"id": f"urn:ngsi-ld:Notification:{uuid.uuid5(NOTIFICATION_NS, sub.id + chr(0) + event_id)}",
            "type": "Notification", "subscriptionId": sub.urn, "notifiedAt": now_iso(),
            "data": [entity_of(topic, value, event_id, sub.format)]}
    if sub.accept == "application/ld+json":
        body["@context"] = CORE_CONTEXT
    return body


@dataclass
class Delivery:
    """What happened to one subscription: delivered, retried, dead-lettered; whether its endpoint is failing."""

    delivered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    failures_in_a_row: int = 0
    last_error: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def failing(self) -> bool:
        return self.failures_in_a_row >= FAILING_AFTER


async def post(session: aiohttp.ClientSession, sub: Subscription, body: dict[str, Any]) -> tuple[int, str]:
    """(HTTP status or 0 for no answer, what went wrong) of one try."""
    headers = {"Content-Type": sub.accept}
    if sub.accept == "application/json":
        headers["Link"] = f'<{CORE_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    try:
        async with session.post(sub.endpoint, data=json.dumps(body, ensure_ascii=False).encode(), headers=headers) as r:
            await r.read()
            return r.status, "" if 200 <= r.status < 300 else f"HTTP {r.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return 0, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def retryable(status: int) -> bool:
    return status == 0 or status in (408, 429) or status >= 500


async def deliver(session: aiohttp.ClientSession, sub: Subscription, body: dict[str, Any], state: Delivery,
                  base_s: float = RETRY_BASE_S) -> tuple[bool, int, int, str]:
    """(delivered, attempts, last status, last error) of one notification, retried as the module says."""
    tries = 1 if state.failing else MAX_ATTEMPTS
    status, error = 0, ""
    for attempt in range(1, tries + 1):
        status, error = await post(session, sub, body)
        if not error:
            state.failures_in_a_row = 0
            return True, attempt, status, ""
        if not retryable(status) or attempt == tries:
            break
        state.retries += 1
        await asyncio.sleep(min(RETRY_MAX_S, base_s * 2 ** (attempt - 1)))
    state.failures_in_a_row += 1
    state.last_error = error
    return False, attempt, status, error


def dead_letter(sub: Subscription, topic: str, partition: int, offset: int, event_id: str, body: dict[str, Any],
                attempts: int, status: int, error: str, failing: bool) -> dict[str, Any]:
    reason = ("endpoint-failing" if failing else "endpoint-unreachable" if status == 0
              else "endpoint-refused" if 400 <= status < 500 else "endpoint-error")
    return {"notification_id": body["id"], "subscription_id": sub.id, "principal": sub.principal,
            "endpoint": sub.endpoint, "topic": topic, "partition": partition, "offset": offset, "event_id": event_id,
            "reason": reason, "attempts": attempts, "last_status": status, "message": error[:2000],
            "failed_at": now_iso(), "notification_text": json.dumps(body, ensure_ascii=False)}


class Notifier:
    """Every subscription's consumer and deliveries; ``run`` until stopped, or until all are caught up and
    quiet for ``idle_exit_s``.

    Each subscription is followed by a :class:`~citybrain.kafka.follow.Follower` in a thread of its own,
    with a kafka-python consumer logged in as its principal; its deliveries run on the notifier's event
    loop, where the HTTP session is, and the thread waits for each before it commits."""

    def __init__(self, settings: Settings, contracts: dict[str, Contract], subscriptions: list[Subscription],
                 passwords: dict[str, str], retry_base_s: float = RETRY_BASE_S) -> None:
        self.settings, self.contracts, self.subscriptions = settings, contracts, subscriptions
        self.passwords, self.retry_base_s = passwords, retry_base_s
        self.state = {s.id: Delivery() for s in subscriptions}
        self.stopping = asyncio.Event()
        self._stop = threading.Event()   # ``stopping`` as the followers' threads see it
        self._followers: dict[str, Follower] = {}
        self._started = time.monotonic()

    async def run(self, idle_exit_s: float | None = None) -> dict[str, Delivery]:
        from citybrain.ingest.producer import ValidatedProducer

        loop = asyncio.get_running_loop()
        self._stop.clear()
        with ValidatedProducer(self.settings, producer_id="citybrain.notify.notifier") as dlq, \
                ThreadPoolExecutor(max_workers=max(1, len(self.subscriptions)), thread_name_prefix="notify") as pool:
            timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                follows = [loop.run_in_executor(pool, self._follow, sub, session, dlq, loop) for sub in self.subscriptions]
                watchers = [asyncio.create_task(self._report())]
                if idle_exit_s is not None:
                    watchers.append(asyncio.create_task(self._exit_when_idle(idle_exit_s)))
                stop = asyncio.create_task(self.stopping.wait())
                # A subscription whose consumer or dead-letter producer failed stops the notifier with its
                # error (offsets of what it did not finish are not committed), so its supervisor restarts it.
                await asyncio.wait([stop, *watchers, *follows], return_when=asyncio.FIRST_COMPLETED)
                self._stop.set()
                for t in (stop, *watchers):
                    t.cancel()
                results = await asyncio.gather(*follows, *watchers, return_exceptions=True)
        self.write_status()
        errors = [r for r in results if isinstance(r, Exception)]   # not the watchers' cancellation
        if errors:
            raise errors[0]
        return self.state

    def status(self) -> dict[str, Any]:
        return {"updated_at": now_iso(), "subscriptions": {
            s.id: {"principal": s.principal, "topic": s.topic, "endpoint": s.endpoint, "caught_up": self._caught_up(s),
                   "delivered": st.delivered, "retries": st.retries, "dead_lettered": st.dead_lettered,
                   "reasons": st.reasons, "status": "failed" if st.failing else "active", "last_error": st.last_error}
            for s in self.subscriptions for st in [self.state[s.id]]}}

    def write_status(self) -> None:
        StatusFile(status_path(self.settings)).write(self.status())

    def _caught_up(self, sub: Subscription) -> bool:
        """Whether the subscription's consumer holds partitions and has read them to their ends."""
        follower = self._followers.get(sub.id)
        return follower is not None and follower.drained

    async def _report(self) -> None:
        while True:
            self.write_status()
            await asyncio.sleep(0.5)

    async def _exit_when_idle(self, idle_s: float) -> None:
        """Stop once every subscription is caught up and none has had a record for ``idle_s``."""
        def quiet() -> bool:
            followers = [self._followers.get(s.id) for s in self.subscriptions]
            return (time.monotonic() - self._started >= idle_s
                    and all(f is not None and f.drained and f.idle_for() >= idle_s for f in followers))

        while not quiet():
            await asyncio.sleep(0.2)
        self.stopping.set()

    def _follow(self, sub: Subscription, session: aiohttp.ClientSession, dlq: Any,
                loop: asyncio.AbstractEventLoop) -> None:
        """Send the records of one subscription's topic (in a thread of its own) until the notifier stops; each
        partition's records are committed once every one of them was delivered or dead-lettered."""
        from citybrain.ingest.readers import RawRecord
        from citybrain.kafka import clients

        department = self.settings.as_principal(sub.principal, self.passwords[sub.principal])
        consumer = clients.consumer(department, sub.topic, group_id=sub.group, auto_offset_reset="latest",
                                    enable_auto_commit=False)
        contract, dlq_contract = self.contracts[sub.topic], self.contracts[DLQ_TOPIC]
        state = self.state[sub.id]

        def send(tp: TopicPartition, records: list[ConsumerRecord]) -> None:
            for r in records:
                value = json.loads(r.value)
                event_id = record_event_id(contract, read_headers(r.headers), r.value, value)
                body = notification(sub, sub.topic, value, event_id)
                was_failing = state.failing
                ok, attempts, status, error = self._on_loop(
                    loop, deliver(session, sub, body, state, self.retry_base_s))
                if ok:
                    state.delivered += 1
                    continue
                letter = dead_letter(sub, sub.topic, tp.partition, r.offset, event_id, body, attempts, status, error,
                                     was_failing)
                summary = dlq.produce(dlq_contract, [RawRecord(f"notify:{sub.id}", b"", value=letter)])
                if summary.accepted != 1:
                    raise RuntimeError(f"the dead letter of {event_id} for {sub.id} was not accepted")
                state.dead_lettered += 1
                state.reasons[letter["reason"]] = state.reasons.get(letter["reason"], 0) + 1
                log.warning("notify %s: %s not delivered to %s after %d attempt(s): %s (dead-lettered)",
                            sub.id, event_id, sub.endpoint, attempts, error)

        # idle_s=0: every poll that finds nothing says whether it is caught up (the status shows it).
        follower = Follower(consumer, send, poll_ms=500, max_records=200, idle_s=0.0, exit_when_drained=False,
                            commit_records=True, stop=self._stop)
        self._followers[sub.id] = follower
        try:
            follower.run()
        finally:
            consumer.close()

    def _on_loop(self, loop: asyncio.AbstractEventLoop,
                 coro: Coroutine[Any, Any, tuple[bool, int, int, str]]) -> tuple[bool, int, int, str]:
        """Run a delivery on the notifier's event loop and wait for it; once the notifier stops, cancel it and
        raise :class:`Stopped` (its record is not committed: it is sent again on the next run)."""
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        while True:
            try:
                return future.result(timeout=0.2)
            except FutureTimeout:
                if self._stop.is_set():
                    future.cancel()
                    raise Stopped from None


def status_path(settings: Settings) -> Path:
    """Where the running notifier keeps its counts per subscription (rewritten twice a second)."""
    return settings.state_dir / "run" / "notify.json"


def passwords_for(settings: Settings, subscriptions: list[Subscription]) -> dict[str, str]:
    """Each subscribed principal's own password, from the credential store ``citybrain access apply`` keeps."""
    from citybrain.access.credentials import CredentialStore

    store = CredentialStore(settings.access_dir).passwords
    missing = sorted({s.principal for s in subscriptions} - set(store))
    if missing:
        raise SubscriptionError(f"{', '.join(missing)} have no credential yet. Fix: `citybrain access apply`.")
    return {s.principal: store[s.principal] for s in subscriptions}
