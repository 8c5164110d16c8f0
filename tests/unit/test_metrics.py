"""The platform's Prometheus metrics (citybrain.metrics), each moved by the code path it counts, without a broker:
the validated producer's judging, the lake writer, a consumer's lag, the fusion loop's batch measures, the
notifier's deliveries, and the port of the services without an HTTP server. The gateway's and the view's
``/metrics`` are tested with their apps (test_gateway_server.py, test_ui.py)."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
from kafka.structs import TopicPartition
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from citybrain import metrics
from citybrain.contracts.model import Contract
from citybrain.ingest.producer import NO_CONTRACT, ValidatedProducer
from citybrain.contracts.validate import Rejection
from citybrain.ingest.readers import RawRecord
from citybrain.kafka.follow import Follower
from citybrain.lake.writer import LakeWriter, Row
from citybrain.notify import notifier
from citybrain.settings import load_settings
from citybrain.streams.fusion.loop import BatchLoop
from tests.unit.test_follow import ScriptedConsumer


def value(name: str, **labels: str) -> float:
    """A sample's value in this process's registry (0 before its first count)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delivered:
    """kafka-python's FutureRecordMetadata as the producer uses it: acknowledged at once."""

    def add_callback(self, fn: Callable[[Any], None]) -> Delivered:
        fn(None)
        return self

    def add_errback(self, _fn: Callable[[BaseException], None]) -> Delivered:
        return self

    def failed(self) -> bool:
        return False


