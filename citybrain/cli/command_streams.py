"""`citybrain streams`: the stream workers; `citybrain dev evaluate|bench`: how well they detect, how fast they run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from citybrain.cli.base import (ExitCode, app, current_contracts, current_settings, dev_app, err, fail, group,
                                json_option, moved, out, say_renamed)
from citybrain.settings import PROJECT_ROOT, Settings

streams_app = group("streams", "The stream workers (faust-streaming).")


@streams_app.command("fusion")
def streams_fusion(log_level: str = typer.Option("warn", "--log-level", "-l", help="crit, error, warn, info or debug.")) -> None:
    """Run the fusion worker until interrupted: raw feeds in; city events, early warnings, SLA alerts
    and work orders out."""
    from citybrain.platform.workers import FUSION_WORKER

    if log_level not in ("crit", "error", "warn", "info", "debug"):
        raise fail(f"--log-level {log_level!r}: use crit, error, warn, info or debug.", ExitCode.BAD_INPUT)
    current_settings()
    os.execv(sys.executable, [sys.executable, *FUSION_WORKER, "worker", "-l", log_level, "--without-web"])


@dev_app.command("evaluate")
@moved(app, "evaluate", "citybrain evaluate", "citybrain dev evaluate")
def evaluate_command(
    ground_truth: Path = typer.Option(None, "--ground-truth", help="Ground truth file (default var/sim/latest/ground_truth.json)."),
    replay: bool = typer.Option(False, "--replay", help="Recompute the simulation the ground truth describes and run the "
                                                       "fusion logic in-process (no broker) instead of reading the topics."),
    shards: int = typer.Option(1, "--shards", min=1, max=64, help="With --replay: split the records by area key "
                                                                  "(district) over this many pipelines, as fusion split "
                                                                  "across workers would."),
    as_json: bool = json_option("Print the scores as JSON."),
) -> None:
    """Score detected city events and early warnings against the simulator's ground truth:
    precision, recall and the lead time of warnings before the complaint peak.

    Exit 1 when nothing was detected."""
    from citybrain.fusion.evaluate import evaluate
    from citybrain.fusion.pipeline import EVENT_TOPIC, WARNING_TOPIC

    settings = current_settings()
    path = ground_truth or settings.sim_dir / "latest" / "ground_truth.json"
    if not path.exists():
        raise fail(f"no ground truth at {path}. Fix: run `citybrain dev simulate` first, or pass --ground-truth.", ExitCode.BAD_INPUT)
    truth = json.loads(path.read_text())
    if shards > 1 and not replay:
        raise fail("--shards splits an in-process replay: use it with --replay.", ExitCode.BAD_INPUT)
    if replay:
        from citybrain.devtools.replay import replay_detections
        from citybrain.access.privacy import protector_from_settings

        events, warnings = replay_detections(truth, current_contracts(), protector_from_settings(settings), shards,
                                             settings.call_false_alarm_rate)
        source = "replay of the simulation in-process" + (f", split by district over {shards} pipelines" if shards > 1 else "") \
            + f", calls judged at the false-alarm rate {settings.call_false_alarm_rate:g} (CITYBRAIN_CALL_FALSE_ALARM_RATE)"
    else:
        events, warnings = _from_topics(settings, truth)
        source = f"{EVENT_TOPIC} and {WARNING_TOPIC} on the broker"
    result = evaluate(truth, events, warnings)
    result["source"] = source
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        raise typer.Exit(ExitCode.OK if result["detections"] else ExitCode.FAILURE)
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
    raise typer.Exit(ExitCode.OK if result["detections"] else ExitCode.FAILURE)


def _from_topics(settings: Settings, truth: dict) -> tuple[list, list]:  # type: ignore[type-arg]
    from citybrain.fusion.evaluate import in_window
    from citybrain.fusion.pipeline import EVENT_TOPIC, WARNING_TOPIC
    from citybrain.kafka.topics import read_values

    try:
        return tuple(in_window(truth, read_values(settings, t, timeout_s=120)) for t in (EVENT_TOPIC, WARNING_TOPIC))  # type: ignore[return-value]
    except (LookupError, TimeoutError) as exc:
        code = ExitCode.SERVICE_UNAVAILABLE if isinstance(exc, TimeoutError) else ExitCode.FAILURE
        raise fail(f"{exc} Fix: `citybrain topics apply`, run `citybrain streams fusion`, or use --replay.", code) from None


def _ui_first_screens(settings: Settings) -> dict:  # type: ignore[type-arg]
    """Each page's first screen for the data office on the lake of the last demo, or why it was not measured."""
    from citybrain.lake import layout, store
    from citybrain.devtools.accounts import demo_account
    from citybrain.devtools.browser import first_screens

    files = [f for layer in layout.LAYERS for f in layout.files(settings.lake, layer)]
    if not files or not layout.gold_dir(settings.lake).exists():
        lake = str(settings.lake).replace(str(PROJECT_ROOT) + "/", "")   # the docs name no machine's paths
        return {"skipped": f"no lake with releases under {lake}: run `make demo` first"}
    env = {k: v for k, v in os.environ.items() if k.startswith("CITYBRAIN_")}
    try:
        pages = first_screens(env, settings.bench_dir / "ui.log", demo_account(settings))
    except (FileNotFoundError, LookupError, RuntimeError) as exc:
        return {"skipped": str(exc)}
    return {"pages": pages, "lake_records": sum(store.read_metadata(f).num_rows for f in files), "target_ms": 1000}


