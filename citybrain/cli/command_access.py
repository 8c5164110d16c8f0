"""`citybrain access ...`: department principals and grants as code (``infra/access.yaml``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from citybrain.cli.base import (ExitCode, audit, current_contracts, current_settings, fail, fail_with, group,
                                json_option, limit_option, old_option, out, renamed)

access_app = group("access", "Department access: principals, grants (access.yaml), credentials, audit log.")

FILE_OPTION = typer.Option(None, "--file", help="The access file (default: CITYBRAIN_CONFIG_DIR's access.yaml, else the template).")


def _model(path: Optional[Path]):  # type: ignore[no-untyped-def]
    from citybrain.access.grants import AccessError, load

    try:
        return load(path or current_settings().access_file, current_contracts())
    except AccessError as exc:
        raise fail_with(exc) from None


def _acl_text(a: tuple[str, str, str, str, str]) -> str:
    pattern = "*" if a[3] == "PREFIXED" else ""
    return f"{a[0]:<28} {a[4].lower():<6} {a[1].lower()} {a[2]}{pattern}"


@access_app.command("apply")
def apply_cmd(path: Optional[Path] = FILE_OPTION,
              dry_run: bool = typer.Option(False, "--dry-run", help="Print the difference, change nothing."),
              actor: Optional[str] = typer.Option(None, help="Who is applying, for the audit log (default: login name)."),
              as_json: bool = json_option("The difference as JSON.")) -> None:
    """Make the broker's credentials and ACLs match the access file; print and audit every change."""
    from citybrain.access import AccessError, apply, audit_path

    model = _model(path)
    settings = current_settings()
    try:
        result = apply(settings, model, dry_run=dry_run, actor=actor)
    except AccessError as exc:
        raise fail_with(exc) from None
    if not dry_run and result.changes:
        audit("grant_change", model.source.name, actor=actor, source_digest=model.digest, added=len(result.added),
              removed=len(result.removed), users_created=result.users_created, users_deleted=result.users_deleted)
    if as_json:
        out.print_json(json.dumps({"added": result.added, "removed": result.removed, "users_created": result.users_created,
                                   "users_deleted": result.users_deleted, "unchanged": result.unchanged,
                                   "dry_run": dry_run}))
        return
    verb = "would be " if dry_run else ""
    for user in result.users_created:
        out.print(f"[green]+ credential[/] {user} (SCRAM-SHA-512)", highlight=False)
    for user in result.users_deleted:
        out.print(f"[red]- credential[/] {user}", highlight=False)
    for a in result.added:
        out.print(f"[green]+ grant[/]  {_acl_text(a)}", highlight=False)
    for a in result.removed:
        out.print(f"[red]- revoke[/] {_acl_text(a)}", highlight=False)
    out.print(f"{result.changes} change(s) {verb}applied to {settings.bootstrap}, {result.unchanged} grant(s) already "
              f"as declared" + ("" if dry_run else f"; audit log {audit_path(settings.access_dir)}"),
              highlight=False)