class AckingKafka:
    """The kafka-python producer under ValidatedProducer: every topic exists, every send is acknowledged."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def partitions_for(self, _topic: str) -> set[int]:
        return {0}

    def send(self, topic: str, **_kwargs: Any) -> Delivered:
        self.sent.append(topic)
        return Delivered()

    def flush(self) -> None:
        pass


def test_the_validated_producer_counts_records_in_out_and_dead_lettered_by_rule(air: Contract) -> None:
    producer = ValidatedProducer.__new__(ValidatedProducer)
    producer.settings, producer.producer_id, producer._validators = load_settings({}), "unit", {}
    producer._producer = kafka = AckingKafka()   # type: ignore[assignment]
    good = dict(air.examples[0])
    bad = {k: v for k, v in good.items() if k != air.schema["required"][0]}
    topic = air.topic
    before = (value("citybrain_records_in_total", topic=topic), value("citybrain_records_out_total", topic=topic),
              value("citybrain_records_dead_lettered_total", topic=topic, rule="required"))
    producer.produce_many([(air, RawRecord("unit", b"", value=good)), (air, RawRecord("unit", b"", value=bad)),
                           (air, RawRecord("unit", b"", value=good))])
    after = (value("citybrain_records_in_total", topic=topic), value("citybrain_records_out_total", topic=topic),
             value("citybrain_records_dead_lettered_total", topic=topic, rule="required"))
    assert [a - b for a, b in zip(after, before)] == [3, 2, 1]
    assert kafka.sent.count(topic) == 2


def test_the_lake_writer_counts_files_bytes_and_its_checkpoints_time(tmp_path: Path) -> None:
    topic = "raw.sensor.noise_level.v1"
    hour = 1_763_800_000_000
    files0 = value("citybrain_sink_files_written_total", layer="bronze", topic=topic)
    bytes0 = value("citybrain_sink_bytes_written_total", layer="bronze", topic=topic)
    rows = [Row(topic, 0, o, hour + o * 40 * 60 * 1000, None, {}, '{"x":1}') for o in range(4)]   # spans 3 hours
    written = LakeWriter(tmp_path).write(topic, 0, rows)
    assert value("citybrain_sink_files_written_total", layer="bronze", topic=topic) - files0 == len(written) == 3
    on_disk = sum(f.stat().st_size for f in written)
    assert value("citybrain_sink_bytes_written_total", layer="bronze", topic=topic) - bytes0 == on_disk > 0
    assert abs(value("citybrain_sink_checkpoint_timestamp_seconds", layer="bronze", topic=topic) - time.time()) < 30


def test_a_named_follower_sets_its_lag_per_topic_from_the_ends_and_its_positions() -> None:
    a, b = TopicPartition("raw.unit.lag.v1", 0), TopicPartition("raw.unit.lag.v1", 1)
    consumer = ScriptedConsumer({a: 10, b: 4})
    consumer.positions.update({a: 3, b: 4})
    follower = Follower(consumer, lambda _tp, _records: None, name="lake-bronze")
    follower.report_lag()
    assert value("citybrain_consumer_lag", consumer="lake-bronze", topic="raw.unit.lag.v1") == 7
    consumer.positions[a] = 10
    follower.report_lag()
    assert value("citybrain_consumer_lag", consumer="lake-bronze", topic="raw.unit.lag.v1") == 0


def test_only_a_named_follower_asks_the_broker_for_its_ends_to_measure_lag() -> None:
    tp = TopicPartition("raw.unit.lag.v1", 0)
    asked = []
    for name in (None, "notify:unit"):
        consumer = ScriptedConsumer({tp: 3})
        assert Follower(consumer, lambda _tp, _records: None, idle_s=0.0, name=name).run() == "drained"
        asked.append(consumer.ends_asked)
    assert asked == [1, 2]   # the drained check's; then the lag's too (once: not again within LAG_EVERY_S)


def test_the_fusion_loop_measures_batch_time_end_to_end_time_and_lag() -> None:
    topic = "raw.unit.fusion.v1"
    tp = TopicPartition(topic, 0)
    gone = TopicPartition(topic, 1)
    held = {tp, gone}
    app = SimpleNamespace(consumer=SimpleNamespace(highwater=lambda _tp: 120, assignment=lambda: set(held)),
                          conf=SimpleNamespace(id="unit-fusion"))
    loop = BatchLoop(app, None, None)   # type: ignore[arg-type]
    loop.lag[gone] = (topic, 1000)
    now = time.time()
    messages = [SimpleNamespace(topic=topic, tp=tp, offset=o, timestamp=now - 3.0) for o in range(100, 110)]
    count0 = value("citybrain_fusion_end_to_end_seconds_count", topic=topic)
    slow0 = value("citybrain_fusion_end_to_end_seconds_bucket", topic=topic, le="2.0")
    batches0 = value("citybrain_fusion_batch_seconds_count", kind="fused")
    loop.measure("fused", messages, time.perf_counter())   # type: ignore[arg-type]
    assert value("citybrain_fusion_end_to_end_seconds_count", topic=topic) - count0 == 10
    assert value("citybrain_fusion_end_to_end_seconds_bucket", topic=topic, le="2.0") == slow0   # 3 s: not under 2
    assert value("citybrain_fusion_batch_seconds_count", kind="fused") - batches0 == 1
    assert value("citybrain_consumer_lag", consumer="unit-fusion", topic=topic) == 120 - 110 + 1000
    held.discard(gone)   # revoked: its lag is another worker's now
    loop.measure("fused", messages, time.perf_counter())   # type: ignore[arg-type]
    assert value("citybrain_consumer_lag", consumer="unit-fusion", topic=topic) == 120 - 110


def test_the_notifier_counts_deliveries_and_failed_tries_by_status_class(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [(503, "HTTP 503"), (0, "ClientConnectorError"), (201, "")]

    async def post(_session: Any, _sub: Any, _body: Any) -> tuple[int, str]:
        return answers.pop(0)

    monkeypatch.setattr(notifier, "post", post)
    sub = SimpleNamespace(id="unit-water")
    state = notifier.Delivery()
    before = (value("citybrain_notify_deliveries_total", subscription="unit-water"),
              value("citybrain_notify_delivery_failures_total", subscription="unit-water", status="5xx"),
              value("citybrain_notify_delivery_failures_total", subscription="unit-water", status="none"))
    outcome = asyncio.run(notifier.deliver(None, sub, {}, state, base_s=0.0, tries=3))   # type: ignore[arg-type]
    assert outcome.delivered
    after = (value("citybrain_notify_deliveries_total", subscription="unit-water"),
             value("citybrain_notify_delivery_failures_total", subscription="unit-water", status="5xx"),
             value("citybrain_notify_delivery_failures_total", subscription="unit-water", status="none"))
    assert [a - b for a, b in zip(after, before)] == [1, 1, 1]


def test_status_classes_are_five_values_and_none() -> None:
    assert [metrics.status_class(s) for s in (0, 200, 204, 302, 404, 503, 999)] == [
        "none", "2xx", "2xx", "3xx", "4xx", "5xx", "none"]


def test_a_service_serves_its_metrics_on_the_base_port_plus_its_offset_and_none_when_off() -> None:
    assert metrics.serve("notify", "127.0.0.1", 0) is None
    with pytest.raises(ValueError, match="no metrics port for service 'gateway'"):
        metrics.serve("gateway", "127.0.0.1", 9750)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    if base > 60_000:
        base -= 10
    port = metrics.serve("lake-silver", "127.0.0.1", base)
    assert port == base + metrics.SERVICE_OFFSETS["lake-silver"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "citybrain_records_in_total" in {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_a_taken_metrics_port_is_logged_and_the_service_runs_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert metrics.serve("fusion", "127.0.0.1", port) is None
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in caplog.text and "CITYBRAIN_METRICS_PORT" in caplog.text


def test_the_fusion_loop_counts_its_outputs_and_what_it_dead_lettered_by_rule() -> None:
    topic, broken = "city.unit.event.v1", "city.unit.warning.v1"

    class Transactions:
        """What the loop commits: the records and offsets of each transaction."""

        def __init__(self) -> None:
            self.commits: list[tuple[list[Any], Any]] = []

        async def commit(self, records: list[Any], offsets: Any = None) -> int:
            self.commits.append((records, offsets))
            return len(records)

    worker = SimpleNamespace(
        message=lambda t, _record, _trace: Rejection("required", "title", "missing") if t == broken else (b"k", b"v", {}),
        dead_letter=lambda *_args: (b"k", b"v", {}))
    transactions = Transactions()
    loop = BatchLoop(SimpleNamespace(), worker, transactions)   # type: ignore[arg-type]
    before = (value("citybrain_records_out_total", topic=topic),
              value("citybrain_records_dead_lettered_total", topic=broken, rule="required"),
              value("citybrain_records_dead_lettered_total", topic="raw.unit.v1", rule="processing-error"))
    failed = [("raw.unit.v1", RawRecord("unit", b"{}", value={}), Rejection("processing-error", "(record)", "x"), b"t")]
    asyncio.run(loop.commit([(topic, {}, b"t"), (topic, {}, b"t"), (broken, {}, b"t")], failed,  # type: ignore[arg-type]
                            {("raw.unit.v1", 0): 8}))
    after = (value("citybrain_records_out_total", topic=topic),
             value("citybrain_records_dead_lettered_total", topic=broken, rule="required"),
             value("citybrain_records_dead_lettered_total", topic="raw.unit.v1", rule="processing-error"))
    assert [a - b for a, b in zip(after, before)] == [2, 1, 1]
    ((records, offsets),) = transactions.commits   # one transaction: outputs, dead letters and offsets together
    assert [r[0] for r in records] == [topic, topic, "dlq.ingest.rejected.v1", "dlq.ingest.rejected.v1"]
    assert offsets == {("raw.unit.v1", 0): 8}


def test_dead_letters_of_records_no_contract_takes_are_counted_under_no_contract() -> None:
    """What they were sent as (an entity type a partner made up) is the sender's: it never becomes a label."""
    producer = ValidatedProducer.__new__(ValidatedProducer)
    producer.settings, producer.producer_id, producer._validators = load_settings({}), "unit", {}
    producer._producer = AckingKafka()   # type: ignore[assignment]
    before = value("citybrain_records_dead_lettered_total", topic=NO_CONTRACT, rule="unknown-type")
    refused = [(RawRecord("unit", b"{}", value={"type": f"Made-up-{n}"}), Rejection("unknown-type", "type", "no contract"))
               for n in range(20)]
    assert producer.dead_letter("Made-up", refused) == 20
    assert value("citybrain_records_dead_lettered_total", topic=NO_CONTRACT, rule="unknown-type") - before == 20
    assert "Made-up" not in metrics.exposition().decode()


