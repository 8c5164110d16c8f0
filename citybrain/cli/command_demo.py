"""`citybrain demo`: the platform's main job on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from citybrain.cli.base import EXIT_FAILED, EXIT_OK, app, current_contracts, current_settings, fail, out


@app.command("demo")
def demo(
    records: int = typer.Option(20, "--records", help="Valid sample records per feed, sent with the bad input."),
    hours: float = typer.Option(24.0, "--hours", help="Simulated hours of city life."),
    scale: float = typer.Option(0.25, "--scale", help="Share of the city's devices and tickets to simulate."),
    pack: Optional[Path] = typer.Option(None, "--pack", exists=True, file_okay=False,
                                        help="Run the demo on this city pack (a folder) instead of the simulated 云州市."),
) -> None:
    """The platform's main job on the embedded default: broker up, topics from contracts,
    a simulated day of the city plus bad input produced and read back, counts checked."""
    from citybrain.devtools.demo import DemoError, run_demo
    from citybrain.sim.model import SimError

    try:
        ok = run_demo(current_settings(), current_contracts(), records_per_feed=records, console=out, sim_hours=hours, sim_scale=scale,
                      pack=pack)
    except (DemoError, SimError) as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)
