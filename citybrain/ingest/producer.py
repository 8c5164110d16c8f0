"""The validated producer: every record ends on its contract's topic or in the dead-letter topic.

Valid records carry the five standard headers (contract id and version, producer, event
id, trace id). Invalid ones go to ``dlq.ingest.rejected.v1`` as an envelope naming the
rule, the field and a value excerpt, with the original bytes. A record counts as accepted
or dead-lettered only once the broker has acknowledged it; a record the broker did not
acknowledge raises ``DeliveryError`` with the counts, it is never dropped silently.

A refused record's dead letter names its first problem and lists the others in its message;
a :class:`RejectionReport` keeps every problem of every refused record as JSON lines.
:class:`BatchProducer` is the same contract for whole files (``citybrain load``): records
go out in Kafka record batches built by aiokafka, which a file's tens of thousands of rows
need (kafka-python's per-record ``send`` alone caps a load near 7,000 records/s). A file whose reading
stops part-way raises :class:`LoadInterrupted` once what was sent before is acknowledged, with its counts.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator

from citybrain import metrics
from citybrain.contracts.model import Contract, load_contract
from citybrain.contracts.topics import INGEST_DEAD_LETTERS
from citybrain.contracts.validate import Rejection, RecordValidator
from citybrain.errors import CityBrainError, ServiceError
from citybrain.ingest.readers import RawRecord
from citybrain.ingest.strict_json import JsonRefused, dumps_escaped, dumps_record
from citybrain.kafka.headers import event_id, new_trace_id, standard_headers
from citybrain.settings import Settings, get_settings
from citybrain.times import iso_micro

if TYPE_CHECKING:  # pragma: no cover
    from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)

#: The edge's corrections of a record (its lint rules, comma-separated), for the quality side to count.
LINT_HEADER = "lint-rules"
#: The dead letters' topic, by the name the edge's users import it by.
DLQ_TOPIC = INGEST_DEAD_LETTERS
#: The topic label of dead letters for records that belong to no contract (what they were sent as is the sender's).
NO_CONTRACT = "(no contract)"
MAX_KEPT_REJECTIONS = 20


class DeliveryError(ServiceError):
    """The broker did not acknowledge some records. Retriable: the input can be produced again."""

    retriable = True


@dataclass
class ProduceSummary:
    """What one produce run did. ``read == accepted + dead_lettered`` always holds on return."""

    topic: str
    read: int = 0
    accepted: int = 0
    dead_lettered: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    rejections: list[tuple[str, Rejection]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def balanced(self) -> bool:
        return self.read == self.accepted + self.dead_lettered

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "read": self.read,
            "accepted": self.accepted,
            "dead_lettered": self.dead_lettered,
            "dead_letter_topic": DLQ_TOPIC,
            "by_rule": dict(self.by_rule),
            "rejections": [{"source": s, **r.as_dict()} for s, r in self.rejections],
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(self.read / self.elapsed_s, 1) if self.elapsed_s else None,
        }


class LoadInterrupted(CityBrainError):
    """Reading a file's records stopped part-way (``cause``); ``summary`` counts what was read before, and what of
    it the broker acknowledged (accepted or dead-lettered). Not retriable: what stopped the reading is to be fixed
    first."""

    def __init__(self, summary: ProduceSummary, cause: Exception, unacknowledged: int,
                 delivery_error: BaseException | None) -> None:
        self.summary, self.cause = summary, cause
        lost = (f"; {unacknowledged} were not acknowledged by the broker (first error: {delivery_error})"
                if unacknowledged else "")
        super().__init__(
            f"reading the records stopped after {summary.read} ({type(cause).__name__}: {cause}). Before it, "
            f"{summary.accepted} were accepted to {summary.topic} and {summary.dead_lettered} dead-lettered to "
            f"{DLQ_TOPIC}{lost}. Fix: correct what stopped the reading, then load the whole file again (a record "
            "sent again unchanged carries the same event id, so consumers count it once).")


@lru_cache(maxsize=4)
def dead_letter_contract(schemas_dir: Path) -> Contract:
    """The dead letters' contract in ``schemas_dir``: its id and version go into every dead letter's headers."""
    return load_contract(schemas_dir / f"{DLQ_TOPIC}.yaml")


def dead_letter_message(target: str, record: RawRecord, rejection: Rejection, producer_id: str, trace_id: str | None,
                        max_record_bytes: int, dead_letters: Contract | None = None
                        ) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The dead-letter envelope and its headers for one refused record (``target``: what it was sent as).

    ``dead_letters``: the dead letters' contract, whose id and version the headers carry; without it, the one
    in the configured schemas (``Settings.schemas_dir``)."""
    original = record.raw or (dumps_escaped(record.value) if record.value is not None else b"")
    limit = max_record_bytes // 2
    truncated = len(original) > limit or record.size > len(original)
    original = original[:limit]
    envelope: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "contract": _text(target),
        "rule": rejection.rule,
        "field": _text(rejection.field)[:200],
        "message": _text(rejection.message)[:2000],
        "fix": rejection.fix,
        "value_excerpt": _text(rejection.value_excerpt)[:400],
        "source": _text(record.source)[:500],
        "producer": _text(record.producer or producer_id),
        "trace_id": trace_id or new_trace_id(),
        "rejected_at": iso_micro(datetime.now(timezone.utc)),
        "original_size": record.size,
        "original_truncated": truncated,
    }
    try:
        envelope["original_text"] = original.decode("utf-8")
    except UnicodeDecodeError:
        envelope["original_base64"] = base64.b64encode(original).decode()
    contract = dead_letters or dead_letter_contract(get_settings().schemas_dir)
    headers = standard_headers(contract, envelope["producer"], envelope["event_id"], envelope["trace_id"]) + [
        ("dlq-contract", _header(target)),
        ("dlq-rule", _header(rejection.rule)),
        ("dlq-field", _header(rejection.field[:200])),
        ("dlq-source", _header(record.source)),
    ]
    return envelope, headers


