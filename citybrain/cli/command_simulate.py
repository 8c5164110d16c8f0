"""`citybrain dev simulate`: the simulated city's feeds through the validated producer."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citybrain.cli.base import (ExitCode, app, current_contracts, current_settings, dev_app, err, fail, fail_with,
                                json_option, moved, out)


def _parse_start(text: Optional[str]) -> Optional[datetime]:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"--start {text!r} is not an ISO 8601 time. Fix: e.g. --start 2026-07-21T00:00:00+08:00.", ExitCode.BAD_INPUT) from None
    if value.tzinfo is None:
        raise fail(f"--start {text!r} has no time zone. Fix: add Z or an offset, e.g. 2026-07-21T00:00:00+08:00.", ExitCode.BAD_INPUT)
    return value.astimezone(timezone.utc)


@dev_app.command("simulate")
@moved(app, "simulate", "citybrain simulate", "citybrain dev simulate")
def simulate(
    hours: float = typer.Option(24.0, help="Simulated hours."),
    start: Optional[str] = typer.Option(None, help="Simulated start, ISO 8601 with zone (default: yesterday 00:00 in the city's time zone)."),
    seed: int = typer.Option(7, help="Seed: the same seed and options give the same records."),
    city_seed: int = typer.Option(7, "--city-seed", help="The city's seed (keep one city per broker: its reference "
                                                         "topics hold one set of streets and devices)."),
    interval_min: int = typer.Option(5, "--interval-min", help="Tick length in simulated minutes (sensor reporting interval)."),
    scale: float = typer.Option(1.0, help="Share of devices and tickets to simulate (0.1 = a tenth)."),
    speed: float = typer.Option(0.0, help="Simulated seconds per real second (288 = a day in 5 minutes); 0 = as fast as the broker takes it."),
    rate: float = typer.Option(0.0, help="At most this many records per second; 0 = no limit."),
    incidents: str = typer.Option("all", help="Incidents to inject: all, none, or a comma list of kinds."),
    faults: bool = typer.Option(True, "--faults/--no-faults", help="Sensor-fleet faults (stuck, drift, dropouts, spikes, duplicates, late, skew)."),
    pack: Optional[Path] = typer.Option(None, "--pack", exists=True, file_okay=False,
                                        help="Simulate this city pack (a folder) instead of the generated 云州市; "
                                             "its reference data is published with the feeds."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Directory for ground_truth.json and summary.json (default var/sim/<run>)."),
    as_json: bool = json_option("Print the summary as JSON."),
    live: bool = typer.Option(False, "--live", help="A live city (`citybrain up --simulate N`): start now, with a seed "
                                                   "of this start, paced by --speed (1 when not given)."),
) -> None:
    """Simulate the city's feeds (sensors, hotline, departments, reference data, injected incidents)
    through the validated producer, and write the ground truth of the injected incidents.

    Exit 0 when every record was accepted or dead-lettered as designed and the counts add up,
    1 when they do not, 2 for bad options, 4 when the broker did not take the records.
    """
    from citybrain.city.pack_import import PackError
    from citybrain.ingest.producer import DeliveryError
    from citybrain.platform.readiness import PlatformError, ensure_ready
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import INCIDENT_KINDS, SimConfig, SimError
    from citybrain.sim.runner import Pacing, run_simulation

    kinds = INCIDENT_KINDS if incidents == "all" else () if incidents == "none" else tuple(
        k.strip() for k in incidents.split(",") if k.strip())
    start_at = _parse_start(start)
    if live:   # a restarted live city simulates on from its own now, with records of its own (a new seed)
        start_at = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        seed, speed = int(start_at.timestamp()) // 60 % 2**31, speed or 1.0
    try:
        cfg = SimConfig(seed=seed, city_seed=city_seed, start=start_at, hours=hours, interval_min=interval_min, scale=scale,
                        incidents=kinds, faults=faults, city_pack=str(pack) if pack else None)
        sim = Simulation(cfg)
    except (SimError, PackError) as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None
    oldest = datetime.now(timezone.utc) - timedelta(days=25)
    if sim.start < oldest:
        raise fail(f"--start {sim.start:%Y-%m-%d} is more than 25 days ago: records carry their simulated time as "
                    "Kafka timestamp, and the broker deletes sensor records older than the topics' 30-day retention. "
                    "Fix: simulate a recent window (the default is yesterday).", ExitCode.BAD_INPUT)
    if speed < 0 or rate < 0:
        raise fail("--speed and --rate must be 0 (no limit) or positive.", ExitCode.BAD_INPUT)
    settings, contracts = current_settings(), current_contracts()
    console = err if as_json else out
    try:
        ready = ensure_ready(settings, contracts, console)
    except PlatformError as exc:
        raise fail_with(exc) from None
    console.print(f"{ready.broker}; topics: {ready.created} created, {ready.existing} already there", highlight=False)
    total_s = (sim.end - sim.start).total_seconds()
    with Progress(TextColumn("[bold]simulating[/] {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=err, transient=as_json) as bar:
        task = bar.add_task(f"{sim.city.name} from {sim.start:%Y-%m-%d %H:%M}Z", total=total_s)

        def progress(t: datetime, records: int) -> None:
            bar.update(task, completed=(t - sim.start).total_seconds(),
                       description=f"{sim.city.name} {t:%Y-%m-%d %H:%M}Z, {records:,} records")

        try:
            report = run_simulation(settings, contracts, sim, Pacing(speed, rate), out_dir, progress)
        except (DeliveryError, LookupError) as exc:
            raise fail_with(exc) from None
    if as_json:
        out.print_json(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        _print_sim_report(report)
    raise typer.Exit(ExitCode.OK if report.balanced else ExitCode.FAILURE)


def _print_sim_report(report) -> None:  # type: ignore[no-untyped-def]
    truth = report.ground_truth
    table = Table("topic", "records", "accepted", "dead-lettered", "dead-letter rules",
                  title=f"simulated {truth['start']} .. {truth['end']} (run {report.run_id[:12]})")
    for topic, s in sorted(report.summaries.items()):
        table.add_row(topic, f"{s.read:,}", f"{s.accepted:,}", f"{s.dead_lettered:,}",
                      ", ".join(f"{k} {v}" for k, v in sorted(s.by_rule.items())) or "-")
    out.print(table)
    incidents = Table("incident", "where", "window (UTC)", "evidence", title="injected incidents (ground truth)")
    for i in truth["incidents"]:
        evidence = ", ".join(f"{k} {len(v) if isinstance(v, list) else v}" for k, v in i["evidence"].items()
                             if k in ("tickets", "police_incidents", "inspections", "first_flooded_reading",
                                      "complaint_peak", "stuck_readings", "spoofed_readings", "replayed_readings",
                                      "extra_readings", "reads"))
        incidents.add_row(f"{i['incident_id']}\n{i['title_en']}", i.get("street_name", i.get("producer", i.get("consumer_group", "-"))),
                          f"{i['start'][5:16]} .. {i['end'][5:16]}", evidence)
    out.print(incidents)
    rate = report.records / report.elapsed_s if report.elapsed_s else 0
    verdict = "[green]counts add up[/]" if report.balanced else "[red]counts do NOT add up[/]"
    out.print(f"{report.records:,} records in {report.elapsed_s:.1f}s ({rate:,.0f}/s); {verdict}; "
              f"ground truth: {report.out_dir / 'ground_truth.json'}", highlight=False)
