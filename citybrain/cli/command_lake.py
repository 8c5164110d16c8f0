"""`citybrain lake ...`: the lake's sinks (bronze, silver) and compaction."""

from __future__ import annotations

import json
import signal
from typing import Optional

import typer

from citybrain.cli.base import ExitCode, current_settings, fail, group, idle_option, json_option, out

lake_app = group("lake", "The lake: Parquet under var/lake, or on object storage at CITYBRAIN_LAKE_URI (bronze: "
                         "validated raw records; silver: curated and fused records).")


def _lake_sink(layer: str, batch: int, max_wait_s: float, exit_when_idle: Optional[float]) -> None:
    from citybrain import metrics
    from citybrain.contracts.model import load_platform
    from citybrain.lake.layout import ZONES
    from citybrain.streams.lake_sink import PRINCIPALS, run_sink

    from kafka.errors import KafkaError

    settings = current_settings().as_service(PRINCIPALS[layer])
    topics = [c.topic for c in load_platform(settings).values() if c.zone in ZONES[layer]]
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # `citybrain down`: flush, then stop
    metrics.serve(f"lake-{layer}", settings.metrics_host, settings.metrics_port)
    try:
        result = run_sink(settings, topics, settings.lake, batch, max_wait_s, exit_when_idle, layer,
                          compact_every_s=settings.lake_compact_every_s)
    except KafkaError as exc:
        raise fail(f"Kafka at {settings.bootstrap} did not answer: {exc}. Fix: `citybrain broker up` (or check "
                   "CITYBRAIN_BOOTSTRAP_SERVERS); the lake resumes from its checkpoints.",
                   ExitCode.SERVICE_UNAVAILABLE) from None
    except OSError as exc:   # the lake's storage: a full disk, object storage out of reach or refusing the keys
        raise fail(f"the lake at {settings.lake} refused a write or read: {exc}. Fix: check the disk, or "
                   "CITYBRAIN_LAKE_URI and the storage's credentials (AWS_ACCESS_KEY_ID, ...); nothing is lost, "
                   "the sink resumes from its checkpoints.") from None
    out.print(f"{layer}: {result['written']:,} records written; {result['recovered_files_removed']} leftover file(s) "
              f"of an interrupted run removed; {result['files_compacted']:,} small file(s) merged", highlight=False)


BATCH_OPT = typer.Option(20_000, help="Records per partition per file, at most.")
WAIT_OPT = typer.Option(5.0, "--max-wait-s", help="Flush at least this often.")
IDLE_OPT = idle_option("Stop after this many seconds without new records.")


@lake_app.command("bronze")
def lake_bronze(batch: int = BATCH_OPT, max_wait_s: float = WAIT_OPT, exit_when_idle: Optional[float] = IDLE_OPT) -> None:
    """Copy every raw topic into lake/bronze as Parquet, exactly once across crashes (see docs/explanation/exactly-once.md).

    Exit 4 when the broker does not answer; 1 when the lake's storage refuses a write, another sink holds a topic's lease
    (the holder is named), or records were lost to retention before the sink read them (count and range named)."""
    _lake_sink("bronze", batch, max_wait_s, exit_when_idle)


@lake_app.command("silver")
def lake_silver(batch: int = BATCH_OPT, max_wait_s: float = WAIT_OPT, exit_when_idle: Optional[float] = IDLE_OPT) -> None:
    """Copy the curated and fused topics (city events, warnings, work orders, metrics) into lake/silver."""
    _lake_sink("silver", batch, max_wait_s, exit_when_idle)


@lake_app.command("compact")
def lake_compact(layer: str = typer.Argument("all", help="bronze, silver or all."),
                 min_files: int = typer.Option(2, min=2, help="Merge an hour's files of one partition from this many."),
                 as_json: bool = json_option("Each layer's merge as JSON.")) -> None:
    """Merge small Parquet files: one file per partition and hour (safe beside a running sink)."""
    from citybrain.lake.layout import LAYERS
    from citybrain.lake.writer import LakeWriter

    layers = list(LAYERS) if layer == "all" else [layer]
    if not set(layers) <= set(LAYERS):
        raise fail(f"unknown layer {layer!r}. Fix: use one of bronze, silver, all.", ExitCode.BAD_INPUT)
    results = {name: LakeWriter(current_settings().lake, name).compact(min_files) for name in layers}
    if as_json:
        out.print_json(json.dumps({name: {"merged_files": r.merged_files, "written_files": r.written_files, "rows": r.rows,
                                          "interrupted": r.interrupted} for name, r in results.items()}))
        return
    for name, result in results.items():
        out.print(f"{name}: {result.merged_files:,} files merged into {result.written_files:,} ({result.rows:,} records)"
                  + (f"; {result.interrupted} interrupted compaction(s) finished" if result.interrupted else ""),
                  highlight=False)


@lake_app.command("maintain")
def lake_maintain(dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go; remove nothing."),
                  as_json: bool = json_option("The report as JSON.")) -> None:
    """What the maintenance DAG does: remove state past its retention (CITYBRAIN_RETENTION_*), compact quiet hours."""
    from citybrain.orchestration.maintenance import maintain

    report = maintain(current_settings(), dry_run=dry_run)
    if as_json:
        out.print_json(json.dumps({**report, "dry_run": dry_run}, default=str))
        return
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in report["removed"].items())
              + f" ({report['bytes_freed'] / 1e6:.1f} MB); {report['files_compacted']} small file(s) compacted; "
              f"keeps {report['kept_releases_per_dataset']} releases per dataset", highlight=False)
