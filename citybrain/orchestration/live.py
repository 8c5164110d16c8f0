"""The live Airflow of `citybrain up`: PostgreSQL, api-server, scheduler, dag-processor and triggerer.

Airflow 3 documents SQLite as a development-only metadata database, and four services writing
one SQLite file lock each other out; the live platform therefore runs a real PostgreSQL (the
machine's, Debian's ``postgresql`` package) owned by the project, its data in
``<state>/airflow/postgres`` and listening on 127.0.0.1 only, with the LocalExecutor. The
scripted path (`citybrain dags run`, the demo) keeps ``airflow dags test`` on SQLite.

Secrets (the database password, the api-server's JWT and session keys, the Fernet key, the
passwords of the Airflow users ``admin`` and ``citybrain-lake``) are generated on first use and
kept owner-only in ``<state>/airflow/live/``. PostgreSQL refuses to run as root: run by root,
it is started in a user namespace where its uid is not 0 (``unshare --user``), so its files
stay the project's.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from citybrain.orchestration.local import AIRFLOW_VENV, AirflowSetupError, airflow_bin, environment
from citybrain.settings import Settings, write_private

#: The Airflow services `citybrain up` runs, by the `airflow` sub-command each one is.
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Airflow users of the live platform: people and the CLI log in as admin; the lake's bridge posts asset events.
USERS = {"admin": "admin", "citybrain-lake": "op"}   # op: may post asset events
DB_NAME = DB_USER = "airflow"


class LiveAirflowError(AirflowSetupError):
    """The live Airflow cannot start here; the message says why and the fix (not retriable as such)."""


class AirflowDatabaseUnavailable(LiveAirflowError):
    """The live Airflow's PostgreSQL did not answer in time: it may still be starting, so trying again may work."""

    retriable = True


def live_dir(settings: Settings) -> Path:
    return settings.airflow_dir / "live"


def pg_data(settings: Settings) -> Path:
    return settings.airflow_dir / "postgres"


def live_secrets(settings: Settings) -> dict[str, str]:
    """The live Airflow's secrets, generated once and kept owner-only."""
    path = live_dir(settings) / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {"db_password": secrets.token_hex(16), "jwt_secret": secrets.token_urlsafe(32),
              "api_secret_key": secrets.token_urlsafe(32),
              "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode()}
    write_private(path, json.dumps(values, indent=1))
    write_private(passwords_path(settings), json.dumps({user: secrets.token_urlsafe(18) for user in USERS}))
    return values


def passwords_path(settings: Settings) -> Path:
    """The Simple auth manager's passwords (``{"admin": ..., "citybrain-lake": ...}``), owner-only."""
    return live_dir(settings) / "passwords.json"


def api_url(settings: Settings) -> str:
    return settings.airflow_url or f"http://127.0.0.1:{settings.airflow_port}"


def live_environment(settings: Settings) -> dict[str, str]:
    """What every live Airflow service runs with: the DAG environment plus PostgreSQL, the LocalExecutor and one
    api-server on 127.0.0.1 that the scheduler's task processes report to."""
    s = live_secrets(settings)
    env = environment(settings)
    api = f"http://127.0.0.1:{settings.airflow_port}"
    env.update({
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
            f"postgresql+psycopg2://{DB_USER}:{s['db_password']}@127.0.0.1:{settings.airflow_db_port}/{DB_NAME}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",                      # two cores
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",  # a DAG dropped into dags/ runs on its schedule
        "AIRFLOW__CORE__FERNET_KEY": s["fernet_key"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_path(settings)),
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": api, "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": s["api_secret_key"], "AIRFLOW__API_AUTH__JWT_SECRET": s["jwt_secret"],
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",       # a new DAG file is seen within seconds
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    })
    return env


# -- PostgreSQL ---------------------------------------------------------------------------------

def pg_bin(name: str) -> str:
    """A PostgreSQL server program (Debian keeps them off PATH, in /usr/lib/postgresql/<major>/bin)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                         if p.parent.name.isdigit() else 0, reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise LiveAirflowError(f"PostgreSQL's `{name}` was not found: the live Airflow keeps its metadata in PostgreSQL. "
                           "Fix: `bash infra/postgres.sh` (installs Debian's postgresql package).")


def _unprivileged() -> list[str]:
    """PostgreSQL refuses uid 0: as root, run it where its uid is not 0 (a user namespace mapping it to root)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("unshare"):
        raise LiveAirflowError("PostgreSQL cannot run as root and `unshare` (util-linux) is missing. "
                               "Fix: run CityBrain as a normal user, or install util-linux.")
    return ["unshare", "--user", f"--map-user={os.environ.get('CITYBRAIN_PG_UID', '1000')}", "--map-group=1000"]


def init_db(settings: Settings) -> bool:
    """Create the database cluster and the ``airflow`` database (once); True when it was created now."""
    data = pg_data(settings)
    if (data / "PG_VERSION").exists():
        return False
    secret = live_secrets(settings)["db_password"]
    pwfile = live_dir(settings) / ".pwfile"
    write_private(pwfile, secret + "\n")
    tmp = data.with_name(data.name + ".init")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        run = subprocess.run([*_unprivileged(), pg_bin("initdb"), "-D", str(tmp), "-U", DB_USER,
                              "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"],
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise LiveAirflowError(f"initdb failed (exit {run.returncode}): {run.stderr.strip()[-800:]}")
        run = subprocess.run([*_unprivileged(), pg_bin("postgres"), "--single", "-D", str(tmp), "postgres"],
                             input=f"CREATE DATABASE {DB_NAME};\n", capture_output=True, text=True)
        if run.returncode != 0:
            raise LiveAirflowError(f"creating the {DB_NAME} database failed: {run.stderr.strip()[-800:]}")
    finally:
        pwfile.unlink(missing_ok=True)
    tmp.rename(data)
    return True


#: The metadata database is cleaned this long after the service starts, then every CLEAN_EVERY_S.
CLEAN_FIRST_AFTER_S, CLEAN_EVERY_S = 600.0, 24 * 3600.0


def run_db(settings: Settings) -> int:
    """PostgreSQL in the foreground on 127.0.0.1 (a supervised service); SIGTERM asks it for a fast shutdown.
    While it runs, the metadata older than the Airflow log retention is cleaned daily (``clean_db``): Airflow 3
    keeps tasks out of the metadata database, so the maintenance DAG cannot."""
    import threading

    created = init_db(settings)
    print(f"PostgreSQL data in {pg_data(settings)}" + (" (created now)" if created else ""), flush=True)
    child = subprocess.Popen([*_unprivileged(), pg_bin("postgres"), "-D", str(pg_data(settings)),
                              "-c", "listen_addresses=127.0.0.1", "-p", str(settings.airflow_db_port),
                              "-c", "unix_socket_directories=", "-c", "max_connections=100",
                              "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning"])
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGINT))   # fast: roll back, disconnect, stop

    def clean_daily() -> None:
        wait = CLEAN_FIRST_AFTER_S
        while child.poll() is None:
            time.sleep(wait)
            wait = CLEAN_EVERY_S
            if child.poll() is None and (live_dir(settings) / "migrated").exists():
                try:
                    print(clean_db(settings), flush=True)
                except (LiveAirflowError, subprocess.TimeoutExpired) as exc:
                    print(f"cleaning the metadata database failed: {exc}", flush=True)

    threading.Thread(target=clean_daily, daemon=True).start()
    return child.wait()


