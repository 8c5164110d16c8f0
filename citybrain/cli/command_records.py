"""`citybrain produce|consume|load`: records into the platform under their contract, and back out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from citybrain.cli.base import (ExitCode, app, audit, current_contracts, current_settings, err, fail, fail_with,
                                json_option, limit_option, out, print_summary)

if TYPE_CHECKING:  # pragma: no cover
    from citybrain.ingest.producer import ProduceSummary


@app.command("produce")
def produce(
    contract: str = typer.Argument(..., help="Topic name or contract id, e.g. raw.sensor.air_quality"),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="JSONL or CSV file"),
    fmt: Optional[str] = typer.Option(None, "--format", help="jsonl or csv (default: from the file suffix)"),
    trace_id: Optional[str] = typer.Option(None, "--trace-id", help="Trace id for every record (default: one per record)"),
    as_json: bool = json_option("Print the summary as JSON."),
) -> None:
    """Validate every record of FILE against the contract; valid ones to its topic, the rest dead-lettered.

    Exit 0 when every record was accepted, 3 when some were dead-lettered, 2 when the file
    cannot be read against the contract, 4 when the broker did not acknowledge records.
    """
    from citybrain.contracts.model import ContractError, resolve
    from citybrain.ingest.producer import DeliveryError, ValidatedProducer
    from citybrain.ingest.readers import InputFileError, read_csv, read_jsonl

    settings = current_settings()
    try:
        c = resolve(current_contracts(), contract)
    except ContractError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None
    kind = (fmt or file.suffix.lstrip(".")).lower()
    if kind in ("jsonl", "ndjson", "json"):
        records = read_jsonl(file, settings.max_record_bytes, max_depth=settings.json_max_depth)
    elif kind == "csv":
        records = read_csv(file, c, settings.max_record_bytes)
    else:
        raise fail(f"cannot tell the format of {file.name}: use --format jsonl or --format csv.", ExitCode.BAD_INPUT)
    try:
        with ValidatedProducer(settings) as producer, err.status(f"producing {file.name} to {c.topic}...") as status:
            summary = producer.produce(c, records, trace_id=trace_id,
                                       progress=lambda n: status.update(f"producing {file.name} to {c.topic}: {n:,} records"))
    except InputFileError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None
    except DeliveryError as exc:
        raise fail_with(exc) from None
    if as_json:
        out.print_json(json.dumps(summary.as_dict(), ensure_ascii=False))
    else:
        print_summary(summary)
    raise typer.Exit(ExitCode.OK if summary.dead_lettered == 0 else ExitCode.PARTLY_ACCEPTED)


@app.command("consume")
def consume(
    topic: str = typer.Argument(..., help="Topic to read from the beginning to its current end"),
    limit: int = limit_option(20, "Print at most this many records, the newest (0: all)."),
) -> None:
    """Print a topic's records with their headers, as JSON lines (always: no --json needed).

    Exit 2 for a topic that does not exist, 4 when the broker does not deliver them in time."""
    from citybrain.kafka.topics import read_topic

    try:
        records = read_topic(current_settings(), topic)
    except LookupError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None
    except TimeoutError as exc:
        raise fail(str(exc), ExitCode.SERVICE_UNAVAILABLE) from None
    shown = records if limit == 0 else records[-limit:]
    audit("read", topic, records=len(shown))
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


@app.command("load")
def load(
    feed_name: str = typer.Argument(..., metavar="FEED", help="Feed name (infra/feeds/<feed>.yaml), e.g. police_110."),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="The department's export file."),
    encoding: str = typer.Option("auto", help="auto (detect UTF-8 / GB18030 / BOMs), or a codec such as gb18030."),
    as_json: bool = json_option("Print the report as JSON."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the report as JSON to this file (default: "
                                          "var/loads/<feed>-<time>/summary.json); every rejection goes beside it."),
) -> None:
    """Load a department's CSV or JSONL export through its declared column mapping and contract.

    Every dead-lettered row is written, with every problem it has, to a JSON Lines file beside
    the run's summary (``<report>.rejections.jsonl``); the console says where. Postal codes are
    checked against the imported city's pattern (its pack's ``postal_code_pattern``), or six digits
    when no city pack was imported here; device ids and area codes likewise against its ``codes``.
    Exit 0 when every row was accepted, 3 when some were dead-lettered, 2 when the file or
    feed cannot be used (nothing produced), 4 when the broker did not acknowledge records, 1 when
    reading the file stopped part-way (the rows sent before it are counted in the report).
    """
    from datetime import datetime, timezone

    from citybrain.city.pack_import import imported_codes, imported_postal_codes
    from citybrain.contracts.model import resolve
    from citybrain.ingest.codes import CodeSchemes
    from citybrain.ingest.encoding import check_encoding, detect_encoding
    from citybrain.ingest.feeds import FeedError, load_feeds, read_feed
    from citybrain.ingest.postal import PostalCodes
    from citybrain.ingest.producer import BatchProducer, DeliveryError, LoadInterrupted, RejectionReport

    settings, contracts = current_settings(), current_contracts()
    try:
        feeds = load_feeds(settings.feeds_dir, contracts)
    except FeedError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None
    feed = feeds.get(feed_name)
    if feed is None:
        raise fail(f"no feed named {feed_name!r}; declared feeds: {', '.join(sorted(feeds))} (infra/feeds/).", ExitCode.BAD_INPUT)
    if encoding == "auto":
        detected = detect_encoding(file)
        codec, why = detected.encoding, detected.reason
    else:
        try:
            codec, why = check_encoding(encoding), "given with --encoding"
        except ValueError as exc:
            raise fail(str(exc), ExitCode.BAD_INPUT) from None
    contract = resolve(contracts, feed.contract)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    summary_path = report or settings.state_dir / "loads" / f"{feed.name}-{stamp}" / "summary.json"
    rejections = RejectionReport(summary_path.with_name(f"{summary_path.stem}.rejections.jsonl"))
    records = read_feed(feed, file, codec, settings.max_record_bytes, max_depth=settings.json_max_depth,
                        postal=imported_postal_codes(settings) or PostalCodes.default(),
                        codes=imported_codes(settings) or CodeSchemes.of_city({}))

    def write_report(summary: ProduceSummary, **extra: str) -> dict[str, Any]:
        result = {"feed": feed.name, "file": file.name, "encoding": codec, "encoding_reason": why,
                  **summary.as_dict(), "rejections_file": str(rejections.path) if rejections.records else None, **extra}
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(result, ensure_ascii=False, indent=2))
        return result

    try:
        with rejections, err.status(f"loading {file.name} as {feed.name}...") as status:
            summary = BatchProducer(settings, producer_id=f"load.{feed.name}").produce(
                contract, records, report=rejections,
                progress=lambda n: status.update(f"loading {file.name} as {feed.name}: {n:,} rows"))
    except FeedError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None
    except DeliveryError as exc:
        raise fail_with(exc) from None
    except LoadInterrupted as exc:
        write_report(exc.summary, interrupted=str(exc))
        print_summary(exc.summary)
        out.print(f"summary: {summary_path}", highlight=False)
        raise fail_with(exc) from None
    result = write_report(summary)
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
    else:
        out.print(f"{file.name}: feed {feed.name} ({feed.title}) -> {contract.topic}; encoding {codec} ({why})",
                  highlight=False)
        print_summary(summary)
        if rejections.records:
            out.print(f"every dead-lettered row, with every problem: {rejections.path} ({rejections.records:,} rows)",
                      highlight=False)
        out.print(f"summary: {summary_path}", highlight=False)
    raise typer.Exit(ExitCode.OK if summary.dead_lettered == 0 else ExitCode.PARTLY_ACCEPTED)
