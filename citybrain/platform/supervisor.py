"""`citybrain up`: the local platform's long-running services, supervised.

One supervisor process (``citybrain supervise``, started in the background by ``citybrain up``)
runs each service as a child in its own process group, with a log (its output, moved aside by size:
:class:`citybrain.logs.RotatingLog`) and a pid file under ``<state_dir>/run/``, and writes their state to ``run/state.json``. A service that dies is
restarted after a backoff that doubles from 1 s to 60 s (reset once it has run for a minute);
each restart is logged and counted. SIGTERM to the supervisor (``citybrain down``) stops the
services tier by tier (``Service.stop_tier``: everything, then the Airflow api-server, then its
PostgreSQL) with SIGTERM (the fusion worker commits, the lake sinks flush, the servers close),
then SIGKILL after ``STOP_TIMEOUT_S``, and removes the pid files: nothing is left behind.
The broker is not a child: ``up`` starts the embedded one (it runs detached with its own pid
file), ``down`` stops it unless told to keep it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from citybrain.logs import RotatingLog
from citybrain.settings import Settings, write_private
from citybrain.times import now_iso, parse_time

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
MAX_BACKOFF_S = 60.0
#: A service that ran this long before it died starts again after the shortest backoff.
STABLE_AFTER_S = 60.0


@dataclass(frozen=True)
class Service:
    name: str
    args: tuple[str, ...]                      # the `citybrain` command that runs it
    port: Callable[[Settings], int | None]
    what: str
    stop_tier: int = 0                          # stopped after the lower tiers (what they need: API, then database)
    airflow: bool = False                       # part of the live Airflow (`up --no-airflow` leaves it out)


SERVICES = (
    Service("gateway", ("gateway",), lambda s: s.gateway_port, "Open311 / FIWARE edge"),
    Service("fusion", ("streams", "fusion"), lambda s: None, "fusion worker: events, warnings, work orders"),
    Service("lake-bronze", ("lake", "bronze"), lambda s: None, "lake sink: raw topics to bronze Parquet"),
    Service("lake-silver", ("lake", "silver"), lambda s: None, "lake sink: curated topics to silver Parquet"),
    Service("ui", ("ui",), lambda s: s.ui_port, "operations view"),
    Service("notify", ("notify", "run"), lambda s: None,
            "NGSI-LD notifications to department systems (infra/subscriptions.yaml)"),
    Service("airflow-db", ("dev", "airflow", "service", "db"), lambda s: s.airflow_db_port,
            "PostgreSQL: the live Airflow's metadata database", stop_tier=2, airflow=True),
    Service("airflow-api", ("dev", "airflow", "service", "api-server"), lambda s: s.airflow_port,
            "Airflow api-server: UI, REST API, the tasks' execution API", stop_tier=1, airflow=True),
    Service("airflow-scheduler", ("dev", "airflow", "service", "scheduler"), lambda s: None,
            "Airflow scheduler with the LocalExecutor: runs the DAGs on their schedules and assets", airflow=True),
    Service("airflow-dag-processor", ("dev", "airflow", "service", "dag-processor"), lambda s: None,
            "Airflow dag-processor: parses dags/ (a new DAG file is picked up within seconds)", airflow=True),
    Service("airflow-triggerer", ("dev", "airflow", "service", "triggerer"), lambda s: None,
            "Airflow triggerer: deferred tasks", airflow=True),
    Service("airflow-events", ("dev", "airflow", "events"), lambda s: None,
            "the lake sinks' announcements posted to Airflow as asset events", airflow=True),
)
BY_NAME = {s.name: s for s in SERVICES}


def run_dir(settings: Settings) -> Path:
    return settings.state_dir / "run"


def supervisor_pid(settings: Settings) -> int | None:
    """The running supervisor's pid, or None (a stale pid file is ignored)."""
    path = run_dir(settings) / "supervisor.pid"
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:   # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def read_state(settings: Settings) -> dict[str, Any]:
    path = run_dir(settings) / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def citybrain_exe() -> str:
    return str(Path(sys.executable).with_name("citybrain"))


