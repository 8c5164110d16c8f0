"""The integration suite's own real Kafka broker, started by the project's own code.

It listens on its own ports with its own state folder, so a developer's demo broker
(port 9092) can keep running beside it. Nothing here mocks Kafka.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from citybrain import access
from citybrain.broker.local import LocalBroker
from citybrain.ingest.audit import audit_dir
from citybrain.settings import CREDENTIAL_STORE, PROJECT_ROOT, Settings, load_settings
from citybrain.kafka.topics import apply_topics

TEST_ENV = {
    "CITYBRAIN_STATE_DIR": str(PROJECT_ROOT / "var" / "test"),
    "CITYBRAIN_BROKER_PORT": os.environ.get("CB_TEST_BROKER_PORT", "19092"),
    "CITYBRAIN_CONTROLLER_PORT": os.environ.get("CB_TEST_CONTROLLER_PORT", "19093"),
}


def make_settings(**overrides: str) -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("CITYBRAIN_")}
    env.pop("CITYBRAIN_BOOTSTRAP_SERVERS", None)
    return load_settings({**env, **TEST_ENV, **overrides})


@pytest.fixture(scope="session")
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def broker(settings: Settings, contracts):  # type: ignore[no-untyped-def]
    """A fresh embedded broker (secured: SASL SCRAM + ACLs) for the session, with every contract's
    topic and the departments' grants from infra/access.yaml applied."""
    b = LocalBroker(settings)
    b.reset()
    # The test lake was written from the broker just reset: a lake ahead of its topics is refused by the sinks
    # (LakeAheadOfTopic), so a second `make test` on one checkout starts with an empty test lake too.
    shutil.rmtree(settings.lake_dir, ignore_errors=True)
    # The audit writers' chain ends name records of the audit topic the reset deleted: the trails start again at seq 1.
    shutil.rmtree(audit_dir(settings), ignore_errors=True)
    b.up()
    apply_topics(settings, contracts.values())
    access.apply(settings, access.load(access.ACCESS_FILE, contracts), actor="test-suite")
    yield b
    b.down()
    shutil.rmtree(b.home, ignore_errors=True)


def service_logins(settings: Settings, state: Path) -> None:
    """A state folder of its own (a second sink, a lake elsewhere) given the platform services' broker passwords:
    a service logs in as its own principal (``svc-*``) from the credential store of its state's access folder,
    whatever SASL login the environment names."""
    access = state / "access"
    access.mkdir(parents=True, exist_ok=True)
    shutil.copy2(settings.access_dir / CREDENTIAL_STORE, access / CREDENTIAL_STORE)


def cli(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real `citybrain` command line against the test broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(TEST_ENV)
    env.update(env_extra or {})
    env["COLUMNS"] = "200"
    exe = Path(sys.executable).with_name("citybrain")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def demo(broker):  # type: ignore[no-untyped-def]
    """One full simulated day (small city scale), the fusion worker, the lake and every DAG: run once per
    session, for the demo's own tests and for the operations view's browser tests on its data."""
    return cli("demo", "--records", "30", "--hours", "24", "--scale", "0.05", timeout=1100)
