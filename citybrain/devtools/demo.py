"""`citybrain demo`: the platform's main job on the embedded default.

Today: broker up, topics from contracts, the contract catalog published, a simulated day
of 云州市 (sensors, hotline, departments, reference data, injected incidents with their
ground truth) plus the bad input real feeds send, all through the validated producer, and
every topic read back from the broker to check that the counts add up. Later issues add
the stream workers, the lake and the DAGs.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from citybrain.city.pack_import import PACK_CONTRACTS
from citybrain.contracts.departments import known_departments
from citybrain.contracts.lint import lint_all
from citybrain.contracts.model import Contract
from citybrain.contracts.topics import (CITY_EVENTS, CONTRACT_REGISTRY, DATASET_RELEASES, EARLY_WARNINGS,
                                        INGEST_DEAD_LETTERS, QUALITY_ALERTS, SECURITY_FINDINGS, SERVICE_REQUESTS,
                                        work_orders)
from citybrain.ingest.producer import ProduceSummary, ValidatedProducer
from citybrain.ingest.readers import read_jsonl
from citybrain.devtools.samples import bad_lines, sample_records
from citybrain.lake.layout import ZONES, reports_dir
from citybrain.streams.lake_sink import run_sink
from citybrain.settings import Settings
from citybrain.platform.workers import start_worker, stop_worker, wait_for_worker
from citybrain.sim.engine import Simulation
from citybrain.sim.model import SimConfig
from citybrain.sim.runner import Pacing, run_simulation
from citybrain.platform.readiness import PlatformError, ensure_ready
from citybrain.kafka.headers import read_headers
from citybrain.kafka.topics import end_offsets, read_topic
from citybrain.errors import ServiceError

log = logging.getLogger(__name__)


class DemoError(ServiceError):
    """A step of the demo failed; the message says which and how to fix it."""

    retriable = False


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
    return read_headers(record.headers).get("trace-id", b"").decode()


def _import_city(settings: Settings, contracts: dict[str, Contract], directory: Path | None) -> str:
    """The city pack in ``directory`` imported, else the simulated city generated as a city pack and
    imported like any other city's (the simulator then publishes only what a pack does not hold: roads,
    points of interest, registry updates)."""
    from citybrain.sim.city import build_city
    from citybrain.city.pack import pack_from_city
    from citybrain.city.pack_import import PackError, import_pack

    if directory is None:
        directory = settings.demo_dir / "citypack"
        pack_from_city(build_city(SimConfig().city_seed)).write(directory)
    try:
        result = import_pack(settings, contracts, directory)
    except PackError as exc:
        raise DemoError(f"the city pack {directory} was refused: {exc}") from exc
    return (f"city pack {result.city} {result.version} ({directory}) imported: "
            f"{sum(result.published.values()):,} reference records published, {sum(result.unchanged.values()):,} "
            "unchanged")


def _scores(settings: Settings, truth: dict) -> str:  # type: ignore[type-arg]
    from citybrain.fusion.evaluate import evaluate, in_window
    from citybrain.kafka.topics import read_values

    events, warnings = (in_window(truth, read_values(settings, t, timeout_s=120)) for t in (CITY_EVENTS, EARLY_WARNINGS))
    r = evaluate(truth, events, warnings)
    lead = r["median_lead_time_min"]
    return (f"{r['events']} city events, {r['warnings']} early warnings; against the ground truth precision "
            f"{r['precision']}, recall {r['recall']}, median lead time {f'{lead:.0f} min' if lead is not None else '-'} "
            "(`citybrain dev evaluate` for the table)")


def run_demo(settings: Settings, contracts: dict[str, Contract], records_per_feed: int, console: Console,
             sim_hours: float = 24.0, sim_scale: float = 0.25, with_streams: bool = True, pack: Path | None = None) -> bool:
    problems = lint_all(contracts, known_departments(settings.city_dir))
    if problems:
        raise DemoError("contracts fail lint:\n  " + "\n  ".join(problems) + "\nFix: `citybrain contracts check`.")

    try:
        ready = ensure_ready(settings, contracts, console)
    except PlatformError as exc:
        raise DemoError(str(exc)) from exc
    console.print(f"[bold]1. broker[/]  {ready.broker}", highlight=False)
    console.print(f"[bold]2. topics[/]  {len(contracts)} from contracts: {ready.created} created, "
                  f"{ready.existing} already there")
    console.print(f"[bold]3. catalog[/] {ready.published} contracts published to {CONTRACT_REGISTRY}; access: "
                  f"{ready.access}", highlight=False)

    console.print(f"          {_import_city(settings, contracts, pack)}", highlight=False)

    raw_topics = [c.topic for c in contracts.values() if c.zone == "raw"]
    before = end_offsets(settings, [*raw_topics, INGEST_DEAD_LETTERS])   # read back only what this run adds
    worker = start_worker(settings, log=settings.streams_dir / "fusion-demo.log") if with_streams else None
    sim = Simulation(SimConfig(hours=sim_hours, scale=sim_scale, city_from_pack=True,
                               city_pack=str(pack) if pack is not None else None))
    with console.status(f"simulating {sim.city.name}: {sim_hours:g} h of sensors, hotline and departments...") as status:
        report = run_simulation(settings, contracts, sim, Pacing(), progress=lambda t, n: status.update(
            f"simulating {sim.city.name}: {t:%Y-%m-%d %H:%M}Z, {n:,} records"))
    console.print(f"[bold]4. city[/]    {sim.city.name} ({len(sim.city.streets)} streets, {len(sim.city.devices):,} "
                  f"devices) simulated {report.ground_truth['start']} .. {report.ground_truth['end']} at scale "
                  f"{sim_scale:g}: {report.records:,} records in {report.elapsed_s:.1f}s; "
                  f"{len(report.ground_truth['incidents'])} injected incidents written to "
                  f"{report.out_dir / 'ground_truth.json'}", highlight=False)

    run_id = uuid.uuid4().hex
    feeds_dir = settings.demo_dir / run_id[:12]
    # The city's reference topics carry what its pack declares; sample records there would be a false city.
    # Nor to the feeds of departments the city does not have (临江市 has no civil-affairs register).
    feeds = [c for c in contracts.values() if c.zone == "raw" and c.id not in PACK_CONTRACTS
             and c.owner in sim.city.departments]
    samples: dict[str, ProduceSummary] = {}
    with ValidatedProducer(settings, producer_id="citybrain-demo") as producer:
        with console.status("producing the bad input real feeds send...") as status:
            for c in feeds:
                status.update(f"producing {c.topic}...")
                path = write_feed(c, feeds_dir, records_per_feed, settings.max_record_bytes)
                records = read_jsonl(path, settings.max_record_bytes, max_depth=settings.json_max_depth)
                samples[c.topic] = producer.produce(c, records, trace_id=run_id)
    console.print(f"[bold]5. edge[/]    every feed also sent {records_per_feed} valid records plus the bad input real "
                  f"feeds send (files in {feeds_dir})", highlight=False)

    traces = {run_id, report.run_id}
    ok = True
    table = Table("topic", "read", "accepted", "dead-\nlettered", "read\nback", "dead\nletters\nback", "ok",
                  title=f"6. read back from the broker (runs {report.run_id[:12]}, {run_id[:12]})")
    dead_back: dict[str, int] = {}
    with console.status(f"reading back {INGEST_DEAD_LETTERS}..."):
        for record in read_topic(settings, INGEST_DEAD_LETTERS, since=before):
            if _trace_id(record) in traces:
                topic = read_headers(record.headers).get("dlq-contract", b"").decode()
                dead_back[topic] = dead_back.get(topic, 0) + 1
    totals = {"read": 0, "accepted": 0, "dead": 0}
    rules: set[str] = set()
    for c in feeds:
        parts = [s for s in (samples.get(c.topic), report.summaries.get(c.topic)) if s is not None]
        read, accepted, dead = (sum(s.read for s in parts), sum(s.accepted for s in parts),
                                sum(s.dead_lettered for s in parts))
        rules |= {rule for s in parts for rule in s.by_rule}
        with console.status(f"reading back {c.topic}..."):
            back = sum(1 for r in read_topic(settings, c.topic, since=before) if _trace_id(r) in traces)
        row_ok = read == accepted + dead and back == accepted and dead_back.get(c.topic, 0) == dead
        ok &= row_ok
        totals["read"] += read
        totals["accepted"] += accepted
        totals["dead"] += dead
        table.add_row(c.topic, f"{read:,}", f"{accepted:,}", f"{dead:,}", f"{back:,}", f"{dead_back.get(c.topic, 0):,}",
                      "[green]yes[/]" if row_ok else "[red]NO[/]")
    console.print(table)

    catalog = {r.key.decode() for r in read_topic(settings, CONTRACT_REGISTRY)}
    missing = sorted(set(contracts) - catalog)
    ok &= not missing
    console.print(f"[bold]7. catalog[/] {len(catalog)} contracts discoverable from the broker"
                  + (f"; [red]missing {', '.join(missing)}[/]" if missing else ""))
    if worker is not None:
        with console.status("waiting for the fusion worker to read the day..."):
            caught_up = wait_for_worker(settings, worker, timeout_s=300)
        stop_worker(worker)
        if caught_up:
            scores = _scores(settings, report.ground_truth)
            console.print(f"[bold]8. streams[/] fusion worker: {scores}", highlight=False)
        else:
            ok = False
            console.print("[bold]8. streams[/] [red]the fusion worker did not catch up within 5 minutes[/] "
                          "(see `citybrain streams fusion -l info`)", highlight=False)
    lake = settings.lake
    with console.status("copying the topics into the lake (bronze: raw records; silver: what the worker made)..."):
        added = {layer: run_sink(settings, [c.topic for c in contracts.values() if c.zone in zones], lake,
                                 stop_when_idle_s=2, layer=layer)["written"] for layer, zones in ZONES.items()}
    files = sum(1 for layer in ZONES for _ in (lake / layer).rglob("*.parquet"))
    console.print(f"[bold]9. lake[/]    bronze +{added['bronze']:,} records, silver +{added['silver']:,}, exactly once; "
                  f"{files:,} Parquet files (one per partition and hour) under {lake}", highlight=False)
    access_ok, access_text = _department_access(settings, contracts)
    ok &= access_ok
    console.print(f"[bold]10. access[/] {access_text}", highlight=False)
    console.print(f"           operations view: {_view_accounts(settings, contracts)}", highlight=False)
    incidents = Table("incident", "where", "window (UTC)", title="injected incidents (ground truth for detection)")
    for i in report.ground_truth["incidents"]:
        where = i.get("street_name") and f"{i['district_name']}{i['street_name']}" or i.get("producer") or \
            i.get("consumer_group", "-")
        incidents.add_row(f"{i['incident_id']}: {i['title_en']}", where, f"{i['start'][5:16]} .. {i['end'][5:16]}")
    console.print(incidents)
    ok &= _run_dags(settings, console)
    verdict = "[green]counts add up[/]" if ok else "[red]counts do NOT add up[/]"
    console.print(f"dead-letter rules seen: {', '.join(sorted(rules))}", highlight=False)
    console.print(f"[bold]in {totals['read']:,} = accepted {totals['accepted']:,} + dead-lettered {totals['dead']:,}[/]: "
                  f"{verdict}")
    return ok


def _department_access(settings: Settings, contracts: dict[str, Contract]) -> tuple[bool, str]:
    """Step 10: the police reads its work orders with its own credentials and is refused the rest."""
    from citybrain import access

    cfg = access.client_config(settings, access.load(settings.access_file, contracts), "police")
    ok, read = access.try_read(settings, cfg, work_orders("police"))
    refused = {t: access.try_read(settings, cfg, t, idle_s=1) for t in (work_orders("water"), SERVICE_REQUESTS)}
    text = (f"{cfg['principal']} read {read:,} work orders from {work_orders('police')} with its own credentials"
            if ok else f"[red]{cfg['principal']} could not read its own work orders: {read}[/]")
    text += "; refused on " + ", ".join(f"{t} ({why if not allowed else '[red]ALLOWED[/]'})"
                                        for t, (allowed, why) in refused.items())
    return ok and not any(allowed for allowed, _ in refused.values()), text


def _view_accounts(settings: Settings, contracts: dict[str, Contract]) -> str:
    """Step 10 too: the people who log in to the operations view, the data office's and a duty officer per department."""
    from citybrain import access
    from citybrain.devtools.accounts import OFFICE, ensure_demo_accounts

    path, opened = ensure_demo_accounts(settings, access.load(settings.access_file, contracts).departments.values())
    return (f"log in as {OFFICE} (the data office) or duty.<department>, with the password and the one-time code "
            f"secret in {path.name} of the access folder ({opened} account(s) opened; `citybrain accounts list`)")


