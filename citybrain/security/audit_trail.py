"""Reading the audit trails back for ``citybrain audit verify|export`` (from their topic, the lake's copy or a
file), and putting the broker's authoriser denials on the trail ``broker``.

The records come back in the order they were stored (the topic's offsets; the lake's files by partition and
offset; a file's lines), which is the order :func:`citybrain.access.trail.verify` checks. The broker logs
each denial (``kafka.authorizer.logger``); :func:`record_denials` turns the lines logged since its last pass
into ``authorizer_denial`` records, keeping how far it read each log in ``<state_dir>/audit/broker-logs.pos``.
"""

from __future__ import annotations

import fcntl
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from citybrain.access.trail import AuditTrail
from citybrain.contracts.topics import AUDIT_EVENTS, contract_id
from citybrain.errors import InputError
from citybrain.lake import layout, reader
from citybrain.lake.layout import Lake
from citybrain.security.checks import DENIED_RE, LOG_TIME_RE
from citybrain.settings import Settings

__all__ = ["broker_logs", "from_file", "from_lake", "from_topic", "record_denials", "to_file"]


def from_topic(settings: Settings) -> list[dict[str, Any]]:
    """Every record of the audit topic, oldest first (raises LookupError when the topic does not exist)."""
    from citybrain.kafka.topics import read_topic

    return [reader.decode(r.value) for r in read_topic(settings, AUDIT_EVENTS)]


def from_lake(lake: Lake) -> list[dict[str, Any]]:
    """Every record of the lake's copy of the audit topic (silver), in partition and offset order."""
    return reader.topic_values(layout.files(lake, "silver", contract_id(AUDIT_EVENTS)))


def from_file(path: Path) -> list[dict[str, Any]]:
    """The records of an exported trail (JSON lines); refuses a line that is not a JSON object, naming it."""
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path.name} line {n} is not JSON ({exc}); an audit export holds one record per line. "
                             f"Fix: export again with `citybrain audit export`") from None
        if not isinstance(value, dict):
            raise InputError(f"{path.name} line {n} is not a JSON object; an audit export holds one record per line. "
                             f"Fix: export again with `citybrain audit export`")
        records.append(value)
    return records


def to_file(records: list[dict[str, Any]], path: Path) -> None:
    """Write records as JSON lines, each key order as stored (the hash does not depend on it)."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def broker_logs(settings: Settings) -> list[Path]:
    """The embedded broker's logs: the single node's, or every node's of a local cluster."""
    return [settings.kafka_dir / "logs" / "server.out", *sorted(settings.kafka_dir.glob("node-*/logs/server.out"))]


def record_denials(trail: AuditTrail, logs: list[Path], positions: Path) -> int:
    """Put each denial logged since the last pass on ``trail``; how many. A log shorter than where the last pass
    stopped was started anew (a broker restart), and is read from its start."""
    positions.parent.mkdir(parents=True, exist_ok=True)
    recorded = 0
    with open(positions.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        seen: dict[str, int] = json.loads(positions.read_text()) if positions.exists() else {}
        for path in (p for p in logs if p.exists()):
            start = seen.get(str(path), 0)
            start = 0 if path.stat().st_size < start else start
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
            whole = data[:data.rfind(b"\n") + 1]    # a line still being written waits for the next pass
            for line in whole.decode(errors="replace").splitlines():
                if m := DENIED_RE.search(line):
                    t = LOG_TIME_RE.match(line)
                    logged = (datetime.strptime(t["t"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).isoformat()
                              if t else None)
                    trail.record("authorizer_denial", m["principal"].removeprefix("User:"), m["resource"], "denied",
                                 operation=m["op"].lower(), host=m["host"].lstrip("/"), logged_at=logged)
                    recorded += 1
            seen[str(path)] = start + len(whole)
        positions.write_text(json.dumps(seen))
    return recorded
