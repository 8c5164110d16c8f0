"""The `citybrain` command line: broker, contracts, topics, produce, consume, demo."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from citybrain.settings import SettingsError, get_settings

app = typer.Typer(help="CityBrain: the city-brain data platform.", no_args_is_help=True, add_completion=False)
broker_app = typer.Typer(help="The embedded Apache Kafka broker (KRaft, 127.0.0.1).", no_args_is_help=True)
contracts_app = typer.Typer(help="Schema contracts in schemas/.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics made from the contracts.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(contracts_app, name="contracts")
app.add_typer(topics_app, name="topics")

out = Console()
err = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEAD_LETTERED = 0, 1, 2, 3


def _fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings():  # type: ignore[no-untyped-def]
    try:
        return get_settings()
    except SettingsError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


def _contracts():  # type: ignore[no-untyped-def]
    from citybrain.contracts.model import ContractError, load_all

    try:
        return load_all(_settings().schemas_dir)
    except ContractError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress and details.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # kafka-python logs retried metadata and shutdown hiccups at ERROR; real failures raise.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        # aiokafka logs a refused topic at ERROR before raising TopicAuthorizationFailedError.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# -- broker ---------------------------------------------------------------------------------


def _broker():  # type: ignore[no-untyped-def]
    from citybrain.broker.local import BrokerError, LocalBroker

    try:
        return LocalBroker(_settings())
    except BrokerError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


@broker_app.command("up")
def broker_up() -> None:
    """Fetch (once), format (once) and start the broker; wait until it serves requests."""
    from citybrain.broker.local import BrokerError

    broker = _broker()
    try:
        with err.status("starting Apache Kafka (first run fetches its jars with Maven)..."):
            status = broker.up()
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    out.print(status.describe(), highlight=False)


@broker_app.command("down")
def broker_down() -> None:
    """Stop the broker cleanly. Its data stays on disk."""
    stopped = _broker().down()
    out.print("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
def broker_status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Is the broker running, where, and where is its data. Exit 1 when it is not running."""
    status = _broker().status()
    if as_json:
        out.print_json(json.dumps({
            "running": status.running, "pid": status.pid, "bootstrap": status.bootstrap,
            "version": status.version, "data_dir": str(status.data_dir), "log_file": str(status.log_file),
        }))
    else:
        out.print(status.describe(), highlight=False)
    raise typer.Exit(EXIT_OK if status.running else EXIT_FAILED)


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Fetch the broker's jars from Maven Central into the cache (done by `up` when needed)."""
    from citybrain.broker.local import BrokerError

    try:
        lib = _broker().fetch()
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    out.print(f"Kafka jars ready in {lib}", highlight=False)


@broker_app.command("reset")
def broker_reset(yes: bool = typer.Option(False, "--yes", help="Confirm deleting every topic and record.")) -> None:
    """Stop the broker and delete its data. Jars stay cached."""
    if not yes:
        raise _fail("this deletes every topic and record of the embedded broker; add --yes to confirm.", EXIT_USAGE)
    _broker().reset()
    out.print("broker data deleted")


# -- contracts ------------------------------------------------------------------------------


@contracts_app.command("list")
def contracts_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every contract: topic, version, owner, compatibility, personal-data fields."""
    contracts = _contracts()
    if as_json:
        out.print_json(json.dumps([
            {"topic": c.topic, "version": c.version, "owner": c.owner, "compatibility": c.compatibility,
             "personal_fields": c.personal_fields(), "title": c.raw["title"]}
            for c in contracts.values()
        ], ensure_ascii=False))
        return
    table = Table("topic", "version", "owner", "compat.", "partitions", "retention", "personal data")
    for c in contracts.values():
        retention = "compact" if c.cleanup_policy == "compact" else str(c.raw["topic"].get("retention"))
        table.add_row(c.topic, c.version, c.owner, c.compatibility, str(c.partitions), retention,
                      ", ".join(c.personal_fields()) or "-")
    out.print(table)


@contracts_app.command("show")
def contracts_show(name: str = typer.Argument(..., help="Topic name or contract id.")) -> None:
    """A contract's fields with type, classification and whether they are personal data."""
    from citybrain.contracts.model import ContractError, resolve

    try:
        c = resolve(_contracts(), name)
    except ContractError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    out.print(f"[bold]{c.topic}[/] {c.version} — {c.raw['title']}", highlight=False)
    out.print(str(c.raw["description"]).strip(), highlight=False)
    out.print(f"owner {c.owner}; key {c.key_field}; compatibility {c.compatibility}; "
              f"topic {c.topic_configs()} partitions={c.partitions}", highlight=False)
    table = Table("field", "type", "required", "classification", "personal")
    for f in c.fields.values():
        table.add_row(f.path, "/".join(f.types) or "enum/const", "yes" if f.required else "",
                      f.classification or "?", "yes" if f.personal else "")
    out.print(table)