def _run_dags(settings: Settings, console: Console) -> bool:
    """Step 11: every Airflow DAG once, in order, with the real Airflow (`airflow dags test`)."""
    from citybrain.orchestration.local import dag_order, run_dag
    from citybrain.scenarios.catalog import query

    ok, runs = True, {}
    for dag_id in dag_order():
        with console.status(f"airflow dags test {dag_id} ..."):
            run = run_dag(settings, dag_id)
        runs[dag_id] = run
        if not run.ok:
            ok = False
            console.print(f"[red]11. airflow {dag_id} failed[/] (log: {run.log})", highlight=False)
    q = next((r for r in runs["data_quality"].results if "checked" in r), None)
    if q:
        console.print(f"[bold]11. airflow[/] data_quality: {q['checked']} partitions checked, {q['passed']} passed, "
                      f"{q['failed']} quarantined (alerts on {QUALITY_ALERTS}); data docs {q['docs']}",
                      highlight=False)
    s = next((r for r in runs["security_monitoring"].results if "checks" in r), None)
    if s:
        console.print(f"            security_monitoring: {sum(s['by_severity'].values())} findings "
                      f"({', '.join(s['kinds']) or 'none'}) on {SECURITY_FINDINGS}; report in "
                      f"{reports_dir(settings.lake, 'security')}", highlight=False)
    released = [r for run in runs.values() for r in run.results if "version" in r and "dataset" in r]
    names = ", ".join("{} {:,} rows".format(r["dataset"], r["rows"]) for r in released)
    console.print(f"            published {len(released)} scenario datasets ({names}), announced on "
                  f"{DATASET_RELEASES}", highlight=False)
    for r in (r for run in runs.values() for r in run.results if "skipped" in r):
        console.print(f"            not published: {r['skipped']}", highlight=False)
    m = next((r for r in runs["maintenance"].results if "removed" in r), None) if "maintenance" in runs else None
    if m:
        console.print(f"            maintenance: {sum(m['removed'].values())} old item(s) removed "
                      f"({m['bytes_freed'] / 1e6:.1f} MB), {m['files_compacted']} small file(s) compacted; keeps "
                      f"{m['kept_releases_per_dataset']} releases per dataset", highlight=False)
    if any(r["dataset"] == "flood_risk_by_street" for r in released):
        top = query(settings.lake, "SELECT street_name, risk_score, risk_level FROM flood_risk_by_street "
                                                 "ORDER BY risk_score DESC LIMIT 3").to_pylist()
        console.print("            try `citybrain catalog` and `citybrain query \"SELECT street_name, risk_score FROM "
                      "flood_risk_by_street ORDER BY risk_score DESC LIMIT 3\"` -> "
                      + "; ".join(f"{r['street_name']} {r['risk_score']}" for r in top), highlight=False)
    return ok

