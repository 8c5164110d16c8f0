"""The alert topics' bridge to Alertmanager (``citybrain notify alertmanager``): its delivery loop against a real HTTP
server answering as an Alertmanager can (2xx, 500, a 307 redirect, 400), through the real consumer loop
(:class:`~citybrain.kafka.follow.Follower`) over a scripted consumer."""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
from kafka.structs import TopicPartition

from citybrain import metrics
from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.errors import InputError
from citybrain.ingest.producer import ProduceSummary
from citybrain.kafka.follow import Follower
from citybrain.logs import JsonFormatter
from citybrain.notify.alert_bridge import AlertBridge, alerts_url, post_alerts
from citybrain.notify.alertmanager import HOLD, RUNBOOK
from citybrain.notify.notifier import REFUSED, UNREADABLE
from citybrain.times import iso, parse_time
from tests.unit.test_follow import Record

SLA, QUALITY = TopicPartition(topics.SLA_ALERTS, 0), TopicPartition(topics.QUALITY_ALERTS, 0)
#: Each topic's id field and the prefix its pattern asks for.
ID_OF = {topics.SLA_ALERTS: ("alert_id", "SLA-test-"), topics.QUALITY_ALERTS: ("alert_id", "DQ-test-")}


class Alertmanager:
    """A real HTTP server in a thread, answering ``answers`` in turn (then 200); ``posts`` holds what it was sent
    (path, body) and ``taken`` the alerts of the posts it answered 2xx. ``refuse`` names an alert id it answers
    400 for, in any batch, as Alertmanager does an invalid alert."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.refuse: str | None = None
        self.posts: list[tuple[str, Any]] = []
        self.taken: list[dict[str, Any]] = []
        self.content_types: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.posts.append((self.path, body))
                owner.content_types.append(self.headers["Content-Type"])
                status = owner.answers.pop(0) if owner.answers else 200
                if status == 200 and owner.refuse and any(a["labels"]["alert_id"] == owner.refuse for a in body):
                    status = 400
                if status == 200:
                    owner.taken.extend(body)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere/api/v2/alerts")
                payload = b"" if status == 200 else b'{"message": "as told"}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 - where a followed 303 would land
                owner.posts.append((self.path, None))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def ids(self) -> list[str]:
        return [a["labels"]["alert_id"] for a in self.taken]


@pytest.fixture
def alertmanager() -> Iterator[Alertmanager]:
    am = Alertmanager()
    am.thread.start()
    yield am
    am.server.shutdown()
    am.server.server_close()


class Consumer:
    """kafka-python's consumer as the bridge's loop uses it: ``values`` per partition, polled from the position,
    paused, resumed and sought; ``commits`` what was committed."""

    def __init__(self, values: dict[TopicPartition, list[bytes]], committed: dict[TopicPartition, int] | None = None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        self.values, self.headers = values, headers or []
        self.positions = {tp: (committed or {}).get(tp, 0) for tp in values}
        self.stopped: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        out = {}
        for tp in sorted(set(self.values) - self.stopped):
            first = self.positions[tp]
            if first < len(self.values[tp]):
                out[tp] = [Record(tp.topic, tp.partition, o, value=v, headers=self.headers)
                           for o, v in enumerate(self.values[tp]) if o >= first]
                self.positions[tp] = len(self.values[tp])
        if not out:
            time.sleep(0.01)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.values)

    def subscription(self) -> set[str]:
        return {tp.topic for tp in self.values}

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.values[tp]) for tp in tps}

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def pause(self, *tps: TopicPartition) -> None:
        self.stopped |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.stopped -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.stopped)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    def committed(self) -> dict[TopicPartition, int]:
        """The last offset committed per partition."""
        return {tp: o for c in self.commits for tp, o in c.items()}


class DeadLetters:
    """The dead-letter producer without a broker: it takes every letter its contract allows, as the real one does."""

    def __init__(self) -> None:
        self.letters: list[dict[str, Any]] = []

    def produce(self, contract: Contract, records: list[Any]) -> ProduceSummary:
        check = RecordValidator(contract)
        refused = [(r.source, rejection) for r in records for rejection in [check(r.value)] if rejection is not None]
        self.letters.extend(r.value for r in records if check(r.value) is None)
        return ProduceSummary(contract.topic, read=len(records), accepted=len(records) - len(refused),
                              dead_lettered=len(refused), rejections=refused)


def alert(contracts: dict[str, Contract], topic: str, n: int, age: timedelta = timedelta(minutes=5)) -> bytes:
    """The contract's example record of ``topic`` as record ``n``, detected ``age`` ago."""
    record = copy.deepcopy(contracts[topic].examples[0])
    name, prefix = ID_OF[topic]
    record[name] = f"{prefix}{n}"
    record["detected_at"] = iso(datetime.now(timezone.utc) - age)
    return json.dumps(record).encode()