def test_a_broker_that_gives_no_ends_leaves_the_lag_as_it_was_and_the_follower_running(
        caplog: pytest.LogCaptureFixture) -> None:
    from kafka.errors import KafkaTimeoutError

    tp = TopicPartition("raw.unit.lag.v2", 0)
    consumer = ScriptedConsumer({tp: 5})
    follower = Follower(consumer, lambda _tp, _records: None, name="lake-silver")
    follower.report_lag()
    assert value("citybrain_consumer_lag", consumer="lake-silver", topic="raw.unit.lag.v2") == 5

    def unanswered(_tps: Any) -> Any:
        raise KafkaTimeoutError("Failed to get offsets by times in 60000 ms")
    consumer.end_offsets = unanswered   # type: ignore[method-assign]
    follower.report_lag()
    assert value("citybrain_consumer_lag", consumer="lake-silver", topic="raw.unit.lag.v2") == 5
    assert "lake-silver: lag not measured" in caplog.text


def test_uncommon_methods_are_counted_as_other_not_by_name() -> None:
    """The HTTP parser takes only the methods it knows (a made-up one is a 400 before any handler); of those, all
    but the common seven share one label value."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[metrics.http_metrics("unit")])
    app.router.add_route("*", "/thing/{name}", ok)
    uncommon = ["PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "PURGE"]
    before = value("citybrain_http_requests_total", service="unit", route="/thing/{name}", method="OTHER", status="2xx")

    async def go() -> None:
        async with TestClient(TestServer(app)) as client:
            for n, method in enumerate(uncommon):
                await (await client.request(method, f"/thing/{n}")).read()
    asyncio.run(go())
    after = value("citybrain_http_requests_total", service="unit", route="/thing/{name}", method="OTHER", status="2xx")
    assert after - before == len(uncommon)
    assert "PROPFIND" not in metrics.exposition().decode()
