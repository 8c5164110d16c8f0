"""`citybrain up` from nothing: every service of the local platform supervised in the background, the real
Airflow scheduler running data_quality on the lake sinks' asset events and the scenario DAGs after it, a DAG
dropped into dags/ picked up (and a broken one reported), the fusion worker killed with SIGKILL and restarted
with every work order exactly once, and `down` leaving no process behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from citybrain.platform import supervisor
from citybrain.orchestration.api import AirflowAPI
from citybrain.kafka.topics import read_topic
from citybrain.settings import PROJECT_ROOT
from citybrain.sim.clock import default_start
from citybrain.devtools.browser import free_port
from tests.integration.conftest import cli, make_settings
from tests.integration.test_streams_restart import _orders, _produce, _tickets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

DEPLOYED_DAG = '''"""A DAG a data engineer deployed while the platform was running."""
from datetime import datetime, timezone
from airflow.sdk import dag, task


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False)
def deployed():
    @task
    def hello() -> str:
        return "deployed"

    hello()


deployed()
'''


def _status(env: dict[str, str]) -> dict[str, dict]:  # type: ignore[type-arg]
    proc = cli("status", "--json", env_extra=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {r["service"]: r for r in json.loads(proc.stdout)}


def _runs(env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    proc = cli("dags", "runs", "--json", "--limit", "100", env_extra=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _wait(what: str, check, timeout_s: float, every_s: float = 3.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)


def _processes_with(marker: str) -> list[str]:
    """Live processes (not zombies) whose environment holds ``marker``: everything `up` started inherits it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes().split(b"\0") and supervisor.alive(int(proc.name)):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name} {command[:120]}")
        except OSError:
            continue
    return found


def _airflow_ui(settings, port: int, broken: str) -> None:  # type: ignore[no-untyped-def]
    """The Airflow UI as a data engineer sees it, in headless Chromium: the login with the generated admin password,
    the DAGs with data_quality's asset-triggered run, and the broken file among the import errors (screenshots in
    var/test/ui/)."""
    from citybrain.devtools.browser import browser

    shots = settings.state_dir / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    password = json.loads((settings.airflow_dir / "live" / "passwords.json").read_text())["admin"]
    with browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_url(lambda u: "/auth/login" in u, timeout=60_000)   # nothing without a login
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", "not-the-password")
        with page.expect_response(lambda r: "/auth/token" in r.url) as answer:
            page.keyboard.press("Enter")
        assert answer.value.status == 401                      # a wrong password stays out
        page.wait_for_timeout(1000)
        assert "/auth/login" in page.url
        page.screenshot(path=str(shots / "airflow-login-refused.png"))
        page.fill("input[name=password]", password)
        page.keyboard.press("Enter")
        page.wait_for_url(lambda u: "/auth/login" not in u, timeout=60_000)
        page.get_by_text("Dag Import Error").first.click(timeout=60_000)
        page.get_by_text(broken).first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "airflow-import-errors.png"))
        page.goto(f"http://127.0.0.1:{port}/dags")
        page.get_by_text("data_quality").first.wait_for(timeout=60_000)
        assert page.get_by_text("publish_").count() >= 7
        page.screenshot(path=str(shots / "airflow-dags.png"), full_page=True)


def _versions(env: dict[str, str]) -> set[str]:
    proc = cli("catalog", "--json", env_extra=env)
    assert proc.returncode == 0, proc.stderr
    return {f"{e['dataset']}@{v}" for e in json.loads(proc.stdout) for v in e["versions"]}