def run(bridge: AlertBridge, consumer: Consumer, until: Any = None, timeout_s: float = 10.0) -> None:
    """The bridge's real loop over ``consumer`` until the topics are read and quiet, or ``until()`` holds."""
    stop = threading.Event()
    follower = Follower(consumer, bridge.on_records, on_tick=bridge.on_tick, poll_ms=10, idle_s=0.1,
                        exit_when_drained=until is None, stop=stop, name="notify-alertmanager")
    thread = threading.Thread(target=follower.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while thread.is_alive() and time.monotonic() < deadline:
        if until is not None and until():
            stop.set()
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def bridge(contracts: dict[str, Contract], am: Alertmanager, consumer: Consumer, **kwargs: Any) -> AlertBridge:
    return AlertBridge(contracts, am.url, consumer, kwargs.pop("dlq", DeadLetters()), retry_base_s=0.02,
                       retry_max_s=0.1, **kwargs)


def test_each_partitions_records_are_one_batch_of_v2_alerts_committed_after_the_2xx(
        contracts: dict[str, Contract], alertmanager: Alertmanager) -> None:
    consumer = Consumer({SLA: [alert(contracts, topics.SLA_ALERTS, i) for i in range(3)],
                         QUALITY: [alert(contracts, topics.QUALITY_ALERTS, i) for i in range(2)]})
    b = bridge(contracts, alertmanager, consumer, generator_url="https://ops.city.example/alerts")
    run(b, consumer)
    assert [path for path, _body in alertmanager.posts] == ["/api/v2/alerts"] * 2
    assert set(alertmanager.content_types) == {"application/json"}
    assert sorted(len(body) for _path, body in alertmanager.posts) == [2, 3]
    assert sorted(alertmanager.ids()) == ["DQ-test-0", "DQ-test-1", "SLA-test-0", "SLA-test-1", "SLA-test-2"]
    first = next(a for a in alertmanager.taken if a["labels"]["alert_id"] == "SLA-test-0")
    assert set(first) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert first["labels"]["alertname"] == "TicketSLA" and first["labels"]["topic"] == topics.SLA_ALERTS
    assert first["annotations"]["runbook"] == RUNBOOK and first["generatorURL"] == "https://ops.city.example/alerts"
    assert parse_time(first["endsAt"]) - parse_time(first["startsAt"]) == HOLD
    assert consumer.committed() == {SLA: 3, QUALITY: 2}
    assert (b.state.sent, b.state.batches, b.state.retries, b.state.dead_lettered) == (5, 2, 0, 0)


def test_a_failing_alertmanager_is_retried_with_backoff_and_nothing_is_committed_or_lost_meanwhile(
        contracts: dict[str, Contract], alertmanager: Alertmanager) -> None:
    """A 500 (and no answer at all) keeps the batch: nothing committed before the 2xx, nothing dead-lettered."""
    alertmanager.answers = [500, 500, 500]
    consumer = Consumer({SLA: [alert(contracts, topics.SLA_ALERTS, i) for i in range(4)]})
    dlq = DeadLetters()
    b = bridge(contracts, alertmanager, consumer, dlq=dlq)
    commits_while_failing: list[int] = []

    def watch() -> bool:
        if b.state.failing_since is not None:
            commits_while_failing.append(len(consumer.commits))
        return False

    before = metrics.ALERTMANAGER_POSTS.labels("5xx")._value.get()
    run(b, consumer, until=lambda: watch() or len(alertmanager.taken) == 4)
    assert alertmanager.ids() == ["SLA-test-0", "SLA-test-1", "SLA-test-2", "SLA-test-3"]    # once each, in order
    assert len(alertmanager.posts) == 4 and commits_while_failing and set(commits_while_failing) == {0}
    assert consumer.committed() == {SLA: 4} and dlq.letters == []
    assert b.state.retries == 2 and b.state.failing_since is None and b.state.last_error == "HTTP 500: " \
        '{"message": "as told"}'
    assert metrics.ALERTMANAGER_POSTS.labels("5xx")._value.get() - before == 3


def test_the_waits_double_up_to_the_cap(contracts: dict[str, Contract]) -> None:
    now = [100.0]
    consumer = Consumer({SLA: [alert(contracts, topics.SLA_ALERTS, 0)]})
    b = AlertBridge(contracts, "http://127.0.0.1:9", consumer, DeadLetters(),
                    post=lambda url, alerts: (503, "HTTP 503"), retry_base_s=1.0, retry_max_s=5.0, clock=lambda: now[0])
    waits = []
    for _ in range(5):
        records = consumer.poll()[SLA]
        b.on_records(SLA, records)
        waits.append(b.state.next_try - now[0])
        assert consumer.paused() == {SLA} and consumer.positions[SLA] == 0 and b.waiting
        b.on_tick(False)
        assert consumer.paused() == {SLA}   # not before its time
        now[0] = b.state.next_try
        b.on_tick(False)
        assert consumer.paused() == set()
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0] and consumer.commits == []


