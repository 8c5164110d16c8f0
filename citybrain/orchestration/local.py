"""Run the DAGs with the real Airflow 3 on this machine: ``airflow dags test`` in its own environment.

Airflow lives in ``.venv/airflow`` (created by ``infra/setup.sh``; faust-streaming and Airflow
cannot share an environment). Its home is ``<state dir>/airflow`` with a SQLite metadata
database, created on first use; the DAGs are ``dags/`` of this repository. Each DAG run's
log is kept in ``<state dir>/airflow/runs/<dag>.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citybrain.errors import ServiceError
from citybrain.scenarios.datasets import DATASETS
from citybrain.settings import PROJECT_ROOT, Settings

AIRFLOW_VENV = PROJECT_ROOT / ".venv" / "airflow"


class AirflowSetupError(ServiceError):
    """Airflow cannot run here (its metadata database cannot be made or migrated, a service cannot start); the
    message says why and the fix. Not retriable as such: running again fails the same way until it is fixed."""

    retriable = False


def dag_order() -> list[str]:
    """Every DAG in dependency order: quality, security, datasets over the lake, datasets over datasets, and
    last the maintenance of the local state."""
    over_lake = [n for n, d in DATASETS.items() if not any(p.startswith("gold/") for p in d.inputs.values())]
    over_gold = [n for n in DATASETS if n not in over_lake]
    return ["data_quality", "security_monitoring"] + [f"publish_{n}" for n in over_lake + over_gold] + ["maintenance"]


@dataclass
class DagRun:
    dag_id: str
    ok: bool
    seconds: float
    log: Path
    results: list[dict[str, Any]]


def airflow_bin() -> Path:
    path = AIRFLOW_VENV / "bin" / "airflow"
    if not path.exists():
        raise FileNotFoundError(f"Airflow is not installed in {AIRFLOW_VENV.relative_to(PROJECT_ROOT)}. "
                                "Fix: `make setup` (infra/setup.sh creates it).")
    return path


def environment(settings: Settings) -> dict[str, str]:
    home = settings.airflow_dir
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "CITYBRAIN_STATE_DIR": str(settings.state_dir), "GX_ANALYTICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
    })
    if settings.bootstrap_servers:
        env["CITYBRAIN_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    env["CITYBRAIN_BROKER_PORT"] = str(settings.broker_port)
    return env


def ensure_db(settings: Settings) -> None:
    home = settings.airflow_dir
    if (home / "airflow.db").exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([str(airflow_bin()), "db", "migrate"], env=environment(settings), capture_output=True, text=True)
    if out.returncode != 0:
        raise AirflowSetupError(f"`airflow db migrate` of {home / 'airflow.db'} failed (exit {out.returncode}):\n"
                                f"{out.stderr[-2000:]}\nFix: what the error above names, then remove {home / 'airflow.db'} "
                                "so that the next `citybrain dags run` migrates it afresh.")


def run_dag(settings: Settings, dag_id: str, timeout_s: float = 900) -> DagRun:
    """``airflow dags test <dag_id>``: the whole DAG in one process; ok when every task succeeded."""
    ensure_db(settings)
    runs = settings.airflow_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / f"{dag_id}.log"
    before = _result_stamps(settings)
    started = time.monotonic()
    with open(log, "w") as f:
        rc = subprocess.run([str(airflow_bin()), "dags", "test", dag_id], env=environment(settings), stdout=f,
                            stderr=subprocess.STDOUT, timeout=timeout_s).returncode
    written = sorted(p for p, stamp in _result_stamps(settings).items() if before.get(p) != stamp)
    results = [json.loads(p.read_text()) for p in written]
    return DagRun(dag_id, rc == 0, time.monotonic() - started, log, results)


def _result_stamps(settings: Settings) -> dict[Path, tuple[int, int]]:
    """Each kept result with its (mtime in ns, size): a run's results are those it wrote or rewrote, told by the
    file's own stamp before and after rather than by the process's clock (the file system's is coarser)."""
    folder = settings.airflow_dir / "results"
    stamps = {}
    for path in folder.glob("*.json"):
        st = path.stat()
        stamps[path] = (st.st_mtime_ns, st.st_size)
    return stamps
