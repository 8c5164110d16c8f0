"""`citybrain demo`: the platform's main job on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from citybrain.cli.base import (ExitCode, app, current_contracts, current_settings, err, fail_with, json_option,
                                out)


@app.command("demo")
def demo(
    records: int = typer.Option(20, "--records", help="Valid sample records per feed, sent with the bad input."),
    hours: float = typer.Option(24.0, "--hours", help="Simulated hours of city life."),
    scale: float = typer.Option(0.25, "--scale", help="Share of the city's devices and tickets to simulate."),
    pack: Optional[Path] = typer.Option(None, "--pack", exists=True, file_okay=False,
                                        help="Run the demo on this city pack (a folder) instead of the simulated 云州市."),
    as_json: bool = json_option("The outcome as JSON (the steps' report goes to stderr)."),
) -> None:
    """The platform's main job on the embedded default: broker up, topics from contracts,
    a simulated day of the city plus bad input produced and read back, counts checked.

    Exit 0 when the counts add up, 1 when not, 2 for a bad option or pack, 4 when the platform
    (the broker, its topics) could not be brought up."""
    from citybrain.devtools.demo import DemoError, run_demo
    from citybrain.sim.model import SimError

    settings = current_settings()
    try:
        ok = run_demo(settings, current_contracts(), records_per_feed=records, console=err if as_json else out,
                      sim_hours=hours, sim_scale=scale, pack=pack)
    except (DemoError, SimError) as exc:
        raise fail_with(exc) from None
    if as_json:
        out.print_json(json.dumps({"passed": ok, "ground_truth": str(settings.sim_dir / "latest" / "ground_truth.json"),
                                   "lake": str(settings.lake)}, ensure_ascii=False))
    raise typer.Exit(ExitCode.OK if ok else ExitCode.FAILURE)
