"""`citybrain topics ...`: Kafka topics made from the contracts."""

from __future__ import annotations

import json

import typer

from citybrain.cli.base import ExitCode, audit, current_contracts, current_settings, fail, group, json_option, out

topics_app = group("topics", "Kafka topics made from the contracts.")


@topics_app.command("apply")
def topics_apply(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change; change nothing."),
    catalog: bool = typer.Option(True, "--catalog/--no-catalog", help="Also publish the contracts to the catalog topic."),
    as_json: bool = json_option("The changes as JSON."),
) -> None:
    """Create or update every topic from its contract, then publish the contract catalog.

    Exit 4 when the broker refuses or does not answer."""
    from kafka.errors import KafkaError

    from citybrain.ingest.catalog import publish_catalog
    from citybrain.kafka.topics import apply_topics, plan_topics

    settings, contracts = current_settings(), current_contracts()
    try:
        changes = (plan_topics if dry_run else apply_topics)(settings, contracts.values())
        published = publish_catalog(settings, contracts.values()) if catalog and not dry_run else None
    except KafkaError as exc:
        raise fail(f"Kafka at {settings.bootstrap} refused or did not answer: {exc!r}. "
                   "Fix: `citybrain broker up`, or check CITYBRAIN_BOOTSTRAP_SERVERS.",
                   ExitCode.SERVICE_UNAVAILABLE) from None
    real = [c for c in changes if c.action not in ("unchanged", "warning")]
    if not dry_run:
        audit("admin_command", "topics apply", changed=len(real), contracts_published=published)
        if published:
            audit("contract_import", "catalog.contracts.registry", contracts=published)
    if as_json:
        out.print_json(json.dumps({"dry_run": dry_run, "catalog_published": published,
                                   "changes": [{"topic": c.topic, "action": c.action, "detail": c.detail}
                                               for c in changes]}))
        return
    for change in changes:
        colour = {"unchanged": "dim", "warning": "yellow"}.get(change.action, "green")
        out.print(f"[{colour}]{change}[/]", highlight=False)
    out.print(f"{len(real)} change(s){' planned' if dry_run else ''}, {len(changes) - len(real)} topic(s) already as declared")
    if published is not None:
        out.print(f"published {published} contracts to the catalog topic")
