"""`citybrain quality ...`: the data-quality suites (Great Expectations) generated from the contracts."""

from __future__ import annotations

import typer

from citybrain.cli.base import group, current_settings, fail, out

quality_app = group("quality", "Data-quality suites (Great Expectations) generated from the contracts.")


@quality_app.command("suites")
def quality_suites(check: bool = typer.Option(False, "--check", help="Only report suites that are stale; exit 1 if any.")) -> None:
    """Write expectations/<layer>/*.json from the contracts and expectations/tuning.yaml."""
    from citybrain.contracts.model import load_all
    from citybrain.quality.suites import generate, load_tuning, write

    settings = current_settings()
    root = settings.expectations_dir
    suites = generate(load_all(settings.schemas_dir), load_tuning(root / "tuning.yaml"))
    stale = write(root, suites, check=check)
    if check and stale:
        raise fail(f"{len(stale)} quality suite(s) differ from the contracts: {', '.join(stale[:5])}. "
              "Fix: `citybrain quality suites`, then commit expectations/.", 1)
    out.print(f"{len(suites)} suites {'up to date' if not stale else f'written ({len(stale)} changed)'}")