@contracts_app.command("check")
def contracts_check() -> None:
    """Lint every contract and check it against its last released version in git."""
    from citybrain.contracts.check import check

    report = check(_settings().schemas_dir)
    for topic, released, current in report.compared:
        out.print(f"compared {topic}: released {released} -> {current}", highlight=False)
    if report.new:
        out.print(f"new (no released version yet): {', '.join(report.new)}", highlight=False)
    if not report.ok:
        for problem in report.problems:
            err.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)
        raise _fail(f"{len(report.problems)} contract problem(s)")
    out.print(f"[green]✓[/] {len(report.compared) + len(report.new)} contracts pass lint and compatibility checks")


@contracts_app.command("dispatch")
def contracts_dispatch(write: bool = typer.Option(False, "--write", help="Write the files (default: check them).")) -> None:
    """The per-department dispatch contracts, from one template: check them, or --write them."""
    from citybrain.contracts.dispatch import dispatch_contract_text, dispatch_departments, write_dispatch_contracts

    schemas = _settings().schemas_dir
    if write:
        for path in write_dispatch_contracts(schemas):
            out.print(f"wrote {path.name}", highlight=False)
        return
    stale = [d for d in dispatch_departments()
             if not (schemas / f"dispatch.{d}.work_order.v1.yaml").exists()
             or (schemas / f"dispatch.{d}.work_order.v1.yaml").read_text(encoding="utf-8") != dispatch_contract_text(d)]
    if stale:
        raise _fail(f"dispatch contracts differ from the template for: {', '.join(stale)}. "
                    "Fix: `citybrain contracts dispatch --write`.")
    out.print(f"[green]✓[/] {len(dispatch_departments())} dispatch contracts match the template")


# -- topics ---------------------------------------------------------------------------------


@topics_app.command("apply")
def topics_apply(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change; change nothing."),
    catalog: bool = typer.Option(True, "--catalog/--no-catalog", help="Also publish the contracts to the catalog topic."),
) -> None:
    """Create or update every topic from its contract, then publish the contract catalog."""
    from kafka.errors import KafkaError

    from citybrain.topics import apply_topics, plan_topics, publish_catalog

    settings, contracts = _settings(), _contracts()
    try:
        changes = (plan_topics if dry_run else apply_topics)(settings, contracts.values())
    except KafkaError as exc:
        raise _fail(f"Kafka at {settings.bootstrap} refused or did not answer: {exc!r}. "
                    "Fix: `citybrain broker up`, or check CITYBRAIN_BOOTSTRAP_SERVERS.") from None
    for change in changes:
        colour = {"unchanged": "dim", "warning": "yellow"}.get(change.action, "green")
        out.print(f"[{colour}]{change}[/]", highlight=False)
    real = [c for c in changes if c.action not in ("unchanged", "warning")]
    out.print(f"{len(real)} change(s){' planned' if dry_run else ''}, {len(changes) - len(real)} topic(s) already as declared")
    if catalog and not dry_run:
        n = publish_catalog(settings, contracts.values())
        out.print(f"published {n} contracts to the catalog topic")


# -- produce / consume ------------------------------------------------------------------------


