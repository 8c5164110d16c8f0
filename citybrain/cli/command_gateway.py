"""`citybrain gateway`: the Open311 GeoReport v2 and FIWARE NGSI v2 edge."""

from __future__ import annotations

from typing import Optional

import typer

from citybrain.cli.base import app, current_contracts, current_settings, err, fail, fail_with


@app.command("gateway")
def gateway(
    host: Optional[str] = typer.Option(None, help="Interface to listen on (default CITYBRAIN_GATEWAY_HOST, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default CITYBRAIN_GATEWAY_PORT, 8311)."),
) -> None:
    """Serve the Open311 GeoReport v2 and FIWARE NGSI v2 (keyValues) edge until interrupted.

    Exit 4 when the platform (the broker, its topics) cannot be brought up."""
    from citybrain.gateway.server import PRINCIPAL, run_gateway
    from citybrain.platform.readiness import PlatformError, ensure_ready
    from citybrain.settings import SettingsError, api_keys

    settings, contracts = current_settings(), current_contracts()
    try:
        keys = api_keys(settings)
    except SettingsError as exc:
        raise fail_with(exc) from None
    try:
        ready = ensure_ready(settings, contracts, err)
    except PlatformError as exc:
        raise fail_with(exc) from None
    host, port = host or settings.gateway_host, port or settings.gateway_port
    err.print(f"{ready.broker}", highlight=False)
    err.print(f"CityBrain gateway on http://{host}:{port}  (Open311: /open311/v2/, FIWARE NGSI v2: /v2/; "
              f"{'API keys for ' + str(len(keys)) + ' partner(s)' if keys else 'no API key required: local use only'})",
              highlight=False)
    try:   # the broker made ready as its administrator, the gateway itself runs as its own principal
        run_gateway(settings.as_service(PRINCIPAL), contracts, host, port)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Fix: choose another --port.") from None
