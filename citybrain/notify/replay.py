"""Dead letters sent again: ``citybrain notify replay``.

Reads ``dlq.notify.undelivered.v1`` (optionally one subscription's letters, dead-lettered within a time
window) and sends each notification again as it was (the same id, a new ``notifiedAt``) to its
subscription's endpoint as ``infra/subscriptions.yaml`` says now, in the order they were dead-lettered.

Nothing is sent twice by two replays: each notification an endpoint took is written to the replay
ledger (``<state_dir>/notify/replayed.jsonl``, one line each, as it is taken), and a replay skips what
the ledger holds; the notification id, the same each time, also lets an endpoint drop a repeat. A
letter that fails again stays in the topic and out of the ledger, so the next replay tries it again.
Once an endpoint fails without refusing (no answer, 3xx, 408, 429, 5xx), that subscription's later
letters are not tried in this replay, so none overtakes an earlier one. A record that could not be
read (``record-unreadable``) has no notification to send: it is skipped, its producer is to be fixed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import aiohttp

from citybrain.errors import ServiceError
from citybrain.notify.ngsi import with_context
from citybrain.notify.notifier import DLQ_TOPIC, RETRY_BASE_S, TIMEOUT_S, UNREADABLE, Delivery, deliver
from citybrain.notify.subscriptions import Subscription
from citybrain.settings import Settings
from citybrain.times import now_iso, parse_time

log = logging.getLogger(__name__)

#: What became of one dead letter in a replay.
DELIVERED, FAILED, SKIPPED, WOULD_SEND = "delivered", "failed", "skipped", "would-send"


class DeadLettersUnavailable(ServiceError):
    """The dead-letter topic could not be read."""


@dataclass(frozen=True)
class Replayed:
    """One dead letter's replay: ``result`` is delivered, failed, skipped or would-send (a dry run), ``detail``
    says why."""

    letter: dict[str, Any]
    result: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        keys = ("notification_id", "subscription_id", "event_id", "reason", "failed_at")
        return {**{k: self.letter.get(k) for k in keys}, "result": self.result, "detail": self.detail}


def ledger_path(settings: Settings) -> Path:
    """The replay ledger: one JSON line per notification a replay delivered."""
    return settings.state_dir / "notify" / "replayed.jsonl"


def read_dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Every letter of the dead-letter topic up to its end now, oldest first (the seam the tests replace)."""
    from kafka.errors import KafkaError

    from citybrain.kafka.topics import read_topic

    try:
        return [json.loads(r.value) for r in read_topic(settings, DLQ_TOPIC)]
    except (KafkaError, LookupError, TimeoutError) as exc:
        raise DeadLettersUnavailable(f"cannot read {DLQ_TOPIC}: {type(exc).__name__}: {exc}. Fix: start the "
                                     "platform (`citybrain up`) or check the broker settings, then replay again.") from None


def select(letters: Iterable[dict[str, Any]], subscription: str | None = None, since: datetime | None = None,
           until: datetime | None = None) -> list[dict[str, Any]]:
    """The letters of ``subscription`` dead-lettered at or after ``since`` and before ``until``, each
    notification once (its first letter: a record dead-lettered again after a restart has two)."""
    seen: set[str] = set()
    out = []
    for letter in letters:
        at = parse_time(letter["failed_at"])
        if (subscription is not None and letter["subscription_id"] != subscription or since is not None and at < since
                or until is not None and at >= until or letter["notification_id"] in seen):
            continue
        seen.add(letter["notification_id"])
        out.append(letter)
    return out


def replayed_ids(ledger: Path) -> set[str]:
    """The notification ids the ledger says a replay delivered."""
    try:
        lines = ledger.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return set()
    return {json.loads(line)["notification_id"] for line in lines if line.strip()}


async def replay(letters: list[dict[str, Any]], subscriptions: list[Subscription], ledger: Path,
                 dry_run: bool = False, base_s: float = RETRY_BASE_S) -> list[Replayed]:
    """Send ``letters`` again, in order, as the module says; with ``dry_run`` say what would be sent and send
    nothing (the ledger is not written)."""
    by_id = {s.id: s for s in subscriptions}
    done = replayed_ids(ledger)
    stalled: dict[str, str] = {}   # subscription id -> the failure that stops its later letters
    out: list[Replayed] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        for letter in letters:
            sid, nid = letter["subscription_id"], letter["notification_id"]
            sub = by_id.get(sid)
            if nid in done:
                out.append(Replayed(letter, SKIPPED, "already delivered by a replay (see the ledger)"))
            elif letter["reason"] == UNREADABLE:
                out.append(Replayed(letter, SKIPPED, "the record could not be read: nothing to send; fix its "
                                                     "producer"))
            elif sub is None:
                out.append(Replayed(letter, FAILED, f"no subscription {sid!r} in the subscriptions file. Fix: restore "
                                                    "it, or leave this letter be"))
            elif sid in stalled:
                out.append(Replayed(letter, FAILED, f"not sent: its endpoint failed on an earlier letter "
                                                    f"({stalled[sid]})"))
            elif dry_run:
                out.append(Replayed(letter, WOULD_SEND, sub.endpoint))
            else:
                body = with_context(sub, {**json.loads(letter["notification_text"]), "notifiedAt": now_iso()})
                outcome = await deliver(session, sub, body, Delivery(), base_s)
                if outcome.delivered:
                    _record(ledger, letter, sub)
                    done.add(nid)
                    out.append(Replayed(letter, DELIVERED, sub.endpoint))
                    continue
                if not outcome.refused:
                    stalled[sid] = outcome.error
                out.append(Replayed(letter, FAILED, outcome.error))
                log.warning("notify replay: %s for %s failed again: %s", nid, sid, outcome.error)
    return out


def _record(ledger: Path, letter: dict[str, Any], sub: Subscription) -> None:
    """Write one delivered notification to the ledger at once, so a replay stopped halfway sends it no more."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"notification_id": letter["notification_id"], "subscription_id": sub.id,
                            "endpoint": sub.endpoint, "event_id": letter["event_id"], "replayed_at": now_iso()},
                           ensure_ascii=False) + "\n")
