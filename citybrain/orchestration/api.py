"""The Airflow REST API (v2) as CityBrain uses it: DAG runs, import errors, asset events, health.

A token comes from ``POST /auth/token`` with a user's password (the local platform's users and
passwords are in ``<state>/airflow/live/passwords.json``; on a cluster, CITYBRAIN_AIRFLOW_URL,
_AIRFLOW_USER and _AIRFLOW_PASSWORD) and is asked for again, once, when the API answers 401 or 403.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from citybrain.orchestration.live import api_url, passwords_path
from citybrain.settings import Settings


class AirflowAPIError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AirflowAPI:
    def __init__(self, settings: Settings, user: str | None = None, timeout_s: float = 10.0) -> None:
        self.base = api_url(settings).rstrip("/")
        self.user = user or settings.airflow_user
        self.settings, self.timeout_s = settings, timeout_s
        self._token: str | None = None

    def _password(self) -> str:
        if self.settings.airflow_password is not None and self.user == self.settings.airflow_user:
            return self.settings.airflow_password.get_secret_value()
        try:
            return json.loads(passwords_path(self.settings).read_text())[self.user]
        except (OSError, ValueError, KeyError):
            raise AirflowAPIError(401, f"no password for Airflow user {self.user!r}: the live Airflow has not been "
                                       "started here. Fix: `citybrain up` (or set CITYBRAIN_AIRFLOW_PASSWORD for a "
                                       "cluster's Airflow).") from None

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise AirflowAPIError(exc.code, f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise AirflowAPIError(0, f"the Airflow api-server at {self.base} did not answer ({exc}). "
                                     "Fix: `citybrain up`, or `citybrain logs airflow-api`.") from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        if self._token is None:
            answer = self._send("POST", "/auth/token", {"username": self.user, "password": self._password()}, auth=False)
            self._token = answer["access_token"]
        return self._token

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        if query:
            path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        try:
            return self._send(method, path, body)
        except AirflowAPIError as exc:
            if exc.status not in (401, 403):
                raise
            self._token = None   # expired, or the user's role changed since: log in again, once
            return self._send(method, path, body)

    # -- what CityBrain asks ---------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._send("GET", "/api/v2/monitor/health", auth=False)

    def asset_id(self, uri: str) -> int | None:
        for asset in self.call("GET", "/api/v2/assets", uri_pattern=uri, limit=100)["assets"]:
            if asset["uri"] == uri:
                return int(asset["id"])
        return None

    def asset_event(self, uri: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Tell Airflow the asset changed; the DAGs scheduled on it are queued by the scheduler."""
        asset = self.asset_id(uri)
        if asset is None:
            raise AirflowAPIError(404, f"Airflow knows no asset {uri}: no DAG declares it yet (the dag-processor "
                                       "may still be parsing dags/)")
        return self.call("POST", "/api/v2/assets/events", {"asset_id": asset, "extra": extra})

    def asset_events(self, uri: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The asset's events, newest first (each with its ``extra`` and the DAG runs it created)."""
        asset = self.asset_id(uri)
        if asset is None:
            return []
        return self.call("GET", "/api/v2/assets/events", asset_id=asset, order_by="-timestamp",
                         limit=limit)["asset_events"]

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call("POST", f"/api/v2/dags/{urllib.parse.quote(dag_id)}/dagRuns",
                         {"logical_date": None, "conf": conf or {}})

    def runs(self, dag_id: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        answer = self.call("GET", f"/api/v2/dags/{urllib.parse.quote(dag_id or '~')}/dagRuns",
                           order_by="-run_after", limit=limit)
        return answer["dag_runs"]

    def import_errors(self) -> list[dict[str, Any]]:
        return self.call("GET", "/api/v2/importErrors", limit=100)["import_errors"]

    def dags(self) -> list[dict[str, Any]]:
        return self.call("GET", "/api/v2/dags", limit=200)["dags"]