def test_the_platform_runs_live_under_up_with_the_real_airflow_scheduler(broker, settings, contracts,  # type: ignore[no-untyped-def]
                                                                          tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    env = {"CITYBRAIN_GATEWAY_PORT": str(free_port()), "CITYBRAIN_UI_PORT": str(free_port()),
           "CITYBRAIN_AIRFLOW_PORT": str(free_port()), "CITYBRAIN_AIRFLOW_DB_PORT": str(free_port()),
           "CITYBRAIN_LAKE_COMPACT_EVERY_S": "15"}
    # From nothing: no metadata database, no secrets of an earlier live Airflow.
    for folder in ("postgres", "live"):
        shutil.rmtree(settings.airflow_dir / folder, ignore_errors=True)
    deployed, broken = PROJECT_ROOT / "dags" / f"deployed_{run}.py", PROJECT_ROOT / "dags" / f"broken_{run}.py"
    released_before = _versions(env)
    started = datetime.now().astimezone()
    pids: dict[str, int] = {}
    proc = cli("up", env_extra=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        rows = _status(env)
        assert {n for n, r in rows.items() if r["up"]} == {"broker", *supervisor.BY_NAME}, rows
        first = supervisor.supervisor_pid(settings)
        again = cli("up", env_extra=env, timeout=120)            # idempotent: nothing started twice
        assert again.returncode == 0 and "already up" in again.stderr
        assert supervisor.supervisor_pid(settings) == first

        def healthy():  # type: ignore[no-untyped-def]
            rows = _status(env)
            ok = (all(rows[n]["health"].startswith("ok") for n in ("gateway", "ui", "airflow-api"))
                  and all(rows[n]["health"].startswith("healthy") for n in
                          ("airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")))
            return rows if ok else None
        rows = _wait("every service healthy", healthy, 240)
        assert "0 import error(s)" in rows["airflow-dag-processor"]["health"], rows
        pids = {n: r["pid"] for n, r in rows.items() if n in supervisor.BY_NAME}

        # An hour of the simulated city streams through: the sinks write and compact it and announce the hours;
        # the bridge posts asset events; the scheduler runs data_quality on them, then the scenario DAGs.
        start = (default_start() - timedelta(days=6)).isoformat()
        sim = cli("simulate", "--hours", "1", "--scale", "0.25", "--seed", "14", "--start", start,
                  "--out", str(tmp_path / "sim"), env_extra=env, timeout=300)
        assert sim.returncode == 0, sim.stderr

        def quality_run():  # type: ignore[no-untyped-def]
            return [r for r in _runs(env)["dag_runs"] if r["dag_id"] == "data_quality"
                    and r["run_type"] == "asset_triggered" and r["state"] == "success" and _at(r["start_date"]) > started]
        checked = _wait("data_quality run by the scheduler on the lake's asset event", quality_run, 600, 5)
        done = min(_at(r["end_date"]) for r in checked)

        def publish_run():  # type: ignore[no-untyped-def]
            return [r for r in _runs(env)["dag_runs"] if r["dag_id"].startswith("publish_")
                    and r["run_type"] == "asset_triggered" and r["state"] == "success" and _at(r["start_date"]) >= done]
        published = _wait("a publish_<dataset> DAG run after data_quality", publish_run, 600, 5)
        new = _versions(env) - released_before
        assert {p.split("@")[0] for p in new} >= {r["dag_id"].removeprefix("publish_") for r in published}, new
        events = json.loads((settings.state_dir / "run" / "airflow-events.json").read_text())
        assert events["posted"] >= 1
        # Counts add up: every announcement the sinks made became exactly one asset event of its layer.
        api = AirflowAPI(make_settings(**env))

        def announced_and_posted():  # type: ignore[no-untyped-def]
            announced = {}
            for r in read_topic(settings, "catalog.lake.compacted.v1"):
                a = json.loads(r.value)
                if r.timestamp >= started.timestamp() * 1000:
                    announced[a["announcement_id"]] = a["layer"]
            posted = [(e["extra"]["announcement_id"], layer) for layer in ("bronze", "silver")
                      for e in api.asset_events(f"citybrain://lake/{layer}") if "announcement_id" in (e["extra"] or {})]
            mine = [p for p in posted if p[0] in announced]
            return (announced, mine) if announced and len(mine) == len(announced) else None
        announced, posted = _wait("every announcement posted as an asset event", announced_and_posted, 120, 5)
        assert sorted(posted) == sorted(announced.items())     # once each, on its layer's asset

        # The metadata database kept bounded: a clean of everything older than a day (nothing yet) succeeds.
        cleaned = cli("airflow", "clean-db", "--days", "1", env_extra=env, timeout=300)
        assert cleaned.returncode == 0 and "cleaned" in cleaned.stdout, cleaned.stdout + cleaned.stderr

        # A data engineer deploys a DAG, and a broken one: the running dag-processor picks up both.
        deployed.write_text(DEPLOYED_DAG.format(dag_id=f"deployed_{run}"))
        broken.write_text("from airflow.sdk import dag\nthis is not python\n")

        def triggered():  # type: ignore[no-untyped-def]
            proc = cli("dags", "trigger", f"deployed_{run}", env_extra=env)
            return proc.returncode == 0 and proc
        _wait("the deployed DAG known to Airflow", triggered, 180, 5)
        _wait("the deployed DAG run to succeed", lambda: [r for r in _runs(env)["dag_runs"]
                                                          if r["dag_id"] == f"deployed_{run}" and r["state"] == "success"],
              240, 5)
        _wait("the broken DAG's import error in status",
              lambda: f"broken_{run}.py" in _status(env)["airflow-dag-processor"]["health"], 120, 5)
        assert any(f"broken_{run}.py" in e["filename"] for e in _runs(env)["import_errors"])
        _airflow_ui(settings, int(env["CITYBRAIN_AIRFLOW_PORT"]), f"broken_{run}.py")

        # The fusion worker dies without a word between two batches of tickets; up restarts it; nothing is lost
        # and nothing doubled.
        first_batch, second_batch = _tickets(run, range(3)), _tickets(run, range(3, 6))
        _produce(tmp_path, "first.jsonl", first_batch)
        _wait("work orders of the first tickets", lambda: len(_orders(settings, contracts, run)) >= 3, 300)
        # Killed as soon as the orders are there, most likely before it committed the tickets' offsets: the
        # restarted worker processes them again and commits nothing it did not commit before (Kafka transactions).
        os.kill(pids["fusion"], signal.SIGKILL)
        _produce(tmp_path, "second.jsonl", second_batch)

        def restarted():  # type: ignore[no-untyped-def]
            fusion = _status(env)["fusion"]
            return fusion if fusion["up"] and fusion["pid"] != pids["fusion"] else None
        fusion = _wait("fusion restarted by the supervisor", restarted, 60, 0.5)
        assert fusion["restarts"] == 1, fusion
        assert "restart 1" in (supervisor.run_dir(settings) / "supervisor.log").read_text()
        pids["fusion"] = fusion["pid"]
        tickets = {t["service_request_id"] for t in first_batch + second_batch}
        _wait("work orders of every ticket", lambda: {o.split("-")[1] for o in _orders(settings, contracts, run)}
              == tickets, 300)
        time.sleep(5)   # anything doubled would have arrived by now
        orders = _orders(settings, contracts, run)
        assert len(orders) == len(set(orders)), sorted(orders)   # each work order exactly once
        assert {o.split("-")[1] for o in orders} == tickets
        pids = {n: r["pid"] for n, r in _status(env).items() if n in supervisor.BY_NAME and r["pid"]}
    finally:
        deployed.unlink(missing_ok=True)
        broken.unlink(missing_ok=True)
        down = cli("down", "--keep-broker", env_extra=env, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert supervisor.supervisor_pid(settings) is None
    left = [n for n, pid in pids.items() if supervisor.alive(pid)]
    assert not left, f"still running after down: {left}"
    left = _processes_with(f"CITYBRAIN_GATEWAY_PORT={env['CITYBRAIN_GATEWAY_PORT']}")   # and nothing they started
    assert not left, f"still running after down: {left}"
    assert not list(supervisor.run_dir(settings).glob("*.pid"))
    assert broker.status().running                               # --keep-broker


def test_up_feeds_a_live_simulated_city_and_down_stops_it(broker, settings) -> None:  # type: ignore[no-untyped-def]
    """`up --simulate`: the simulated city is one more supervised service, producing from now, paced."""
    from citybrain.kafka.topics import end_offsets

    env = {"CITYBRAIN_GATEWAY_PORT": str(free_port()), "CITYBRAIN_UI_PORT": str(free_port())}
    topic = "raw.sensor.water_level.v1"
    before = sum(end_offsets(settings, [topic]).values())
    started_ms = time.time() * 1000
    proc = cli("up", "--no-airflow", "--simulate", "--speed", "300", env_extra=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        rows = _status(env)
        assert rows["simulate"]["up"] and not any(n.startswith("airflow-") for n in rows), rows
        _wait("the live city's readings on the broker", lambda: sum(end_offsets(settings, [topic]).values()) > before,
              120, 2)
        fresh = [r for r in read_topic(settings, topic) if r.timestamp >= started_ms - 60_000]
        assert fresh, "no reading stamped from now"
    finally:
        down = cli("down", "--keep-broker", env_extra=env, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not _processes_with(f"CITYBRAIN_GATEWAY_PORT={env['CITYBRAIN_GATEWAY_PORT']}")
    assert "simulate" in down.stderr