def _header(text: str) -> bytes:
    """A dead-letter header's value: UTF-8, a lone surrogate (from a hostile key, a file name) as its escape."""
    return text.encode("utf-8", "backslashreplace")


def _text(text: str) -> str:
    """A dead letter's text field, writable as strict JSON: a lone surrogate as its escape."""
    return _header(text).decode("utf-8")


def _raw(source: str, value: Any) -> RawRecord:
    """An application's value as a record to validate (a non-mapping is refused as ``not-an-object``)."""
    if isinstance(value, dict):
        return RawRecord(source, b"", value=value)
    return RawRecord(source, repr(value).encode(), rejection=Rejection(
        "not-an-object", "(record)", f"record must be a mapping, got {type(value).__name__}"))


def _judge(check: RecordValidator, record: RawRecord, max_record_bytes: int) -> tuple[bytes, str, Rejection | None]:
    """A record's JSON payload (as bytes and text), or why it is refused: the reader's reason, the contract's
    rules, strict JSON, size."""
    if record.rejection is not None:
        return b"", "", record.rejection
    rejection = check(record.value)
    if rejection is not None:
        return b"", "", rejection
    try:
        payload = dumps_record(record.value)   # NaN, Infinity, a lone surrogate: refused, never written
    except JsonRefused as exc:
        return b"", "", exc.rejection()
    text = payload.decode("utf-8")   # the event id is a hash of this exact text
    if len(payload) > max_record_bytes:
        return b"", "", Rejection("too-large", "(record)", f"record is {len(payload)} bytes as JSON, over the limit "
                                                           f"of {max_record_bytes} bytes (CITYBRAIN_MAX_RECORD_BYTES)")
    return payload, text, None


