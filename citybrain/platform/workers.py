"""Start, wait for and stop stream workers as processes (the demo, the benchmark, the tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from citybrain.settings import Settings

#: The fusion worker's command line after the interpreter: its module in the installed package.
FUSION_WORKER = ["-m", "citybrain.streams.fusion"]


def start_worker(settings: Settings, env: dict[str, str] | None = None, log: Path | None = None,
                 level: str = "warn") -> subprocess.Popen:  # type: ignore[type-arg]
    """The fusion worker in the background, in its own process group (``env`` replaces the environment)."""
    out = subprocess.DEVNULL
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen([sys.executable, *FUSION_WORKER, "worker", "-l", level, "--without-web"],
                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_worker(settings: Settings, worker: subprocess.Popen, timeout_s: float,  # type: ignore[type-arg]
                    app_id: str | None = None) -> bool:
    """True once the worker's consumer group has nothing left to read (and its last batch is out)."""
    from citybrain.kafka.topics import group_lag

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker.poll() is None:
        time.sleep(2)
        if group_lag(settings, app_id or settings.streams_app_id)[1] == 0:
            time.sleep(2)
            return True
    return False


def stop_worker(worker: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """SIGTERM the worker's process group; SIGKILL it if it has not exited after 30 s."""
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