@pytest.mark.parametrize("redirect", [307, 303, 308])
def test_a_redirect_is_never_followed_and_counts_as_a_failure(contracts: dict[str, Contract],
                                                               alertmanager: Alertmanager, redirect: int) -> None:
    """urllib itself follows a POST's 303 as a GET; the bridge follows none."""
    alertmanager.answers = [redirect]
    consumer = Consumer({SLA: [alert(contracts, topics.SLA_ALERTS, 0)]})
    b = bridge(contracts, alertmanager, consumer)
    errors: list[str] = []
    run(b, consumer, until=lambda: errors.append(b.state.last_error or "") or bool(alertmanager.taken))
    assert [path for path, _body in alertmanager.posts] == ["/api/v2/alerts"] * 2   # never /elsewhere
    assert any(f"{redirect} redirect to /elsewhere/api/v2/alerts not followed" in e for e in errors)
    assert consumer.committed() == {SLA: 1}


def test_post_alerts_says_no_answer_as_status_0() -> None:
    import socket

    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, error = post_alerts(f"http://127.0.0.1:{port}/api/v2/alerts", [], timeout_s=2)
    assert status == 0 and "refused" in error.lower()


def test_an_alert_alertmanager_refuses_is_dead_lettered_and_the_rest_of_its_batch_taken(
        contracts: dict[str, Contract], alertmanager: Alertmanager) -> None:
    alertmanager.refuse = "SLA-test-1"
    consumer = Consumer({SLA: [alert(contracts, topics.SLA_ALERTS, i) for i in range(3)]})
    dlq = DeadLetters()
    b = bridge(contracts, alertmanager, consumer, dlq=dlq)
    run(b, consumer)
    assert alertmanager.ids() == ["SLA-test-0", "SLA-test-2"] and consumer.committed() == {SLA: 3}
    [letter] = dlq.letters
    assert (letter["reason"], letter["subscription_id"], letter["offset"], letter["last_status"]) == \
        (REFUSED, "alertmanager", 1, 400)
    assert letter["endpoint"] == alertmanager.url + "/api/v2/alerts" and letter["event_id"] == "SLA-test-1"
    assert json.loads(letter["notification_text"])["labels"]["alert_id"] == "SLA-test-1"
    assert b.state.reasons == {REFUSED: 1} and b.state.sent == 2


