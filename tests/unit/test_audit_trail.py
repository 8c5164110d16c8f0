"""The audit trail: a clean chain verifies, and a changed, removed, reordered or cut record is named; the chain
goes on across a writer's restart; an export reads back as written; the command line's records carry its actor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from citybrain.access.trail import AuditTrail, genesis, last_states, record_hash, verify
from citybrain.security.audit_trail import from_file, to_file


def _trail(state: Path, n: int = 5, trail: str = "ui") -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    writer = AuditTrail(trail, state, records.append)
    for i in range(n):
        writer.record("login_ok" if i % 2 else "read", f"dept-{i}", f"page {i}", address="10.0.0.1")
    return records


def test_a_clean_trail_verifies_and_chains_from_its_genesis(tmp_path: Path) -> None:
    records = _trail(tmp_path)
    assert verify(records, last_states(tmp_path)) == []
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["prev_hash"] == genesis("ui") != genesis("cli")
    assert all(r["hash"] == record_hash(r) and b["prev_hash"] == r["hash"] for r, b in zip(records, records[1:]))


def test_the_writers_records_pass_their_contract_and_a_made_up_action_does_not(tmp_path: Path, contracts) -> None:  # type: ignore[no-untyped-def]
    from citybrain.contracts.validate import RecordValidator

    valid = RecordValidator(contracts["audit.trail.event.v1"])
    assert [valid(r) for r in _trail(tmp_path)] == [None] * 5
    forged = {**_trail(tmp_path / "other", 1)[0], "action": "became_admin"}
    assert valid(forged) is not None
    long = AuditTrail("ui", tmp_path / "long", [].append).record("login_failed", "x" * 3000, "t" * 900, "failed", sql="s" * 9000)
    assert valid(long) is None and len(long["actor"]) == 200 and len(long["details"]["sql"]) == 2000


def test_a_changed_field_is_named_as_a_changed_record(tmp_path: Path) -> None:
    records = _trail(tmp_path)
    records[2]["actor"] = "someone-else"
    [found] = verify(records)
    assert (found.seq, found.position) == (3, 3) and "was changed" in found.problem


def test_a_changed_record_with_its_hash_recomputed_breaks_the_next_link(tmp_path: Path) -> None:
    records = _trail(tmp_path)
    records[2]["target"] = "nothing to see"
    records[2]["hash"] = record_hash(records[2])
    [found] = verify(records)
    assert found.seq == 4 and "spliced" in found.problem


def test_a_removed_record_is_named_by_its_missing_seq(tmp_path: Path) -> None:
    records = _trail(tmp_path)
    del records[1]
    [found] = verify(records)
    assert found.seq == 3 and "seq 2 is missing: records were removed" in found.problem


def test_two_swapped_records_are_named_as_reordered(tmp_path: Path) -> None:
    records = _trail(tmp_path)
    records[1], records[2] = records[2], records[1]
    [found] = verify(records)
    assert found.seq == 3 and "seq 2 comes later: records were reordered" in found.problem


def test_a_trail_whose_start_retention_deleted_verifies_only_when_told_and_still_links(tmp_path: Path) -> None:
    records = _trail(tmp_path)
    [found] = verify(records[2:])
    assert found.seq == 3 and "seqs 1..2 are missing: records were removed" in found.problem
    assert verify(records[2:], head=False) == []
    del records[3]
    [found] = verify(records[2:], head=False)
    assert found.seq == 5 and "seq 4 is missing" in found.problem


def test_a_cut_tail_shows_against_the_writers_persisted_end(tmp_path: Path) -> None:
    records = _trail(tmp_path)
    assert verify(records[:3]) == []                       # without the writer's end, a prefix looks whole
    [found] = verify(records[:3], last_states(tmp_path))
    assert found.seq is None and "records 4..5 were cut off the tail" in found.problem
    [gone] = verify([], last_states(tmp_path))
    assert "the whole trail is missing" in gone.problem


def test_the_chain_goes_on_across_a_writers_restart(tmp_path: Path) -> None:
    first = _trail(tmp_path, 2)
    again: list[dict[str, Any]] = []
    AuditTrail("ui", tmp_path, again.append).record("logout", "dept-1", "operations view")
    assert again[0]["seq"] == 3 and again[0]["prev_hash"] == first[-1]["hash"]
    assert verify(first + again, last_states(tmp_path)) == []


def test_trails_of_several_services_interleave_and_each_is_checked_alone(tmp_path: Path) -> None:
    ui, cli = _trail(tmp_path, 3, "ui"), _trail(tmp_path, 3, "cli")
    mixed = [ui[0], cli[0], ui[1], cli[1], cli[2], ui[2]]
    assert verify(mixed, last_states(tmp_path)) == []
    del mixed[3]
    [found] = verify(mixed)
    assert found.trail == "cli" and found.seq == 3


def test_unknown_actions_and_trail_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="audit action 'delete_everything' is unknown"):
        AuditTrail("ui", tmp_path, print).record("delete_everything", "x")
    with pytest.raises(ValueError, match="audit trail id '../ui' is not allowed"):
        AuditTrail("../ui", tmp_path, print)


def test_an_export_reads_back_as_written_and_verify_fails_on_a_tampered_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from citybrain.cli import app

    state = tmp_path / "var"
    records = _trail(state / "audit")
    clean, tampered = tmp_path / "trail.jsonl", tmp_path / "tampered.jsonl"
    to_file(records, clean)
    assert from_file(clean) == records
    lines = clean.read_text().splitlines()
    tampered.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    monkeypatch.setenv("CITYBRAIN_STATE_DIR", str(state))
    from citybrain.settings import get_settings
    get_settings.cache_clear()
    try:
        ok = CliRunner().invoke(app, ["audit", "verify", "--file", str(clean)])
        bad = CliRunner().invoke(app, ["audit", "verify", "--file", str(tampered), "--json"])
    finally:
        get_settings.cache_clear()
    assert ok.exit_code == 0, ok.output
    assert "every chain holds" in ok.output
    assert bad.exit_code == 1
    assert "record seq 3" in bad.output and "reordered" in bad.output


def test_the_command_lines_records_name_the_actor_and_go_to_the_cli_trail(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from citybrain.cli import base
    from citybrain.ingest import audit

    sent: list[dict[str, Any]] = []
    monkeypatch.setenv("CITYBRAIN_STATE_DIR", str(tmp_path / "var"))
    monkeypatch.setattr(audit, "kafka_sink", lambda settings, trail: sent.append)
    from citybrain.settings import get_settings
    get_settings.cache_clear()
    try:
        base.audit("grant_change", "access.yaml", actor="zhang.wei", added=2, removed=0)
        base.audit("query", "scenario datasets", sql="select 1")
    finally:
        get_settings.cache_clear()
    assert [(r["trail"], r["seq"], r["action"]) for r in sent] == [("cli", 1, "grant_change"), ("cli", 2, "query")]
    assert sent[0]["actor"] == "zhang.wei" and sent[0]["details"] == {"added": 2, "removed": 0}
    assert json.loads((tmp_path / "var" / "audit" / "cli.json").read_text())["seq"] == 2


def test_the_lakes_copy_reads_back_in_offset_order_and_verifies(tmp_path: Path) -> None:
    from citybrain.contracts.topics import AUDIT_EVENTS
    from citybrain.lake.writer import LakeWriter, Row
    from citybrain.security.audit_trail import from_lake

    records = _trail(tmp_path / "audit", 4)
    rows = [Row(AUDIT_EVENTS, 0, o, 1_796_000_000_000 + o * 3_600_000, "ui", {}, json.dumps(r)) for o, r in enumerate(records)]
    LakeWriter(tmp_path / "lake", "silver").write(AUDIT_EVENTS, 0, rows[2:])     # two hours, written out of order
    LakeWriter(tmp_path / "lake", "silver").write(AUDIT_EVENTS, 0, rows[:2])
    read = from_lake(tmp_path / "lake")
    assert read == records and verify(read, last_states(tmp_path / "audit")) == []


def test_a_record_the_broker_does_not_take_is_logged_not_raised(tmp_path: Path, monkeypatch, caplog, audit_topic_writer) -> None:  # type: ignore[no-untyped-def]
    """The action already happened: the view's login must not fail because the audit topic is away."""
    from citybrain.ingest import audit, producer
    from citybrain.settings import load_settings

    class Down:
        def __init__(self, *_a: Any, **_k: Any) -> None:
            raise TimeoutError("the broker did not answer in 15 s")

    monkeypatch.setattr(producer, "ValidatedProducer", Down)
    monkeypatch.setattr(audit, "_reachable", lambda bootstrap: True)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var")})
    with caplog.at_level("ERROR"):
        record = audit.service_trail(settings, "ui").record("login_ok", "dept-water", "operations view")
    assert record["seq"] == 1
    assert "audit ui #1 (dept-water login_ok) did not reach audit.trail.event.v1: the broker did not answer" in caplog.text