def count_run(summary: ProduceSummary) -> None:
    """One produce run into the platform's metrics: records judged for the topic, acknowledged on it, and refused
    by rule. Both producers count here, once a run is acknowledged (or found not to be), so every edge counts alike."""
    metrics.RECORDS_IN.labels(summary.topic).inc(summary.read)
    metrics.RECORDS_OUT.labels(summary.topic).inc(summary.accepted)
    for rule, n in summary.by_rule.items():
        metrics.RECORDS_DEAD_LETTERED.labels(summary.topic, rule).inc(n)


def problems_of(record: RawRecord, first: Rejection, check: RecordValidator | None) -> list[Rejection]:
    """Every problem of a refused record, one per field: the reader's, then (with ``check``) every contract rule
    that what could be read of it breaks (python-jsonschema, off the path of valid records)."""
    found = list(record.problems or (first,))
    if first not in found:
        found.insert(0, first)
    if check is not None and isinstance(record.value, dict):
        seen = {p.field for p in found}
        for problem in check.explain_all(record.value):
            if problem.field not in seen:
                seen.add(problem.field)
                found.append(problem)
    return found


def _book_refused(summary: ProduceSummary, contract: Contract, record: RawRecord, rejection: Rejection,
                 explain: RecordValidator | None, report: RejectionReport | None) -> Rejection:
    """A refused record into ``summary`` (its rule counted, the first MAX_KEPT_REJECTIONS kept), the log and
    ``report`` (every problem, the contract's rules explained with ``explain``); returns the rejection its dead
    letter carries: the first problem, the others listed."""
    problems = problems_of(record, rejection, explain)
    rejection = summarised(problems)
    summary.by_rule[rejection.rule] += 1
    if len(summary.rejections) < MAX_KEPT_REJECTIONS:
        summary.rejections.append((record.source, rejection))
    log.debug("dead-letter %s %s: %s", record.source, rejection.rule, rejection.message)
    if report is not None:
        report.add(contract, record, problems)
    return rejection


def summarised(problems: list[Rejection]) -> Rejection:
    """One rejection for a record's problems: the first's rule and field, the others listed in the message."""
    first = problems[0]
    if len(problems) == 1:
        return first
    others = "; ".join(f"`{p.field}` {p.rule}" for p in problems[1:])
    return Rejection(first.rule, first.field, f"{first.message} (and {len(problems) - 1} more: {others})",
                     first.value_excerpt)


