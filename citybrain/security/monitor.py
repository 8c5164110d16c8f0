"""Gather what the security checks need from the broker and the lake, run them, report.

Sources: producer volumes and sensor readings from the lake's bronze layer; consumer-group
reads from the broker's ``__consumer_offsets``; authentication failures and denied
operations from the embedded broker's log; personal data from the silver and gold layers;
grants from the broker's ACLs against ``infra/access.yaml``. Findings go to
``alert.security.finding.v1`` and into a daily report (JSON and Markdown) in the lake.
"""

from __future__ import annotations

import json
import logging
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.parquet as pq

from citybrain.security import checks
from citybrain.settings import Settings
from citybrain.times import parse_time

log = logging.getLogger(__name__)

#: Groups of the platform itself: their bursts (a restart re-reading its warm-up) are expected.
PLATFORM_GROUPS_PREFIXES = ("citybrain-", "citybrain.")


def _files(lake: Path, layer: str, pattern: str) -> list[Path]:
    """A layer's files; bronze includes quarantined partitions (failing quality is still evidence)."""
    files = sorted((lake / layer).glob(f"{pattern}/date=*/hour=*/*.parquet"))
    if layer == "bronze":
        files += sorted((lake / "quarantine" / layer).glob(f"{pattern}/date=*/hour=*/*/*.parquet"))
    return files


def producer_counts(lake: Path) -> list[tuple[str, str, datetime, int]]:
    import duckdb

    files = [f for f in _files(lake, "bronze", "raw.*") if "/raw.ref." not in str(f)]
    if not files:
        return []
    rel = duckdb.sql("SELECT coalesce(producer, '?') AS producer, topic, time_bucket(INTERVAL 5 MINUTE, timestamp) AS b, "
                     "count(*) AS n FROM read_parquet($files) GROUP BY ALL", params={"files": [str(f) for f in files]})
    return [(p, t, b.astimezone(timezone.utc), n) for p, t, b, n in rel.fetchall()]


def sensor_readings(lake: Path) -> list[dict[str, Any]]:
    import duckdb

    files = _files(lake, "bronze", "raw.sensor.*")
    if not files:
        return []
    rel = duckdb.sql("""
        SELECT topic, json_extract_string(value, '$.refDevice') AS device, producer,
               CAST(json_extract(value, '$.location.coordinates[0]') AS DOUBLE) AS lon,
               CAST(json_extract(value, '$.location.coordinates[1]') AS DOUBLE) AS lat,
               coalesce(json_extract_string(value, '$.dateObserved'), json_extract_string(value, '$.dateObservedFrom')) AS observed,
               timestamp AS sent, json_extract_string(value, '$.id') AS id
        FROM read_parquet($files)""", params={"files": [str(f) for f in files]})
    out = []
    for topic, device, producer, lon, lat, observed, sent, ident in rel.fetchall():
        try:
            obs = parse_time(observed) if observed else sent
        except ValueError:
            obs = sent
        out.append({"topic": topic, "device": device or "?", "producer": producer, "lon": lon, "lat": lat,
                    "observed": obs, "sent": sent.astimezone(timezone.utc), "id": ident or ""})
    return out


def device_registry(lake: Path) -> dict[str, tuple[float, float]]:
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    for f in _files(lake, "bronze", "raw.ref.device"):
        t = pq.read_table(f, columns=["offset", "value"]).to_pydict()
        for off, raw in zip(t["offset"], t["value"]):
            v = json.loads(raw)
            d = v.get("device_id")
            if d and (d not in latest or off >= latest[d][0]):
                latest[d] = (off, v)
    return {d: (float(v["long"]), float(v["lat"])) for d, (_, v) in latest.items()
            if v.get("long") is not None and v.get("lat") is not None}


# -- __consumer_offsets ----------------------------------------------------------------------


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from(">h", buf, pos)
    pos += 2
    return buf[pos:pos + n].decode(), pos + n


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def parse_offset_commit(key: bytes, value: bytes | None) -> tuple[str, str, int, int, int | None] | None:
    """(group, topic, partition, offset, commit ms) of an offset-commit record of ``__consumer_offsets``."""
    if not key or value is None:
        return None
    (kv,) = struct.unpack_from(">h", key, 0)
    if kv not in (0, 1):           # 2 = group metadata
        return None
    group, pos = _string(key, 2)
    topic, pos = _string(key, pos)
    (partition,) = struct.unpack_from(">i", key, pos)
    (vv,) = struct.unpack_from(">h", value, 0)
    (offset,) = struct.unpack_from(">q", value, 2)
    pos = 10
    if vv >= 3:
        pos += 4                   # leader epoch
    if vv >= 4:                    # flexible version: compact string
        n, pos = _uvarint(value, pos)
        pos += max(0, n - 1)
    else:
        (n,) = struct.unpack_from(">h", value, pos)
        pos += 2 + max(0, n)
    (commit_ms,) = struct.unpack_from(">q", value, pos)
    return group, topic, partition, offset, commit_ms