def test_with_no_broker_listening_a_record_is_given_up_in_a_second_not_the_producers_retries(tmp_path: Path, caplog, audit_topic_writer) -> None:  # type: ignore[no-untyped-def]
    import time

    from citybrain.ingest import audit
    from citybrain.settings import load_settings

    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var"), "CITYBRAIN_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    started = time.monotonic()
    with caplog.at_level("ERROR"):
        audit.service_trail(settings, "cli").record("query", "someone", "scenario datasets")
    assert time.monotonic() - started < 5
    assert "did not reach audit.trail.event.v1: no broker answers at 127.0.0.1:1" in caplog.text


DENIED = ("[2026-11-23 10:05:0{i},001] INFO Principal = User:dept-transport is Denied operation = READ from host = /10.1.0.7 "
          "on resource = Topic:LITERAL:raw.hotline.service_request.v1 for request = Fetch with resourceRefCount = 1 "
          "based on rule DefaultDeny (kafka.authorizer.logger)")
OTHER = "[2026-11-23 10:05:00,002] INFO [Broker id=1] Transitioning to leader (state.change.logger)"


def test_the_brokers_denials_go_on_the_trail_once_each_and_after_a_restart_from_the_new_logs_start(tmp_path: Path) -> None:
    from citybrain.security.audit_trail import record_denials

    log, pos, records = tmp_path / "server.out", tmp_path / "audit" / "broker-logs.pos", []  # type: ignore[var-annotated]
    trail = AuditTrail("broker", tmp_path / "audit", records.append)
    log.write_text(f"{DENIED.format(i=0)}\n{OTHER}\n{DENIED.format(i=1)[:40]}")     # the last line is still being written
    assert record_denials(trail, [log, tmp_path / "missing.out"], pos) == 1
    with open(log, "a") as f:
        f.write(f"{DENIED.format(i=1)[40:]}\n")
    assert record_denials(trail, [log], pos) == 1                                   # the finished line, not the first again
    assert record_denials(trail, [log], pos) == 0
    log.write_text(f"{DENIED.format(i=2)}\n")                                       # the broker restarted: a new, shorter log
    assert record_denials(trail, [log], pos) == 1
    assert [(r["actor"], r["action"], r["target"], r["outcome"]) for r in records] == [
        ("dept-transport", "authorizer_denial", "Topic:LITERAL:raw.hotline.service_request.v1", "denied")] * 3
    assert [r["details"]["logged_at"] for r in records] == [f"2026-11-23T10:05:0{i}+00:00" for i in range(3)]
    assert records[0]["details"]["host"] == "10.1.0.7" and verify(records, last_states(tmp_path / "audit")) == []


