"""`citybrain ui`: the operations view in a browser (city, hotline, data, security)."""

from __future__ import annotations

from typing import Optional

import typer

from citybrain.cli.base import app, current_contracts, current_settings, err, fail, fail_with


@app.command("ui")
def ui(
    host: Optional[str] = typer.Option(None, help="Interface to listen on (default CITYBRAIN_UI_HOST, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default CITYBRAIN_UI_PORT, 8320)."),
) -> None:
    """Serve the operations view on the lake and releases until interrupted; people log in with password and code."""
    from citybrain import access
    from citybrain.ui.server import run_ui

    settings, contracts = current_settings(), current_contracts()
    try:
        model = access.load(settings.access_file, contracts)
    except access.AccessError as exc:
        raise fail_with(exc) from None
    host, port = host or settings.ui_host, port or settings.ui_port
    if not settings.lake.exists():
        err.print(f"note: the lake {settings.lake} is empty so far: the pages fill once `make demo` (or the "
                  "lake sinks) wrote it.", highlight=False)
    err.print(f"CityBrain operations view on http://{host}:{port}/  (people log in with their own account: password "
              "and the code of their authenticator app; `citybrain accounts add` opens one)", highlight=False)
    try:
        run_ui(settings, contracts, model, host, port)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Fix: choose another --port.") from None
