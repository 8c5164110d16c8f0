"""The fusion worker's topics: faust topic objects over what it reads (values as bytes: the worker decodes,
validates and encodes records itself; it writes through its transactional producers), and, keyed by area, the
group's own topics, created before the worker starts."""

from __future__ import annotations

import logging
from contextlib import suppress

import faust
from faust.types import TopicT

from citybrain.errors import InputError
from citybrain.kafka import clients
from citybrain.settings import Settings
from citybrain.streams.shares import by_area_topic, city_calls_topic

log = logging.getLogger(__name__)


def raw(app: faust.App, *names: str) -> TopicT:
    """One faust topic object over ``names``, its values as they are on the wire."""
    return app.topic(*names, value_serializer="raw")


def ensure_keyed_topics(settings: Settings) -> None:
    """Keyed by area: create the group's by-area topic (``streams_partitions`` partitions, replicated as the
    contracts' topics, kept as long as a warm-up reaches back) and its city-calls topic (one partition, a day);
    refuse a by-area topic with another partition count."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    name = by_area_topic(settings.streams_app_id)
    admin = clients.admin(settings)
    try:
        with suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(city_calls_topic(settings.streams_app_id), 1, settings.topic_replicas(),
                                          topic_configs={"retention.ms": str(24 * 3_600_000)})])
        retention_ms = int(max(settings.streams_warmup_h, 24) * 2 * 3_600_000)
        admin.create_topics([NewTopic(name, settings.streams_partitions, settings.topic_replicas(),
                                      topic_configs={"retention.ms": str(retention_ms)})])
        log.info("created %s with %d partitions", name, settings.streams_partitions)
    except TopicAlreadyExistsError:
        (found,) = admin.describe_topics([name])
        have = len(found["partitions"])
        if have != settings.streams_partitions:
            raise InputError(
                f"CITYBRAIN_STREAMS_PARTITIONS={settings.streams_partitions}, but the fusion group "
                f"{settings.streams_app_id}'s topic {name} has {have} partitions: districts would move between "
                f"partitions and their state with them. Fix: set CITYBRAIN_STREAMS_PARTITIONS={have}, or start "
                "the group afresh under another CITYBRAIN_STREAMS_APP_ID.") from None
    finally:
        admin.close()