def test_the_security_page_shows_the_lakes_trail_and_names_a_broken_chain(tmp_path: Path) -> None:
    from citybrain.contracts.topics import AUDIT_EVENTS
    from citybrain.lake.writer import LakeWriter, Row
    from citybrain.ui.views import audit_trail

    records = _trail(tmp_path / "audit", 3)
    clean = audit_trail(tmp_path / "empty-lake")
    assert clean == {"records": 0, "trails": {}, "breaks": [], "recent": []}
    records[1]["outcome"] = "failed"                                                 # changed in the lake's copy
    rows = [Row(AUDIT_EVENTS, 0, o, 1_796_000_000_000, "ui", {}, json.dumps(r)) for o, r in enumerate(records)]
    LakeWriter(tmp_path / "lake", "silver").write(AUDIT_EVENTS, 0, rows)
    page = audit_trail(tmp_path / "lake")
    assert page["records"] == 3 and page["trails"] == {"ui": 3} and [r["seq"] for r in page["recent"]] == [3, 2, 1]
    assert len(page["breaks"]) == 1 and "record seq 2" in page["breaks"][0] and "was changed" in page["breaks"][0]


def test_a_record_its_contract_refuses_is_dead_lettered_and_logged_as_a_gap(tmp_path: Path, monkeypatch, caplog, audit_topic_writer) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from citybrain.ingest import audit, producer
    from citybrain.settings import load_settings

    sent: list[tuple[str, dict[str, Any]]] = []

    class Refusing:
        def __init__(self, _settings: Any, producer_id: str) -> None:
            self.producer_id = producer_id

        def produce_values(self, contract: Any, values: list[dict[str, Any]], source: str) -> SimpleNamespace:
            sent.extend((contract.topic, v) for v in values)
            return SimpleNamespace(accepted=0, by_rule={"schema": 1})

    monkeypatch.setattr(producer, "ValidatedProducer", Refusing)
    monkeypatch.setattr(audit, "_reachable", lambda bootstrap: True)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path / "var")})
    with caplog.at_level("ERROR"):
        audit.service_trail(settings, "ui").record("logout", "dept-water", "operations view")
    assert [(t, r["seq"]) for t, r in sent] == [("audit.trail.event.v1", 1)]
    assert "audit ui #1 was dead-lettered ({'schema': 1})" in caplog.text
