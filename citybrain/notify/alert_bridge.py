"""The alert topics followed into Alertmanager (``citybrain notify alertmanager``), so a duty officer gets one stream.

The bridge reads the ``alert.*`` topics (:data:`~citybrain.notify.alertmanager.BRIDGED`) with its own consumer
group (:data:`GROUP`), committed records only, from the oldest record its group has not committed (the first
run: the topics' start). Each poll's records of a partition become one batch of Alertmanager alerts
(:func:`~citybrain.notify.alertmanager.to_alertmanager`), posted to ``<url>/api/v2/alerts``; their offsets are
committed once Alertmanager answered 2xx, so a restart resumes after the last batch it took.

- A record whose alert already ended (``endsAt`` past: older than the hold) is not posted: it would page no
  one, and Alertmanager holds it already if it ever saw it. It counts as ``expired``.
- A record that cannot be read (not JSON, not its topic's contract) is dead-lettered on
  ``dlq.notify.undelivered.v1`` with reason ``record-unreadable``; a batch Alertmanager refuses as invalid
  (400) is posted again alert by alert, and each alert it refuses alone is dead-lettered with reason
  ``endpoint-refused``. Dead letters name ``alertmanager`` as their subscription and the alerts URL as
  their endpoint. Both are written once the batch's good alerts are taken, so a retry writes none twice.
- Anything else (no answer, a timeout, 5xx, 429, 401, a redirect, which is never followed: the alerts go to the
  configured Alertmanager only) is retried: the batch's partition is sought back to the batch and paused,
  every partition with it, and the whole is tried again after a wait doubling from ``retry_base_s`` up to
  ``retry_max_s``. The consumer keeps polling meanwhile, so it stays in its group; nothing is committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from citybrain import metrics
from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator, Rejection
from citybrain.errors import InputError
from citybrain.ingest.readers import RawRecord
from citybrain.kafka.follow import commit
from citybrain.kafka.headers import read_headers, record_event_id, trace_of
from citybrain.notify.alertmanager import BRIDGED, HOLD, to_alertmanager
from citybrain.notify.notifier import REFUSED, UNREADABLE, backoff, read_record
from citybrain.notify.ngsi import NOTIFICATION_NS
from citybrain.settings import Settings
from citybrain.times import iso, now_iso, parse_time

if TYPE_CHECKING:  # pragma: no cover
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.structs import TopicPartition

__all__ = ["GROUP", "PRINCIPAL", "SERVICE", "AlertBridge", "BridgeState", "alerts_url", "post_alerts", "run",
           "status_path"]

log = logging.getLogger(__name__)

#: The bridge's consumer group: its committed offsets are where a restart resumes.
GROUP = "citybrain.notify.alertmanager"
#: The bridge as ``citybrain status``, its metrics port and its systemd unit name it.
SERVICE = "notify-alertmanager"
#: The broker principal the bridge connects as (infra/access.yaml `services:`): the bridged alert topics, its
#: consumer group and its dead letters.
PRINCIPAL = "svc-bridge"
#: The subscription id its dead letters carry.
SUBSCRIPTION_ID = "alertmanager"
DLQ_TOPIC = topics.NOTIFY_DEAD_LETTERS
#: The first wait before a batch Alertmanager did not take is tried again; each wait doubles the one before.
RETRY_BASE_S = 1.0
#: The longest wait between two tries.
RETRY_MAX_S = 60.0
#: How long one post may take, connection to answer.
TIMEOUT_S = 10.0
#: Records of one poll, at most: a batch is one partition's share of them.
BATCH = 200
#: What Alertmanager answers alerts it finds invalid with: sending them again changes nothing.
INVALID = (400, 422)

Post = Callable[[str, list[dict[str, Any]]], tuple[int, str]]


def alerts_url(url: str) -> str:
    """Alertmanager's alerts endpoint (``/api/v2/alerts``) under its base ``url`` (``http://host:9093``)."""
    if not url.startswith(("http://", "https://")) or "?" in url or "#" in url:
        raise InputError(f"--url {url!r} is not Alertmanager's base address. Fix: give it as "
                         "http://<host>:9093 (or https://, with a path prefix if Alertmanager runs under one).")
    return url.rstrip("/") + "/api/v2/alerts"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the 3xx comes back as an HTTPError, a failure like any other."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def post_alerts(url: str, alerts: list[dict[str, Any]], timeout_s: float = TIMEOUT_S) -> tuple[int, str]:
    """(HTTP status, or 0 for no answer; what went wrong, empty on 2xx) of one post of ``alerts`` to ``url``."""
    request = urllib.request.Request(url, data=json.dumps(alerts, ensure_ascii=False).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:
            answer.read()
            return answer.status, ""
    except urllib.error.HTTPError as exc:
        body = exc.read()[:300].decode("utf-8", "replace").strip()
        if 300 <= exc.code < 400:
            return exc.code, (f"HTTP {exc.code} redirect to {exc.headers.get('Location', '(no Location)')} not "
                              "followed: alerts go to the configured Alertmanager only. Fix: give --url as "
                              "Alertmanager's own address")
        return exc.code, f"HTTP {exc.code}" + (f": {body}" if body else "")
    except (urllib.error.URLError, OSError) as exc:   # no connection, a timeout
        reason = getattr(exc, "reason", exc)
        return 0, f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


@dataclass
class BridgeState:
    """What the bridge did: alerts sent, records expired and dead-lettered (by reason), retries, and whether it
    waits for Alertmanager (since when, the last error, the next try)."""

    sent: int = 0
    batches: int = 0
    expired: int = 0
    dead_lettered: int = 0
    retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    failing_since: str | None = None
    last_error: str | None = None
    next_try_at: str | None = None
    failures: int = 0       # failed tries in a row
    next_try: float = 0.0   # time.monotonic() of ``next_try_at``

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "batches": self.batches, "expired": self.expired,
                "dead_lettered": self.dead_lettered, "retries": self.retries, "reasons": self.reasons,
                "failing": self.failing_since is not None, "failing_since": self.failing_since,
                "next_try_at": self.next_try_at, "last_error": self.last_error}


