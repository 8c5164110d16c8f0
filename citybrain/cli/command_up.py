"""`citybrain up | down | status | logs`: the local platform's services, started and supervised in the background."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional, TextIO

import typer
from rich.table import Table

from citybrain.cli.base import (ExitCode, app, configure_logging, current_contracts, current_settings, err, fail,
                                fail_with, json_option, limit_option, old_option, out, renamed)
from citybrain.settings import Settings


@app.command("up")
def up(
    airflow: bool = typer.Option(True, "--airflow/--no-airflow", help="Run the live Airflow (PostgreSQL, api-server, "
                                                                    "scheduler, dag-processor, triggerer) too."),
    simulate: bool = typer.Option(False, "--simulate", help="Feed a simulated city live, from now (a service of "
                                                           "its own, supervised like the others)."),
    speed: float = typer.Option(60.0, "--speed", min=0.1, help="With --simulate: simulated seconds per real second."),
    as_json: bool = json_option("The services' status once they answer, as JSON (as `status --json`)."),
) -> None:
    """Start the broker and every service of the local platform in the background, supervised (idempotent).

    Exit 4 when the broker or a service cannot be started, 1 when one is down once they should answer."""
    from citybrain.platform import supervisor
    from citybrain.platform.readiness import PlatformError, ensure_ready

    settings = current_settings()
    running = supervisor.supervisor_pid(settings)
    if running:
        err.print(f"already up (supervisor pid {running}); `citybrain status` shows the services", highlight=False)
    else:
        services = supervisor.select(airflow, supervisor.simulated_city(speed) if simulate else None)
        if airflow:
            from citybrain.orchestration.local import airflow_bin
            from citybrain.orchestration.live import LiveAirflowError, pg_bin

            try:
                airflow_bin(), pg_bin("initdb"), pg_bin("postgres")
            except (FileNotFoundError, LiveAirflowError) as exc:
                raise fail(f"{exc} (or `citybrain up --no-airflow` for the platform without Airflow)") from None
        try:
            ready = ensure_ready(settings, current_contracts(), err)
        except PlatformError as exc:
            raise fail_with(exc) from None
        err.print(ready.broker, highlight=False)
        _first_accounts(settings)
        try:
            pid = supervisor.launch(settings, services)
        except RuntimeError as exc:
            raise fail(str(exc), ExitCode.SERVICE_UNAVAILABLE) from None
        err.print(f"up: supervisor pid {pid}; logs and pid files in {supervisor.run_dir(settings)}", highlight=False)
    if airflow and not running:
        err.print("waiting for the services to answer (the live Airflow takes a minute on first start) ...",
                  highlight=False)
    _report(_rows_when_answering(settings, 180.0 if airflow and not running else 20.0), as_json)


def _first_accounts(settings: Settings) -> None:
    """A platform without operations-view accounts gets the demo's (the data office's and a duty officer per
    department), so the view can be logged in to; once any account exists, `citybrain accounts` manages them."""
    from citybrain import access
    from citybrain.access.accounts import AccountStore
    from citybrain.devtools.accounts import OFFICE, ensure_demo_accounts

    if AccountStore(settings.access_dir).accounts():
        return
    try:
        departments = access.load(settings.access_file, current_contracts()).departments.values()
    except access.AccessError as exc:
        raise fail_with(exc) from None
    path, opened = ensure_demo_accounts(settings, departments)
    err.print(f"operations view: {opened} first account(s) opened ({OFFICE} for the data office, duty.<department> "
              f"for each department); passwords and one-time code secrets in {path}", highlight=False)


@app.command("down")
def down(keep_broker: bool = typer.Option(False, "--keep-broker", help="Leave the embedded broker running.")) -> None:
    """Stop every supervised service cleanly (workers commit, sinks flush), then the embedded broker."""
    from citybrain.platform import supervisor

    settings = current_settings()
    try:
        stopped = supervisor.shutdown(settings)
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    err.print(f"stopped {', '.join(stopped)}" if stopped else "no supervised service was running", highlight=False)
    left = [f"{n} (pid {p})" for n, p in _service_pids(settings).items() if supervisor.alive(p)]
    if left:
        raise fail(f"still running after down: {', '.join(left)}", ExitCode.FAILURE)
    if settings.embedded and not keep_broker:
        from citybrain.broker.local import LocalBroker

        LocalBroker(settings).down()
        err.print("broker stopped", highlight=False)


@app.command("status")
def status(as_json: bool = json_option()) -> None:
    """Every service of the local platform: pid, port, up since, restarts, health.

    Exit 1 when one that should run (the embedded broker, each service `up` started, or every service when the platform is not up) is down and not being restarted by the supervisor."""
    _report(_rows(current_settings()), as_json)


@app.command("logs")
def logs(
    service: Optional[str] = typer.Argument(None, help="A service of `citybrain status` (gateway, fusion, airflow-scheduler, "
                                                       "...) or supervisor."),
    limit: int = limit_option(40, "Lines from the end (0: all)."),
    lines: Optional[int] = old_option("--lines", "--limit"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing as the log grows."),
) -> None:
    """The last lines of a service's log (all services' when none is named)."""
    from citybrain.platform import supervisor

    settings = current_settings()
    limit = renamed(limit, lines, "--lines", "--limit")
    known = [*supervisor.BY_NAME, "simulate", "supervisor"]
    names = [service] if service else [n for n in known if (supervisor.run_dir(settings) / f"{n}.log").exists()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise fail(f"no service {unknown[0]!r}. Known: {', '.join(known)}.", ExitCode.BAD_INPUT)
    for name in names:
        path = supervisor.run_dir(settings) / f"{name}.log"
        if not path.exists():
            err.print(f"{name}: no log yet ({path})", highlight=False)
            continue
        text = path.read_text(errors="replace").splitlines()[-limit:]
        if len(names) > 1:
            out.print(f"==> {name} <==", highlight=False)
        out.print("\n".join(text), highlight=False, markup=False)
    if follow and service:
        path = supervisor.run_dir(settings) / f"{service}.log"
        f = path.open(errors="replace")
        f.seek(0, 2)
        try:
            while True:
                line = f.readline()
                if line:
                    out.print(line.rstrip("\n"), highlight=False, markup=False)
                    continue
                if _rotated(path, f):   # moved aside at CITYBRAIN_LOG_MAX_BYTES: the new file from its start
                    f.close()
                    f = path.open(errors="replace")
                    continue
                time.sleep(0.5)
        finally:
            f.close()


def _rotated(path: Path, f: TextIO) -> bool:
    """Whether ``path`` is now another file than the one ``f`` reads (the log was moved aside and begun anew)."""
    import os

    try:
        return path.stat().st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


@app.command("supervise", hidden=True)
def supervise(only: str = typer.Option("", help="Comma list of services (default: all)."),
              simulate: float = typer.Option(0.0, help="Also a live simulated city at this speed.")) -> None:
    """The supervisor's own loop (started by `citybrain up`)."""
    from citybrain.platform import supervisor

    configure_logging(logging.INFO, force=True)
    names = [n for n in only.split(",") if n]
    unknown = [n for n in names if n not in supervisor.BY_NAME]
    if unknown:
        raise fail(f"unknown service(s) {', '.join(unknown)}", ExitCode.BAD_INPUT)
    services = tuple(supervisor.BY_NAME[n] for n in names) if names else supervisor.SERVICES
    if simulate:
        services += (supervisor.simulated_city(simulate),)
    supervisor.Supervisor(current_settings(), services).run()