@app.command("produce")
def produce(
    contract: str = typer.Argument(..., help="Topic name or contract id, e.g. raw.sensor.air_quality"),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="JSONL or CSV file"),
    fmt: Optional[str] = typer.Option(None, "--format", help="jsonl or csv (default: from the file suffix)"),
    trace_id: Optional[str] = typer.Option(None, "--trace-id", help="Trace id for every record (default: one per record)"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Validate every record of FILE against the contract; valid ones to its topic, the rest dead-lettered.

    Exit 0 when every record was accepted, 3 when some were dead-lettered, 2 when the file
    cannot be read against the contract, 1 when the broker did not acknowledge records.
    """
    from citybrain.contracts.model import ContractError, resolve
    from citybrain.ingest.producer import DeliveryError, ValidatedProducer
    from citybrain.ingest.readers import InputFileError, read_csv, read_jsonl

    settings = _settings()
    try:
        c = resolve(_contracts(), contract)
    except ContractError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    kind = (fmt or file.suffix.lstrip(".")).lower()
    if kind in ("jsonl", "ndjson", "json"):
        records = read_jsonl(file, settings.max_record_bytes)
    elif kind == "csv":
        records = read_csv(file, c, settings.max_record_bytes)
    else:
        raise _fail(f"cannot tell the format of {file.name}: use --format jsonl or --format csv.", EXIT_USAGE)
    try:
        with ValidatedProducer(settings) as producer, err.status(f"producing {file.name} to {c.topic}...") as status:
            summary = producer.produce(c, records, trace_id=trace_id,
                                       progress=lambda n: status.update(f"producing {file.name} to {c.topic}: {n:,} records"))
    except InputFileError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except DeliveryError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(summary.as_dict(), ensure_ascii=False))
    else:
        _print_summary(summary)
    raise typer.Exit(EXIT_OK if summary.dead_lettered == 0 else EXIT_DEAD_LETTERED)


def _print_summary(summary) -> None:  # type: ignore[no-untyped-def]
    from citybrain.ingest.producer import DLQ_TOPIC

    rate = f" in {summary.elapsed_s:.2f}s ({summary.read / summary.elapsed_s:,.0f} records/s)" if summary.elapsed_s else ""
    out.print(f"{summary.topic}: read {summary.read}, accepted {summary.accepted}, "
              f"dead-lettered {summary.dead_lettered} to {DLQ_TOPIC}{rate}", highlight=False)
    if summary.rejections:
        table = Table("source", "rule", "field", "problem", "fix", title="dead-lettered records (first 20)")
        for source, r in summary.rejections:
            table.add_row(source, r.rule, r.field, r.message, r.fix)
        out.print(table)


@app.command("consume")
def consume(
    topic: str = typer.Argument(..., help="Topic to read from the beginning to its current end"),
    limit: int = typer.Option(20, "--limit", "-n", help="Print at most this many records (0: all)"),
) -> None:
    """Print a topic's records with their headers, as JSON lines."""
    from citybrain.topics import read_topic

    try:
        records = read_topic(_settings(), topic)
    except (LookupError, TimeoutError) as exc:
        raise _fail(str(exc)) from None
    shown = records if limit == 0 else records[-limit:]
    for r in shown:
        headers = {k: v.decode(errors="replace") for k, v in (r.headers or [])}
        value = r.value.decode(errors="replace") if r.value is not None else None
        try:
            value = json.loads(value) if value is not None else None
        except json.JSONDecodeError:
            pass
        sys.stdout.write(json.dumps({"partition": r.partition, "offset": r.offset, "headers": headers,
                                     "value": value}, ensure_ascii=False) + "\n")
    err.print(f"{len(records)} record(s) in {topic}; printed {len(shown)}")


@app.command("demo")
def demo(
    records: int = typer.Option(20, "--records", help="Valid sample records per feed, sent with the bad input."),
    hours: float = typer.Option(24.0, "--hours", help="Simulated hours of city life."),
    scale: float = typer.Option(0.25, "--scale", help="Share of the city's devices and tickets to simulate."),
) -> None:
    """The platform's main job on the embedded default: broker up, topics from contracts,
    a simulated day of the city plus bad input produced and read back, counts checked."""
    from citybrain.demo import DemoError, run_demo
    from citybrain.sim.model import SimError

    try:
        ok = run_demo(_settings(), _contracts(), records_per_feed=records, console=out, sim_hours=hours, sim_scale=scale)
    except (DemoError, SimError) as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


# The feed commands (city, simulate, gateway, load) and the stream commands live in their own modules.
from citybrain import cli_access, cli_feeds, cli_scenarios, cli_streams  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    app()