def clean_db(settings: Settings, days: float | None = None) -> str:
    """``airflow db clean``: DAG runs, task instances, logs, events and the like older than ``days`` (default the
    Airflow log retention) removed from the metadata database, without archive tables."""
    from datetime import datetime, timedelta, timezone

    before = datetime.now(timezone.utc) - timedelta(days=settings.retention_airflow_log_days if days is None else days)
    run = subprocess.run([str(airflow_bin()), "db", "clean", "--clean-before-timestamp", before.isoformat(),
                          "--skip-archive", "--yes"], env=live_environment(settings), capture_output=True, text=True,
                         timeout=900)
    if run.returncode != 0:
        raise LiveAirflowError(f"`airflow db clean` failed (exit {run.returncode}): {run.stderr.strip()[-1500:]}")
    return f"metadata database: rows from before {before:%Y-%m-%d %H:%M}Z cleaned"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# -- the Airflow services ---------------------------------------------------------------------------

def _airflow_version() -> str:
    found = sorted((AIRFLOW_VENV / "lib").glob("python*/site-packages/apache_airflow_core-*.dist-info"))
    return found[-1].name if found else "unknown"


def migrate(settings: Settings, env: dict[str, str], timeout_s: float = 600) -> None:
    """``airflow db migrate`` once per Airflow version (the services wait for one another on a lock)."""
    folder = live_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "migrated"
    with open(folder / "migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == _airflow_version():
            return
        print("airflow db migrate ...", flush=True)
        run = subprocess.run([str(airflow_bin()), "db", "migrate"], env=env, capture_output=True, text=True,
                             timeout=timeout_s)
        if run.returncode != 0:
            raise LiveAirflowError(f"`airflow db migrate` failed (exit {run.returncode}): {run.stderr[-1500:]}")
        marker.write_text(_airflow_version())


def run_component(settings: Settings, component: str, db_wait_s: float = 120) -> None:
    """Wait for PostgreSQL, migrate it if needed, then become ``airflow <component>`` (same pid, so the
    supervisor's signals reach Airflow itself)."""
    if component not in COMPONENTS:
        raise LiveAirflowError(f"no Airflow service {component!r}; known: {', '.join(COMPONENTS)}")
    deadline = time.monotonic() + db_wait_s
    while not port_open(settings.airflow_db_port):
        if time.monotonic() > deadline:
            raise AirflowDatabaseUnavailable(f"PostgreSQL did not answer on 127.0.0.1:{settings.airflow_db_port} "
                                             f"within {db_wait_s:.0f} s. Fix: `citybrain logs airflow-db` says why.")
        time.sleep(1)
    env = live_environment(settings)
    migrate(settings, env)
    sys.stdout.flush()
    os.execve(str(airflow_bin()), [str(airflow_bin()), component], env)