#: A record, its event id and its alert.
Alert = tuple["ConsumerRecord", str, dict[str, Any]]


@dataclass
class _Batch:
    """One partition's records of a poll, read: the alerts to post (with their records) and what cannot be read."""

    alerts: list[Alert] = field(default_factory=list)
    unreadable: list[tuple[ConsumerRecord, str, Rejection]] = field(default_factory=list)
    expired: list[ConsumerRecord] = field(default_factory=list)


class AlertBridge:
    """The hooks of the bridge's :class:`~citybrain.kafka.follow.Follower`: each partition's records posted to
    Alertmanager as one batch and committed after a 2xx, or sought back and paused until the next try."""

    def __init__(self, contracts: dict[str, Contract], url: str, consumer: Any, dlq: Any, *,
                 post: Post | None = None, retry_base_s: float = RETRY_BASE_S, retry_max_s: float = RETRY_MAX_S,
                 hold: timedelta = HOLD, generator_url: str | None = None, max_record_bytes: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url, self.consumer, self.dlq = alerts_url(url), consumer, dlq
        self.post: Post = post or post_alerts
        self.retry_base_s, self.retry_max_s = retry_base_s, retry_max_s
        self.hold, self.generator_url = hold, generator_url
        self.max_record_bytes, self.clock = max_record_bytes, clock
        self.contracts = {topic: contracts[topic] for topic in BRIDGED}
        self.validators = {topic: RecordValidator(c) for topic, c in self.contracts.items()}
        self.dlq_contract = contracts[DLQ_TOPIC]
        self.state = BridgeState()

    @property
    def waiting(self) -> bool:
        """Whether Alertmanager failed and its next try is not due yet."""
        return self.state.failing_since is not None and self.clock() < self.state.next_try

    def on_records(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Post a partition's records as one batch; commit them once taken, else keep them for the next try."""
        if self.waiting:   # another partition's batch failed in this poll: these wait for the next try too
            self._hold(tp, records[0].offset)
            return
        batch = self._read(records)
        refused: list[tuple[Alert, int, str]] | None = []
        if batch.alerts:
            status, error = self._send([alert for _r, _e, alert in batch.alerts])
            if error:   # invalid alerts: find which, one by one; any other failure: the batch waits
                refused = self._refused_alone(batch) if status in INVALID else None
            if refused is None:
                self._failed(tp, records[0].offset, error)
                return
        for (r, event, alert), status, error in refused:
            self._dead_letter(r, event, REFUSED, json.dumps(alert, ensure_ascii=False), status, error)
        for r, event, rejection in batch.unreadable:
            self._dead_letter(r, event, UNREADABLE, (r.value or b"").decode("utf-8", "replace"), 0,
                              f"rule {rejection.rule} at {rejection.field}: {rejection.message}. Fix: "
                              f"{rejection.fix} (in the producer of the record)")
        not_taken = {r.offset for (r, _e, _a), _s, _m in refused}
        for r, _event, _alert in batch.alerts:
            if r.offset not in not_taken:
                self.state.sent += 1
                metrics.ALERTS_BRIDGED.labels(r.topic, "sent").inc()
        for r in batch.expired:
            self.state.expired += 1
            metrics.ALERTS_BRIDGED.labels(r.topic, "expired").inc()
        self.state.batches += 1 if batch.alerts else 0
        commit(self.consumer, tp, records[-1].offset + 1)
        self._recovered()

    def on_tick(self, polled: bool) -> None:
        """Once the wait after a failure is over, resume the paused partitions: their batches are tried again."""
        if self.state.failing_since is not None and not self.waiting and self.consumer.paused():
            self.consumer.resume(*self.consumer.paused())

    def _read(self, records: list[ConsumerRecord]) -> _Batch:
        """The records as alerts, apart from those whose alert already ended and those that cannot be read."""
        batch, now = _Batch(), datetime.now(timezone.utc)
        for r in records:
            headers = read_headers(r.headers)
            value = read_record(self.validators[r.topic], r.value, self.max_record_bytes)
            if isinstance(value, Rejection):
                found = headers.get("event-id")
                event = found.decode("utf-8", "replace") if found else f"{r.topic}:{r.partition}:{r.offset}"
                batch.unreadable.append((r, event, value))
                continue
            event = record_event_id(self.contracts[r.topic], headers, r.value, value)
            alert = to_alertmanager(r.topic, value, hold=self.hold)
            if parse_time(alert["endsAt"]) <= now:
                batch.expired.append(r)
                continue
            if self.generator_url:
                alert["generatorURL"] = self.generator_url
            log.debug("alert %s of %s (%s) to Alertmanager", event, r.topic, alert["labels"]["alertname"],
                      extra={"trace_id": trace_of(headers)})
            batch.alerts.append((r, event, alert))
        return batch

    def _send(self, alerts: list[dict[str, Any]]) -> tuple[int, str]:
        status, error = self.post(self.url, alerts)
        metrics.ALERTMANAGER_POSTS.labels(metrics.status_class(status)).inc()
        return status, error

    def _refused_alone(self, batch: _Batch) -> list[tuple[Alert, int, str]] | None:
        """Each alert of a batch refused as invalid posted alone: those Alertmanager refuses alone, with its
        answer; None when a post failed otherwise (the batch waits for the next try)."""
        refused = []
        for item in batch.alerts:
            status, error = self._send([item[2]])
            if error and status not in INVALID:
                return None
            if error:
                refused.append((item, status, error))
        return refused

    def _failed(self, tp: TopicPartition, first: int, error: str) -> None:
        """Alertmanager did not take a batch: wait, doubling, and keep every partition where it is until then."""
        st = self.state
        st.failures += 1
        if st.failing_since is None:
            st.failing_since = now_iso()
        else:
            st.retries += 1
        wait = backoff(self.retry_base_s, st.failures, self.retry_max_s)
        st.next_try = self.clock() + wait
        st.next_try_at = iso(datetime.now(timezone.utc) + timedelta(seconds=wait))
        st.last_error = error
        self._hold(tp, first)
        self.consumer.pause(*self.consumer.assignment())
        level = logging.WARNING if st.failures == 1 else logging.DEBUG
        log.log(level, "Alertmanager at %s did not take %s's alerts (%s); trying again in %.1fs, nothing committed",
                self.url, tp.topic, error, wait)

    def _hold(self, tp: TopicPartition, first: int) -> None:
        self.consumer.seek(tp, first)
        self.consumer.pause(tp)

    def _recovered(self) -> None:
        st = self.state
        if st.failing_since is not None:
            log.warning("Alertmanager at %s takes alerts again (failing since %s)", self.url, st.failing_since)
        st.failing_since, st.next_try_at, st.failures = None, None, 0

    def _dead_letter(self, r: ConsumerRecord, event: str, reason: str, text: str, status: int, message: str) -> None:
        notification = uuid.uuid5(NOTIFICATION_NS, SUBSCRIPTION_ID + chr(0) + event)   # as the notifier's ids
        letter = {"notification_id": f"urn:ngsi-ld:Notification:{notification}",
                  "subscription_id": SUBSCRIPTION_ID, "principal": SUBSCRIPTION_ID, "endpoint": self.url,
                  "topic": r.topic, "partition": r.partition, "offset": r.offset, "event_id": event[:200],
                  "reason": reason, "attempts": 1, "last_status": status, "message": message[:2000],
                  "failed_at": now_iso(), "notification_text": text}
        summary = self.dlq.produce(self.dlq_contract, [RawRecord(f"notify:{SUBSCRIPTION_ID}", b"", value=letter)])
        if summary.accepted != 1:
            why = "; ".join(f"{x.rule} at {x.field}: {x.message}" for _source, x in summary.rejections) or "not sent"
            raise RuntimeError(f"the dead letter of {event} ({reason}) was not accepted by {DLQ_TOPIC} ({why}); "
                               "its record is not committed")
        self.state.dead_lettered += 1
        self.state.reasons[reason] = self.state.reasons.get(reason, 0) + 1
        metrics.ALERTS_BRIDGED.labels(r.topic, "dead-lettered").inc()
        log.warning("alert bridge: %s of %s dead-lettered (%s): %s", event, r.topic, reason, message)


def status_path(settings: Settings) -> Path:
    """Where the running bridge keeps its counts and whether it waits for Alertmanager."""
    return settings.state_dir / "run" / f"{SERVICE}.json"


def run(settings: Settings, contracts: dict[str, Contract], url: str, *, stop: threading.Event,
        idle_exit_s: float | None = None, retry_base_s: float = RETRY_BASE_S, retry_max_s: float = RETRY_MAX_S,
        generator_url: str | None = None) -> BridgeState:
    """Follow the alert topics into Alertmanager until ``stop`` is set (or, with ``idle_exit_s``, the topics
    are read to their ends and quiet that long); the status file rewritten after every poll."""
    from citybrain.ingest.producer import ValidatedProducer
    from citybrain.kafka import clients
    from citybrain.kafka.follow import Follower, StatusFile

    status = StatusFile(status_path(settings))
    consumer = clients.consumer(settings, *sorted(BRIDGED), group_id=GROUP, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    try:
        with ValidatedProducer(settings, producer_id="citybrain.notify.alertmanager") as dlq:
            bridge = AlertBridge(contracts, url, consumer, dlq, retry_base_s=retry_base_s, retry_max_s=retry_max_s,
                                 generator_url=generator_url, max_record_bytes=settings.max_record_bytes)
            written = 0.0

            def tick(polled: bool) -> None:
                nonlocal written
                bridge.on_tick(polled)
                if time.monotonic() - written >= 0.5:
                    status.write({"url": bridge.url, **bridge.state.as_dict()})
                    written = time.monotonic()

            follower = Follower(consumer, bridge.on_records, on_tick=tick, poll_ms=500, max_records=BATCH,
                                idle_s=idle_exit_s, exit_when_drained=idle_exit_s is not None, stop=stop, name=SERVICE)
            follower.run()
            status.write({"url": bridge.url, **bridge.state.as_dict()})
            return bridge.state
    finally:
        consumer.close()
