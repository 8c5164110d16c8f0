"""`citybrain city|simulate|gateway|load`: the feeds coming into the platform."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citybrain.cli import EXIT_DEAD_LETTERED, EXIT_FAILED, EXIT_OK, EXIT_USAGE, _contracts, _fail, _settings, app, err, out

city_app = typer.Typer(help="The simulated city 云州市 (Yunzhou): districts, streets, roads, devices.", no_args_is_help=True)
app.add_typer(city_app, name="city")


@city_app.command("show")
def city_show(seed: int = typer.Option(7, help="City seed.")) -> None:
    """What the simulated city holds, district by district."""
    from collections import Counter

    from citybrain.city.build import build_city

    city = build_city(seed)
    table = Table("district", "code", "streets", "population", "devices", title=f"{city.name} ({city.name_en}), seed {seed}")
    streets = Counter(s.district_code for s in city.streets)
    district_of = {s.code: s.district_code for s in city.streets}
    devices = Counter(district_of[d.street_code] for d in city.devices)
    for d in city.districts:
        table.add_row(f"{d.name} {d.name_en}", d.code, str(streets[d.code]), f"{d.population:,}", str(devices[d.code]))
    out.print(table)
    kinds = Counter(d.device_type for d in city.devices)
    pois = Counter(p.category for p in city.pois)
    out.print(f"{len(city.streets)} streets, {len(city.roads)} road segments, {len(city.pois)} points of interest "
              f"({', '.join(f'{k} {v}' for k, v in sorted(pois.items()))}), {len(city.devices)} devices "
              f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); population {city.population:,}",
              highlight=False)


@city_app.command("export")
def city_export(directory: Path = typer.Argument(..., help="Where to write the files."),
                seed: int = typer.Option(7, help="City seed.")) -> None:
    """Write the city as GeoJSON (districts, streets) and one JSONL file per reference contract."""
    from citybrain.city.build import build_city
    from citybrain.city.reference import write_city_files
    from citybrain.sim.clock import default_start
    from citybrain.times import iso

    for path in write_city_files(build_city(seed), directory, iso(default_start())):
        out.print(str(path), highlight=False)


def _parse_start(text: Optional[str]) -> Optional[datetime]:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"--start {text!r} is not an ISO 8601 time. Fix: e.g. --start 2026-07-21T00:00:00+08:00.", EXIT_USAGE) from None
    if value.tzinfo is None:
        raise _fail(f"--start {text!r} has no time zone. Fix: add Z or an offset, e.g. 2026-07-21T00:00:00+08:00.", EXIT_USAGE)
    return value.astimezone(timezone.utc)


@app.command("simulate")
def simulate(
    hours: float = typer.Option(24.0, help="Simulated hours."),
    start: Optional[str] = typer.Option(None, help="Simulated start, ISO 8601 with zone (default: yesterday 00:00 Asia/Shanghai)."),
    seed: int = typer.Option(7, help="Seed: the same seed and options give the same records."),
    city_seed: int = typer.Option(7, "--city-seed", help="The city's seed (keep one city per broker: its reference "
                                                         "topics hold one set of streets and devices)."),
    interval_min: int = typer.Option(5, "--interval-min", help="Tick length in simulated minutes (sensor reporting interval)."),
    scale: float = typer.Option(1.0, help="Share of devices and tickets to simulate (0.1 = a tenth)."),
    speed: float = typer.Option(0.0, help="Simulated seconds per real second (288 = a day in 5 minutes); 0 = as fast as the broker takes it."),
    rate: float = typer.Option(0.0, help="At most this many records per second; 0 = no limit."),
    incidents: str = typer.Option("all", help="Incidents to inject: all, none, or a comma list of kinds."),
    faults: bool = typer.Option(True, "--faults/--no-faults", help="Sensor-fleet faults (stuck, drift, dropouts, spikes, duplicates, late, skew)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Directory for ground_truth.json and summary.json (default var/sim/<run>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Simulate the city's feeds (sensors, hotline, departments, reference data, injected incidents)
    through the validated producer, and write the ground truth of the injected incidents.

    Exit 0 when every record was accepted or dead-lettered as designed and the counts add up,
    1 when the broker did not take them, 2 for bad options.
    """
    from citybrain.ingest.producer import DeliveryError
    from citybrain.platform import PlatformError, ensure_ready
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import INCIDENT_KINDS, SimConfig, SimError
    from citybrain.sim.runner import Pacing, run_simulation

    kinds = INCIDENT_KINDS if incidents == "all" else () if incidents == "none" else tuple(
        k.strip() for k in incidents.split(",") if k.strip())
    try:
        cfg = SimConfig(seed=seed, city_seed=city_seed, start=_parse_start(start), hours=hours, interval_min=interval_min, scale=scale,
                        incidents=kinds, faults=faults)
        sim = Simulation(cfg)
    except SimError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    oldest = datetime.now(timezone.utc) - timedelta(days=25)
    if sim.start < oldest:
        raise _fail(f"--start {sim.start:%Y-%m-%d} is more than 25 days ago: records carry their simulated time as "
                    "Kafka timestamp, and the broker deletes sensor records older than the topics' 30-day retention. "
                    "Fix: simulate a recent window (the default is yesterday).", EXIT_USAGE)
    if speed < 0 or rate < 0:
        raise _fail("--speed and --rate must be 0 (no limit) or positive.", EXIT_USAGE)
    settings, contracts = _settings(), _contracts()
    console = err if as_json else out
    try:
        ready = ensure_ready(settings, contracts, console)
    except PlatformError as exc:
        raise _fail(str(exc)) from None
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
            raise _fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        _print_sim_report(report)
    raise typer.Exit(EXIT_OK if report.balanced else EXIT_FAILED)


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