class RejectionReport:
    """Every refused record of a run with every problem it has, as JSON lines beside the run's summary.

    One line per record: ``{"source", "file", "line", "contract", "problems": [{"rule", "field", "message",
    "value_excerpt", "fix"}, ...]}``. Opened on first use, so a run without rejections writes no file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = 0
        self._file: IO[str] | None = None

    def add(self, contract: Contract, record: RawRecord, problems: list[Rejection]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")
        name, _, line = record.source.rpartition(":")
        entry = {"source": record.source, "file": name if line.isdigit() else record.source,
                 "line": int(line) if line.isdigit() else None, "contract": contract.topic,
                 "problems": [p.as_dict() for p in problems]}
        self._file.write(dumps_escaped(entry, compact=True).decode("utf-8") + "\n")
        self.records += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RejectionReport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ValidatedProducer:
    """Produce records under a contract through one Kafka producer (kafka-python)."""

    def __init__(self, settings: Settings, producer_id: str | None = None) -> None:
        from citybrain.kafka import clients

        self.settings = settings
        self.producer_id = producer_id or settings.producer_id
        self._producer = clients.producer(
            settings,
            acks="all",
            linger_ms=10,
            batch_size=256 * 1024,
            max_request_size=max(1024 * 1024, settings.max_record_bytes * 2),
            # A partition's new leader can take a few seconds to take over (a topic just created on a loaded
            # machine, a broker restarting): retry NotLeaderForPartition and the like for about 5 s.
            retries=15,
            retry_backoff_ms=350,
            max_block_ms=15_000,
        )
        self._validators: dict[str, RecordValidator] = {}

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> ValidatedProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def validator(self, contract: Contract) -> RecordValidator:
        if contract.topic not in self._validators:
            self._validators[contract.topic] = RecordValidator(contract)
        return self._validators[contract.topic]

    # -- public API ----------------------------------------------------------------------

    def produce_values(
        self, contract: Contract, values: Iterable[dict[str, Any]], source: str = "api",
        trace_id: str | None = None,
    ) -> ProduceSummary:
        """Produce Python dicts (from an application) under ``contract``."""
        return self.produce(contract, (_raw(f"{source}:{i}", v) for i, v in enumerate(values, 1)), trace_id=trace_id)

    def produce_values_many(self, items: Iterable[tuple[Contract, Any]], source: str = "api",
                            trace_id: str | None = None) -> dict[str, ProduceSummary]:
        """Produce Python dicts of several contracts, interleaved; one summary per topic seen."""
        return self.produce_many(((c, _raw(f"{source}:{i}", v)) for i, (c, v) in enumerate(items, 1)), trace_id=trace_id)

    def produce(
        self, contract: Contract, records: Iterable[RawRecord], trace_id: str | None = None,
        progress: Callable[[int], None] | None = None, report: RejectionReport | None = None,
    ) -> ProduceSummary:
        """Validate and send every record; return the counts once the broker acknowledged them all."""
        return self.produce_many(((contract, r) for r in records), trace_id=trace_id, progress=progress,
                                 topics=[contract], report=report)[contract.topic]

    def produce_many(
        self, items: Iterable[tuple[Contract, RawRecord]], trace_id: str | None = None,
        progress: Callable[[int], None] | None = None, topics: Iterable[Contract] = (),
        on_rejected: Callable[[Contract, RawRecord, Rejection], None] | None = None,
        report: RejectionReport | None = None,
    ) -> dict[str, ProduceSummary]:
        """Validate and send records of several contracts, interleaved; one flush at the end.

        Returns one summary per topic seen (and per contract in ``topics``), counted on
        broker acknowledgement. ``on_rejected`` is told of every dead-lettered record;
        ``report`` gets every problem of each (the contract's rules explained in full).
        """
        summaries: dict[str, ProduceSummary] = {}
        acked: dict[str, Counter[str]] = {}
        failures: list[BaseException] = []
        ready: dict[str, tuple[RecordValidator, Any, Any]] = {}
        started = time.perf_counter()
        read = 0

        def prepare(contract: Contract) -> tuple[RecordValidator, Any, Any]:
            self._require_topics(contract.topic, DLQ_TOPIC)
            summaries[contract.topic] = ProduceSummary(topic=contract.topic)
            counter = acked[contract.topic] = Counter()
            entry = (self.validator(contract),
                     lambda _meta: counter.update(("accepted",)), lambda _meta: counter.update(("dead",)))
            ready[contract.topic] = entry
            return entry

        for contract in topics:
            prepare(contract)
        max_bytes = self.settings.max_record_bytes
        for contract, record in items:
            check, ok_accepted, ok_dead = ready.get(contract.topic) or prepare(contract)
            summary = summaries[contract.topic]
            summary.read += 1
            read += 1
            payload, text, rejection = _judge(check, record, max_bytes)
            if rejection is None:
                value = record.value
                headers = standard_headers(contract, record.producer or self.producer_id,
                                           event_id(contract, value, text), trace_id)
                if record.lint:
                    headers.append((LINT_HEADER, ",".join(record.lint).encode()))
                future = self._producer.send(
                    contract.topic, value=payload, key=contract.key_of(value), headers=headers,
                    timestamp_ms=record.timestamp_ms)
                future.add_callback(ok_accepted).add_errback(failures.append)
            else:
                rejection = _book_refused(summary, contract, record, rejection,
                                          check if report is not None else None, report)
                if on_rejected:
                    on_rejected(contract, record, rejection)
                self._send_dead_letter(contract.topic, record, rejection, trace_id).add_callback(ok_dead).add_errback(
                    failures.append)
            if progress and read % 1000 == 0:
                progress(read)

        self._producer.flush()
        elapsed = time.perf_counter() - started
        for topic, summary in summaries.items():
            summary.elapsed_s = elapsed
            summary.accepted, summary.dead_lettered = acked[topic]["accepted"], acked[topic]["dead"]
            count_run(summary)
        if progress:
            progress(read)
        unbalanced = [s for s in summaries.values() if not s.balanced]
        if failures or unbalanced:
            missing = sum(s.read - s.accepted - s.dead_lettered for s in summaries.values())
            topics_text = ", ".join(sorted(summaries))
            raise DeliveryError(
                f"{missing} of {read} records were not acknowledged by the broker at {self.settings.bootstrap} "
                f"(first error: {failures[0] if failures else 'none reported'}). "
                + "; ".join(f"{s.topic}: accepted {s.accepted}, dead-lettered {s.dead_lettered}"
                            for s in summaries.values())
                + f". Fix: check the broker (`citybrain broker status`) and that `citybrain topics apply` has "
                f"created {topics_text} and {DLQ_TOPIC}, then produce again."
            )
        return summaries

    def _require_topics(self, *topics: str) -> None:
        from kafka.errors import KafkaError

        for topic in topics:
            try:
                known = self._producer.partitions_for(topic)
            except KafkaError as exc:
                known = None
                log.debug("metadata for %s failed: %s", topic, exc)
            if not known:
                raise DeliveryError(
                    f"Topic {topic} does not exist on {self.settings.bootstrap} (or the broker did not answer). "
                    "Fix: run `citybrain topics apply` to create the topics from the contracts."
                )

    # -- dead letters --------------------------------------------------------------------

    def dead_letter(self, target: str, records: list[tuple[RawRecord, Rejection]], trace_id: str | None = None) -> int:
        """Dead-letter records that belong to no contract (e.g. an unknown FIWARE entity type);
        ``target`` names what they were sent as. Returns how many the broker acknowledged."""
        self._require_topics(DLQ_TOPIC)
        futures = [self._send_dead_letter(target, record, rejection, trace_id) for record, rejection in records]
        self._producer.flush()
        failed = [f.exception for f in futures if f.failed()]
        for (_record, rejection), future in zip(records, futures):
            if not future.failed():
                metrics.RECORDS_DEAD_LETTERED.labels(NO_CONTRACT, rejection.rule).inc()
        if failed:
            raise DeliveryError(f"{len(failed)} of {len(records)} dead letters were not acknowledged by the broker at "
                                f"{self.settings.bootstrap} (first error: {failed[0]}). Fix: check the broker.")
        return len(futures)

    def _send_dead_letter(self, target: str, record: RawRecord, rejection: Rejection, trace_id: str | None):  # type: ignore[no-untyped-def]
        envelope, headers = dead_letter_message(target, record, rejection, self.producer_id, trace_id,
                                                self.settings.max_record_bytes,
                                                dead_letter_contract(self.settings.schemas_dir))
        return self._producer.send(DLQ_TOPIC, value=dumps_escaped(envelope, compact=True), key=_header(target), headers=headers)


class BatchProducer:
    """Produce a file's records under one contract in Kafka record batches (aiokafka), for ``citybrain load``.

    The contract of :class:`ValidatedProducer`, whole: every record validated, sent with the five
    headers or dead-lettered, counted only once the broker acknowledged its batch, ``DeliveryError``
    when any was not. Keys pick partitions as kafka-python's default partitioner does (murmur2 of
    the key), so a record lands where ``citybrain produce`` would put it.
    """

    def __init__(self, settings: Settings, producer_id: str | None = None) -> None:
        self.settings = settings
        self.producer_id = producer_id or settings.producer_id

    def produce(self, contract: Contract, records: Iterable[RawRecord], trace_id: str | None = None,
                progress: Callable[[int], None] | None = None, report: RejectionReport | None = None
                ) -> ProduceSummary:
        """Validate and send every record; return the counts once the broker acknowledged them all.

        The cyclic garbage collector pauses for the run: a file's rows are millions of short-lived acyclic
        objects, and a collection every few hundred of them costs a fifth of the time."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            return asyncio.run(self._produce(contract, records, trace_id, progress, report))
        finally:
            if collecting:
                gc.enable()

    async def _produce(self, contract: Contract, records: Iterable[RawRecord], trace_id: str | None,
                       progress: Callable[[int], None] | None, report: RejectionReport | None) -> ProduceSummary:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        max_bytes = self.settings.max_record_bytes
        producer = AIOKafkaProducer(**self.settings.aiokafka_config(), acks="all", max_batch_size=256 * 1024,
                                    max_request_size=max(1024 * 1024, max_bytes * 2), request_timeout_ms=30_000)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise DeliveryError(f"cannot reach the broker at {self.settings.bootstrap} ({exc}). Fix: check the broker "
                                "(`citybrain broker status`), then load again; nothing was produced.") from None
        try:
            return await _BatchRun(self, producer, contract, trace_id, report).run(records, progress)
        finally:
            await producer.stop()


