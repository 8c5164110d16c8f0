"""The Airflow API's errors say whether trying again may work, and the lake's bridge acts on it: a refused user
stops it with the fix, where it used to retry forever; an api-server that fails for a while is waited out.
Against a real HTTP server on 127.0.0.1 standing in for Airflow's api-server."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from kafka.structs import TopicPartition

from citybrain.errors import InputError, ServiceError
from citybrain.orchestration.api import (AirflowAPI, AirflowAPIError, AirflowAssetUnknown, AirflowAuthError,
                                         AirflowUnavailable)
from citybrain.orchestration.live import AirflowDatabaseUnavailable, LiveAirflowError, passwords_path
from citybrain.orchestration.local import AirflowSetupError
from citybrain.settings import Settings, load_settings
from tests.unit.test_follow import ScriptedConsumer

ASSET = "citybrain://lake/bronze"


class FakeAirflow:
    """An api-server answering each ``METHOD /path`` from a queue of (status, body), the last one for good;
    ``seen`` lists the requests it got. Logging in works unless ``/auth/token`` is given other answers."""

    def __init__(self, answers: dict[str, list[tuple[int, Any]]]) -> None:
        self.answers = {"POST /auth/token": [(201, {"access_token": "t0k3n"})], **answers}
        self.seen: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                route = f"{self.command} {self.path.split('?')[0]}"
                fake.seen.append(route)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                queue = fake.answers.get(route, [(404, {"detail": "Not Found"})])
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def airflow() -> Iterator[list[FakeAirflow]]:
    started: list[FakeAirflow] = []
    yield started
    for fake in started:
        fake.server.shutdown()
        fake.server.server_close()


def _local(tmp_path: Path, fake: FakeAirflow) -> Settings:
    """The local platform's settings, its live Airflow being ``fake``, the bridge's user's password on file."""
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path), "CITYBRAIN_AIRFLOW_PORT": str(fake.port)})
    passwords_path(settings).parent.mkdir(parents=True, exist_ok=True)
    passwords_path(settings).write_text(json.dumps({"admin": "a", "citybrain-lake": "l"}))
    return settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("status, kind, retriable", [
    (401, AirflowAuthError, False), (403, AirflowAuthError, False),   # the user, its password or its role
    (400, AirflowAPIError, False), (404, AirflowAPIError, False),     # a wrong request or URL
    (408, AirflowUnavailable, True), (429, AirflowUnavailable, True),
    (500, AirflowUnavailable, True), (503, AirflowUnavailable, True),
])
def test_an_answer_of_the_api_server_is_an_error_retriable_only_where_trying_again_may_work(  # type: ignore[no-untyped-def]
        tmp_path: Path, airflow, status: int, kind: type, retriable: bool) -> None:
    fake = FakeAirflow({"GET /api/v2/monitor/health": [(status, {"detail": "no"})]})
    airflow.append(fake)
    with pytest.raises(AirflowAPIError) as err:
        AirflowAPI(_local(tmp_path, fake)).health()
    assert type(err.value) is kind and err.value.retriable is retriable and err.value.status == status
    assert isinstance(err.value, ServiceError) and isinstance(err.value, RuntimeError)   # callers' excepts still hold


def test_no_answer_at_all_is_retriable_and_names_the_fix(tmp_path: Path) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path), "CITYBRAIN_AIRFLOW_PORT": str(_free_port())})
    with pytest.raises(AirflowUnavailable, match="did not answer.*Fix: `citybrain up`") as err:
        AirflowAPI(settings).health()
    assert err.value.retriable and err.value.status == 0


def test_a_user_refused_even_after_logging_in_again_is_not_retriable_and_the_error_names_the_fix(  # type: ignore[no-untyped-def]
        tmp_path: Path, airflow) -> None:
    fake = FakeAirflow({"GET /api/v2/dags": [(401, {"detail": "Invalid token"})]})
    airflow.append(fake)
    with pytest.raises(AirflowAuthError) as err:
        AirflowAPI(_local(tmp_path, fake), user="citybrain-lake").dags()
    assert not err.value.retriable and "'citybrain-lake'" in str(err.value) and "passwords.json" in str(err.value)
    assert "Fix: " in str(err.value) and fake.seen.count("POST /auth/token") == 2   # logged in again, once


