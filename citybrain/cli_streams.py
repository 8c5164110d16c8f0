"""`citybrain streams|evaluate`: the stream workers and how well they detect."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from citybrain.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _fail, _settings, app, out
from citybrain.settings import PROJECT_ROOT

streams_app = typer.Typer(help="The stream workers (faust-streaming).", no_args_is_help=True)
app.add_typer(streams_app, name="streams")

WORKERS = {"fusion": PROJECT_ROOT / "streams" / "fusion_worker.py"}


@streams_app.command("fusion")
def streams_fusion(log_level: str = typer.Option("warn", "--log-level", "-l", help="crit, error, warn, info or debug.")) -> None:
    """Run the fusion worker until interrupted: raw feeds in; city events, early warnings, SLA alerts
    and work orders out."""
    worker = WORKERS["fusion"]
    if log_level not in ("crit", "error", "warn", "info", "debug"):
        raise _fail(f"--log-level {log_level!r}: use crit, error, warn, info or debug.", EXIT_USAGE)
    _settings()
    os.execv(sys.executable, [sys.executable, str(worker), "worker", "-l", log_level, "--without-web"])


@app.command("evaluate")
def evaluate_command(
    ground_truth: Path = typer.Option(None, "--ground-truth", help="Ground truth file (default var/sim/latest/ground_truth.json)."),
    replay: bool = typer.Option(False, "--replay", help="Recompute the simulation the ground truth describes and run the "
                                                       "fusion logic in-process (no broker) instead of reading the topics."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
) -> None:
    """Score detected city events and early warnings against the simulator's ground truth:
    precision, recall and the lead time of warnings before the complaint peak."""
    from citybrain.fusion.evaluate import evaluate

    settings = _settings()
    path = ground_truth or settings.state_dir / "sim" / "latest" / "ground_truth.json"
    if not path.exists():
        raise _fail(f"no ground truth at {path}. Fix: run `citybrain simulate` first, or pass --ground-truth.", EXIT_USAGE)
    truth = json.loads(path.read_text())
    if replay:
        events, warnings = _replay(truth)
        source = "replay of the simulation in-process"
    else:
        events, warnings = _from_topics(settings, truth)
        source = "city.event.incident.v1 and alert.early_warning.risk.v1 on the broker"
    result = evaluate(truth, events, warnings)
    result["source"] = source
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        raise typer.Exit(EXIT_OK)
    table = Table("incident", "expected", "detected", "first detection (UTC)", "lead time",
                  title=f"detection against {path.name} ({truth['start']} .. {truth['end']}; {source})")
    for item in result["items"]:
        table.add_row(item["incident_id"], f"{item['output']} {item['category']}", "yes" if item["detected"] else "[red]no[/]",
                      item.get("first_detected_at", "-"),
                      f"{item['lead_time_min']:.0f} min" if "lead_time_min" in item else "-")
    out.print(table)
    lead = result["median_lead_time_min"]
    out.print(f"precision {result['precision']}, recall {result['recall']}, median lead time "
              f"{f'{lead:.0f} min' if lead is not None else '-'}; {result['detections']} detections "
              f"({result['events']} events, {result['warnings']} warnings), "
              f"{result['background_faults_detected']} of {result['background_faults']} background stuck/drifting "
              f"gauges reported; {len(result['not_scored_here'])} expected security/quality findings are for the DAGs",
              highlight=False)
    raise typer.Exit(EXIT_OK if result["detections"] else EXIT_FAILED)


def _replay(truth: dict) -> tuple[list, list]:  # type: ignore[type-arg]
    from citybrain.contracts.model import load_all
    from citybrain.contracts.validate import RecordValidator
    from citybrain.fusion.pipeline import EVENT_TOPIC, WARNING_TOPIC, Pipeline
    from citybrain.times import parse_time
    from citybrain.ingest.producer import event_id
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import INCIDENT_KINDS, SimConfig

    contracts = {c.id: c for c in load_all(_settings().schemas_dir).values()}
    checks = {k: RecordValidator(c) for k, c in contracts.items()}
    kinds = tuple(i["kind"] for i in truth["incidents"] if i["kind"] in INCIDENT_KINDS)
    start, end = parse_time(truth["start"]), parse_time(truth["end"])
    sim = Simulation(SimConfig(seed=truth["seed"], city_seed=truth.get("city_seed", 7), start=start, hours=(end - start).total_seconds() / 3600,
                               interval_min=truth["interval_min"], scale=truth["scale"], incidents=kinds))
    pipeline, events, warnings = Pipeline(), [], []
    for t, batch in sim.ticks():
        for e in batch:
            c = contracts[e.contract]
            if checks[e.contract](e.value):
                continue   # dead-lettered at the edge
            payload = json.dumps(e.value, ensure_ascii=False, separators=(",", ":"))
            for topic, record in pipeline.feed(c.topic, e.value, event_id(c, e.value, payload), t):
                if topic == EVENT_TOPIC:
                    events.append(record)
                elif topic == WARNING_TOPIC:
                    warnings.append(record)
    return events, warnings


def _from_topics(settings, truth: dict) -> tuple[list, list]:  # type: ignore[no-untyped-def,type-arg]
    from citybrain.fusion.evaluate import detections_on_broker

    try:
        return detections_on_broker(settings, truth)
    except (LookupError, TimeoutError) as exc:
        raise _fail(f"{exc} Fix: `citybrain topics apply`, run `citybrain streams fusion`, or use --replay.") from None


@app.command("bench")
def bench(
    backlog_hours: float = typer.Option(6.0, "--backlog-hours", help="Simulated hours of backlog for the throughput run."),
    rate: float = typer.Option(2000.0, "--rate", help="Records/s of the steady load for the latency run."),
    seconds: float = typer.Option(60.0, "--seconds", help="Length of the steady load."),
) -> None:
    """Measure the fusion worker on the local broker; write var/bench/latest.json (see README, Benchmarks)."""
    from citybrain.bench import BenchConfig, run_bench
    from citybrain.cli import _contracts, err

    settings = _settings()
    result = run_bench(settings, _contracts(), BenchConfig(backlog_hours, rate, seconds),
                       lambda msg: err.print(msg, highlight=False))
    path = settings.state_dir / "bench" / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    table = Table("figure", "measured", "target", title=f"fusion worker benchmark ({result['measured_at']})")
    targets = result["targets"]
    table.add_row("sustained events/s (backlog)", f"{result['events_per_s']:,}", f">= {targets['events_per_s']:,}")
    table.add_row("plain aiokafka consume/s (ceiling)", f"{result['raw_consume_per_s']:,}", "-")
    table.add_row(f"latency p50/p95/p99 at {rate:,.0f}/s", f"{result['p50_ms']} / {result['p95_ms']} / {result['p99_ms']} ms",
                  f"p99 <= {targets['p99_ms']} ms")
    table.add_row("worker peak RSS", f"{result['worker_rss_mb']} MB", f"<= {targets['worker_rss_mb']} MB")
    out.print(table)
    out.print(f"written to {path}", highlight=False)


lake_app = typer.Typer(help="The lake: Parquet under var/lake (bronze: validated raw records; silver: curated and "
                             "fused records).", no_args_is_help=True)
app.add_typer(lake_app, name="lake")


def _lake_sink(layer: str, batch: int, max_wait_s: float, exit_when_idle: Optional[float]) -> None:
    from citybrain.contracts.model import load_all
    from citybrain.lake.sink import LAYERS, run_sink

    from kafka.errors import KafkaError

    settings = _settings()
    topics = [c.topic for c in load_all(settings.schemas_dir).values() if c.zone in LAYERS[layer]]
    try:
        result = run_sink(settings, topics, settings.state_dir / "lake", batch, max_wait_s, exit_when_idle, layer)
    except KafkaError as exc:
        raise _fail(f"Kafka at {settings.bootstrap} did not answer: {exc}. Fix: `citybrain broker up` (or check "
                    "CITYBRAIN_BOOTSTRAP_SERVERS); the lake resumes from its checkpoints.") from None
    out.print(f"{layer}: {result['written']:,} records written; {result['recovered_files_removed']} leftover file(s) "
              f"of an interrupted run removed; {result['files_compacted']:,} small file(s) merged", highlight=False)


BATCH_OPT = typer.Option(20_000, help="Records per partition per file, at most.")
WAIT_OPT = typer.Option(5.0, "--max-wait-s", help="Flush at least this often.")
IDLE_OPT = typer.Option(None, "--exit-when-idle", help="Stop after this many seconds without new records.")


@lake_app.command("bronze")
def lake_bronze(batch: int = BATCH_OPT, max_wait_s: float = WAIT_OPT, exit_when_idle: Optional[float] = IDLE_OPT) -> None:
    """Copy every raw topic into lake/bronze as Parquet, exactly once across crashes (see README)."""
    _lake_sink("bronze", batch, max_wait_s, exit_when_idle)


@lake_app.command("silver")
def lake_silver(batch: int = BATCH_OPT, max_wait_s: float = WAIT_OPT, exit_when_idle: Optional[float] = IDLE_OPT) -> None:
    """Copy the curated and fused topics (city events, warnings, work orders, metrics) into lake/silver."""
    _lake_sink("silver", batch, max_wait_s, exit_when_idle)


@lake_app.command("compact")
def lake_compact(layer: str = typer.Argument("all", help="bronze, silver or all."),
                 min_files: int = typer.Option(2, min=2, help="Merge an hour's files of one partition from this many.")) -> None:
    """Merge small Parquet files: one file per partition and hour (safe beside a running sink)."""
    from citybrain.lake.sink import LAYERS, LakeWriter

    layers = list(LAYERS) if layer == "all" else [layer]
    if not set(layers) <= set(LAYERS):
        raise _fail(f"unknown layer {layer!r}. Fix: use one of bronze, silver, all.", code=2)
    for name in layers:
        result = LakeWriter(_settings().state_dir / "lake", name).compact(min_files)
        out.print(f"{name}: {result.merged_files:,} files merged into {result.written_files:,} ({result.rows:,} records)"
                  + (f"; {result.interrupted} interrupted compaction(s) finished" if result.interrupted else ""),
                  highlight=False)
