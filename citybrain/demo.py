"""`citybrain demo`: the platform's main job on the embedded default.

Today: broker up, topics from contracts, the contract catalog published, a sample of every
raw feed (valid records plus the bad input real feeds send) produced through the validated
producer, and every topic read back from the broker to check that the counts add up.
Later issues grow this into the whole city-brain demo.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from citybrain.contracts.lint import lint_all
from citybrain.contracts.model import Contract
from citybrain.ingest.producer import DLQ_TOPIC, ProduceSummary, ValidatedProducer
from citybrain.ingest.readers import read_jsonl
from citybrain.samples import bad_lines, sample_records
from citybrain.settings import Settings
from citybrain.platform import PlatformError, ensure_ready
from citybrain.topics import CATALOG_TOPIC, read_topic

log = logging.getLogger(__name__)


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and how to fix it."""


def write_feed(contract: Contract, directory: Path, count: int, max_record_bytes: int) -> Path:
    """A JSONL feed file for one contract: ``count`` valid records, then one of each bad kind."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{contract.topic}.jsonl"
    with open(path, "wb") as f:
        for record in sample_records(contract, count):
            f.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        for _rule, line in bad_lines(contract, max_record_bytes):
            f.write(line + b"\n")
    return path


def _trace_id(record) -> str:  # type: ignore[no-untyped-def]
    return dict(record.headers or []).get("trace-id", b"").decode()


def run_demo(settings: Settings, contracts: dict[str, Contract], records_per_feed: int, console: Console) -> bool:
    problems = lint_all(contracts)
    if problems:
        raise DemoError("contracts fail lint:\n  " + "\n  ".join(problems) + "\nFix: `citybrain contracts check`.")

    try:
        ready = ensure_ready(settings, contracts, console)
    except PlatformError as exc:
        raise DemoError(str(exc)) from exc
    console.print(f"[bold]1. broker[/]  {ready.broker}", highlight=False)
    console.print(f"[bold]2. topics[/]  {len(contracts)} from contracts: {ready.created} created, "
                  f"{ready.existing} already there")
    console.print(f"[bold]3. catalog[/] {ready.published} contracts published to {CATALOG_TOPIC}")

    run_id = uuid.uuid4().hex
    feeds_dir = settings.state_dir / "demo" / run_id[:12]
    feeds = [c for c in contracts.values() if c.zone == "raw"]
    summaries: dict[str, ProduceSummary] = {}
    with ValidatedProducer(settings, producer_id="citybrain-demo") as producer:
        with console.status("producing sample feeds...") as status:
            for c in feeds:
                status.update(f"producing {c.topic}...")
                path = write_feed(c, feeds_dir, records_per_feed, settings.max_record_bytes)
                summaries[c.topic] = producer.produce(c, read_jsonl(path, settings.max_record_bytes), trace_id=run_id)
    console.print(f"[bold]4. produce[/] {len(feeds)} feeds from {feeds_dir}")

    ok = True
    table = Table("topic", "read", "accepted", "dead-\nlettered", "read\nback", "dead\nletters\nback", "ok",
                  title=f"5. read back from the broker (run {run_id[:12]})")
    dead_back: dict[str, int] = {}
    with console.status(f"reading back {DLQ_TOPIC}..."):
        for record in read_topic(settings, DLQ_TOPIC):
            if _trace_id(record) == run_id:
                topic = dict(record.headers).get("dlq-contract", b"").decode()
                dead_back[topic] = dead_back.get(topic, 0) + 1
    for c in feeds:
        s = summaries[c.topic]
        with console.status(f"reading back {c.topic}..."):
            back = sum(1 for r in read_topic(settings, c.topic)
                       if _trace_id(r) == run_id)
        row_ok = s.balanced and back == s.accepted and dead_back.get(c.topic, 0) == s.dead_lettered
        ok &= row_ok
        table.add_row(c.topic, str(s.read), str(s.accepted), str(s.dead_lettered), str(back),
                      str(dead_back.get(c.topic, 0)),
                      "[green]yes[/]" if row_ok else "[red]NO[/]")
    console.print(table)

    catalog = {r.key.decode() for r in read_topic(settings, CATALOG_TOPIC)}
    missing = sorted(set(contracts) - catalog)
    ok &= not missing
    console.print(f"[bold]6. catalog[/] {len(catalog)} contracts discoverable from the broker"
                  + (f"; [red]missing {', '.join(missing)}[/]" if missing else ""))
    total_read = sum(s.read for s in summaries.values())
    total_ok = sum(s.accepted for s in summaries.values())
    total_dead = sum(s.dead_lettered for s in summaries.values())
    verdict = "[green]counts add up[/]" if ok else "[red]counts do NOT add up[/]"
    rules = sorted({rule for s in summaries.values() for rule in s.by_rule})
    console.print(f"dead-letter rules seen: {', '.join(rules)}", highlight=False)
    console.print(f"[bold]in {total_read} = accepted {total_ok} + dead-lettered {total_dead}[/]: {verdict}")
    return ok
