"""Kafka clients built from the settings alone: bootstrap servers, security and credentials.

kafka-python serves the CLI, the DAG tasks, the edge, the lake sinks, the Airflow bridge and the
notifier; aiokafka (under
faust) the stream workers and the probes that must see a refusal as an error (kafka-python's
consumer reads nothing, silently, from a topic it may not read). Extra keyword arguments
are the client's own settings (``group_id``, ``acks``, ...), never connection settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from citybrain.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import faust
    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

__all__ = ["READ_COMMITTED", "admin", "aio_consumer", "consumer", "faust_credentials", "producer"]

#: The isolation level of every consumer built here: records of aborted transactions are skipped.
READ_COMMITTED = "read_committed"


def consumer(settings: Settings, *topics: str, **config: Any) -> KafkaConsumer:
    """A kafka-python consumer (subscribed to ``topics`` if given; assign partitions yourself otherwise),
    reading committed records only unless ``isolation_level`` says otherwise."""
    from kafka import KafkaConsumer

    return KafkaConsumer(*topics, **settings.kafka_client_config(), **{"isolation_level": READ_COMMITTED, **config})


def producer(settings: Settings, **config: Any) -> KafkaProducer:
    """A kafka-python producer."""
    from kafka import KafkaProducer

    return KafkaProducer(**settings.kafka_client_config(), **config)


def admin(settings: Settings, **config: Any) -> KafkaAdminClient:
    """A kafka-python admin client (topics, configs, ACLs, SCRAM credentials, consumer-group offsets)."""
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**settings.kafka_client_config(), **config)


def aio_consumer(settings: Settings, *topics: str, **config: Any) -> AIOKafkaConsumer:
    """An aiokafka consumer, reading committed records only unless ``isolation_level`` says otherwise; start it
    in a running event loop."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, **settings.aiokafka_config(), **{"isolation_level": READ_COMMITTED, **config})


def faust_credentials(settings: Settings) -> faust.SASLCredentials | None:
    """Faust's broker credentials (the admin principal on the embedded broker); None without SASL."""
    import faust

    protocol, mechanism, username, password = settings.client_auth()
    if mechanism is None:
        return None
    context = settings.ssl_context()
    return faust.SASLCredentials(username=username, password=password, mechanism=mechanism, ssl_context=context)
