"""NGSI-LD notifications out: a department's FIWARE system receives its records without a Kafka client.

Each subscription (:mod:`citybrain.notify.subscriptions`) is read *as its principal*, with its own credentials
and consumer group (``<principal>.notify.<id>``), so the broker's ACLs hold whatever the file says; each
record goes out as an NGSI-LD Notification (:mod:`citybrain.notify.ngsi`) whose id is the same every time it
is sent, so a receiver can drop a repeat.

A subscription sends what its topic receives from the first time it ran (as an NGSI-LD subscription
notifies of changes after it is made, not a topic's whole retention); from then on its committed
offsets carry it over restarts, so nothing is skipped while the notifier is down.

Delivery is at least once, in order per partition, and nothing is lost: a record's offset is committed
once the endpoint took it (2xx) or it was dead-lettered, and only two kinds of record are:

- ``endpoint-refused``: the endpoint refused it for good (a 4xx other than 408 and 429: sending it again
  changes nothing); the next record is sent;
- ``record-unreadable``: it is not JSON, or not its topic's contract, so there is nothing to send.

Any other failure (no connection, a timeout, 408, 429, 5xx) is retried with a backoff doubling from
``RETRY_BASE_S``, up to ``MAX_ATTEMPTS`` tries. A redirect (3xx) is a failure too, neither followed (a
notification goes to the subscription's endpoint only, and a followed POST may arrive as a GET) nor
retried at once. A record still not taken *pauses* its subscription: nothing past it is committed, its partitions are paused
(the consumer keeps polling, so it stays in its group) and sought back to it, and its endpoint is tried
again with the first waiting record, the wait doubling on, capped at ``PAUSE_MAX_S``. When the endpoint
takes it, the subscription resumes where it stopped. The status file names the paused subscriptions,
since when, how many records wait and the last error. ``citybrain notify replay`` sends dead letters
again (:mod:`citybrain.notify.replay`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Coroutine

import aiohttp

from citybrain import metrics
from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator, Rejection
from citybrain.ingest.readers import RawRecord, parse_json_record
from citybrain.kafka.follow import Follower, StatusFile, Stopped, commit
from citybrain.kafka.headers import read_headers, record_event_id
from citybrain.notify.ngsi import CORE_CONTEXT, notification, notification_id
from citybrain.notify.subscriptions import Subscription
from citybrain.settings import Settings
from citybrain.times import iso, now_iso

if TYPE_CHECKING:  # pragma: no cover
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

DLQ_TOPIC = topics.NOTIFY_DEAD_LETTERS
#: The broker principal the notifier connects as for its dead letters (infra/access.yaml `services:`); it reads
#: each subscription as the subscribed department's own principal.
PRINCIPAL = "svc-notify"
#: Tries of one notification before its subscription pauses.
MAX_ATTEMPTS = 5
#: The first wait between two tries; each wait doubles the one before.
RETRY_BASE_S = 0.5
#: The longest wait between two tries of one notification.
RETRY_MAX_S = 8.0
#: The longest wait between two tries of a paused subscription's endpoint.
PAUSE_MAX_S = 60.0
#: How long one try may take, connection to answer.
TIMEOUT_S = 10.0
#: Dead-letter reasons: the endpoint refused the notification for good; the record could not be read.
REFUSED, UNREADABLE = "endpoint-refused", "record-unreadable"


@dataclass
class Delivery:
    """What happened to one subscription: delivered, retried, dead-lettered (by reason); whether it is paused,
    since when, how many records wait and when its endpoint is tried next."""

    delivered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    last_error: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    #: When the subscription paused (wire time); None while it is active.
    paused_since: str | None = None
    #: Records not delivered yet, counted while paused.
    waiting: int = 0
    #: Tries of the endpoint that failed since the subscription paused.
    failed_tries: int = 0
    next_try_at: str | None = None
    #: The consumer's partitions are resumed for one try of the first waiting record.
    trying: bool = False
    next_try: float = 0.0   # time.monotonic() of ``next_try_at``

    @property
    def paused(self) -> bool:
        return self.paused_since is not None


@dataclass(frozen=True)
class Outcome:
    """What became of one notification: taken (2xx); refused for good (dead-letter it, send the next);
    or not taken (keep it: the subscription pauses)."""

    delivered: bool
    attempts: int
    status: int
    error: str

    @property
    def refused(self) -> bool:
        return not self.delivered and refused_for_good(self.status)


def refused_for_good(status: int) -> bool:
    """A 4xx other than 408 (Request Timeout) and 429 (Too Many Requests): the endpoint will not take this
    notification however often it is sent."""
    return 400 <= status < 500 and status not in (408, 429)


def retryable(status: int) -> bool:
    """A failure worth another try at once: no answer, 408, 429, 5xx (not a redirect, not a refusal)."""
    return status == 0 or status in (408, 429) or status >= 500


def backoff(base_s: float, failures: int, cap_s: float) -> float:
    """The wait after the ``failures``-th failure in a row: ``base_s`` doubled each time, at most ``cap_s``."""
    return min(cap_s, base_s * 2 ** (failures - 1))


async def post(session: aiohttp.ClientSession, sub: Subscription, body: dict[str, Any]) -> tuple[int, str]:
    """(HTTP status or 0 for no answer, what went wrong) of one try; a redirect is not followed."""
    headers = {"Content-Type": sub.accept}
    if sub.accept == "application/json":
        headers["Link"] = f'<{CORE_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    try:
        async with session.post(sub.endpoint, data=json.dumps(body, ensure_ascii=False).encode(), headers=headers,
                                allow_redirects=False) as r:
            await r.read()
            if 300 <= r.status < 400:
                return r.status, (f"HTTP {r.status} redirect to {r.headers.get('Location', '(no Location)')} not "
                                  "followed: a notification goes to the subscription's endpoint only. Fix: set its "
                                  "`endpoint` in infra/subscriptions.yaml to the department's notification endpoint")
            return r.status, "" if 200 <= r.status < 300 else f"HTTP {r.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return 0, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def deliver(session: aiohttp.ClientSession, sub: Subscription, body: dict[str, Any], state: Delivery,
                  base_s: float = RETRY_BASE_S, tries: int = MAX_ATTEMPTS) -> Outcome:
    """One notification sent until taken, refused for good, or ``tries`` failed (retried as the module says); each
    try counted in the platform's metrics."""
    status, error = 0, ""
    for attempt in range(1, tries + 1):
        status, error = await post(session, sub, body)
        if not error:
            metrics.DELIVERIES.labels(sub.id).inc()
            return Outcome(True, attempt, status, "")
        metrics.DELIVERY_FAILURES.labels(sub.id, metrics.status_class(status)).inc()
        if not retryable(status) or attempt == tries:
            break
        state.retries += 1
        await asyncio.sleep(backoff(base_s, attempt, RETRY_MAX_S))
    state.last_error = error
    return Outcome(False, attempt, status, error)


