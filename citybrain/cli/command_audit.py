"""`citybrain audit verify|export`: the hash-chained audit trails, checked and written out for an auditor."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import typer

from citybrain.cli.base import ExitCode, current_settings, fail, fail_with, group, json_option, out

audit_app = group("audit", "The audit trails (audit.trail.event.v1): who logged in, read, exported and changed what.")

FROM_LAKE = typer.Option(False, "--from-lake", help="Read the lake's copy (silver) instead of the topic.")
FROM_FILE = typer.Option(None, "--file", exists=True, dir_okay=False, help="Read an exported trail (JSON lines).")


def _records(from_lake: bool, file: Optional[Path]) -> tuple[str, list[dict[str, Any]]]:
    from citybrain.errors import InputError
    from citybrain.security import audit_trail

    if from_lake and file is not None:
        raise fail("--from-lake and --file each name where the trail is read from: give one of them.",
                   ExitCode.BAD_INPUT)
    settings = current_settings()
    try:
        if file is not None:
            return file.name, audit_trail.from_file(file)
        if from_lake:
            return "the lake's copy", audit_trail.from_lake(settings.lake)
        return "the audit topic", audit_trail.from_topic(settings)
    except InputError as exc:
        raise fail_with(exc) from None
    except LookupError as exc:
        raise fail(f"{exc} Fix: `citybrain topics apply` creates the audit topic.", ExitCode.BAD_INPUT) from None
    except TimeoutError as exc:
        raise fail(str(exc), ExitCode.SERVICE_UNAVAILABLE) from None


@audit_app.command("verify")
def verify_cmd(from_lake: bool = FROM_LAKE, file: Optional[Path] = FROM_FILE,
               ends: bool = typer.Option(True, "--ends/--no-ends", help="Also check each trail reaches where its "
                                         "writer on this host stopped (leave out for an export older than the trail)."),
               retained: bool = typer.Option(False, "--retained", help="Accept trails that start after seq 1, as the "
                                             "topic's do after its 180 days' retention (the lake keeps the start)."),
               as_json: bool = json_option("The result as JSON.")) -> None:
    """Check every trail's hash chain: exit 1 naming the first changed, removed or reordered record, or a cut tail."""
    from citybrain.access.trail import last_states, verify
    from citybrain.ingest.audit import audit_dir

    source, records = _records(from_lake, file)
    breaks = verify(records, last_states(audit_dir(current_settings())) if ends else None, head=not retained)
    trails = Counter(str(r.get("trail", "")) for r in records)
    if as_json:
        out.print_json(json.dumps({"source": source, "records": len(records), "trails": dict(trails),
                                   "breaks": [{"trail": b.trail, "position": b.position, "seq": b.seq,
                                               "problem": b.problem} for b in breaks]}, ensure_ascii=False))
    else:
        for b in breaks:
            out.print(f"[red]broken[/] {b}", highlight=False)
        if not breaks:
            counts = ", ".join(f"{t} {n:,}" for t, n in sorted(trails.items())) or "no records yet"
            out.print(f"{len(records):,} record(s) of {len(trails)} trail(s) in {source}: every chain holds ({counts})",
                      highlight=False)
    if breaks:
        raise fail(f"{len(breaks)} trail(s) of {source} are broken (first: {breaks[0]}). Fix: compare with the lake's "
                   f"copy or an earlier export to find what was changed, and treat it as a security incident.")


@audit_app.command("export")
def export_cmd(path: Path = typer.Argument(..., dir_okay=False, help="The JSON-lines file to write."),
               from_lake: bool = FROM_LAKE) -> None:
    """Write the trails as JSON lines, in stored order, for an auditor (check it with `audit verify --file`)."""
    from citybrain.security.audit_trail import to_file

    source, records = _records(from_lake, None)
    to_file(records, path)
    out.print(f"{len(records):,} audit record(s) from {source} written to {path}", highlight=False)