@dev_app.command("bench")
@moved(app, "bench", "citybrain bench", "citybrain dev bench")
def bench(
    backlog_hours: float = typer.Option(24.0, "--backlog-hours", help="Simulated hours of backlog for the throughput run."),
    rate: float = typer.Option(2000.0, "--rate", help="Records/s of the steady load for the latency run."),
    seconds: float = typer.Option(60.0, "--seconds", help="Length of the steady load."),
    write_docs: bool = typer.Option(False, "--write-docs", help="Also add the run to var/bench/history.jsonl and "
                                                                "rewrite the published benchmark block from it."),
    as_json: bool = json_option("The figures as JSON (var/bench/latest.json's content)."),
    readme: Optional[bool] = typer.Option(None, "--readme/--no-readme", hidden=True, help="Old name of --write-docs."),
) -> None:
    """Measure the fusion worker on the local broker and write var/bench/latest.json; with --write-docs, also
    add the run to var/bench/history.jsonl and rewrite the published benchmark block from it."""
    from citybrain.devtools import bench_report
    from citybrain.devtools.bench import BenchConfig, run_bench

    if readme is not None:
        say_renamed("--readme/--no-readme", "--write-docs (off unless given)")
        write_docs = readme
    settings = current_settings()
    result = run_bench(settings, current_contracts(), BenchConfig(backlog_hours, rate, seconds),
                       lambda msg: err.print(msg, highlight=False))
    err.print("operations view: each page's first screen in headless Chromium, on the lake of the last demo", highlight=False)
    result["ui_first_screen_ms"] = _ui_first_screens(settings)
    path = settings.bench_dir / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    if as_json:
        out.print_json(json.dumps(result))
    else:
        _print_bench(result, rate, path)
    if not write_docs:
        return
    history = bench_report.record(settings, result)
    try:
        written = bench_report.write_readme(history)
    except bench_report.ReadmeBlockMissing as exc:
        raise fail(str(exc)) from None
    err.print(f"benchmark block of {written.name} rewritten from this run; run added to "
              f"{settings.bench_dir / 'history.jsonl'}", highlight=False)


def _print_bench(result: dict, rate: float, path: Path) -> None:  # type: ignore[type-arg]
    """The benchmark's figures against their targets, as a table."""
    table = Table("figure", "measured", "target", title=f"fusion worker benchmark ({result['measured_at']})")
    targets = result["targets"]
    table.add_row("sustained events/s (backlog), default worker", f"{result['events_per_s']:,}", f">= {targets['events_per_s']:,}")
    table.add_row("plain aiokafka consume/s (ceiling)", f"{result['raw_consume_per_s']:,}", "-")
    scale = result["scale_out"]
    table.add_row(f"keyed by area ({scale['partitions']} partitions): one worker / two workers",
                  f"{scale['one']['per_s']:,} / {scale['two']['per_s']:,} records/s (x{scale['scaling']:.2f})",
                  "two > one")
    cpu = result["cpu"]
    runs = cpu["runs"]

    def us(value: float | None, spec: str = ",.1f") -> str:
        return "not measured" if value is None else format(value, spec)

    table.add_row("CPU-µs per record: plain consumer / default / keyed one / keyed two (each)",
                  f"{us(runs['plain']['us_per_record'])} / {us(runs['default']['us_per_record'])} / "
                  f"{us(runs['keyed_one']['us_per_record'])} / {us(runs['keyed_two']['us_per_record'])} "
                  f"({', '.join(us(e) for e in runs['keyed_two']['each_us_per_record'])})",
                  cpu.get("not_measured") or "-")
    table.add_row("keyed scaling by CPU per record, two / one (records/s two / one)",
                  f"{us(cpu['scaling_cpu'], '.2f')} ({us(cpu['scaling_wall'], '.2f')})", f"<= {cpu['targets']['scaling_cpu']}")
    table.add_row("keyed / default, records per CPU second", us(cpu["keyed_per_cpu_s"], ".2f"),
                  f">= {cpu['targets']['keyed_per_cpu_s']}")
    table.add_row(f"latency p50/p95/p99 at {rate:,.0f}/s", f"{result['p50_ms']} / {result['p95_ms']} / {result['p99_ms']} ms",
                  f"p99 <= {targets['p99_ms']} ms")
    table.add_row("worker peak RSS", f"{result['worker_rss_mb']} MB", f"<= {targets['worker_rss_mb']} MB")
    live = result["live_pages"]
    if "p99_ms" in live:
        table.add_row(f"latency p50/p99 with {live['connections']} live view pages",
                      f"{live['p50_ms']} / {live['p99_ms']} ms (each page got {live['records_min']:,}-{live['records_max']:,} records)",
                      f"as without: p99 {result['p99_ms']} ms")
    else:
        table.add_row("latency with live view pages", f"not measured: {live.get('errors') or 'too few samples'}", "-")
    if "loader" in result:
        loader, pack = result["loader"], result["pack_check"]
        table.add_row(f"citybrain load, {loader['rows']:,}-row export", f"{loader['rows_per_s']:,.0f} rows/s "
                      f"({loader['accepted']:,} accepted, {loader['dead_lettered']:,} dead-lettered)",
                      f">= {targets['loader_rows_per_s']:,} rows/s")
        table.add_row(f"citybrain city check, {pack['districts']} districts / {pack['streets']} streets",
                      f"{pack['seconds']:.2f} s ({pack['vertices']:,} vertices, {pack['problems']} problems)",
                      f"<= {targets['pack_check_s']} s")
    ui = result["ui_first_screen_ms"]
    if "skipped" in ui:
        table.add_row("operations view first screen", f"not measured: {ui['skipped']}", "<= 1,000 ms")
    else:
        table.add_row("operations view first screen", " / ".join(f"{k} {v:,} ms" for k, v in ui["pages"].items()),
                      f"<= 1,000 ms (lake: {ui['lake_records']:,} records)")
    out.print(table)
    out.print(f"written to {path}", highlight=False)
