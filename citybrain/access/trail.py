"""The audit trail: who did what to which data, as hash-chained records a changed, removed or reordered one breaks.

Each producing service (the operations view, the command line, ...) writes its own trail, named by the
service: one writer per chain, so no two writers fork it. A record carries its trail, a sequence number
``seq`` (1, 2, ...), ``prev_hash`` (the previous record's ``hash``; for the first, the trail's genesis
value) and ``hash``, the SHA-256 of the record's canonical JSON without ``hash``. The writer keeps each
trail's last ``seq`` and ``hash`` in ``<state_dir>/audit/<trail>.json`` (under a file lock, so several
processes of one service chain in turn and a restart continues the chain); :func:`verify` checks a trail
read back from the topic or a file, and the state files say where each trail should end, so a cut tail
shows too. Records hold no secrets and no personal data beyond the actor's name.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from citybrain.times import now_iso

__all__ = ["ACTIONS", "AuditTrail", "Break", "Sink", "genesis", "last_states", "record_hash", "verify"]

log = logging.getLogger(__name__)

#: What an audit record can say happened.
ACTIONS = ("login_ok", "login_failed", "logout", "read", "export", "query", "grant_change", "account_change",
           "contract_import", "pack_import", "admin_command", "authorizer_denial", "urge", "whistle", "reply")
OUTCOMES = ("ok", "failed", "denied")
TRAIL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
#: The contract's lengths for actor and target, and a cap on a detail's text: a made-up user name of any length
#: is still recorded (cut), not dead-lettered into a gap.
ACTOR_MAX, TARGET_MAX, DETAIL_MAX = 200, 500, 2000
#: Where a record goes once sealed (the audit topic through the validated producer, or a list in tests).
Sink = Callable[[dict[str, Any]], None]


def genesis(trail: str) -> str:
    """The ``prev_hash`` of a trail's first record: derived from the trail's id, so no trail starts another's."""
    return hashlib.sha256(f"citybrain audit trail {trail}".encode()).hexdigest()


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 over the record's canonical JSON (sorted keys, no spaces, UTF-8), ``hash`` left out."""
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AuditTrail:
    """The one writer of a trail: seals each record onto the chain, persists the chain's end, hands it to the sink."""

    def __init__(self, trail: str, state_dir: Path, sink: Sink) -> None:
        if not TRAIL_RE.match(trail):
            raise ValueError(f"audit trail id {trail!r} is not allowed: use lower-case letters, digits, '-' and '_' "
                             f"(a service's name, e.g. 'ui' or 'cli')")
        self.trail, self.sink = trail, sink
        self.state = state_dir / f"{trail}.json"

    def record(self, action: str, actor: str, target: str = "", outcome: str = "ok", **details: Any) -> dict[str, Any]:
        """Append one record to the trail and send it; returns the sealed record."""
        if action not in ACTIONS:
            raise ValueError(f"audit action {action!r} is unknown; use one of {', '.join(ACTIONS)}")
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome {outcome!r} is unknown; use one of {', '.join(OUTCOMES)}")
        self.state.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            start = {"seq": 0, "hash": genesis(self.trail)}
            last = json.loads(self.state.read_text()) if self.state.exists() else start
            entry: dict[str, Any] = {"trail": self.trail, "seq": last["seq"] + 1, "at": now_iso(),
                                     "actor": actor[:ACTOR_MAX], "action": action, "target": target[:TARGET_MAX],
                                     "outcome": outcome, "prev_hash": last["hash"],
                                     "details": {k: v[:DETAIL_MAX] if isinstance(v, str) else v
                                                 for k, v in details.items() if v is not None}}
            entry["hash"] = record_hash(entry)
            tmp = self.state.with_suffix(".tmp")
            tmp.write_text(json.dumps({"trail": self.trail, "seq": entry["seq"], "hash": entry["hash"]}))
            tmp.replace(self.state)
            log.debug("audit %s #%d: %s %s %s", self.trail, entry["seq"], actor, action, target)
            self.sink(entry)   # under the lock: records reach the topic in the order they were chained
        return entry


def last_states(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Each trail's persisted end (``seq`` and ``hash``) under ``state_dir``: where a whole trail must reach."""
    if not state_dir.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(state_dir.glob("*.json"))}


@dataclass(frozen=True)
class Break:
    """The first bad record of a trail: where (trail, position in the input, seq) and what is wrong."""

    trail: str
    position: int
    seq: int | None
    problem: str

    def __str__(self) -> str:
        at = f"record seq {self.seq}" if self.seq is not None else "the end"
        return f"trail {self.trail!r}, {at} (record {self.position} of the input): {self.problem}"


def verify(records: Iterable[dict[str, Any]], ends: dict[str, dict[str, Any]] | None = None,
           head: bool = True) -> list[Break]:
    """The first break of each trail in ``records`` (in the order read), empty when every chain holds.

    A record whose hash does not match its content was changed; a seq that skips ahead means records were
    removed (or, when the skipped one comes later, reordered); a ``prev_hash`` that is not the previous
    record's hash means the chain was spliced. ``ends`` (from :func:`last_states`) names where each trail's
    writer stopped: a trail that ends earlier lost its tail, one missing altogether lost everything. Without
    ``head`` a trail may start after seq 1 (the topic's retention deleted its start), its first link taken as read."""
    by_trail: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for position, r in enumerate(records, 1):
        by_trail[str(r.get("trail", ""))].append((position, r))
    breaks = []
    for trail, chain in by_trail.items():
        found = _first_break(trail, chain, head)
        if found is None and ends and trail in ends and chain[-1][1].get("seq", 0) < ends[trail]["seq"]:
            last = chain[-1][1]["seq"]
            found = Break(trail, chain[-1][0] + 1, None, f"the trail ends at seq {last} but its writer wrote up to seq "
                          f"{ends[trail]['seq']}: records {last + 1}..{ends[trail]['seq']} were cut off the tail")
        if found is not None:
            breaks.append(found)
    for trail, end in (ends or {}).items():
        if trail not in by_trail and end.get("seq", 0) > 0:
            breaks.append(Break(trail, 0, None, f"no record of this trail was read, but its writer wrote up to seq "
                                                f"{end['seq']}: the whole trail is missing"))
    return breaks


def _first_break(trail: str, chain: list[tuple[int, dict[str, Any]]], head: bool) -> Break | None:
    seqs = {r.get("seq") for _, r in chain}
    first = chain[0][1]
    expected, prev = 1, genesis(trail)
    if not head and isinstance(first.get("seq"), int):   # the start went with retention: take the first link as read
        expected, prev = first["seq"], first.get("prev_hash")
    for position, r in chain:
        seq = r.get("seq")
        if r.get("hash") != record_hash(r):
            return Break(trail, position, seq, "its hash does not match its content: the record was changed")
        if seq != expected:
            if isinstance(seq, int) and seq > expected:
                one = seq == expected + 1
                missing = f"seq {expected}" if one else f"seqs {expected}..{seq - 1}"
                what = (("comes" if one else "come") + " later: records were reordered" if expected in seqs
                        else ("is" if one else "are") + " missing: records were removed")
                return Break(trail, position, seq, f"expected seq {expected} here; {missing} {what}")
            return Break(trail, position, seq, f"expected seq {expected} here: the record is out of order or repeated")
        if r.get("prev_hash") != prev:
            return Break(trail, position, seq, "its prev_hash is not the previous record's hash: the chain was spliced")
        expected, prev = expected + 1, r["hash"]
    return None
