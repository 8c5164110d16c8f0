"""The platform services' own principals on the real, secured broker: each does what its code needs (the
grants of ``infra/access.yaml`` ``services:``) and is refused what it does not: another zone's topics, writes
beyond its own, consumer groups not its own, and the broker's administration, which stays the super user's."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from citybrain.contracts import topics
from citybrain.devtools.samples import sample_records
from citybrain.gateway.server import PRINCIPAL as GATEWAY
from citybrain.ingest.producer import ValidatedProducer
from citybrain.kafka import clients
from citybrain.notify.alert_bridge import GROUP as BRIDGE_GROUP, PRINCIPAL as BRIDGE
from citybrain.notify.notifier import PRINCIPAL as NOTIFY
from citybrain.settings import Settings
from citybrain.streams.lake_sink import PRINCIPALS as LAKE

pytestmark = pytest.mark.integration

#: A consumer group nobody is granted.
OTHER_GROUP = "svc-probe.not-granted"


def _read(settings: Settings, topic: str, group_id: str | None = None) -> tuple[bool, str]:
    """Read ``topic`` as ``settings``' principal: (True, records) or (False, the broker's refusal). aiokafka,
    which raises on a refused topic or group where kafka-python's consumer reads nothing, silently."""
    from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

    async def run() -> tuple[bool, str]:
        consumer = clients.aio_consumer(settings, topic, group_id=group_id, auto_offset_reset="earliest",
                                        enable_auto_commit=False)
        try:
            await consumer.start()
            batches = await consumer.getmany(timeout_ms=3000)
            return True, str(sum(len(b) for b in batches.values()))
        except TopicAuthorizationFailedError:
            return False, "TopicAuthorizationFailed"
        except GroupAuthorizationFailedError:
            return False, "GroupAuthorizationFailed"
        finally:
            await consumer.stop()

    return asyncio.run(run())


def _write(settings: Settings, topic: str) -> str:
    """Try to send a record to a topic ``settings``' principal may not write: the refusal's name (the broker
    refuses before any record is stored; "ok" would mean it took it)."""
    from kafka.errors import KafkaError

    producer = clients.producer(settings, acks="all", max_block_ms=10_000)
    try:
        producer.send(topic, b"{}").get(timeout=15)
        return "ok"
    except KafkaError as exc:
        return type(exc).__name__
    finally:
        producer.close(timeout=5)


def test_the_gateway_writes_its_feeds_and_reads_its_requests_but_no_other_raw_topic(broker, settings, contracts) -> None:  # type: ignore[no-untyped-def]
    gateway = settings.as_service(GATEWAY)
    with ValidatedProducer(gateway, "citybrain-gateway") as producer:   # as the gateway sends a sensor entity
        weather = contracts[topics.WEATHER]
        assert producer.produce_values(weather, sample_records(weather, 1)).accepted == 1
    assert _read(gateway, topics.SERVICE_REQUESTS)[0]
    for topic in (topics.TICKET_EVENTS, topics.ELDERLY_CARE, "dispatch.police.work_order.v1"):
        assert _read(gateway, topic) == (False, "TopicAuthorizationFailed"), topic
    for topic in (topics.CITY_EVENTS, topics.POLICE_INCIDENTS, topics.CONTRACT_REGISTRY):
        assert _write(gateway, topic) == "TopicAuthorizationFailedError", topic


@pytest.mark.parametrize("layer", sorted(LAKE))
def test_a_lake_sink_reads_its_layer_only_and_writes_only_its_announcements(broker, settings, layer: str) -> None:  # type: ignore[no-untyped-def]
    sink = settings.as_service(LAKE[layer])
    mine, other = ((topics.ELDERLY_CARE, "dispatch.police.work_order.v1") if layer == "bronze"
                   else ("dispatch.police.work_order.v1", topics.ELDERLY_CARE))
    assert _read(sink, mine)[0]
    assert _read(sink, other) == (False, "TopicAuthorizationFailed")
    assert _write(sink, mine) == "TopicAuthorizationFailedError"
    assert _write(sink, topics.CITY_EVENTS) == "TopicAuthorizationFailedError"


def test_the_notifier_reads_nothing_as_itself(broker, settings) -> None:  # type: ignore[no-untyped-def]
    notify = settings.as_service(NOTIFY)
    assert _read(notify, topics.EARLY_WARNINGS) == (False, "TopicAuthorizationFailed")
    assert _write(notify, topics.EARLY_WARNINGS) == "TopicAuthorizationFailedError"


def test_the_bridge_reads_the_alerts_in_its_own_group_only(broker, settings) -> None:  # type: ignore[no-untyped-def]
    bridge = settings.as_service(BRIDGE)
    assert _read(bridge, topics.EARLY_WARNINGS, BRIDGE_GROUP)[0]
    assert _read(bridge, topics.EARLY_WARNINGS, OTHER_GROUP) == (False, "GroupAuthorizationFailed")
    assert _read(bridge, topics.CITY_EVENTS, BRIDGE_GROUP) == (False, "TopicAuthorizationFailed")


@pytest.mark.parametrize("principal", [GATEWAY, NOTIFY, BRIDGE, *LAKE.values()])
def test_no_service_administers_the_broker(broker, settings, principal: str) -> None:  # type: ignore[no-untyped-def]
    """Creating a topic, or reading the ACLs, is the super user's alone."""
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

    from citybrain.access import broker_acl_set

    service = settings.as_service(principal)
    admin = clients.admin(service)
    try:
        with pytest.raises(KafkaError) as created:
            admin.create_topics([NewTopic(f"city.probe-{secrets.token_hex(4)}.v1", 1, 1)], validate_only=True)
        assert "AuthorizationFailed" in type(created.value).__name__, repr(created.value)
    finally:
        admin.close()
    with pytest.raises(KafkaError) as described:     # DescribeAcls needs DESCRIBE on the cluster
        broker_acl_set(service)
    assert type(described.value).__name__ == "ClusterAuthorizationFailedError", repr(described.value)


def test_the_lake_sink_command_runs_as_its_principal_with_what_it_is_granted(broker, settings) -> None:  # type: ignore[no-untyped-def]
    """`citybrain lake bronze` connects as svc-lake-bronze and its grants are enough to drain the raw topics and
    announce the compaction; without its credential it stops, naming the fix, rather than fall back to the
    super user."""
    from citybrain.access import CredentialStore
    from tests.integration.conftest import cli

    proc = cli("lake", "bronze", "--exit-when-idle", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = CredentialStore(settings.access_dir)
    password = store.passwords[LAKE["bronze"]]
    store.forget(LAKE["bronze"])
    try:
        proc = cli("lake", "bronze", "--exit-when-idle", "2")
        assert proc.returncode != 0 and "CITYBRAIN_PRINCIPAL=svc-lake-bronze has no password" in proc.stderr
    finally:
        CredentialStore(settings.access_dir).set(LAKE["bronze"], password)
