"""Topics from contracts: create or update them, read them back, consumer-group offsets and lag."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from citybrain.contracts.model import Contract
from citybrain.contracts.topics import CONTRACT_REGISTRY
from citybrain.kafka import clients
from citybrain.settings import Settings

log = logging.getLogger(__name__)

#: The contract catalog's topic, by the name its readers import it by.
CATALOG_TOPIC = CONTRACT_REGISTRY


@dataclass(frozen=True)
class TopicChange:
    topic: str
    action: str  # create | partitions | config | unchanged
    detail: str

    def __str__(self) -> str:
        return f"{self.action:<10} {self.topic}  {self.detail}"


def plan_topics(settings: Settings, contracts: Iterable[Contract]) -> list[TopicChange]:
    """What `apply_topics` would change, without changing anything."""
    return list(_reconcile(settings, list(contracts), apply=False))


def apply_topics(settings: Settings, contracts: Iterable[Contract]) -> list[TopicChange]:
    """Create missing topics, add partitions, align configs. Idempotent; returns what it did."""
    return list(_reconcile(settings, list(contracts), apply=True))


def _reconcile(settings: Settings, contracts: list[Contract], apply: bool) -> Iterator[TopicChange]:
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic

    admin = clients.admin(settings, request_timeout_ms=20_000)
    try:
        existing = set(admin.list_topics())
        wanted = {c.topic: c for c in contracts}
        to_create = [c for t, c in wanted.items() if t not in existing]
        replicas = settings.topic_replicas()
        if to_create and apply:
            admin.create_topics([
                NewTopic(c.topic, c.partitions, replicas, topic_configs=c.topic_configs())
                for c in to_create
            ])
            _wait_for_leaders(admin, [c.topic for c in to_create])
        for c in to_create:
            configs = ", ".join(f"{k}={v}" for k, v in c.topic_configs().items())
            yield TopicChange(c.topic, "create", f"partitions={c.partitions} replicas={replicas} {configs}")

        present = [c for t, c in wanted.items() if t in existing]
        if not present:
            return
        described = {d["name"]: d for d in admin.describe_topics([c.topic for c in present])}
        current_configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, c.topic) for c in present]
        ).get("topic", {})
        for c in present:
            changed = False
            have = len(described[c.topic]["partitions"])
            if have < c.partitions:
                if apply:
                    admin.create_partitions({c.topic: NewPartitions(total_count=c.partitions)})
                yield TopicChange(c.topic, "partitions", f"{have} -> {c.partitions}")
                changed = True
            elif have > c.partitions:
                log.warning("%s has %d partitions, contract asks %d; Kafka cannot remove partitions", c.topic, have, c.partitions)
                yield TopicChange(c.topic, "warning", f"has {have} partitions, contract asks {c.partitions}: Kafka cannot remove partitions; left as is")
            cfg = current_configs.get(c.topic, {})
            diffs = {k: v for k, v in c.topic_configs().items() if (cfg.get(k) or {}).get("value") != v}
            if diffs:
                if apply:
                    # Incremental would be nicer; the legacy AlterConfigs replaces the topic's
                    # dynamic configs, so send the full wanted set.
                    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, c.topic, configs=c.topic_configs())])
                before = ", ".join(f"{k}={(cfg.get(k) or {}).get('value')}" for k in diffs)
                after = ", ".join(f"{k}={v}" for k, v in diffs.items())
                yield TopicChange(c.topic, "config", f"{before} -> {after}")
                changed = True
            if not changed:
                yield TopicChange(c.topic, "unchanged", "")
    finally:
        admin.close()


def _wait_for_leaders(admin: Any, topics: list[str], timeout_s: float = 30.0) -> None:
    """Return once every partition of the new ``topics`` has a leader: a producer writing right after
    creation otherwise meets ``NotLeaderForPartitionError`` (seen on a freshly formatted broker)."""
    import time

    deadline = time.monotonic() + timeout_s
    waiting = list(topics)
    while waiting and time.monotonic() < deadline:
        described = admin.describe_topics(waiting)
        waiting = [d["name"] for d in described if d.get("error_code") or not d.get("partitions")
                   or any(p.get("error_code") or p.get("leader_id", -1) < 0 for p in d["partitions"])]
        if waiting:
            time.sleep(0.2)
    if waiting:
        log.warning("topics without a leader %.0f s after creation: %s", timeout_s, ", ".join(sorted(waiting)[:5]))


def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> end offset now: where records produced from now on will start."""
    from kafka import TopicPartition

    consumer = clients.consumer(settings, enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def read_topic(
    settings: Settings, topic: str, timeout_s: float = 30.0, group_id: str | None = None,
    since: dict[tuple[str, int], int] | None = None,
) -> list[Any]:
    """Every record of ``topic`` from the beginning (or the offsets in ``since``) up to its end
    offsets at call time.

    Without ``group_id`` partitions are assigned directly (no consumer group, no commits);
    with one, the records are read as that consumer group and offsets committed.
    """
    import time

    from kafka import TopicPartition

    consumer = clients.consumer(settings, enable_auto_commit=False, auto_offset_reset="earliest", group_id=group_id)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise LookupError(f"Topic {topic} does not exist. Fix: run `citybrain topics apply`.")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        end = consumer.end_offsets(tps)
        if group_id:
            consumer.subscribe([topic])
        else:
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            for tp in tps:
                if since and (tp.topic, tp.partition) in since:
                    consumer.seek(tp, since[(tp.topic, tp.partition)])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            positions_done = all(
                tp in consumer.assignment() and consumer.position(tp) >= end[tp] for tp in tps
            ) if consumer.assignment() else False
            if positions_done:
                break
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend(batch)
        else:
            raise TimeoutError(f"Reading {topic} did not reach its end offsets within {timeout_s:.0f}s.")
        if group_id:
            consumer.commit()
        return out
    finally:
        consumer.close()


def read_values(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every record value of ``topic`` (JSON, as written under its contract) up to its end offsets now."""
    return [json.loads(m.value) for m in read_topic(settings, topic, timeout_s=timeout_s)]


def committed_offsets(settings: Settings, group_id: str) -> dict[tuple[str, int], int] | None:
    """The consumer group's committed offset per (topic, partition); None while the group is not
    known yet (no commits, or its coordinator is still being elected)."""
    from kafka.errors import KafkaError

    admin = clients.admin(settings)
    try:
        offsets = admin.list_group_offsets(group_id).get(group_id, {})
    except KafkaError:
        return None
    finally:
        admin.close()
    return {(tp.topic, tp.partition): max(0, o.offset) for tp, o in offsets.items()} or None


#: Up to this many offsets behind its end, a partition's lag is counted record by record (see ``records_ahead``).
EXACT_LAG_UP_TO = 1000


def group_lag(settings: Settings, group_id: str) -> tuple[int, int]:
    """(records the consumer group has committed, records still ahead of it) over all its partitions;
    (0, -1) while the group is not known yet. A partition a little behind its end is read to count the records a
    ``read_committed`` consumer would still get (see ``records_ahead``); further behind, the offsets are counted."""
    offsets = committed_offsets(settings, group_id)
    if offsets is None:
        return 0, -1
    end = end_offsets(settings, {t for t, _p in offsets})
    behind = {tp: (offset, end[tp]) for tp, offset in offsets.items() if end.get(tp, 0) > offset}
    near = {tp: span for tp, span in behind.items() if span[1] - span[0] <= EXACT_LAG_UP_TO}
    ahead = records_ahead(settings, near) if near else {}
    return sum(offsets.values()), sum(ahead.get(tp, stop - start) for tp, (start, stop) in behind.items())


def records_ahead(settings: Settings, spans: dict[tuple[str, int], tuple[int, int]], timeout_s: float = 5.0
                  ) -> dict[tuple[str, int], int]:
    """Per partition, the records a ``read_committed`` consumer gets between two offsets (start, end). A topic
    written in transactions holds a commit marker after each transaction and the records of aborted ones: offsets
    a consumer never receives, so a group that read everything stays an offset or more behind the log's end."""
    from kafka import TopicPartition

    consumer = clients.consumer(settings, enable_auto_commit=False)
    counted = {tp: 0 for tp in spans}
    try:
        tps = {tp: TopicPartition(*tp) for tp in spans}
        consumer.assign(list(tps.values()))
        for tp, (start, _stop) in spans.items():
            consumer.seek(tps[tp], start)
        todo = set(spans)
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for ktp, records in consumer.poll(timeout_ms=200).items():
                key = (ktp.topic, ktp.partition)
                counted[key] += sum(1 for r in records if r.offset < spans[key][1])
            for key in list(todo):
                if consumer.position(tps[key]) >= spans[key][1]:
                    todo.discard(key)
                    consumer.pause(tps[key])
        for key in todo:   # not read to its end in time: counted by offsets
            counted[key] = spans[key][1] - spans[key][0]
    finally:
        consumer.close()
    return counted