@app.command("gateway")
def gateway(
    host: Optional[str] = typer.Option(None, help="Interface to listen on (default CITYBRAIN_GATEWAY_HOST, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default CITYBRAIN_GATEWAY_PORT, 8311)."),
) -> None:
    """Serve the Open311 GeoReport v2 and FIWARE NGSI v2 (keyValues) edge until interrupted."""
    from citybrain.gateway.server import run_gateway
    from citybrain.platform import PlatformError, ensure_ready
    from citybrain.settings import SettingsError, api_keys

    settings, contracts = _settings(), _contracts()
    try:
        keys = api_keys(settings)
    except SettingsError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    try:
        ready = ensure_ready(settings, contracts, err)
    except PlatformError as exc:
        raise _fail(str(exc)) from None
    host, port = host or settings.gateway_host, port or settings.gateway_port
    err.print(f"{ready.broker}", highlight=False)
    err.print(f"CityBrain gateway on http://{host}:{port}  (Open311: /open311/v2/, FIWARE NGSI v2: /v2/; "
              f"{'API keys for ' + str(len(keys)) + ' partner(s)' if keys else 'no API key required: local use only'})",
              highlight=False)
    try:
        run_gateway(settings, contracts, host, port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Fix: choose another --port.") from None


@city_app.command("exports")
def city_exports(
    directory: Path = typer.Argument(..., help="Where to write the export files."),
    hours: float = typer.Option(24.0, help="Simulated hours of departmental records."),
    seed: int = typer.Option(7, help="Seed."),
    scale: float = typer.Option(0.2, help="Share of the city's volume."),
) -> None:
    """Write departmental export files (police 110 in GB18030, urban inspections, the elderly-care
    register, the device registry) from a simulated day, ready for `citybrain load`."""
    from citybrain.city.reference import reference_records
    from citybrain.ingest.feeds import FeedError, load_feeds
    from citybrain.settings import PROJECT_ROOT
    from citybrain.times import iso
    from citybrain.sim.engine import Simulation
    from citybrain.sim.exports import EXPORTS, broken_rows, to_row, write_export
    from citybrain.sim.model import SimConfig

    try:
        feeds = load_feeds(PROJECT_ROOT / "infra" / "feeds", _contracts())
    except FeedError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    sim = Simulation(SimConfig(seed=seed, hours=hours, scale=scale, incidents=()))
    by_contract: dict[str, dict[str, dict]] = {}
    for _t, emissions in sim.ticks():
        for e in emissions:
            key = next(iter(e.value.values()))   # the record's own id (first field): latest state wins
            by_contract.setdefault(e.contract, {})[str(key)] = e.value
    by_contract["raw.ref.device"] = {d["device_id"]: d for d in reference_records(sim.city, iso(sim.start))["raw.ref.device"]}
    table = Table("feed", "file", "encoding", "rows", "broken rows")
    for name, (filename, encoding) in EXPORTS.items():
        feed = feeds[name]
        records = list(by_contract.get(feed.contract, {}).values())
        broken = broken_rows(feed, to_row(feed, records[0])) if records else []
        n = write_export(feed, records, directory / filename, encoding, broken)
        table.add_row(name, str(directory / filename), encoding, str(n), str(len(broken)))
    out.print(table)


@app.command("load")
def load(
    feed_name: str = typer.Argument(..., metavar="FEED", help="Feed name (infra/feeds/<feed>.yaml), e.g. police_110."),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="The department's export file."),
    encoding: str = typer.Option("auto", help="auto (detect UTF-8 / GB18030 / BOMs), or a codec such as gb18030."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the report as JSON to this file."),
) -> None:
    """Load a department's CSV or JSONL export through its declared column mapping and contract.

    Exit 0 when every row was accepted, 3 when some were dead-lettered, 2 when the file or
    feed cannot be used (nothing produced), 1 when the broker did not acknowledge records.
    """
    from citybrain.contracts.model import resolve
    from citybrain.ingest.encoding import check_encoding, detect_encoding
    from citybrain.ingest.feeds import FeedError, load_feeds, read_feed
    from citybrain.ingest.producer import DeliveryError, ValidatedProducer
    from citybrain.settings import PROJECT_ROOT

    settings, contracts = _settings(), _contracts()
    try:
        feeds = load_feeds(PROJECT_ROOT / "infra" / "feeds", contracts)
    except FeedError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    feed = feeds.get(feed_name)
    if feed is None:
        raise _fail(f"no feed named {feed_name!r}; declared feeds: {', '.join(sorted(feeds))} (infra/feeds/).", EXIT_USAGE)
    if encoding == "auto":
        detected = detect_encoding(file)
        codec, why = detected.encoding, detected.reason
    else:
        try:
            codec, why = check_encoding(encoding), "given with --encoding"
        except ValueError as exc:
            raise _fail(str(exc), EXIT_USAGE) from None
    contract = resolve(contracts, feed.contract)
    records = read_feed(feed, file, codec, settings.max_record_bytes)
    try:
        with ValidatedProducer(settings, producer_id=f"load.{feed.name}") as producer, \
                err.status(f"loading {file.name} as {feed.name}...") as status:
            summary = producer.produce(contract, records, progress=lambda n: status.update(
                f"loading {file.name} as {feed.name}: {n:,} rows"))
    except FeedError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except DeliveryError as exc:
        raise _fail(str(exc)) from None
    result = {"feed": feed.name, "file": file.name, "encoding": codec, "encoding_reason": why, **summary.as_dict()}
    if report:
        report.write_text(json.dumps(result, ensure_ascii=False, indent=2))
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    else:
        from citybrain.cli import _print_summary

        out.print(f"{file.name}: feed {feed.name} ({feed.title}) -> {contract.topic}; encoding {codec} ({why})",
                  highlight=False)
        _print_summary(summary)
    raise typer.Exit(EXIT_OK if summary.dead_lettered == 0 else EXIT_DEAD_LETTERED)