def _service_pids(settings) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from citybrain.platform import supervisor

    return {n: s["pid"] for n, s in supervisor.read_state(settings).get("services", {}).items() if s.get("pid")}


def _rows(settings) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    from citybrain.platform import supervisor
    from citybrain.broker.local import LocalBroker

    up = supervisor.supervisor_pid(settings) is not None
    services = supervisor.read_state(settings).get("services", {})
    rows: list[dict[str, object]] = []
    if settings.embedded:
        b = LocalBroker(settings).status()
        rows.append({"service": "broker", "pid": b.pid, "port": settings.broker_port, "up": b.running,
                     "restarting": False, "since": None, "restarts": None,
                     "health": f"Kafka {b.version} at {b.bootstrap}" if b.running else "down"})
    for svc in supervisor.SERVICES + ((supervisor.simulated_city(0),) if "simulate" in services else ()):
        if services and svc.name not in services:
            continue   # not asked for (`up --no-airflow`)
        st = services.get(svc.name, {})
        running = up and supervisor.alive(st.get("pid"))
        # Exited, and the running supervisor starts it again after its backoff: not down, on its way back.
        restarting = up and not running and "restarting" in str(st.get("status", ""))
        rows.append({"service": svc.name, "pid": st.get("pid") if running else None, "port": svc.port(settings),
                     "up": running, "restarting": restarting, "since": st.get("started_at") if running else None,
                     "restarts": st.get("restarts", 0),
                     "health": supervisor.health(settings, svc.name) if running else (st.get("status") or "down")})
    return rows


def _rows_when_answering(settings, wait_s: float) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """The status rows once no service's health is unknown any more (the servers open their ports), or after wait_s."""
    deadline = time.monotonic() + wait_s
    rows = _rows(settings)
    while time.monotonic() < deadline and any(str(r["health"]).startswith("unknown") for r in rows):
        time.sleep(1)
        rows = _rows(settings)
    return rows


def _report(rows: list[dict[str, object]], as_json: bool) -> None:
    """Print the status rows (a table, or JSON); exit 1 when a service that should run is down (neither running
    nor being restarted by the supervisor)."""
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        _print_status(rows)
    down = [str(r["service"]) for r in rows if not r["up"] and not r["restarting"]]
    if down:
        err.print(f"down: {', '.join(down)}. Fix: `citybrain up` starts what is missing; `citybrain logs <service>` "
                  "says why one stopped.", highlight=False)
        raise typer.Exit(ExitCode.FAILURE)


def _print_status(rows: list[dict[str, object]]) -> None:
    table = Table("service", "pid", "port", "up since", "restarts", "health", title="CityBrain local platform")
    for r in rows:
        table.add_row(str(r["service"]), str(r["pid"] or "-"), str(r["port"] or "-"), str(r["since"] or "-"),
                      "-" if r["restarts"] is None else str(r["restarts"]), str(r["health"]))
    out.print(table)
