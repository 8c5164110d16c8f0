"""`citybrain contracts ...`: the schema contracts in schemas/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer
from rich.table import Table

from citybrain.cli.base import EXIT_USAGE, current_contracts, current_settings, err, fail, group, out

contracts_app = group("contracts", "Schema contracts in schemas/.")


@contracts_app.command("list")
def contracts_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every contract: topic, version, owner, compatibility, personal-data fields."""
    contracts = current_contracts()
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
        c = resolve(current_contracts(), name)
    except ContractError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
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

    report = check(current_settings().schemas_dir)
    for topic, released, current in report.compared:
        out.print(f"compared {topic}: released {released} -> {current}", highlight=False)
    if report.new:
        out.print(f"new (no released version yet): {', '.join(report.new)}", highlight=False)
    if not report.ok:
        for problem in report.problems:
            err.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)
        raise fail(f"{len(report.problems)} contract problem(s)")
    out.print(f"[green]✓[/] {len(report.compared) + len(report.new)} contracts pass lint and compatibility checks")


def _generated(command: str, write: bool, writer: Callable[[Path], list[Path]],
               stale_of: Callable[[Path], list[str]], what: str, ok: Callable[[Path], str]) -> None:
    """Write generated contract files, or check that the committed ones are what the generator writes."""
    schemas = current_settings().schemas_dir
    if write:
        for path in writer(schemas):
            out.print(f"wrote {path.name}", highlight=False)
        return
    stale = stale_of(schemas)
    if stale:
        raise fail(f"{what}: {', '.join(stale)}. Fix: `citybrain contracts {command} --write`.")
    out.print(f"[green]✓[/] {ok(schemas)}")


@contracts_app.command("dispatch")
def contracts_dispatch(write: bool = typer.Option(False, "--write", help="Write the files (default: check them).")) -> None:
    """The per-department dispatch contracts, from one template: check them, or --write them."""
    from citybrain.contracts.dispatch import dispatch_departments, stale_dispatch_contracts, write_dispatch_contracts

    _generated("dispatch", write, write_dispatch_contracts, stale_dispatch_contracts,
               "dispatch contracts differ from the template for",
               lambda _s: f"{len(dispatch_departments())} dispatch contracts match the template")


@contracts_app.command("models")
def contracts_models(write: bool = typer.Option(False, "--write", help="Write the files (default: check them).")) -> None:
    """The sensor contracts, from the pinned FIWARE Smart Data Models and schemas/fiware/models.yaml: check them, or
    --write them."""
    from citybrain.contracts.sdm import model_specs, stale_model_contracts, write_model_contracts

    _generated("models", write, write_model_contracts, stale_model_contracts,
               "sensor contracts differ from their Smart Data Models and schemas/fiware/models.yaml",
               lambda schemas: f"{len(model_specs(schemas))} sensor contracts match their Smart Data Models")