def read_commits(settings: Settings, timeout_s: float = 20.0) -> Iterator[checks.Commit]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False, group_id=None,
                             exclude_internal_topics=False, consumer_timeout_ms=2000)
    try:
        parts = [TopicPartition("__consumer_offsets", p) for p in sorted(consumer.partitions_for_topic("__consumer_offsets") or ())]
        if not parts:
            return
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        deadline = datetime.now() + timedelta(seconds=timeout_s)
        while any(consumer.position(p) < end[p] for p in parts) and datetime.now() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=10000).values():
                for m in batch:
                    got = parse_offset_commit(m.key, m.value)
                    if got:
                        g, t, p, off, ms = got
                        yield checks.Commit(g, t, p, off, datetime.fromtimestamp((ms or m.timestamp) / 1000, timezone.utc))
    finally:
        consumer.close()


def log_starts(settings: Settings, topics: set[str]) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(t, p) for t in sorted(topics) for p in sorted(consumer.partitions_for_topic(t) or ())]
        return {(tp.topic, tp.partition): off for tp, off in consumer.beginning_offsets(parts).items()} if parts else {}
    finally:
        consumer.close()


# -- grants -----------------------------------------------------------------------------------


def declared_grants(path: Path) -> set[checks.Grant]:
    """Grants declared in ``infra/access.yaml`` (empty when the file does not exist)."""
    if not path.exists():
        return set()
    from citybrain import access

    return access.declared_acl_set(access.load(path))


# -- run ----------------------------------------------------------------------------------------


def personal_data_samples(lake: Path, zone_of: Callable[[str], str]) -> Iterator[tuple[str, str, str]]:
    for f in _files(lake, "silver", "*"):
        contract = f.parent.parent.parent.name
        for raw in pq.read_table(f, columns=["value"]).column("value").to_pylist():
            yield f"silver/{contract}", zone_of(contract), raw
    for data in sorted((lake / "gold").glob("*/v*/data.parquet")):
        table = pq.read_table(data)
        for name in table.column_names:
            if str(table.schema.field(name).type) in ("string", "large_string"):
                yield f"gold/{data.parent.parent.name}", "gold", "\n".join(str(v) for v in table.column(name).to_pylist() if v)


def run_security(settings: Settings, lake: Path, now: datetime | None = None,
                 send: Callable[[dict[str, Any]], None] | None = None, access_file: Path | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every check; publish findings with ``send``; write the daily report. Returns the report."""
    now = now or datetime.now(timezone.utc)
    say = progress or log.info
    findings: list[dict[str, Any]] = []
    ran: dict[str, int] = {}

    def add(name: str, found: list[dict[str, Any]]) -> None:
        ran[name] = len(found)
        findings.extend(found)
        say(f"security {name}: {len(found)} finding(s)")

    add("producer_traffic", checks.producer_traffic(producer_counts(lake)))
    commits = list(read_commits(settings))
    groups_seen = {c.group for c in commits}
    add("consumer_traffic", checks.consumer_traffic(
        commits, log_starts(settings, {c.topic for c in commits}),
        ignore=[g for g in groups_seen if g.startswith(PLATFORM_GROUPS_PREFIXES) or g == settings.streams_app_id]))
    log_file = settings.state_dir / "kafka" / "logs" / "server.out"
    lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
    add("broker_log", checks.broker_log_findings(lines))
    add("devices", checks.device_checks(sensor_readings(lake), device_registry(lake)))
    zones = {"city": "internal", "dispatch": "internal", "metrics": "internal", "alert": "internal"}
    add("personal_data", checks.personal_data_exposure(
        personal_data_samples(lake, lambda c: zones.get(c.split(".")[0], c.split(".")[0])), now, now))
    from citybrain.access import broker_acl_set

    actual = broker_acl_set(settings)
    if actual is None:
        add("grants", [{"finding_id": "SEC-authorisation_disabled:broker", "kind": "authorisation_disabled",
                        "severity": "high", "subject": settings.bootstrap,
                        "summary": "the broker runs without an ACL authoriser: every client can read and write every topic",
                        "evidence": {"bootstrap": settings.bootstrap, "security_protocol": settings.client_auth()[0]},
                        "first_seen": checks._iso(now), "last_seen": checks._iso(now)}])
    else:
        add("grants", checks.grant_drift(declared_grants(access_file or settings.schemas_dir.parent / "infra" / "access.yaml"),
                                         actual, now))
    detected = checks._iso(now)
    for f in findings:
        f["detected_at"] = detected
        if send is not None:
            send(f)
    report = {"report": "citybrain.security/1", "date": now.strftime("%Y-%m-%d"), "generated_at": detected,
              "checks": ran, "findings": findings,
              "by_severity": {s: sum(1 for f in findings if f["severity"] == s) for s in ("critical", "high", "medium", "low")}}
    write_report(lake, report)
    return report


def write_report(lake: Path, report: dict[str, Any]) -> Path:
    out = lake / "reports" / "security" / f"date={report['date']}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str))
    lines = [f"# CityBrain security report {report['date']}", "", f"Generated {report['generated_at']}.", "",
             "| check | findings |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report["checks"].items()] + [""]
    for f in sorted(report["findings"], key=lambda f: ("critical", "high", "medium", "low").index(f["severity"])):
        lines.append(f"- **{f['severity']}** `{f['kind']}` {f['subject']}: {f['summary']} "
                     f"({f['first_seen']} .. {f['last_seen']})")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out