def _until_failure(records: Iterable[RawRecord], stopped: list[Exception]) -> Iterator[RawRecord]:
    """``records`` until reading them raises: the error goes into ``stopped`` (for the run to count what it sent
    before), the iteration ends."""
    try:
        yield from records
    except Exception as exc:   # noqa: BLE001 - any reader's error; reported with the counts by LoadInterrupted
        log.debug("reading the records stopped: %r", exc)
        stopped.append(exc)


class _BatchRun:
    """One file's records into record batches, one open batch per topic partition."""

    def __init__(self, owner: BatchProducer, producer: AIOKafkaProducer, contract: Contract, trace_id: str | None,
                 report: RejectionReport | None) -> None:
        self.owner, self.producer, self.contract, self.trace_id, self.report = owner, producer, contract, trace_id, report
        self.summary = ProduceSummary(topic=contract.topic)
        self.open: dict[tuple[str, int], list[Any]] = {}        # (topic, partition) -> [batch, records in it]
        self.sent: list[tuple[asyncio.Future[Any], str, int]] = []   # (delivery, topic, records)
        self.partitions: dict[str, list[int]] = {}
        self.by_key: dict[tuple[str, bytes], int] = {}

    async def run(self, records: Iterable[RawRecord], progress: Callable[[int], None] | None) -> ProduceSummary:
        """Send every record and count what the broker acknowledged. Raises DeliveryError when some were not,
        LoadInterrupted when reading stopped part-way (after what was sent is acknowledged), and what stopped it
        as it is when it stopped before the first record (a header that does not fit: nothing was sent)."""
        from aiokafka.partitioner import murmur2

        contract, summary, owner = self.contract, self.summary, self.owner
        await self._require_topics(contract.topic, DLQ_TOPIC)
        check = RecordValidator(contract)
        dead_letters = dead_letter_contract(owner.settings.schemas_dir)
        max_bytes, topic, producer_id = owner.settings.max_record_bytes, contract.topic, owner.producer_id
        started = time.perf_counter()
        stopped: list[Exception] = []
        for record in _until_failure(records, stopped):
            summary.read += 1
            payload, text, rejection = _judge(check, record, max_bytes)
            if rejection is None:
                value = record.value
                headers = standard_headers(contract, record.producer or producer_id,
                                           event_id(contract, value, text), self.trace_id)
                if record.lint:
                    headers.append((LINT_HEADER, ",".join(record.lint).encode()))
                full = self._append(topic, contract.key_of(value), payload, headers, record.timestamp_ms, murmur2)
            else:
                rejection = _book_refused(summary, contract, record, rejection, check, self.report)
                envelope, headers = dead_letter_message(topic, record, rejection, producer_id, self.trace_id,
                                                        max_bytes, dead_letters)
                full = self._append(DLQ_TOPIC, _header(topic), dumps_escaped(envelope, compact=True), headers, None,
                                    murmur2)
            if full is not None:
                await self._submit(*full)
            if summary.read % 2000 == 0:
                if progress:
                    progress(summary.read)
                await asyncio.sleep(0)   # let the sender write what is ready while the file is read
        for topic_name, partition in list(self.open):
            await self._submit(topic_name, partition)
        results = await asyncio.gather(*(future for future, _t, _n in self.sent), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        acked = Counter[str]()
        for (_future, topic_name, count), result in zip(self.sent, results):
            if not isinstance(result, BaseException):
                acked[topic_name] += count
        summary.accepted, summary.dead_lettered = acked[topic], acked[DLQ_TOPIC]
        count_run(summary)
        summary.elapsed_s = time.perf_counter() - started
        if progress:
            progress(summary.read)
        if stopped:
            if summary.read == 0:
                raise stopped[0]
            raise LoadInterrupted(summary, stopped[0], summary.read - summary.accepted - summary.dead_lettered,
                                  failures[0] if failures else None)
        if failures or not summary.balanced:
            raise DeliveryError(
                f"{summary.read - summary.accepted - summary.dead_lettered} of {summary.read} records were not "
                f"acknowledged by the broker at {owner.settings.bootstrap} (first error: "
                f"{failures[0] if failures else 'none reported'}). {topic}: accepted {summary.accepted}, "
                f"dead-lettered {summary.dead_lettered}. Fix: check the broker (`citybrain broker status`) and that "
                f"`citybrain topics apply` has created {topic} and {DLQ_TOPIC}, then load again.")
        return summary

    async def _require_topics(self, *topics: str) -> None:
        from aiokafka.errors import KafkaError

        try:
            cluster = await self.producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise DeliveryError(f"the broker at {self.owner.settings.bootstrap} did not say which topics it has "
                                f"({exc}). Fix: check the broker (`citybrain broker status`).") from None
        for topic in topics:
            known = cluster.partitions_for_topic(topic)
            if not known:
                raise DeliveryError(
                    f"Topic {topic} does not exist on {self.owner.settings.bootstrap} (or the broker did not answer). "
                    "Fix: run `citybrain topics apply` to create the topics from the contracts.")
            self.partitions[topic] = sorted(known)

    def _append(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]],
                timestamp_ms: int | None, murmur2: Callable[[bytes], int]) -> tuple[str, int, Any] | None:
        """Add a record to its partition's open batch; a batch it did not fit in is returned, to be submitted."""
        partition = self.by_key.get((topic, key))
        if partition is None:
            partitions = self.partitions[topic]
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            if len(self.by_key) > 100_000:   # keys unique per record (ids): keep the memo small
                self.by_key.clear()
            self.by_key[(topic, key)] = partition
        lane = self.open.get((topic, partition))
        if lane is None:
            lane = self.open[(topic, partition)] = [self.producer.create_batch(), 0]
        if lane[0].append(key=key, value=value, timestamp=timestamp_ms, headers=headers) is not None:
            lane[1] += 1
            return None
        full = self.open[(topic, partition)] = [self.producer.create_batch(), 1]
        full[0].append(key=key, value=value, timestamp=timestamp_ms, headers=headers)   # a new batch takes one
        return topic, partition, lane

    async def _submit(self, topic: str, partition: int, lane: list[Any] | None = None) -> None:
        """Send a batch (by default the partition's open one) and keep its delivery to count on."""
        batch, count = lane or self.open.pop((topic, partition))
        self.sent.append((await self.producer.send_batch(batch, topic, partition=partition), topic, count))
