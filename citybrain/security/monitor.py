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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from citybrain.contracts.topics import REF_DEVICES
from citybrain.lake import layout, reader, store
from citybrain.lake.layout import Lake
from citybrain.lake.store import LakePath
from citybrain.security import checks
from citybrain.settings import Settings
from citybrain.kafka.groups import log_starts, read_commits
from citybrain.times import iso, parse_time

log = logging.getLogger(__name__)

#: Groups of the platform itself: their bursts (a restart re-reading its warm-up) are expected.
PLATFORM_GROUPS_PREFIXES = ("citybrain-", "citybrain.")


def _files(lake: Lake, layer: str, pattern: str) -> list[LakePath]:
    """A layer's files; bronze includes quarantined partitions (failing quality is still evidence)."""
    return layout.files(lake, layer, pattern) + (layout.quarantined_files(lake, layer, pattern) if layer == "bronze" else [])


def producer_counts(lake: Lake) -> list[tuple[str, str, datetime, int]]:
    import duckdb

    files = [f for f in _files(lake, "bronze", "raw.*") if "/raw.ref." not in str(f)]
    if not files:
        return []
    con = duckdb.connect()
    try:
        rel = con.sql("SELECT coalesce(producer, '?') AS producer, topic, time_bucket(INTERVAL 5 MINUTE, timestamp) AS b, "
                      f"count(*) AS n FROM {store.register(con, 'bronze', files)} GROUP BY ALL")
        return [(p, t, b.astimezone(timezone.utc), n) for p, t, b, n in rel.fetchall()]
    finally:
        con.close()


def sensor_readings(lake: Lake) -> list[dict[str, Any]]:
    import duckdb

    files = _files(lake, "bronze", "raw.sensor.*")
    if not files:
        return []
    con = duckdb.connect()
    try:
        rows = con.sql(f"""
        SELECT topic, json_extract_string(value, '$.refDevice') AS device, producer,
               CAST(json_extract(value, '$.location.coordinates[0]') AS DOUBLE) AS lon,
               CAST(json_extract(value, '$.location.coordinates[1]') AS DOUBLE) AS lat,
               coalesce(json_extract_string(value, '$.dateObserved'), json_extract_string(value, '$.dateObservedFrom')) AS observed,
               timestamp AS sent, json_extract_string(value, '$.id') AS id
        FROM {store.register(con, 'readings', files)}""").fetchall()
    finally:
        con.close()
    out = []
    for topic, device, producer, lon, lat, observed, sent, ident in rows:
        try:
            obs = parse_time(observed) if observed else sent
        except ValueError:
            obs = sent
        out.append({"topic": topic, "device": device or "?", "producer": producer, "lon": lon, "lat": lat,
                    "observed": obs, "sent": sent.astimezone(timezone.utc), "id": ident or ""})
    return out


def device_registry(lake: Lake) -> dict[str, tuple[float, float]]:
    """Each registered device's declared position (latest registry record), for the spoofing check."""
    registry = reader.latest_values(_files(lake, "bronze", layout.contract_of(REF_DEVICES)), "device_id")
    return {d: (float(v["long"]), float(v["lat"])) for d, v in registry.items()
            if v.get("long") is not None and v.get("lat") is not None}


# -- grants -----------------------------------------------------------------------------------


def declared_grants(path: Path) -> set[checks.Grant]:
    """Grants declared in the access file (``Settings.access_file``; empty when the file does not exist)."""
    if not path.exists():
        return set()
    from citybrain import access

    return access.declared_acl_set(access.load(path))


# -- run ----------------------------------------------------------------------------------------


def personal_data_samples(lake: Lake, zone_of: Callable[[str], str]) -> Iterator[tuple[str, str, str]]:
    for f in _files(lake, "silver", "*"):
        contract = f.parent.parent.parent.name
        for raw in store.read_table(f, columns=["value"]).column("value").to_pylist():
            yield f"silver/{contract}", zone_of(contract), raw
    for data in layout.release_data(lake):
        table = store.read_table(data)
        for name in table.column_names:
            if str(table.schema.field(name).type) in ("string", "large_string"):
                yield f"gold/{data.parent.parent.name}", "gold", "\n".join(str(v) for v in table.column(name).to_pylist() if v)


def run_security(settings: Settings, lake: Lake, now: datetime | None = None,
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
    # The single node's log, or every node's of a local cluster (`citybrain broker up --nodes 3`).
    logs = [settings.kafka_dir / "logs" / "server.out", *sorted(settings.kafka_dir.glob("node-*/logs/server.out"))]
    lines = [line for f in logs if f.exists() for line in f.read_text(errors="replace").splitlines()]
    add("broker_log", checks.broker_log_findings(lines))
    add("devices", checks.device_checks(sensor_readings(lake), device_registry(lake)))
    zones = {"city": "internal", "dispatch": "internal", "metrics": "internal", "alert": "internal"}
    add("personal_data", checks.personal_data_exposure(
        personal_data_samples(lake, lambda c: zones.get(c.split(".")[0], c.split(".")[0])), now, now))
    from citybrain.access.acls import broker_acl_set

    actual = broker_acl_set(settings)
    if actual is None:
        add("grants", [{"finding_id": "SEC-authorisation_disabled:broker", "kind": "authorisation_disabled",
                        "severity": "high", "subject": settings.bootstrap,
                        "summary": "the broker runs without an ACL authoriser: every client can read and write every topic",
                        "evidence": {"bootstrap": settings.bootstrap, "security_protocol": settings.client_auth()[0]},
                        "first_seen": iso(now), "last_seen": iso(now)}])
    else:
        add("grants", checks.grant_drift(declared_grants(access_file or settings.access_file),
                                         actual, now))
    detected = iso(now)
    for f in findings:
        f["detected_at"] = detected
        if send is not None:
            send(f)
    report = {"report": "citybrain.security/1", "date": now.strftime("%Y-%m-%d"), "generated_at": detected,
              "checks": ran, "findings": findings,
              "by_severity": {s: sum(1 for f in findings if f["severity"] == s) for s in ("critical", "high", "medium", "low")}}
    write_report(lake, report)
    return report


def write_report(lake: Lake, report: dict[str, Any]) -> LakePath:
    out = layout.reports_dir(lake, "security") / f"date={report['date']}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str))
    lines = [f"# CityBrain security report {report['date']}", "", f"Generated {report['generated_at']}.", "",
             "| check | findings |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report["checks"].items()] + [""]
    for f in sorted(report["findings"], key=lambda f: ("critical", "high", "medium", "low").index(f["severity"])):
        lines.append(f"- **{f['severity']}** `{f['kind']}` {f['subject']}: {f['summary']} "
                     f"({f['first_seen']} .. {f['last_seen']})")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out
