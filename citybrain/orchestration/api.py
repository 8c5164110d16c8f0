"""The Airflow REST API (v2) as CityBrain uses it: DAG runs, import errors, asset events, health.

A token comes from ``POST /auth/token`` with a user's password (the local platform's users and
passwords are in ``<state>/airflow/live/passwords.json``; on a cluster, CITYBRAIN_AIRFLOW_URL,
_AIRFLOW_USER and _AIRFLOW_PASSWORD) and is asked for again, once, when the API answers 401 or 403.

Every failure is an :class:`AirflowAPIError` with the HTTP status; its ``retriable`` says whether the
same call may work later (no answer, a timeout, 429, a 5xx, an asset no parsed DAG declares yet) or
needs a person first (a refused user, a missing password, any other 4xx).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from citybrain.errors import ServiceError
from citybrain.orchestration.live import api_url, passwords_path
from citybrain.settings import Settings

__all__ = ["AirflowAPI", "AirflowAPIError", "AirflowAssetUnknown", "AirflowAuthError", "AirflowUnavailable", "api_error"]


class AirflowAPIError(ServiceError):
    """The Airflow REST API refused a call; ``status`` is its HTTP status (0: no answer). Not retriable as such:
    a 4xx says the request or the set-up is wrong; the subclasses mark what trying again later may fix."""

    retriable = False

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AirflowUnavailable(AirflowAPIError):
    """The api-server did not answer (not started yet, restarting), timed out, or failed (408, 429, 5xx)."""

    retriable = True


class AirflowAuthError(AirflowAPIError):
    """Airflow refused the user (401, or 403 even after logging in again), or there is no password for it:
    the user, its password or its role needs fixing first."""


class AirflowAssetUnknown(AirflowAPIError):
    """No DAG Airflow has parsed declares the asset yet; the dag-processor parses dags/ within seconds."""

    retriable = True


def api_error(status: int, message: str) -> AirflowAPIError:
    """The error of an HTTP status (0: no answer), retriable where the same call may work later."""
    if status == 0 or status in (408, 429) or status >= 500:
        return AirflowUnavailable(status, message)
    if status in (401, 403):
        return AirflowAuthError(status, message)
    return AirflowAPIError(status, message)


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
            raise AirflowAuthError(401, f"no password for Airflow user {self.user!r}: the live Airflow has not been "
                                        "started here. Fix: `citybrain up` (or set CITYBRAIN_AIRFLOW_PASSWORD for a "
                                        "cluster's Airflow).") from None

    def _refused(self, exc: AirflowAPIError, what: str) -> AirflowAuthError:
        """A refusal of the user, saying which user, by which Airflow, and what to fix."""
        local = self.settings.airflow_url is None
        if exc.status == 403:
            fix = (f"give user {self.user!r} a role that may do this" + (" (USERS in citybrain/orchestration/live.py)"
                                                                         if local else " (Op or Admin)"))
        elif local:
            fix = (f"the passwords in {passwords_path(self.settings)} must be the ones the api-server was started "
                   "with: restart the live Airflow (`citybrain down`, then `citybrain up`)")
        else:
            fix = "set CITYBRAIN_AIRFLOW_USER and CITYBRAIN_AIRFLOW_PASSWORD to a user of that Airflow and its password"
        return AirflowAuthError(exc.status, f"the Airflow api-server at {self.base} refused user {self.user!r} "
                                            f"{what} (HTTP {exc.status}). Fix: {fix}. ({exc})")

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
            raise api_error(exc.code, f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise AirflowUnavailable(0, f"the Airflow api-server at {self.base} did not answer ({exc}). "
                                        "Fix: `citybrain up`, or `citybrain logs airflow-api`.") from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        if self._token is None:
            login = {"username": self.user, "password": self._password()}
            try:
                answer = self._send("POST", "/auth/token", login, auth=False)
            except AirflowAuthError as exc:
                raise self._refused(exc, "with its password") from None
            self._token = answer["access_token"]
        return self._token

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        if query:
            path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        try:
            return self._send(method, path, body)
        except AirflowAuthError:
            self._token = None   # expired, or the user's role changed since: log in again, once
        try:
            return self._send(method, path, body)
        except AirflowAuthError as exc:
            if self._token is None:   # logging in again failed: already said why
                raise
            raise self._refused(exc, f"{method} {path.split('?')[0]} even after logging in again") from None

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
            raise AirflowAssetUnknown(404, f"Airflow knows no asset {uri}: no DAG declares it yet (the dag-processor "
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