class Supervisor:
    """The loop ``citybrain supervise`` runs until SIGTERM."""

    def __init__(self, settings: Settings, services: tuple[Service, ...] = SERVICES) -> None:
        self.settings, self.services = settings, services
        self.dir = run_dir(settings)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, RotatingLog] = {}
        self.copiers: dict[str, threading.Thread] = {}   # each child's output into its log, until it ends
        self.state: dict[str, dict[str, Any]] = {s.name: {"restarts": 0, "pid": None} for s in services}
        self.stopping = False

    def start(self, service: Service) -> None:
        """Start a service, its output (stdout and stderr) copied line by line into its rotating log."""
        out = self.logs.get(service.name)
        if out is None:
            out = self.logs[service.name] = RotatingLog(self.dir / f"{service.name}.log", self.settings.log_max_bytes,
                                                        self.settings.log_backups)
        out.write(f"--- {now_iso()} supervisor starts {service.name}: citybrain {' '.join(service.args)}")
        child = subprocess.Popen([citybrain_exe(), *service.args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        assert child.stdout is not None
        copier = threading.Thread(target=out.copy, args=(child.stdout,), name=f"log:{service.name}", daemon=True)
        copier.start()
        self.copiers[service.name] = copier
        self.children[service.name] = child
        (self.dir / f"{service.name}.pid").write_text(str(child.pid))
        self.state[service.name].update(pid=child.pid, started_at=now_iso(), started=time.monotonic(),
                                        status="running", next_start=None)
        log.info("started %s (pid %d)", service.name, child.pid)

    def write_state(self) -> None:
        public = {name: {k: v for k, v in st.items() if k not in ("started", "next_start")} for name, st in self.state.items()}
        write_private(self.dir / "state.json", json.dumps({"supervisor": os.getpid(), "updated_at": now_iso(),
                                                           "services": public}, indent=1))

    def check(self) -> None:
        """Restart what died, after its backoff."""
        now = time.monotonic()
        for service in self.services:
            st = self.state[service.name]
            child = self.children.get(service.name)
            if child is not None and child.poll() is not None:
                ran = now - st["started"]
                if ran >= STABLE_AFTER_S:
                    st["backoff"] = 0
                backoff = min(MAX_BACKOFF_S, 2.0 ** st.get("backoff", 0))
                st["backoff"] = st.get("backoff", 0) + 1
                st.update(status=f"exited {child.returncode}, restarting in {backoff:.0f} s", last_exit=child.returncode,
                          last_exit_at=now_iso(), next_start=now + backoff, pid=None)
                log.warning("%s (pid %d) exited with %s after %.0f s; restart %d in %.0f s", service.name, child.pid,
                            child.returncode, ran, st["restarts"] + 1, backoff)
                del self.children[service.name]
                (self.dir / f"{service.name}.pid").unlink(missing_ok=True)
            if service.name not in self.children and st.get("next_start") is not None and now >= st["next_start"]:
                st["restarts"] += 1
                self.start(service)

    def stop(self) -> None:
        """SIGTERM every service's process group, tier by tier (running tasks still reach the api-server and the
        database while the scheduler stops), SIGKILL what is left of a tier after STOP_TIMEOUT_S."""
        tiers = sorted({s.stop_tier for s in self.services})
        for tier in tiers:
            self._stop([s.name for s in self.services if s.stop_tier == tier and s.name in self.children])

    def _stop(self, names: list[str]) -> None:
        children = {n: self.children[n] for n in names}
        for child in children.values():
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and any(c.poll() is None for c in children.values()):
            time.sleep(0.2)
        for name, child in children.items():
            if child.poll() is None:
                log.warning("%s did not stop within %.0f s: killed", name, STOP_TIMEOUT_S)
                _signal_group(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
            _signal_group(child.pid, signal.SIGKILL)   # anything it left in its group
            self.state[name].update(status=f"stopped ({child.returncode})", pid=None)
            (self.dir / f"{name}.pid").unlink(missing_ok=True)

    def run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "supervisor.pid").write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        try:
            for service in self.services:
                self.start(service)
            while not self.stopping:
                self.check()
                self.write_state()
                time.sleep(0.5)
        finally:
            self.stop()
            for copier in self.copiers.values():   # what the services wrote last, then the files closed
                copier.join(timeout=5)
            for out in self.logs.values():
                out.close()
            self.write_state()
            (self.dir / "supervisor.pid").unlink(missing_ok=True)
            log.info("supervisor stopped")

    def _on_term(self, _sig: int, _frame: Any) -> None:
        self.stopping = True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def select(airflow: bool = True, simulate: Service | None = None) -> tuple[Service, ...]:
    """The services `up` runs: all, or all but the live Airflow's; and the simulated city if asked for."""
    return tuple(s for s in SERVICES if airflow or not s.airflow) + ((simulate,) if simulate else ())


def simulated_city(speed: float) -> Service:
    """A simulated city feeding the platform in near real time: a day from now, ``speed`` simulated seconds per
    real second (each start simulates from its own now, with a seed of its own)."""
    return Service("simulate", ("dev", "simulate", "--live", "--speed", f"{speed:g}"), lambda s: None,
                   f"the simulated city, live at {speed:g}x")


def launch(settings: Settings, services: tuple[Service, ...] = SERVICES, timeout_s: float = 60.0) -> int:
    """Start the supervisor in the background (if it is not running); its pid once every service has one."""
    running = supervisor_pid(settings)
    if running:
        return running
    folder = run_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").unlink(missing_ok=True)
    args = ["--only", ",".join(s.name for s in services if s.name in BY_NAME)]
    speed = next((s.args[-1] for s in services if s.name == "simulate"), None)
    if speed:
        args += ["--simulate", speed]
    with (folder / "supervisor.log").open("ab") as out:
        proc = subprocess.Popen([citybrain_exe(), "supervise", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the supervisor exited with {proc.returncode}: "
                               f"{(folder / 'supervisor.log').read_text()[-1500:]}")
        started = read_state(settings).get("services", {})
        if len(started) == len(services) and all(s.get("pid") for s in started.values()):
            return proc.pid
        time.sleep(0.3)
    raise RuntimeError(f"the services did not all start within {timeout_s:.0f} s; see {folder}/supervisor.log")


def shutdown(settings: Settings, timeout_s: float = 3 * STOP_TIMEOUT_S + 30) -> list[str]:
    """Stop the supervisor and its services; the services that were still running (by name)."""
    pid = supervisor_pid(settings)
    if pid is None:
        return []
    names = [n for n, s in read_state(settings).get("services", {}).items() if s.get("pid")]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    if alive(pid):
        raise RuntimeError(f"the supervisor (pid {pid}) did not stop within {timeout_s:.0f} s")
    return names


def health(settings: Settings, name: str) -> str:
    """One line on how a running service is doing: its HTTP health, or what its consumers have left to read."""
    import urllib.request

    try:
        if name in ("gateway", "ui"):
            port = BY_NAME[name].port(settings)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                body = json.loads(r.read() or b"{}")
            return "ok" + (f", {body['live']}" if body.get("live") else "")
        if name == "fusion":
            from citybrain.kafka.topics import group_lag

            done, lag = group_lag(settings, settings.streams_app_id)
            return "no commits yet" if lag < 0 else f"lag {lag:,} records"
        if name.startswith("lake-"):
            return f"lag {_sink_lag(settings, name.split('-', 1)[1]):,} records"
        if name.startswith("airflow-"):
            return _airflow_health(settings, name)
        if name == "notify":
            from citybrain.notify.notifier import status_path

            subs = json.loads(status_path(settings).read_text(encoding="utf-8"))["subscriptions"].values()
            failed = sum(1 for s in subs if s["status"] == "failed")
            return (f"{len(subs)} subscription(s), {sum(s['delivered'] for s in subs):,} delivered, "
                    f"{sum(s['dead_lettered'] for s in subs):,} dead-lettered" + (f", {failed} failing" if failed else ""))
    except Exception as exc:   # a status line, not a crash
        return f"unknown ({type(exc).__name__}: {exc})"[:120]
    return "-"


#: Each Airflow service's entry in the api-server's /api/v2/monitor/health.
_MONITORED = {"airflow-scheduler": "scheduler", "airflow-dag-processor": "dag_processor", "airflow-triggerer": "triggerer"}


def _airflow_health(settings: Settings, name: str) -> str:
    """PostgreSQL: does it take connections; the api-server: its health and the newest DAG run; the others: their
    heartbeat as the api-server sees it (import errors for the dag-processor); the bridge: what it posted."""
    from citybrain.orchestration.api import AirflowAPI
    from citybrain.orchestration.live import port_open

    if name == "airflow-db":
        return "accepting connections" if port_open(settings.airflow_db_port) else "not answering yet"
    if name == "airflow-events":
        from citybrain.orchestration.bridge import status_path

        st = json.loads(status_path(settings).read_text())
        return (f"{st['posted']:,} asset event(s) posted" + (f", last {st['last_posted_at']}" if st.get("last_posted_at")
                                                             else "") + f"; {st['state']}")[:160]
    api = AirflowAPI(settings, timeout_s=3)
    monitor = api.health()
    if name == "airflow-api":
        runs = api.runs(limit=1)
        last = f"; last run {runs[0]['dag_id']} {runs[0]['state']}" if runs else "; no DAG run yet"
        return f"ok, metadatabase {monitor['metadatabase']['status']}{last}"
    part = monitor.get(_MONITORED[name]) or {}
    beat = next((v for k, v in part.items() if k.startswith("latest_") and v), None)
    line = f"{part.get('status') or 'no heartbeat yet'}"
    if beat:
        from datetime import datetime, timezone

        ago = (datetime.now(timezone.utc) - parse_time(beat)).total_seconds()
        line += f", heartbeat {ago:.0f} s ago"
    if name == "airflow-dag-processor":
        errors = api.import_errors()
        line += f", {len(errors)} import error(s)" + (f": {', '.join(Path(e['filename']).name for e in errors)}"
                                                       if errors else "")
    return line


def _sink_lag(settings: Settings, layer: str) -> int:
    """Records on the layer's topics beyond the sink's checkpoints."""
    from citybrain.contracts.model import load_platform
    from citybrain.kafka.topics import end_offsets
    from citybrain.lake.layout import ZONES
    from citybrain.lake.writer import LakeWriter

    topics = [c.topic for c in load_platform(settings).values() if c.zone in ZONES[layer]]
    writer = LakeWriter(settings.lake, layer)
    return sum(max(0, end - writer.checkpoint(t, p)) for (t, p), end in end_offsets(settings, topics).items())
