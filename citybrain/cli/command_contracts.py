"""`citybrain contracts ...`: the schema contracts in schemas/; their generators under `citybrain dev contracts`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer
from rich.table import Table

from citybrain.cli.base import (ExitCode, check_option, current_contracts, current_settings, dev_app, err, fail,
                                group, json_option, moved, old_option, out, say_renamed)

contracts_app = group("contracts", "Schema contracts in schemas/.")
dev_contracts_app = group("contracts", "Contracts generated from templates and models: write them, or --check them.",
                          parent=dev_app)


@contracts_app.command("list")
def contracts_list(as_json: bool = json_option()) -> None:
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
def contracts_show(name: str = typer.Argument(..., help="Topic name or contract id."),
                   as_json: bool = json_option("The contract and its fields as JSON.")) -> None:
    """A contract's fields with type, classification and whether they are personal data.

    Exit 2 for an unknown name."""
    from citybrain.contracts.model import ContractError, resolve

    try:
        c = resolve(current_contracts(), name)
    except ContractError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None
    if as_json:
        out.print_json(json.dumps({
            "topic": c.topic, "version": c.version, "title": c.raw["title"], "description": str(c.raw["description"]).strip(),
            "owner": c.owner, "key": c.key_field, "compatibility": c.compatibility, "partitions": c.partitions,
            "topic_configs": c.topic_configs(),
            "fields": [{"path": f.path, "types": list(f.types), "required": f.required,
                        "classification": f.classification, "personal": f.personal} for f in c.fields.values()],
        }, ensure_ascii=False, default=str))
        return
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
def contracts_check(as_json: bool = json_option("The report as JSON.")) -> None:
    """Lint every contract and check it against its last released version in git.

    Exit 1 on a problem."""
    from citybrain.contracts.check import check

    report = check(current_settings().schemas_dir)
    if as_json:
        out.print_json(json.dumps({
            "ok": report.ok, "problems": report.problems, "new": report.new,
            "compared": [{"topic": t, "released": r, "current": c} for t, r, c in report.compared],
        }, ensure_ascii=False))
        raise typer.Exit(ExitCode.OK if report.ok else ExitCode.FAILURE)
    for topic, released, current in report.compared:
        out.print(f"compared {topic}: released {released} -> {current}", highlight=False)
    if report.new:
        out.print(f"new (no released version yet): {', '.join(report.new)}", highlight=False)
    if not report.ok:
        for problem in report.problems:
            err.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)
        raise fail(f"{len(report.problems)} contract problem(s)")
    out.print(f"[green]✓[/] {len(report.compared) + len(report.new)} contracts pass lint and compatibility checks")


def _generated(command: str, check: bool, as_json: bool, writer: Callable[[Path], list[Path]],
               stale_of: Callable[[Path], list[str]], what: str, ok: Callable[[Path], str]) -> None:
    """Write generated contract files, or (``--check``) verify the committed ones are what the generator writes."""
    schemas = current_settings().schemas_dir
    stale = stale_of(schemas)
    written = [] if check else writer(schemas)
    if as_json:
        out.print_json(json.dumps({"generator": command, "checked_only": check, "stale": stale,
                                   "written": [str(p) for p in written]}))
    elif check and stale:
        raise fail(f"{what}: {', '.join(stale)}. Fix: `citybrain dev contracts {command}`, then commit schemas/.")
    elif check:
        out.print(f"[green]✓[/] {ok(schemas)}")
    else:
        for path in written:
            out.print(f"wrote {path.name}", highlight=False)
        out.print(f"{len(written)} file(s) written, {len(stale)} of them changed", highlight=False)
    if check and stale:
        raise typer.Exit(ExitCode.FAILURE)


WRITE_OPTION = old_option("--write", "the default", is_flag=True)


def _check_only(check: bool, write: bool) -> bool:
    """``--check`` verifies; the old ``--write`` (now the default) still writes."""
    if write:
        say_renamed("--write", "the default (`--check` only verifies)")
    return check and not write


@dev_contracts_app.command("dispatch")
@moved(contracts_app, "dispatch", "citybrain contracts dispatch", "citybrain dev contracts dispatch")
def contracts_dispatch(check: bool = check_option(), as_json: bool = json_option(),
                       write: bool = WRITE_OPTION) -> None:
    """Write the per-department dispatch contracts from one template (--check: verify them)."""
    from citybrain.contracts.dispatch import dispatch_departments, stale_dispatch_contracts, write_dispatch_contracts

    _generated("dispatch", _check_only(check, write), as_json, write_dispatch_contracts, stale_dispatch_contracts,
               "dispatch contracts differ from the template for",
               lambda _s: f"{len(dispatch_departments())} dispatch contracts match the template")


@dev_contracts_app.command("models")
@moved(contracts_app, "models", "citybrain contracts models", "citybrain dev contracts models")
def contracts_models(check: bool = check_option(), as_json: bool = json_option(),
                     write: bool = WRITE_OPTION) -> None:
    """Write the sensor contracts from the pinned FIWARE Smart Data Models and schemas/fiware/models.yaml
    (--check: verify them)."""
    from citybrain.contracts.sdm import model_specs, stale_model_contracts, write_model_contracts

    _generated("models", _check_only(check, write), as_json, write_model_contracts, stale_model_contracts,
               "sensor contracts differ from their Smart Data Models and schemas/fiware/models.yaml",
               lambda schemas: f"{len(model_specs(schemas))} sensor contracts match their Smart Data Models")