@pytest.mark.parametrize("status, fix", [(401, "CITYBRAIN_AIRFLOW_PASSWORD"), (403, "a role that may do this")])
def test_a_clusters_airflow_refusing_the_user_names_the_settings_or_the_role(  # type: ignore[no-untyped-def]
        tmp_path: Path, airflow, status: int, fix: str) -> None:
    fake = FakeAirflow({"POST /auth/token": [(status, {"detail": "Invalid credentials"})]})
    airflow.append(fake)
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path), "CITYBRAIN_AIRFLOW_URL": f"http://127.0.0.1:{fake.port}",
                              "CITYBRAIN_AIRFLOW_USER": "ops", "CITYBRAIN_AIRFLOW_PASSWORD": "wrong"})
    with pytest.raises(AirflowAuthError, match=f"refused user 'ops' with its password \\(HTTP {status}\\). Fix: .*{fix}"):
        AirflowAPI(settings).runs()


def test_no_password_for_the_user_is_not_retriable(tmp_path: Path) -> None:
    settings = load_settings({"CITYBRAIN_STATE_DIR": str(tmp_path)})
    with pytest.raises(AirflowAuthError, match="no password for Airflow user 'citybrain-lake'.*Fix") as err:
        AirflowAPI(settings, user="citybrain-lake").dags()
    assert not err.value.retriable


def test_the_airflow_set_up_errors_are_service_errors_not_retriable_but_a_database_still_starting() -> None:
    assert issubclass(LiveAirflowError, AirflowSetupError) and issubclass(AirflowSetupError, ServiceError)
    assert not AirflowSetupError.retriable and not LiveAirflowError.retriable and AirflowDatabaseUnavailable.retriable
    assert AirflowAssetUnknown.retriable and not issubclass(AirflowAPIError, InputError)


def _bridge(settings: Settings, monkeypatch, records: int = 1):  # type: ignore[no-untyped-def]
    """The bridge's consumer: ``records`` announcements of the bronze layer waiting on its topic."""
    from citybrain.kafka import clients
    from citybrain.orchestration.bridge import TOPIC

    announcement = {"announcement_id": "a1", "layer": "bronze", "records": 10, "files_merged": 2,
                    "hours": [{"contract": "raw.sensor.water_level", "date": "2026-12-04", "hour": 3}]}
    consumer = ScriptedConsumer({TopicPartition(TOPIC, 0): records}, group=True, value=json.dumps(announcement).encode())
    monkeypatch.setattr(clients, "consumer", lambda settings, *topics, **config: consumer)
    return consumer


def test_the_bridge_stops_with_the_fix_on_a_refused_user_rather_than_retrying_forever(  # type: ignore[no-untyped-def]
        tmp_path: Path, airflow, monkeypatch) -> None:
    """Regression guard: a persistent 401 was retried forever, the bridge saying only `retrying` meanwhile."""
    from citybrain.orchestration.bridge import run_bridge, status_path

    fake = FakeAirflow({"GET /api/v2/assets": [(401, {"detail": "Not authenticated"})]})
    airflow.append(fake)
    settings = _local(tmp_path, fake)
    consumer = _bridge(settings, monkeypatch)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            run_bridge(settings, stop_when_idle_s=0.2)
        except BaseException as exc:   # noqa: BLE001 - what the bridge ended with is the test's to check
            outcome.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=15)
    assert not runner.is_alive(), "the bridge is still retrying a refusal no retry can fix"
    [error] = outcome
    assert isinstance(error, AirflowAuthError) and not error.retriable and "Fix: " in str(error)
    assert consumer.commits == [] and consumer.closed   # the announcement waits for the fix, uncommitted
    status = json.loads(status_path(settings).read_text())
    assert status["state"].startswith("stopped, not retriable: ") and "Fix: " in status["state"]
    assert (status["posted"], status["retries"]) == (0, 0)


def test_the_bridge_waits_out_an_api_server_that_fails_for_a_while_then_posts_in_order(  # type: ignore[no-untyped-def]
        tmp_path: Path, airflow, monkeypatch) -> None:
    from citybrain.orchestration.bridge import run_bridge, status_path

    fake = FakeAirflow({"GET /api/v2/assets": [(200, {"assets": [{"id": 7, "uri": ASSET}]})],
                        "POST /api/v2/assets/events": [(503, {"detail": "restarting"}), (200, {"id": 1})]})
    airflow.append(fake)
    settings = _local(tmp_path, fake)
    consumer = _bridge(settings, monkeypatch, records=2)
    assert run_bridge(settings, stop_when_idle_s=0.2) == {"posted": 2, "retries": 1}
    assert fake.seen.count("POST /api/v2/assets/events") == 3
    assert consumer.commits == [{TopicPartition("catalog.lake.compacted.v1", 0): 1},
                                {TopicPartition("catalog.lake.compacted.v1", 0): 2}]   # each once Airflow took it
    status = json.loads(status_path(settings).read_text())
    assert (status["state"], status["posted"], status["last_asset"]) == ("stopped", 2, ASSET)
