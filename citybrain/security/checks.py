"""Security checks of the security_monitoring DAG, as pure functions over data they are given.

Each returns findings (dicts under the ``alert.security.finding`` contract, without
``detected_at``). Baselines are robust (median and MAD), so the outlier being judged cannot
drag its own baseline along. Samples of personal data in evidence are masked.
"""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from citybrain.kafka.groups import Commit
from citybrain.times import iso

# -- robust baselines ---------------------------------------------------------------------


def robust_baseline(values: list[float]) -> tuple[float, float]:
    """(median, MAD scaled to a standard deviation)."""
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values) * 1.4826
    return median, mad


# -- producers ----------------------------------------------------------------------------


def producer_traffic(counts: Iterable[tuple[str, str, datetime, int]], factor: float = 10.0, z: float = 8.0,
                     min_buckets: int = 12, bucket: timedelta = timedelta(minutes=5)) -> list[dict[str, Any]]:
    """Abnormal volume per producer and topic: ``counts`` is (producer, topic, bucket start, records).

    A bucket is abnormal when it exceeds both ``factor`` x the median bucket and the median
    plus ``z`` robust deviations; consecutive abnormal buckets make one finding."""
    series: dict[tuple[str, str], dict[datetime, int]] = defaultdict(dict)
    for producer, topic, start, n in counts:
        series[(producer, topic)][start] = series[(producer, topic)].get(start, 0) + n
    findings = []
    for (producer, topic), by_time in sorted(series.items()):
        if len(by_time) < min_buckets:
            continue
        median, mad = robust_baseline([float(v) for v in by_time.values()])
        limit = max(median * factor, median + z * max(mad, 1.0))
        runs: list[list[datetime]] = []
        for start in sorted(by_time):
            if by_time[start] > limit:
                if runs and start - runs[-1][-1] <= bucket:
                    runs[-1].append(start)
                else:
                    runs.append([start])
        for run in runs:
            peak = max(by_time[t] for t in run)
            extra = sum(by_time[t] - median for t in run)
            minutes = int((run[-1] - run[0] + bucket).total_seconds() // 60)
            ratio = peak / median if median else math.inf
            findings.append({
                "finding_id": f"SEC-abnormal_producer_traffic:{producer}:{topic}:{run[0]:%Y-%m-%dT%H:%M}",
                "kind": "abnormal_producer_traffic", "severity": "high" if ratio >= 20 else "medium",
                "subject": producer,
                "summary": f"{producer} sent {ratio:.0f}x its usual volume to {topic} for {minutes} minutes "
                           f"({int(extra):,} records more than usual)",
                "evidence": {"topic": topic, "peak_per_bucket": peak, "baseline_median": median, "baseline_mad": round(mad, 1),
                             "factor": round(ratio, 1), "bucket_minutes": int(bucket.total_seconds() // 60),
                             "buckets": len(run), "extra_records": int(extra)},
                "first_seen": iso(run[0]), "last_seen": iso(run[-1] + bucket)})
    return findings


# -- consumer groups ----------------------------------------------------------------------




def consumer_traffic(commits: Iterable[Commit], log_start: dict[tuple[str, int], int], factor: float = 10.0,
                     min_reads: int = 1000, min_history: int = 3, ignore: Iterable[str] = (),
                     same_read: timedelta = timedelta(milliseconds=500)) -> list[dict[str, Any]]:
    """Abnormal reading per consumer group, from its offset commits (``__consumer_offsets``).

    Records read between two commits of a partition = the offset difference (the first commit
    counts from the log start). Commits of a group within ``same_read`` form one read; a read is
    abnormal when it is ``factor`` x the group's median read and at least ``min_reads``
    records, or when it touches topics the group never read before (after ``min_history``
    reads)."""
    ignored = set(ignore)
    by_group: dict[str, list[Commit]] = defaultdict(list)
    for c in commits:
        if c.group not in ignored:
            by_group[c.group].append(c)
    findings = []
    for group, items in sorted(by_group.items()):
        items.sort(key=lambda c: c.at)
        last: dict[tuple[str, int], int] = {}
        reads: list[dict[str, Any]] = []
        for c in items:
            tp = (c.topic, c.partition)
            delta = max(0, c.offset - last.get(tp, log_start.get(tp, 0)))
            last[tp] = max(last.get(tp, 0), c.offset)
            if reads and c.at - reads[-1]["last"] <= same_read:
                r = reads[-1]
            else:
                r = {"first": c.at, "last": c.at, "records": 0, "topics": set()}
                reads.append(r)
            r["last"] = c.at
            r["records"] += delta
            if delta:
                r["topics"].add(c.topic)
        known: set[str] = set()
        for i, r in enumerate(reads):
            history = reads[:i]
            if len(history) >= min_history:
                median = statistics.median(h["records"] for h in history) or 1
                new_topics = sorted(r["topics"] - known)
                big = r["records"] >= min_reads and r["records"] >= factor * median
                if big or (new_topics and r["records"] >= min_reads):
                    findings.append({
                        "finding_id": f"SEC-abnormal_consumer_traffic:{group}:{r['first']:%Y-%m-%dT%H:%M:%S}",
                        "kind": "abnormal_consumer_traffic", "severity": "high" if new_topics else "medium",
                        "subject": group,
                        "summary": f"consumer group {group} read {r['records']:,} records at once, "
                                   f"{r['records'] / median:.0f}x its usual read"
                                   + (f", from topics it never read before: {', '.join(new_topics)}" if new_topics else ""),
                        "evidence": {"records": r["records"], "baseline_median": median, "topics": sorted(r["topics"]),
                                     "new_topics": new_topics, "reads_before": len(history)},
                        "first_seen": iso(r["first"]), "last_seen": iso(r["last"])})
            known |= r["topics"]
    return findings


# -- devices ------------------------------------------------------------------------------


def haversine_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(a))


def device_checks(readings: Iterable[dict[str, Any]], registry: dict[str, tuple[float, float]],
                  max_km: float = 2.0, replay_after: timedelta = timedelta(minutes=30)) -> list[dict[str, Any]]:
    """Spoofed devices, unregistered devices and replayed readings.

    ``readings``: dicts with topic, device, producer, lon, lat, observed (time the reading
    claims), sent (Kafka timestamp), id (the reading's id). ``registry``: device -> (lon, lat).
    Spoofing: a registered device reporting more than ``max_km`` from where it is installed.
    Replay: a reading id seen before, sent again more than ``replay_after`` after it was
    observed and after its first copy (a gateway retrying within minutes is redelivery, and a
    reading arriving late once is late, not a replay)."""
    far: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unknown: dict[str, list[dict[str, Any]]] = defaultdict(list)
    replayed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    first_sent: dict[tuple[str, str], datetime] = {}
    for r in sorted(readings, key=lambda r: r["sent"]):
        device = r["device"]
        ident = (r["topic"], r["id"])
        if (ident in first_sent and r["sent"] - r["observed"] > replay_after
                and r["sent"] - first_sent[ident] > replay_after):
            replayed[device].append(r)
        first_sent.setdefault(ident, r["sent"])
        if device not in registry:
            unknown[device].append(r)
        elif r.get("lon") is not None and r.get("lat") is not None:
            km = haversine_km(r["lon"], r["lat"], *registry[device])
            if km > max_km:
                far[device].append({**r, "km": km})
    findings = []
    for producer, devices, rs in _per_producer(far):
        findings.append(_device_finding("device_spoofing", "critical", devices[0] if len(devices) == 1 else producer, rs,
                                        f"{len(rs)} readings sent by {producer} as device(s) {_some(devices)}, from up to "
                                        f"{max(r['km'] for r in rs):.0f} km away from where they are installed",
                                        {"max_km": round(max(r["km"] for r in rs), 1), "devices": devices[:50],
                                         "device_count": len(devices)}))
    for producer, devices, rs in _per_producer(unknown):
        findings.append(_device_finding("unregistered_device", "high", devices[0] if len(devices) == 1 else producer, rs,
                                        f"{len(rs)} readings sent by {producer} from device(s) {_some(devices)}, "
                                        "not in the device registry", {"devices": devices[:50], "device_count": len(devices)}))
    for device, rs in sorted(replayed.items()):
        lag = max((r["sent"] - r["observed"]).total_seconds() / 60 for r in rs)
        findings.append(_device_finding("replayed_messages", "high", device, rs,
                                        f"{len(rs)} readings of device {device} sent again up to {lag:.0f} min "
                                        "after they were observed", {"max_lag_min": round(lag)}))
    return findings


def _per_producer(by_device: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[str], list[dict[str, Any]]]]:
    """Readings regrouped per producer: (producer, its devices, its readings)."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rs in by_device.values():
        for r in rs:
            grouped[r["producer"] or "?"].append(r)
    return [(p, sorted({r["device"] for r in rs}), rs) for p, rs in sorted(grouped.items())]


def _some(devices: list[str]) -> str:
    return ", ".join(devices[:5]) + (" and more" if len(devices) > 5 else "")


def _device_finding(kind: str, severity: str, device: str, rs: list[dict[str, Any]], summary: str,
                    extra: dict[str, Any]) -> dict[str, Any]:
    first, last = min(r["sent"] for r in rs), max(r["sent"] for r in rs)
    return {"finding_id": f"SEC-{kind}:{device}:{first:%Y-%m-%dT%H:%M}", "kind": kind, "severity": severity,
            "subject": device, "summary": summary,
            "evidence": {"readings": len(rs), "producers": sorted({r["producer"] or "?" for r in rs}),
                         "topics": sorted({r["topic"] for r in rs}), **extra},
            "first_seen": iso(first), "last_seen": iso(last)}


# -- personal data --------------------------------------------------------------------------

#: A mainland mobile number: 11 digits from 13-19, grouped 3-4-4 by spaces or hyphens or not at all, with an optional
#: +86 / 0086 country prefix; a run of digits longer than 11 (an order number, a timestamp) is not one.
MOBILE_RE = re.compile(r"(?<![0-9])(?:(?:\+|00)86[ -]?)?1[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}(?![0-9])")
#: A resident ID number (GB 11643): area, birth date, sequence and check digit, as one run or with a space or hyphen
#: after the area, the year and the birth date; an 18-digit run inside letters (a ticket id) is an identifier.
RESIDENT_ID_RE = re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{5}[ -]?(?:19|20)[0-9]{2}[ -]?(?:0[1-9]|1[0-2])"
                            r"(?:0[1-9]|[12][0-9]|3[01])[ -]?[0-9]{3}[0-9Xx](?![0-9A-Za-z])")
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Hashes and UUIDs (reading IDs, pseudonyms, trace IDs): a run of 16 or more hex characters, at least one a letter.
# About one MD5 in a thousand holds an 11-digit run that starts 1[3-9]; the number scans skip these identifiers.
HEX_ID_RE = re.compile(r"(?<![0-9A-Za-z])(?=[0-9A-Fa-f-]*[A-Fa-f])[0-9A-Fa-f][0-9A-Fa-f-]{15,}(?![0-9A-Za-z])")
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"


def resident_id_valid(text: str) -> bool:
    """GB 11643 check digit of an 18-digit resident ID number."""
    if len(text) != 18 or not text[:17].isdigit():
        return False
    return ID_CHECK[sum(int(d) * w for d, w in zip(text[:17], ID_WEIGHTS)) % 11] == text[17].upper()


def normalise_for_scan(text: str) -> str:
    """``text`` as the scan reads it: NFKC, so full-width digits, ``＋`` and ``＠`` are the ASCII ones a person
    typing on a Chinese keyboard meant (separators inside numbers are left to the patterns)."""
    return unicodedata.normalize("NFKC", text)


def find_personal_data(text: str) -> list[tuple[str, str]]:
    """(kind, masked sample) for every mobile number, resident ID (``probable_resident_id`` when its check digit is
    wrong: a typo or a made-up number in an ID's shape, a lower-confidence finding) or e-mail address in ``text``,
    read after :func:`normalise_for_scan`; numbers inside a hash or UUID are part of an identifier, not a number."""
    text = normalise_for_scan(text)
    numbers = HEX_ID_RE.sub(" ", text)
    found: list[tuple[str, str]] = []
    for m in RESIDENT_ID_RE.findall(numbers):
        digits = re.sub(r"[ -]", "", m)
        found.append(("resident_id" if resident_id_valid(digits) else "probable_resident_id",
                      digits[:6] + "********" + digits[-4:]))
    numbers = RESIDENT_ID_RE.sub(" ", numbers)   # the digits of an ID are not also a phone number
    for m in MOBILE_RE.findall(numbers):
        digits = re.sub(r"[^0-9]", "", m)[-11:]
        found.append(("mobile_number", digits[:3] + "****" + digits[-4:]))
    found += [("email", m[0] + "***@" + m.split("@", 1)[1]) for m in EMAIL_RE.findall(text)]
    return found


def personal_data_exposure(samples: Iterable[tuple[str, str, str]], first: datetime, last: datetime) -> list[dict[str, Any]]:
    """``samples``: (where, zone, text). Personal data found outside the restricted zones."""
    hits: dict[tuple[str, str], list[str]] = defaultdict(list)
    zones: dict[str, str] = {}
    for where, zone, text in samples:
        if zone in ("raw", "dlq") or not text:
            continue
        for kind, masked in find_personal_data(text):
            hits[(where, kind)].append(masked)
            zones[where] = zone
    return [{"finding_id": f"SEC-personal_data_exposed:{where}:{kind}", "kind": "personal_data_exposed",
             "severity": {"resident_id": "critical", "probable_resident_id": "medium"}.get(kind, "high"), "subject": where,
             "summary": f"{len(found):,} {kind.replace('_', ' ')}(s) in {where} (zone {zones[where]}), where the "
                        "contracts allow no personal data",
             "evidence": {"data_kind": kind, "count": len(found), "zone": zones[where], "masked_samples": sorted(set(found))[:3]},
             "first_seen": iso(first), "last_seen": iso(last)}
            for (where, kind), found in sorted(hits.items())]


# -- broker log: authentication and authorisation -------------------------------------------

FAILED_AUTH_RE = re.compile(r"Failed authentication with (?P<host>[^\s(]+).*?\((?P<why>[^)]*)\)", re.I)
DENIED_RE = re.compile(r"Principal = (?P<principal>\S+) is Denied operation = (?P<op>\w+) from host = (?P<host>\S+) "
                       r"on resource = (?P<resource>\S+)", re.I)
LOG_TIME_RE = re.compile(r"^\[(?P<t>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),\d+\]")


def broker_log_findings(lines: Iterable[str], min_failures: int = 3) -> list[dict[str, Any]]:
    """Failed authentications (``min_failures`` or more per client host) and denied operations."""
    failed: dict[str, list[tuple[datetime | None, str]]] = defaultdict(list)
    denied: dict[tuple[str, str, str], list[datetime | None]] = defaultdict(list)
    for line in lines:
        tm = LOG_TIME_RE.match(line)
        at = datetime.strptime(tm.group("t"), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc) if tm else None
        if m := FAILED_AUTH_RE.search(line):
            failed[m.group("host").lstrip("/")].append((at, m.group("why")))
        elif m := DENIED_RE.search(line):
            denied[(m.group("principal"), m.group("op").lower(), m.group("resource"))].append(at)
    now = datetime.now(timezone.utc)
    findings = []
    for host, items in sorted(failed.items()):
        if len(items) < min_failures:
            continue
        times = [t for t, _ in items if t] or [now]
        findings.append({"finding_id": f"SEC-failed_authentication:{host}:{min(times):%Y-%m-%dT%H}",
                         "kind": "failed_authentication", "severity": "high" if len(items) >= 10 else "medium",
                         "subject": host, "summary": f"{len(items)} failed authentications from {host}",
                         "evidence": {"failures": len(items), "reasons": sorted({w for _, w in items})[:3]},
                         "first_seen": iso(min(times)), "last_seen": iso(max(times))})
    for (principal, op, resource), items in sorted(denied.items()):
        times = [t for t in items if t] or [now]
        findings.append({"finding_id": f"SEC-denied_operation:{principal}:{op}:{resource}",
                         "kind": "denied_operation", "severity": "medium", "subject": principal,
                         "summary": f"{principal} was denied {op} on {resource} {len(items)} time(s)",
                         "evidence": {"operation": op, "resource": resource, "count": len(items)},
                         "first_seen": iso(min(times)), "last_seen": iso(max(times))})
    return findings


# -- grants ---------------------------------------------------------------------------------

Grant = tuple[str, str, str, str, str]   # principal, resource type, resource name, pattern, operation


def grant_drift(declared: set[Grant], actual: set[Grant], now: datetime) -> list[dict[str, Any]]:
    """Grants on the broker that are not declared (too much access) or declared and missing."""
    findings = []
    for kind, grants, severity, text in (("extra", actual - declared, "critical", "is granted on the broker but not declared"),
                                         ("missing", declared - actual, "medium", "is declared but missing on the broker")):
        for principal, rtype, name, pattern, op in sorted(grants):
            findings.append({"finding_id": f"SEC-grant_drift:{kind}:{principal}:{op}:{rtype}:{name}",
                             "kind": "grant_drift", "severity": severity, "subject": principal,
                             "summary": f"{op} on {rtype.lower()} {name} ({pattern.lower()}) for {principal} {text}",
                             "evidence": {"drift": kind, "operation": op, "resource_type": rtype, "resource": name,
                                          "pattern": pattern},
                             "first_seen": iso(now), "last_seen": iso(now)})
    return findings
