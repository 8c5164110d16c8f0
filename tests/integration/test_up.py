"""`citybrain up`: every service of the local platform in the background, supervised; a service killed with
SIGKILL is restarted; `down` leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from citybrain import supervisor
from citybrain.ui.browser import free_port
from tests.integration.conftest import cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _status(env: dict[str, str]) -> dict[str, dict]:  # type: ignore[type-arg]
    proc = cli("status", "--json", env_extra=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {r["service"]: r for r in json.loads(proc.stdout)}


def test_up_supervises_every_service_restarts_a_killed_one_and_down_leaves_nothing(broker, settings) -> None:  # type: ignore[no-untyped-def]
    env = {"CITYBRAIN_GATEWAY_PORT": str(free_port()), "CITYBRAIN_UI_PORT": str(free_port())}
    proc = cli("up", env_extra=env, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        rows = _status(env)
        assert {n for n, r in rows.items() if r["up"]} == {"broker", *supervisor.BY_NAME}, rows
        first = supervisor.supervisor_pid(settings)
        again = cli("up", env_extra=env, timeout=120)            # idempotent: nothing started twice
        assert again.returncode == 0 and "already up" in again.stderr
        assert supervisor.supervisor_pid(settings) == first
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(r["health"].startswith("ok") for n, r in _status(env).items()
                                                        if n in ("gateway", "ui")):
            time.sleep(1)
        rows = _status(env)
        assert rows["gateway"]["health"].startswith("ok") and rows["ui"]["health"].startswith("ok"), rows
        pids = {n: r["pid"] for n, r in rows.items() if n in supervisor.BY_NAME}

        os.kill(pids["fusion"], signal.SIGKILL)                  # the worker dies without a word
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            fusion = _status(env)["fusion"]
            if fusion["up"] and fusion["pid"] != pids["fusion"]:
                break
            time.sleep(0.5)
        assert fusion["up"] and fusion["pid"] != pids["fusion"] and fusion["restarts"] == 1, fusion
        log = (supervisor.run_dir(settings) / "supervisor.log").read_text()
        assert "fusion" in log and "restart 1" in log
        pids["fusion"] = fusion["pid"]
    finally:
        down = cli("down", "--keep-broker", env_extra=env, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert supervisor.supervisor_pid(settings) is None
    left = [n for n, pid in pids.items() if supervisor.alive(pid)]
    assert not left, f"still running after down: {left}"
    assert not list(supervisor.run_dir(settings).glob("*.pid"))
    assert broker.status().running                               # --keep-broker