def test_an_unreadable_record_is_dead_lettered_with_its_rule_and_the_others_sent(
        contracts: dict[str, Contract], alertmanager: Alertmanager) -> None:
    broken = json.loads(alert(contracts, topics.SLA_ALERTS, 1))
    del broken["department"]
    consumer = Consumer({SLA: [alert(contracts, topics.SLA_ALERTS, 0), b"{not json", json.dumps(broken).encode()]})
    dlq = DeadLetters()
    run(bridge(contracts, alertmanager, consumer, dlq=dlq), consumer)
    assert alertmanager.ids() == ["SLA-test-0"] and consumer.committed() == {SLA: 3}
    assert [(x["reason"], x["offset"], x["last_status"]) for x in dlq.letters] == \
        [(UNREADABLE, 1, 0), (UNREADABLE, 2, 0)]
    assert "department" in dlq.letters[1]["message"] and dlq.letters[0]["notification_text"] == "{not json"


def test_unreadable_and_expired_records_count_once_even_when_their_batch_is_retried(
        contracts: dict[str, Contract], alertmanager: Alertmanager) -> None:
    alertmanager.answers = [500, 500]
    consumer = Consumer({SLA: [b"[]", alert(contracts, topics.SLA_ALERTS, 0),
                               alert(contracts, topics.SLA_ALERTS, 1, age=HOLD * 2)]})
    dlq = DeadLetters()
    b = bridge(contracts, alertmanager, consumer, dlq=dlq)
    run(b, consumer, until=lambda: bool(consumer.commits))
    assert len(dlq.letters) == 1 and alertmanager.ids() == ["SLA-test-0"]
    assert (b.state.expired, b.state.dead_lettered, b.state.retries) == (1, 1, 1)


def test_an_alert_that_already_ended_is_not_sent(contracts: dict[str, Contract], alertmanager: Alertmanager) -> None:
    consumer = Consumer({SLA: [alert(contracts, topics.SLA_ALERTS, 0, age=HOLD + timedelta(minutes=1)),
                               alert(contracts, topics.SLA_ALERTS, 1)]})
    b = bridge(contracts, alertmanager, consumer)
    run(b, consumer)
    assert alertmanager.ids() == ["SLA-test-1"] and (b.state.expired, b.state.sent) == (1, 1)
    assert consumer.committed() == {SLA: 2}
    only_old = Consumer({SLA: [alert(contracts, topics.SLA_ALERTS, 2, age=HOLD * 2)]})
    run(bridge(contracts, alertmanager, only_old), only_old)
    assert len(alertmanager.posts) == 1 and only_old.committed() == {SLA: 1}   # nothing posted, still committed


def test_a_restart_resumes_after_the_last_batch_alertmanager_took(contracts: dict[str, Contract],
                                                                  alertmanager: Alertmanager) -> None:
    values = [alert(contracts, topics.SLA_ALERTS, i) for i in range(3)]
    first = Consumer({SLA: values[:2]})
    run(bridge(contracts, alertmanager, first), first)
    alertmanager.answers = [503] * 100   # down: the bridge stops while it waits
    second = Consumer({SLA: values}, committed=first.committed())
    run(bridge(contracts, alertmanager, second), second, until=lambda: len(alertmanager.posts) >= 4)
    assert second.commits == []
    alertmanager.answers = []
    third = Consumer({SLA: values}, committed=first.committed())   # the restart, from the group's offsets
    run(bridge(contracts, alertmanager, third), third)
    assert alertmanager.ids() == ["SLA-test-0", "SLA-test-1", "SLA-test-2"] and third.committed() == {SLA: 3}


def test_the_trace_id_of_a_record_is_in_the_bridges_log_line(contracts: dict[str, Contract],
                                                              alertmanager: Alertmanager,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    consumer = Consumer({SLA: [alert(contracts, topics.SLA_ALERTS, 0)]},
                        headers=[("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")])
    with caplog.at_level("DEBUG", logger="citybrain.notify.alert_bridge"):
        run(bridge(contracts, alertmanager, consumer), consumer)
    [line] = [r for r in caplog.records if "to Alertmanager" in r.getMessage()]
    assert json.loads(JsonFormatter("notify-alertmanager").format(line))["trace_id"] == \
        "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("url", ["127.0.0.1:9093", "ftp://am:9093", "http://am:9093/?x=1"])
def test_a_url_that_is_not_alertmanagers_base_is_refused_with_the_fix(url: str) -> None:
    with pytest.raises(InputError, match="Fix: give it as http://<host>:9093"):
        alerts_url(url)
    assert alerts_url("http://am:9093/") == "http://am:9093/api/v2/alerts"
