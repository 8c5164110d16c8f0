"""`citybrain dev quality suites`: the data-quality suites (Great Expectations) generated from the contracts."""

from __future__ import annotations

import json

import typer

from citybrain.cli.base import ExitCode, check_option, current_settings, dev_app, fail, group, json_option, moved, out

# The old home of `suites`, kept hidden for one release.
quality_app = group("quality", "Data-quality suites: now `citybrain dev quality suites`.", hidden=True)
dev_quality_app = group("quality", "Data-quality suites (Great Expectations) generated from the contracts.",
                        parent=dev_app)


@dev_quality_app.command("suites")
@moved(quality_app, "suites", "citybrain quality suites", "citybrain dev quality suites")
def quality_suites(check: bool = check_option(), as_json: bool = json_option()) -> None:
    """Write expectations/<layer>/*.json from the contracts and expectations/tuning.yaml (--check: verify them)."""
    from citybrain.contracts.model import load_all
    from citybrain.quality.suites import generate, load_tuning, write

    settings = current_settings()
    root = settings.expectations_dir
    suites = generate(load_all(settings.schemas_dir), load_tuning(root / "tuning.yaml"))
    stale = write(root, suites, check=check)
    if as_json:
        out.print_json(json.dumps({"generator": "quality suites", "checked_only": check, "suites": len(suites),
                                   "stale": stale, "written": [] if check else [s for s in stale if s in suites]}))
    elif check and stale:
        raise fail(f"{len(stale)} quality suite(s) differ from the contracts: {', '.join(stale[:5])}. "
                   "Fix: `citybrain dev quality suites`, then commit expectations/.")
    else:
        out.print(f"{len(suites)} suites {'up to date' if not stale else f'written ({len(stale)} changed)'}")
    if check and stale:
        raise typer.Exit(ExitCode.FAILURE)
