"""`citybrain airflow ...`: the live Airflow, as `citybrain up` runs it; its services under `citybrain dev airflow`."""

from __future__ import annotations

import logging
import signal
from typing import Optional

import typer

from citybrain.cli.base import (ExitCode, configure_logging, current_settings, dev_app, fail, fail_with, group,
                                idle_option, moved, out)

airflow_app = group("airflow", "The live Airflow (run by `citybrain up`): its metadata database's clean-up.")
dev_airflow_app = group("airflow", "The live Airflow's services, as `citybrain up` runs them: PostgreSQL, api-server, "
                                   "scheduler, dag-processor, triggerer, and the lake's asset events.", parent=dev_app)


@dev_airflow_app.command("service")
@moved(airflow_app, "service", "citybrain airflow service", "citybrain dev airflow service")
def airflow_service(name: str = typer.Argument(..., help="db, api-server, scheduler, dag-processor or triggerer.")) -> None:
    """Run one live Airflow service in the foreground (PostgreSQL for `db`)."""
    from citybrain.orchestration.live import COMPONENTS, LiveAirflowError, run_component, run_db

    settings = current_settings()
    if name not in ("db", *COMPONENTS):
        raise fail(f"no Airflow service {name!r}. Known: db, {', '.join(COMPONENTS)}.", ExitCode.BAD_INPUT)
    try:
        if name == "db":
            raise typer.Exit(run_db(settings))
        run_component(settings, name)
    except LiveAirflowError as exc:
        raise fail(str(exc)) from None


@airflow_app.command("clean-db")
def airflow_clean_db(days: float = typer.Option(None, "--days", min=0,
                                                help="Keep this many days (default CITYBRAIN_RETENTION_AIRFLOW_LOG_DAYS).")) -> None:
    """Clean the live Airflow's metadata database now (`airflow db clean`; the airflow-db service does it daily).

    Exit 4 when its PostgreSQL does not answer."""
    from citybrain.orchestration.live import LiveAirflowError, clean_db, port_open

    settings = current_settings()
    if not port_open(settings.airflow_db_port):
        raise fail(f"the live Airflow's PostgreSQL does not answer on 127.0.0.1:{settings.airflow_db_port}. "
                   "Fix: `citybrain up`.", ExitCode.SERVICE_UNAVAILABLE)
    try:
        out.print(clean_db(settings, days), highlight=False)
    except LiveAirflowError as exc:
        raise fail(str(exc)) from None


@dev_airflow_app.command("events")
@moved(airflow_app, "events", "citybrain airflow events", "citybrain dev airflow events")
def airflow_events(exit_when_idle: Optional[float] = idle_option("Stop after this many seconds without announcements.")) -> None:
    """Post the lake sinks' announcements (catalog.lake.compacted.v1) to Airflow as asset events, in order."""
    from citybrain.orchestration.api import AirflowAPIError
    from citybrain.orchestration.bridge import run_bridge

    configure_logging(logging.INFO, force=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        counts = run_bridge(current_settings(), stop_when_idle_s=exit_when_idle)
    except AirflowAPIError as exc:   # refused for good (a 401, a setting): one line naming the fix, not a traceback
        raise fail_with(exc) from None
    out.print(f"{counts['posted']:,} asset event(s) posted, {counts['retries']:,} retried", highlight=False)