@access_app.command("show")
def show_cmd(topic: Optional[str] = typer.Option(None, help="Who can read (and write) this topic?"),
             department: Optional[str] = typer.Option(None, help="What can this department (or principal, a service's "
                                                                 "too) read and write?"),
             path: Optional[Path] = FILE_OPTION,
             as_json: bool = json_option()) -> None:
    """Who can read a topic, or what a department can read; without options, every principal's grants."""
    from citybrain.access import AccessError, broker_acl_set_if_up, topic_access, topics_of

    model = _model(path)
    contracts = current_contracts()                         # keyed by topic
    actual = broker_acl_set_if_up(current_settings())          # None: broker down, declared grants only
    if topic is not None:
        if topic not in contracts:
            raise fail(f"{topic!r} is not a contract topic. Fix: see `citybrain contracts list`.", code=ExitCode.BAD_INPUT)
        rows = topic_access(model, topic, actual)
        if as_json:
            out.print_json(json.dumps({"topic": topic, "personal_fields": contracts[topic].personal_fields(),
                                       "super_users": ["citybrain-admin"], "broker_checked": actual is not None,
                                       "grants": rows}, ensure_ascii=False))
            return
        personal = contracts[topic].personal_fields()
        table = Table(title=f"who can use {topic}" + (f" (personal data: {', '.join(personal)})" if personal else ""))
        for col in ("principal", "department", "operation", "via grant", "on broker", "justification"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["principal"], r["department"], r["operation"], r["grant"],
                          {None: "?", True: "yes", False: "[red]no[/]"}[r["on_broker"]], r["justification"] or "")
        out.print(table)
        out.print(f"{len({r['principal'] for r in rows})} principal(s); the platform's citybrain-admin "
                  "(super user) can use every topic." + ("" if actual is not None else
                                                          " The broker did not answer: declared grants only."),
                  highlight=False)
        return
    try:
        principals = [model.principal_of(department)] if department else model.principals()
    except AccessError as exc:
        raise fail_with(exc) from None
    result = {p: {op: sorted(topics_of(model, p, contracts, op)) for op in ("read", "write")} for p in principals}
    if as_json:
        out.print_json(json.dumps({p: {"department": model.holder(p), **v} for p, v in result.items()}))
        return
    table = Table(title="what each department and service can read and write" if not department
                  else f"what {principals[0]} can use")
    for col in ("principal", "department", "reads", "writes"):
        table.add_column(col)
    for p, v in result.items():
        table.add_row(p, model.holder(p), "\n".join(v["read"]), "\n".join(v["write"]) or "-")
    out.print(table)


@access_app.command("client-config")
def client_config_cmd(department: str = typer.Argument(..., help="Department id (e.g. police) or principal (dept-police)."),
                      path: Optional[Path] = FILE_OPTION,
                      as_json: bool = json_option("As JSON, for the department's client.")) -> None:
    """What a department's Kafka client needs: bootstrap servers, security protocol, SASL mechanism, username, password."""
    from citybrain.access import AccessError, client_config

    model = _model(path)
    try:
        cfg = client_config(current_settings(), model, department)
    except AccessError as exc:
        raise fail_with(exc) from None
    if as_json:
        out.print_json(json.dumps(cfg))
        return
    for key, value in cfg.items():
        out.print(f"{key:<18} {value}", highlight=False)


@access_app.command("rotate")
def rotate_cmd(department: str = typer.Argument(..., help="Department id or principal."),
               path: Optional[Path] = FILE_OPTION,
               actor: Optional[str] = typer.Option(None, help="Who is rotating, for the audit log.")) -> None:
    """Give a principal a new password; the old one stops working at once."""
    from citybrain.access import AccessError, rotate

    model = _model(path)
    try:
        principal = model.principal_of(department)
        rotate(current_settings(), model, principal, actor=actor)
    except AccessError as exc:
        raise fail_with(exc) from None
    audit("account_change", principal, actor=actor, change="password rotated")
    out.print(f"{principal}: new password issued; hand over `citybrain access client-config {department} --json`.",
              highlight=False)


@access_app.command("audit")
def audit_cmd(limit: int = limit_option(50, "How many of the latest entries (0: all)."),
              last: Optional[int] = old_option("--last", "--limit"),
              as_json: bool = json_option("As JSON lines.")) -> None:
    """The audit log: every grant, revocation and credential change, who made it and from which file version."""
    from citybrain.access.audit import read_audit

    entries = read_audit(current_settings().access_dir, renamed(limit, last, "--last", "--limit"))
    if as_json:
        for e in entries:
            out.print(json.dumps(e, ensure_ascii=False), highlight=False, soft_wrap=True)
        return
    table = Table(title=f"access audit log (last {len(entries)})")
    for col in ("at", "actor", "action", "principal", "what", "result"):
        table.add_column(col)
    for e in entries:
        what = f"{e.get('operation', '')} {e.get('resource_type', '')} {e.get('resource', '')}".strip()
        table.add_row(e["at"], e["actor"], e["action"], e["principal"], what, e["result"])
    out.print(table)
