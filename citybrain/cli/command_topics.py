"""`citybrain topics ...`: Kafka topics made from the contracts."""

from __future__ import annotations

import typer

from citybrain.cli.base import current_contracts, current_settings, fail, group, out

topics_app = group("topics", "Kafka topics made from the contracts.")


@topics_app.command("apply")
def topics_apply(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change; change nothing."),
    catalog: bool = typer.Option(True, "--catalog/--no-catalog", help="Also publish the contracts to the catalog topic."),
) -> None:
    """Create or update every topic from its contract, then publish the contract catalog."""
    from kafka.errors import KafkaError

    from citybrain.ingest.catalog import publish_catalog
    from citybrain.kafka.topics import apply_topics, plan_topics

    settings, contracts = current_settings(), current_contracts()
    try:
        changes = (plan_topics if dry_run else apply_topics)(settings, contracts.values())
    except KafkaError as exc:
        raise fail(f"Kafka at {settings.bootstrap} refused or did not answer: {exc!r}. "
                    "Fix: `citybrain broker up`, or check CITYBRAIN_BOOTSTRAP_SERVERS.") from None
    for change in changes:
        colour = {"unchanged": "dim", "warning": "yellow"}.get(change.action, "green")
        out.print(f"[{colour}]{change}[/]", highlight=False)
    real = [c for c in changes if c.action not in ("unchanged", "warning")]
    out.print(f"{len(real)} change(s){' planned' if dry_run else ''}, {len(changes) - len(real)} topic(s) already as declared")
    if catalog and not dry_run:
        n = publish_catalog(settings, contracts.values())
        out.print(f"published {n} contracts to the catalog topic")
