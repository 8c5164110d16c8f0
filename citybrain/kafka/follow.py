"""The one loop of every long-running consumer: the lake sinks, the Airflow bridge, the notifier.

A :class:`Follower` polls a kafka-python consumer, hands each partition's records to its owner's hook
(committing them after it, when asked), calls the owner's tick after every poll (flush, compact,
report) and stops:

- *drained*, when asked: polls found nothing for ``idle_s``, timed from after the tick (slow storage
  is not quiet topics), **and** the positions are at the partitions' ends (a slow fetch is not the end);
- *interrupted*: KeyboardInterrupt while it waits for records (SIGINT, or SIGTERM where the command
  made it one with ``signal.signal(SIGTERM, signal.default_int_handler)``); what was read is the
  owner's to finish, e.g. flush;
- *stopped*: its ``stop`` event was set (by another thread, an event loop's signal handler), or a hook
  raised :class:`Stopped` (the records that hook was given are not committed).

A follower given a ``name`` sets its consumer's lag per topic (``citybrain_consumer_lag``) at most every
``LAG_EVERY_S``, from the partitions' end offsets and its positions.

:class:`StatusFile` is where a running consumer says how it is doing, for `citybrain status`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from citybrain.metrics import CONSUMER_LAG
from citybrain.settings import write_private
from citybrain.times import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from kafka import KafkaConsumer
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.structs import TopicPartition

__all__ = ["Ending", "Follower", "StatusFile", "Stopped", "commit"]

log = logging.getLogger(__name__)

#: How often a named follower asks the broker for its partitions' ends to set its lag.
LAG_EVERY_S = 15.0
#: Why :meth:`Follower.run` returned.
Ending = Literal["drained", "interrupted", "stopped"]


class Stopped(Exception):
    """Raised by a hook to end the loop at once: the records it was handed are not committed."""


def commit(consumer: KafkaConsumer, tp: TopicPartition, next_offset: int) -> None:
    """Commit the consumer group's position on ``tp``: ``next_offset`` is the offset of the next record to read."""
    from kafka import OffsetAndMetadata

    consumer.commit({tp: OffsetAndMetadata(next_offset, "", -1)})


class Follower:
    """Poll ``consumer`` until drained, interrupted or stopped (see the module); ``run`` says which.

    ``on_records(tp, records)`` gets each partition's records of a poll; with ``commit_records`` the loop commits
    them once it returned. ``on_tick(polled)`` runs after every poll, ``polled`` telling whether it found
    records. With ``idle_s`` set, a poll that finds nothing after ``idle_s`` of such polls compares the
    positions with the ends: :attr:`drained` says the result, and ``exit_when_drained`` ends the loop on it.
    """

    def __init__(self, consumer: KafkaConsumer,
                 on_records: Callable[[TopicPartition, list[ConsumerRecord]], None], *,
                 on_tick: Callable[[bool], None] | None = None, poll_ms: int = 500, max_records: int | None = None,
                 idle_s: float | None = None, exit_when_drained: bool = True, commit_records: bool = False,
                 stop: threading.Event | None = None, name: str | None = None) -> None:
        self.consumer, self.on_records, self.on_tick, self.name = consumer, on_records, on_tick, name
        self.poll_ms, self.max_records = poll_ms, max_records
        self.idle_s, self.exit_when_drained, self.commit_records = idle_s, exit_when_drained, commit_records
        self.stop = stop if stop is not None else threading.Event()
        #: Whether the last comparison found every partition the consumer holds read to its end.
        self.drained = False
        self._idle_since: float | None = None
        self._lag_at = float("-inf")

    def idle_for(self) -> float:
        """Seconds since polls began to find nothing (0 while records come in)."""
        since = self._idle_since
        return 0.0 if since is None else time.monotonic() - since

    def run(self) -> Ending:
        while not self.stop.is_set():
            try:
                polled = self.consumer.poll(timeout_ms=self.poll_ms, max_records=self.max_records)
            except KeyboardInterrupt:
                return "interrupted"
            try:
                for tp, records in polled.items():
                    self.on_records(tp, records)
                    if self.commit_records and records:
                        commit(self.consumer, tp, records[-1].offset + 1)
                if self.on_tick is not None:
                    self.on_tick(bool(polled))
            except Stopped:
                return "stopped"
            if self.name is not None and time.monotonic() - self._lag_at >= LAG_EVERY_S:
                self.report_lag()
            if polled:
                self._idle_since, self.drained = None, False
                continue
            if self._idle_since is None:
                self._idle_since = time.monotonic()   # after the tick: slow writes do not count as quiet topics
            if self.idle_s is not None and self.idle_for() >= self.idle_s:
                self.drained = self._at_ends()
                if self.drained and self.exit_when_drained:
                    return "drained"
                if not self.drained:
                    self._idle_since = None   # a slow fetch, not the end: count the quiet again
        return "stopped"

    def report_lag(self) -> None:
        """Set ``citybrain_consumer_lag`` for each topic the consumer holds: end offsets minus positions, summed. A
        broker that does not answer leaves the last figures (logged): measuring never stops the consumer."""
        from kafka.errors import KafkaError

        self._lag_at = time.monotonic()
        held = list(self.consumer.assignment() or ())
        if not held:
            return
        try:
            ends = self.consumer.end_offsets(held)
        except KafkaError as exc:
            log.warning("%s: lag not measured, the broker did not give the partitions' ends: %s", self.name, exc)
            return
        lag: dict[str, int] = {}
        for tp in held:
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends.get(tp, 0) - (self.consumer.position(tp) or 0))
        for topic, records in lag.items():
            CONSUMER_LAG.labels(str(self.name), topic).set(records)

    def _at_ends(self) -> bool:
        """Whether every partition the consumer holds is read to its end (a group member holding none has not
        joined yet; a consumer assigned no partitions by hand has nothing to read)."""
        held = list(self.consumer.assignment() or ())
        if not held:
            return self.consumer.subscription() is None
        ends = self.consumer.end_offsets(held)
        return all((self.consumer.position(tp) or 0) >= ends.get(tp, 0) for tp in held)


class StatusFile:
    """A running consumer's status where `citybrain status` and the tests read it: one JSON object with the
    time it was written, swapped in whole (a reader never sees half of it), owner-only like the run folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, status: dict[str, Any]) -> None:
        write_private(self.path, json.dumps({**status, "updated_at": now_iso()}, ensure_ascii=False))
