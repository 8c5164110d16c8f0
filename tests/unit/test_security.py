"""Each security check fires on data built to break it and stays quiet on clean data."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

from citybrain.security import checks
from citybrain.kafka.groups import parse_offset_commit

T0 = datetime(2026, 11, 22, 0, 0, tzinfo=timezone.utc)
FIVE = timedelta(minutes=5)


def steady(producer: str = "gw.chengbo", n: int = 48, per: int = 100) -> list[tuple[str, str, datetime, int]]:
    return [(producer, "raw.sensor.water_level.v1", T0 + FIVE * i, per + (i % 3)) for i in range(n)]


def test_producer_traffic_quiet_on_steady_volume() -> None:
    assert checks.producer_traffic(steady()) == []


def test_producer_traffic_finds_a_50x_burst_as_one_finding() -> None:
    counts = steady()
    counts[20] = (counts[20][0], counts[20][1], counts[20][2], 5000)
    counts[21] = (counts[21][0], counts[21][1], counts[21][2], 5100)
    [f] = checks.producer_traffic(counts)
    assert f["kind"] == "abnormal_producer_traffic" and f["subject"] == "gw.chengbo"
    assert f["evidence"]["factor"] >= 49 and f["evidence"]["buckets"] == 2 and f["severity"] == "high"
    assert f["first_seen"] == "2026-11-22T01:40:00Z" and f["last_seen"] == "2026-11-22T01:50:00Z"


def test_producer_traffic_needs_a_baseline() -> None:
    assert checks.producer_traffic(steady(n=5) + [("gw.chengbo", "raw.sensor.water_level.v1", T0 + FIVE * 6, 9999)]) == []


def commits(group: str, reads: list[dict[str, int]], start: datetime = T0) -> list[checks.Commit]:
    out, offsets = [], {}
    for i, read in enumerate(reads):
        for topic, n in read.items():
            offsets[topic] = offsets.get(topic, 0) + n
            out.append(checks.Commit(group, topic, 0, offsets[topic], start + timedelta(seconds=10 * i)))
    return out


def test_consumer_traffic_quiet_on_usual_reads() -> None:
    assert checks.consumer_traffic(commits("environment.aq-dashboard", [{"aq": 150}] * 20), {}) == []


def test_consumer_traffic_finds_a_surge_onto_new_topics() -> None:
    reads = [{"aq": 150}] * 10 + [{"aq": 150, "noise": 40000, "hotline": 5000}] + [{"aq": 150}] * 3
    [f] = checks.consumer_traffic(commits("environment.aq-dashboard", reads), {})
    assert f["subject"] == "environment.aq-dashboard" and f["severity"] == "high"
    assert f["evidence"]["new_topics"] == ["hotline", "noise"] and f["evidence"]["records"] == 45150


def test_consumer_traffic_ignores_platform_groups_and_counts_from_log_start() -> None:
    reads = [{"aq": 150}] * 10 + [{"aq": 90000}]
    assert checks.consumer_traffic(commits("citybrain-fusion", reads), {}, ignore=["citybrain-fusion"]) == []
    # A group joining late starts at the log start: not a surge.
    late = [checks.Commit("g", "aq", 0, 100_000 + 150 * i, T0 + timedelta(seconds=10 * i)) for i in range(12)]
    assert checks.consumer_traffic(late, {("aq", 0): 100_000}) == []


REGISTRY = {"aq-0001": (117.30, 38.60), "aq-0002": (117.40, 38.70)}


def reading(device: str, lon: float, lat: float, observed: datetime, sent: datetime | None = None,
            producer: str = "gw.qingyuan") -> dict:
    return {"topic": "raw.sensor.air_quality.v1", "device": device, "producer": producer, "lon": lon, "lat": lat,
            "observed": observed, "sent": sent or observed, "id": f"{device}:{observed:%H%M}"}


def test_device_checks_quiet_on_clean_readings_redeliveries_and_late_arrivals() -> None:
    clean = [reading("aq-0001", 117.301, 38.601, T0 + FIVE * i) for i in range(10)]
    redelivered = reading("aq-0001", 117.301, 38.601, T0, sent=T0 + FIVE)           # gateway retry
    late = reading("aq-0002", 117.4, 38.7, T0, sent=T0 + timedelta(minutes=45))       # late once, no copy
    assert checks.device_checks(clean + [redelivered, late], REGISTRY) == []


def test_device_checks_find_spoofing_unregistered_and_replays() -> None:
    spoofed = [reading("aq-0001", 117.61, 38.38, T0 + FIVE * i, producer="gw.unknown") for i in range(3)]
    ghost = [reading("aq-9901", 117.302, 38.60, T0 + FIVE * i, producer="gw.unknown") for i in range(2)]
    original = reading("aq-0002", 117.4, 38.7, T0)
    replay = reading("aq-0002", 117.4, 38.7, T0, sent=T0 + timedelta(hours=2), producer="gw.unknown")
    found = {(f["kind"], f["subject"]): f for f in checks.device_checks(spoofed + ghost + [original, replay], REGISTRY)}
    assert set(found) == {("device_spoofing", "aq-0001"), ("unregistered_device", "aq-9901"), ("replayed_messages", "aq-0002")}
    assert found[("device_spoofing", "aq-0001")]["evidence"]["max_km"] > 30
    assert found[("replayed_messages", "aq-0002")]["evidence"]["readings"] == 1


def id_number(body17: str) -> str:
    check = checks.ID_CHECK[sum(int(d) * w for d, w in zip(body17, checks.ID_WEIGHTS)) % 11]
    return body17 + check


def test_personal_data_patterns() -> None:
    valid = id_number("11010519491231002")
    wrong = valid[:17] + ("0" if valid[17] != "0" else "1")
    assert checks.resident_id_valid(valid) and not checks.resident_id_valid(wrong)
    text = f"caller 13891197442, id {valid}, mail zhang.wei@example.cn; not HL2026112207000008, 117.3031"
    kinds = sorted(k for k, _ in checks.find_personal_data(text))
    assert kinds == ["email", "mobile_number", "resident_id"]
    assert checks.find_personal_data(f"id {wrong}") == [("probable_resident_id", wrong[:6] + "********" + wrong[-4:])]
    assert all("13891197442" not in m and valid not in m for _, m in checks.find_personal_data(text))


def test_personal_data_written_as_people_write_it_is_found_after_normalising() -> None:
    """Regression: the scan matched only 11 plain ASCII digits, ASCII ``@`` and IDs in one run (issue 33)."""
    valid = id_number("11010119900307777")
    spaced = f"{valid[:6]} {valid[6:14]} {valid[14:]}"
    for text, kind, masked in (
            ("回电 138 0013 8000", "mobile_number", "138****8000"),
            ("回电138-0013-8000。", "mobile_number", "138****8000"),
            ("tel +8613800138000", "mobile_number", "138****8000"),
            ("tel +86 138 0013 8000", "mobile_number", "138****8000"),
            ("tel 0086-138-0013-8000", "mobile_number", "138****8000"),
            ("电话１３８００１３８０００", "mobile_number", "138****8000"),
            ("电话＋８６ １３８ ００１３ ８０００", "mobile_number", "138****8000"),
            (f"身份证 {spaced}", "resident_id", valid[:6] + "********" + valid[-4:]),
            (f"身份证{valid[:6]}-{valid[6:10]}-{valid[10:14]}-{valid[14:]}", "resident_id",
             valid[:6] + "********" + valid[-4:]),
            ("身份证 110101 19900307 7770", "probable_resident_id", "110101********7770"),
            ("mail w＠example.cn", "email", "w***@example.cn"),
            ("mail ｗ＠ｅｘａｍｐｌｅ．ｃｎ", "email", "w***@example.cn")):
        assert checks.find_personal_data(text) == [(kind, masked)], text


def test_numbers_that_only_contain_a_phones_digits_are_not_phones() -> None:
    """An 11-digit run inside a longer run, a timestamp, an order number, a date: not personal data."""
    for text in ("order 2013800138000123", "at 20261207093000", "ts 1765099800123", "on 2026-12-07 09:30:00",
                 "seq 913800138000", "HL2026112207000008", "lon 117.30318001380013"):
        assert checks.find_personal_data(text) == [], text


def test_numbers_inside_hashes_and_uuids_are_identifiers_not_personal_data() -> None:
    # A reading ID (MD5) of a demo day held 14893804841: the scan flagged the fused incident that cited it.
    ids = "df6524553a3551eb8d05d14893804841, 8c1f2e3a-b4d5-4e6f-9a0b-a13891197442, HL2026112207000008"
    assert checks.find_personal_data(ids) == []
    # The same digits as a number, in running text, beside an ID, or as an e-mail's name, are still found.
    for text in (f"回电13891197442 {ids}", "tel:13891197442;", "电话 13891197442",
                 f"{id_number('11010519491231002')} df6524553a3551eb8d05d1489380484a"):
        assert checks.find_personal_data(text), text
    assert checks.find_personal_data("df6524553a3551eb8d05d14893804841@example.cn") == [("email", "d***@example.cn")]


def test_personal_data_exposure_only_outside_restricted_zones() -> None:
    samples = [("bronze/raw.hotline.service_request", "raw", '{"caller_phone":"13891197442"}'),
               ("silver/dispatch.water.work_order", "dispatch", '{"title":"积水","note":"回电13891197442"}'),
               ("silver/city.event.incident", "city", '{"title":"clean"}')]
    [f] = checks.personal_data_exposure(samples, T0, T0)
    assert f["subject"] == "silver/dispatch.water.work_order" and f["evidence"]["data_kind"] == "mobile_number"
    assert f["evidence"]["masked_samples"] == ["138****7442"]


AUTH_FAIL = ("[2026-11-23 10:00:0{i},123] INFO [SocketServer listenerType=BROKER, nodeId=1] Failed authentication with "
             "/127.0.0.1 (channelId=127.0.0.1:9092-127.0.0.1:5{i}000-0) (Authentication failed during authentication due "
             "to invalid credentials with SASL mechanism SCRAM-SHA-512) (org.apache.kafka.common.network.Selector)")
DENIED = ("[2026-11-23 10:05:00,001] INFO Principal = User:transport is Denied operation = READ from host = 127.0.0.1 on "
          "resource = Topic:LITERAL:raw.hotline.service_request.v1 for request = Fetch with resourceRefCount = 1 based on "
          "rule DefaultDeny (kafka.authorizer.logger)")


def test_broker_log_findings() -> None:
    assert checks.broker_log_findings(["[2026-11-23 10:00:00,000] INFO [KafkaServer id=1] started"]) == []
    found = checks.broker_log_findings([AUTH_FAIL.format(i=i) for i in range(4)] + [DENIED, DENIED])
    kinds = {(f["kind"], f["subject"]) for f in found}
    assert kinds == {("failed_authentication", "127.0.0.1"), ("denied_operation", "User:transport")}
    denied = next(f for f in found if f["kind"] == "denied_operation")
    assert denied["evidence"] == {"operation": "read", "resource": "Topic:LITERAL:raw.hotline.service_request.v1", "count": 2}
    # Two failures from a host are a typo, not an attack.
    assert checks.broker_log_findings([AUTH_FAIL.format(i=i) for i in range(2)]) == []


def test_grant_drift() -> None:
    declared = {("User:water", "TOPIC", "dispatch.water.work_order.v1", "LITERAL", "READ")}
    assert checks.grant_drift(declared, set(declared), T0) == []
    extra = ("User:water", "TOPIC", "raw.hotline.service_request.v1", "LITERAL", "READ")
    found = checks.grant_drift(declared, {extra}, T0)
    assert {(f["evidence"]["drift"], f["evidence"]["resource"]) for f in found} == {
        ("extra", "raw.hotline.service_request.v1"), ("missing", "dispatch.water.work_order.v1")}
    assert next(f for f in found if f["evidence"]["drift"] == "extra")["severity"] == "critical"


def _kstr(s: str) -> bytes:
    return struct.pack(">h", len(s)) + s.encode()


def test_parse_offset_commit_value_versions() -> None:
    key = struct.pack(">h", 1) + _kstr("environment.aq-dashboard") + _kstr("raw.sensor.air_quality.v1") + struct.pack(">i", 3)
    v1 = struct.pack(">hq", 1, 42) + _kstr("") + struct.pack(">qq", 1_700_000_000_000, -1)
    v3 = struct.pack(">hqi", 3, 43, 7) + _kstr("meta") + struct.pack(">q", 1_700_000_000_001)
    v4 = struct.pack(">hqi", 4, 44, 7) + bytes([5]) + b"meta" + struct.pack(">q", 1_700_000_000_002) + b"\x00"
    assert parse_offset_commit(key, v1) == ("environment.aq-dashboard", "raw.sensor.air_quality.v1", 3, 42, 1_700_000_000_000)
    assert parse_offset_commit(key, v3)[3:] == (43, 1_700_000_000_001)
    assert parse_offset_commit(key, v4)[3:] == (44, 1_700_000_000_002)
    group_metadata_key = struct.pack(">h", 2) + _kstr("g")
    assert parse_offset_commit(group_metadata_key, b"\x00\x03") is None and parse_offset_commit(key, None) is None