def read_record(validator: RecordValidator, raw: bytes | None, max_bytes: int) -> dict[str, Any] | Rejection:
    """A consumed record's value, or the rule it breaks: JSON (UTF-8, one object) under its topic's contract."""
    parsed = parse_json_record(raw or b"", "record", max_bytes)
    if parsed.value is None:
        return parsed.rejection or Rejection("empty-record", "(record)", "record is empty")
    return validator(parsed.value) or parsed.value


def dead_letter(sub: Subscription, record: ConsumerRecord, event_id: str, reason: str, text: str, attempts: int,
                status: int, message: str) -> dict[str, Any]:
    """The dead letter of one record: whose it was, where it came from, why, and ``text`` (the notification
    as sent, or the record as read when it could not be read)."""
    return {"notification_id": notification_id(sub, event_id), "subscription_id": sub.id, "principal": sub.principal,
            "endpoint": sub.endpoint, "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "event_id": event_id, "reason": reason, "attempts": attempts, "last_status": status,
            "message": message[:2000], "failed_at": now_iso(), "notification_text": text}


class Notifier:
    """Every subscription's consumer and deliveries; ``run`` until stopped, or until all are caught up and
    quiet for ``idle_exit_s``.

    Each subscription is followed by a :class:`~citybrain.kafka.follow.Follower` in a thread of its own,
    with a kafka-python consumer logged in as its principal (:class:`Feed`); its deliveries run on the
    notifier's event loop, where the HTTP session is, and the thread waits for each before it commits."""

    def __init__(self, settings: Settings, contracts: dict[str, Contract], subscriptions: list[Subscription],
                 passwords: dict[str, str], retry_base_s: float = RETRY_BASE_S,
                 pause_max_s: float = PAUSE_MAX_S) -> None:
        self.settings, self.contracts, self.subscriptions = settings, contracts, subscriptions
        self.passwords, self.retry_base_s, self.pause_max_s = passwords, retry_base_s, pause_max_s
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
        """Per subscription: counts, ``status`` (the standard's ``failed`` while paused, else ``active``), and
        whether it is paused, since when, how many records wait, when it tries again, the last error."""
        return {"updated_at": now_iso(), "subscriptions": {
            s.id: {"principal": s.principal, "topic": s.topic, "endpoint": s.endpoint, "caught_up": self._caught_up(s),
                   "delivered": st.delivered, "retries": st.retries, "dead_lettered": st.dead_lettered,
                   "reasons": st.reasons, "status": "failed" if st.paused else "active", "paused": st.paused,
                   "paused_since": st.paused_since, "waiting": st.waiting if st.paused else 0,
                   "next_try_at": st.next_try_at if st.paused else None, "last_error": st.last_error}
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
        """Stop once every subscription is caught up and none has had a record for ``idle_s`` (a paused one is
        not caught up: its records wait)."""
        def quiet() -> bool:
            followers = [self._followers.get(s.id) for s in self.subscriptions]
            return (time.monotonic() - self._started >= idle_s
                    and all(f is not None and f.drained and f.idle_for() >= idle_s for f in followers))

        while not quiet():
            await asyncio.sleep(0.2)
        self.stopping.set()

    def _follow(self, sub: Subscription, session: aiohttp.ClientSession, dlq: Any,
                loop: asyncio.AbstractEventLoop) -> None:
        """Send the records of one subscription's topic (in a thread of its own) until the notifier stops."""
        from citybrain.kafka import clients

        department = self.settings.as_principal(sub.principal, self.passwords[sub.principal])
        consumer = clients.consumer(department, sub.topic, group_id=sub.group, auto_offset_reset="latest",
                                    enable_auto_commit=False)
        feed = Feed(self, sub, consumer, lambda body, tries: self._on_loop(
            loop, deliver(session, sub, body, self.state[sub.id], self.retry_base_s, tries)), dlq)
        # idle_s=0: every poll that finds nothing says whether it is caught up (the status shows it). The feed
        # commits itself: never past the first record its endpoint did not take.
        follower = Follower(consumer, feed.on_records, on_tick=feed.on_tick, poll_ms=500, max_records=200, idle_s=0.0,
                            exit_when_drained=False, stop=self._stop, name=f"notify:{sub.id}")
        self._followers[sub.id] = follower
        try:
            follower.run()
        finally:
            consumer.close()

    def _on_loop(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Outcome]) -> Outcome:
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


class Feed:
    """One subscription's records through its endpoint, in order (the hooks of its :class:`Follower`): each is
    delivered, or dead-lettered when refused for good or unreadable; the first one not taken pauses the
    subscription, and a try of it once the wait is over resumes it where it stopped."""

    def __init__(self, notifier: Notifier, sub: Subscription, consumer: Any,
                 send: Callable[[dict[str, Any], int], Outcome], dlq: Any) -> None:
        self.sub, self.consumer, self.send, self.dlq = sub, consumer, send, dlq
        self.state = notifier.state[sub.id]
        self.retry_base_s, self.pause_max_s = notifier.retry_base_s, notifier.pause_max_s
        self.max_bytes = notifier.settings.max_record_bytes
        self.contract, self.dlq_contract = notifier.contracts[sub.topic], notifier.contracts[DLQ_TOPIC]
        self.validator = RecordValidator(self.contract)

    def on_records(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Send a partition's records until one is not taken; commit what was sent or dead-lettered, and read
        the rest again once the endpoint is back."""
        done = records[0].offset   # the next offset to commit: each record before it delivered or dead-lettered
        try:
            for r in records:
                if self.state.paused and not self.state.trying or not self._one(r):
                    break
                done = r.offset + 1
        finally:   # also when the notifier stops mid-delivery (Stopped): what was finished stays finished
            if done > records[0].offset:
                commit(self.consumer, tp, done)
        if done <= records[-1].offset:
            self.consumer.seek(tp, done)
            self.consumer.pause(tp)

    def on_tick(self, polled: bool) -> None:
        """While paused: count what waits; once the wait is over, resume the partitions for one try."""
        st = self.state
        if not st.paused:
            return
        self._count_waiting()
        if not st.trying and time.monotonic() >= st.next_try:
            st.trying = True
            self.consumer.resume(*self.consumer.paused())

    def _one(self, r: ConsumerRecord) -> bool:
        """Deliver or dead-letter one record (True), or pause the subscription on it (False)."""
        headers = read_headers(r.headers)
        value = read_record(self.validator, r.value, self.max_bytes)
        if isinstance(value, Rejection):
            found = headers.get("event-id")
            event_id = found.decode("utf-8", "replace") if found else f"{r.topic}:{r.partition}:{r.offset}"
            self._dead_letter(r, event_id, UNREADABLE, (r.value or b"").decode("utf-8", "replace"), 1, 0,
                              f"rule {value.rule} at {value.field}: {value.message}. Fix: {value.fix} (in the "
                              "producer of the record)")
            return True
        event_id = record_event_id(self.contract, headers, r.value, value)
        body = notification(self.sub, self.sub.topic, value, event_id)
        outcome = self.send(body, 1 if self.state.paused else MAX_ATTEMPTS)
        self.state.trying = False
        if outcome.delivered:
            self.state.delivered += 1
            self._resume()
            return True
        if outcome.refused:
            self._dead_letter(r, event_id, REFUSED, json.dumps(body, ensure_ascii=False), outcome.attempts,
                              outcome.status, outcome.error)
            self._resume()
            return True
        self._pause(event_id, outcome)
        return False

    def _dead_letter(self, r: ConsumerRecord, event_id: str, reason: str, text: str, attempts: int, status: int,
                     message: str) -> None:
        letter = dead_letter(self.sub, r, event_id, reason, text, attempts, status, message)
        summary = self.dlq.produce(self.dlq_contract, [RawRecord(f"notify:{self.sub.id}", b"", value=letter)])
        if summary.accepted != 1:
            why = "; ".join(f"{x.rule} at {x.field}: {x.message}" for _source, x in summary.rejections) or "not sent"
            raise RuntimeError(f"the dead letter of {event_id} for {self.sub.id} ({reason}) was not accepted by "
                               f"{DLQ_TOPIC} ({why}); its record is not committed")
        self.state.dead_lettered += 1
        self.state.reasons[reason] = self.state.reasons.get(reason, 0) + 1
        log.warning("notify %s: %s dead-lettered (%s): %s", self.sub.id, event_id, reason, message)

    def _pause(self, event_id: str, outcome: Outcome) -> None:
        """Pause on a record not taken (or wait longer, when a try while paused failed)."""
        st = self.state
        if st.paused:
            st.failed_tries += 1
        else:
            st.paused_since, st.failed_tries = now_iso(), 0
        # One backoff: it goes on from the record's own tries, doubling up to PAUSE_MAX_S.
        wait = backoff(self.retry_base_s, MAX_ATTEMPTS + st.failed_tries, self.pause_max_s)
        st.next_try = time.monotonic() + wait
        st.next_try_at = iso(datetime.now(timezone.utc) + timedelta(seconds=wait))
        self.consumer.pause(*self.consumer.assignment())
        self._count_waiting()
        level = logging.WARNING if st.failed_tries == 0 else logging.DEBUG
        log.log(level, "notify %s: paused at %s: %s did not take it (%s); %d record(s) wait, next try in %.1fs",
                self.sub.id, event_id, self.sub.endpoint, outcome.error, st.waiting, wait)

    def _resume(self) -> None:
        st = self.state
        if st.paused:
            log.warning("notify %s: %s answers again; resumed (paused since %s)", self.sub.id, self.sub.endpoint,
                        st.paused_since)
            st.paused_since, st.next_try_at, st.failed_tries, st.waiting = None, None, 0, 0

    def _count_waiting(self) -> None:
        """Records not delivered yet: from each partition's position (the first waiting record) to its end."""
        from kafka.errors import KafkaError

        held = list(self.consumer.assignment() or ())
        try:
            ends = self.consumer.end_offsets(held) if held else {}
            self.state.waiting = sum(max(0, end - (self.consumer.position(tp) or 0)) for tp, end in ends.items())
        except KafkaError as exc:   # a count for the status only: the next tick counts again
            log.debug("notify %s: records waiting not counted: %s", self.sub.id, exc)


def status_path(settings: Settings) -> Path:
    """Where the running notifier keeps its counts per subscription (rewritten twice a second)."""
    return settings.state_dir / "run" / "notify.json"
