"""CityBrain's one typed settings object, read from ``CITYBRAIN_*`` environment variables.

The code knows only bootstrap servers, security settings and topic names: point
``CITYBRAIN_BOOTSTRAP_SERVERS`` (plus the security settings) at an existing Kafka cluster
and the embedded broker is not used at all.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from citybrain.errors import InputError

if TYPE_CHECKING:
    from citybrain.lake.store import LakePath

ENV_PREFIX = "CITYBRAIN_"

#: The folder holding the package: in a checkout, the repository (its var/ is the local state); installed, the
#: site-packages folder, which the platform never writes to or reads from.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: True when the package runs from a source checkout (developers, tests, ``make demo``), not from a wheel.
IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()
#: The platform's principal on the embedded broker (a super user) and the SASL mechanism it uses.
ADMIN_USER = "citybrain-admin"
SASL_MECHANISM = "SCRAM-SHA-512"
#: The credential store in the access folder: the departments' and the platform services' broker passwords
#: (``citybrain.access.credentials``), owner-only.
CREDENTIAL_STORE = "credentials.json"


def credentials_path(kafka_dir: Path) -> Path:
    """Where the embedded broker keeps its admin and controller passwords (owner-only)."""
    return kafka_dir / "config" / "credentials.json"


def write_private(path: Path, text: str) -> None:
    """Write a file holding secrets, readable by its owner only, and swap it in atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def packaged(*parts: str) -> Path:
    """A file or folder shipped in the package (``citybrain/data``, see its README), e.g. ``packaged("schemas")``.

    One lookup for a wheel and a checkout: in a checkout the package's data folder links to the repository's own
    folders (``schemas/``, ``expectations/``, ``infra/...``), so the path is resolved to them."""
    found = resources.files("citybrain").joinpath("data", *parts)
    if not isinstance(found, Path):
        raise FileNotFoundError(f"citybrain is installed as a zip archive ({found}); its package data ({'/'.join(parts)}) "
                                "must be files. Fix: install the wheel with pip into a virtual environment.")
    return found.resolve()


def _default_state_dir() -> Path:
    """``var/`` of the checkout; installed, the user's state folder (``$XDG_STATE_HOME/citybrain``), never
    site-packages (a deployment sets CITYBRAIN_STATE_DIR, e.g. /var/lib/citybrain)."""
    if IN_CHECKOUT:
        return PROJECT_ROOT / "var"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "citybrain"


@lru_cache(maxsize=8)
def _open_lake(uri: str) -> LakePath:
    from citybrain.lake.store import open_lake   # pyarrow is imported only by who needs the lake

    return open_lake(uri)


def _state_folder(name: str, doc: str) -> property:
    """A folder of the local state, named here once: ``<state_dir>/<name>``."""
    def folder(self: Settings) -> Path:
        return self.state_dir / name
    return property(folder, doc=doc)


class SettingsError(InputError):
    """A CITYBRAIN_* environment variable is unknown or has an invalid value."""


class Settings(BaseSettings):
    """Everything CityBrain can be configured with; the docs' settings reference is generated from it."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # Where the platform keeps local state (broker jars and log, lake, the imported city pack). Git-ignored.
    # Installed from a wheel: $XDG_STATE_HOME/citybrain (~/.local/state/citybrain) unless set.
    state_dir: Path = Field(default=_default_state_dir())
    # Downloaded broker jars; shared by every state dir (tests use their own state dir).
    cache_dir: Path = Field(default=_default_state_dir() / "cache")
    # The contracts; by default the ones shipped in the package (in a checkout, the repository's schemas/).
    schemas_dir: Path = Field(default=packaged("schemas"))
    # Departmental export mappings (one YAML per feed); by default the package's (in a checkout, infra/feeds/).
    feeds_dir: Path = Field(default=packaged("feeds"))
    # The quality suites generated from the contracts; by default the package's (in a checkout, expectations/).
    expectations_dir: Path = Field(default=packaged("expectations"))
    # The deployment's own access model (access.yaml) and subscriptions (subscriptions.yaml); a file not there,
    # or no folder set, is the template shipped in the package (in a checkout, infra/'s).
    config_dir: Path | None = None

    # Kafka connection. Empty bootstrap servers means "the embedded local broker".
    bootstrap_servers: str = ""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # The platform service's own principal (svc-gateway, ...: infra/access.yaml `services:`), whose password is read
    # from the credential store `citybrain access apply` keeps (<state_dir>/access/credentials.json), never from a
    # command line; the supervisor and the systemd units set it per service. Unset: the broker's super user on the
    # embedded broker (administration: topics, grants, `citybrain broker`), else sasl_username/sasl_password.
    principal: str | None = None
    # The CA that signed an existing cluster's broker certificates (SSL, SASL_SSL); default: the system's CAs.
    ssl_cafile: Path | None = None
    # Replication factor for topics the platform creates (1 on the embedded broker).
    replication_factor: int = Field(default=1, ge=1)

    # Embedded broker (used only when bootstrap_servers is empty).
    broker_port: int = Field(default=9092, ge=1024, le=65535)
    # Nodes of the embedded broker when `citybrain broker up` forms it (`--nodes` sets it); node i listens on
    # broker_port + 10 (i - 1) and controller_port + 10 (i - 1). Once formed, <kafka>/cluster.json says.
    broker_nodes: int = Field(default=1, ge=1, le=5)
    controller_port: int = Field(default=9093, ge=1024, le=65535)
    broker_heap: str = "512m"
    broker_start_timeout_s: float = Field(default=90.0, gt=0)

    # Producer behaviour.
    producer_id: str = "citybrain-cli"
    max_record_bytes: int = Field(default=256 * 1024, ge=1024, le=900 * 1024)

    # Edge gateway (Open311 GeoReport v2 and FIWARE NGSI v2 keyValues intake).
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8311, ge=1, le=65535)
    # Partner API keys as "partner:key,partner2:key2"; empty = no key required (local development only).
    gateway_api_keys: SecretStr | None = None
    gateway_max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    gateway_max_batch: int = Field(default=1000, ge=1, le=100_000)
    # Records per second each client may send, and the burst it may send at once.
    gateway_rate_per_s: float = Field(default=500.0, gt=0)
    gateway_burst: int = Field(default=2000, ge=1)
    gateway_max_in_flight: int = Field(default=64, ge=1)
    # Public reads (the Open311 request list and one request) each client address may make a second, and at once.
    gateway_read_rate_per_s: float = Field(default=5.0, gt=0)
    gateway_read_burst: int = Field(default=30, ge=1)
    # The gateway and the operations view are served behind a proxy that terminates TLS: every answer then carries
    # Strict-Transport-Security (served over TLS themselves, they send it anyway; over plain HTTP, never).
    http_behind_tls_proxy: bool = False

    # Lake sinks: how often a sink compacts the hours it wrote and announces them (catalog.lake.compacted.v1),
    # which is how often new data can start the data_quality DAG on a live platform.
    lake_compact_every_s: float = Field(default=300.0, ge=1, le=24 * 3600)
    # The lake's root as a pyarrow filesystem URI (s3://bucket/prefix, gs://bucket/prefix, file:///srv/lake);
    # empty: the local folder <state_dir>/lake. See citybrain/lake/store.py.
    lake_uri: str = ""

    # The live Airflow (`citybrain up`): its api-server (UI, REST API, the tasks' execution API) and the
    # PostgreSQL metadata database the platform runs for it, both on 127.0.0.1. On a cluster, airflow_url
    # points at the cluster's api-server, with a user and password of its auth manager.
    airflow_port: int = Field(default=8380, ge=1024, le=65535)
    airflow_db_port: int = Field(default=8432, ge=1024, le=65535)
    airflow_url: str | None = Field(default=None, pattern=r"^https?://")
    airflow_user: str = "admin"
    airflow_password: SecretStr | None = None

    # What the maintenance DAG keeps (citybrain/orchestration/maintenance.py): releases per dataset, days of the rest.
    retention_releases: int = Field(default=5, ge=1, le=1000)
    retention_docs_days: float = Field(default=7.0, ge=0)
    retention_quarantine_days: float = Field(default=30.0, ge=0)
    retention_quality_days: float = Field(default=90.0, ge=0)
    retention_airflow_log_days: float = Field(default=14.0, ge=0)

    # Operations view (`citybrain ui`): where it listens, how long a login lasts, how long a page's data is reused.
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(default=8320, ge=1, le=65535)
    ui_session_minutes: float = Field(default=480.0, gt=0, le=7 * 24 * 60)
    ui_cache_s: float = Field(default=10.0, ge=0, le=3600)

    # Key of the pseudonyms (HMAC-SHA-256) personal data gets when it leaves the raw zone; at least 32
    # characters. Unset on a local platform: a random key kept in <state_dir>/access/pseudonym.key.
    pseudonym_key: SecretStr | None = None

    # Stream workers: the Faust app id (its consumer group and internal topics) and the batch size.
    streams_app_id: str = Field(default="citybrain-fusion", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    # Most records one fetch (one batch of the fusion worker) may hold.
    streams_batch: int = Field(default=5000, ge=1, le=100_000)
    # Stream time re-read on start to rebuild the worker's state (dedupe window, open cases,
    # open day windows); the ticket lifecycle is re-read further back, for tickets under SLA watch.
    streams_warmup_h: float = Field(default=26.0, ge=0, le=24 * 30)
    streams_warmup_tickets_h: float = Field(default=96.0, ge=0, le=24 * 30)
    # Fusion keyed by area: 0 = one worker reads the raw topics and fuses the whole city; N = the raw feeds are
    # repartitioned by district into N partitions of an internal topic, so up to N workers of one group share the
    # city (see citybrain.streams.fusion). Every worker of a group must use the same N.
    streams_partitions: int = Field(default=0, ge=0, le=1024)
    # The city's false-alarm rate for call-driven early warnings: the chance, per call, that a street calling at
    # its usual rate for that hour of the week is warned of (docs/explanation/fusion.md#calls-judged-against-what-is-usual).
    # Lower: fewer false alarms, later warnings.
    call_false_alarm_rate: float = Field(default=2e-4, gt=0, lt=0.1)

    # How deep JSON the edges (gateway, file loader) read: an entity or record nesting deeper is refused with
    # rule json-depth (GeoJSON multipolygons nest about 7 levels inside an entity).
    json_max_depth: int = Field(default=32, ge=4, le=200)
    # Open311 retries: a POST requests.json sent again with the same Idempotency-Key (and partner) within this
    # many seconds gets the first ticket back; at most this many keys are kept, the least recently used go first.
    gateway_idempotency_ttl_s: float = Field(default=24 * 3600.0, gt=0, le=7 * 24 * 3600)
    gateway_idempotency_keys: int = Field(default=10_000, ge=1, le=1_000_000)

    # Prometheus /metrics of the services without an HTTP server of their own, bound to metrics_host: the fusion
    # worker on this port, lake-bronze on +1, lake-silver on +2, the notifier on +3, the Alertmanager bridge on +4;
    # 0 = off. The gateway and the operations view answer /metrics on their own port
    # (docs/how-to/operator/metrics.md).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9750, ge=0, le=65531)

    # Logs (docs/how-to/operator/logs.md): "json" writes each log record as one line of JSON (time, level, service,
    # logger, message, trace_id) for a log collector; "text" plain lines for people. The supervisor moves a
    # service's log under <state_dir>/run/ aside at log_max_bytes (0 = never) and keeps log_backups old ones.
    log_format: Literal["text", "json"] = "text"
    log_max_bytes: int = Field(default=50 * 1024 * 1024, ge=0)
    log_backups: int = Field(default=5, ge=1, le=100)

    @field_validator("principal")
    @classmethod
    def _service_principal(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"svc-[a-z0-9_.-]{1,57}", value):
            raise ValueError(f"CITYBRAIN_PRINCIPAL={value!r} is not a platform service's principal (svc-<service>, "
                             "declared under `services:` in access.yaml). Fix: name one, or unset it: the broker's "
                             "super user is not chosen this way")
        return value

    @field_validator("lake_uri")
    @classmethod
    def _lake_scheme(cls, value: str) -> str:
        from citybrain.lake.store import SCHEMES

        scheme = value.split("://", 1)[0].lower() if "://" in value else None
        if value and scheme not in SCHEMES:
            raise ValueError(f"CITYBRAIN_LAKE_URI={value!r} is not a pyarrow filesystem URI: use {', '.join(s + '://...' for s in SCHEMES)}, "
                             "e.g. s3://city-lake/citybrain, or leave it unset for the local lake")
        return value

    @field_validator("state_dir", "cache_dir", "schemas_dir", "feeds_dir", "expectations_dir", "config_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # The broker runs in its own working directory: relative paths would point elsewhere.
        return value.expanduser().resolve() if value is not None else None

    # -- the deployment's own files, each named once -----------------------------------------

    def config_file(self, name: str) -> Path:
        """The deployment's ``<config_dir>/<name>`` when there is one, else the template shipped in the package."""
        own = self.config_dir / name if self.config_dir is not None else None
        return own if own is not None and own.is_file() else packaged(name)

    @property
    def access_file(self) -> Path:
        """The access model: principals, departments and grants (``access.yaml``, see ``citybrain.access.grants``)."""
        return self.config_file("access.yaml")

    @property
    def subscriptions_file(self) -> Path:
        """Who gets which topic where (``subscriptions.yaml``, see ``citybrain.notify.subscriptions``)."""
        return self.config_file("subscriptions.yaml")

    # -- the local state's folders, each named once ------------------------------------------

    lake_dir = _state_folder("lake", "The lake: bronze, silver, gold, quality results, quarantine, reports "
                                     "(see ``citybrain.lake.layout``).")

    @property
    def lake(self) -> LakePath:
        """The lake's root: ``lake_uri`` when set (object storage), else the local ``lake_dir``."""
        return _open_lake(self.lake_uri or str(self.lake_dir))

    kafka_dir = _state_folder("kafka", "The embedded broker: its config (with credentials), data and logs.")
    access_dir = _state_folder("access", "Department passwords, the pseudonym key and the access audit log "
                                         "(owner-only files).")
    sim_dir = _state_folder("sim", "Simulation runs (``<run>/ground_truth.json``, ``latest``).")
    streams_dir = _state_folder("streams", "The stream workers' data folders and logs.")
    airflow_dir = _state_folder("airflow", "AIRFLOW_HOME of the local Airflow: metadata database, logs, DAG results.")
    demo_dir = _state_folder("demo", "The demo's sample feed files, one folder per run.")
    bench_dir = _state_folder("bench", "Benchmark figures (``latest.json``).")
    city_dir = _state_folder("city", "The imported city pack's record (``imported.json``: version, digest, counts) "
                                     "and what it added to the platform for its own departments (``departments.json``, "
                                     "``access.yaml``).")
    city_contracts_dir = _state_folder("city/contracts", "The dispatch contracts of the imported city's departments "
                                                         "beyond CityBrain's roles, written from the template by "
                                                         "`citybrain city import` and loaded beside ``schemas/``.")

    @property
    def embedded(self) -> bool:
        """True when the platform runs its own local broker."""
        return not self.bootstrap_servers

    def topic_replicas(self) -> int:
        """Copies of each topic the platform creates: the embedded broker's as formed (3 on a 3-node cluster),
        an external cluster's as configured (CITYBRAIN_REPLICATION_FACTOR)."""
        return min(3, self.broker_node_count()) if self.embedded else self.replication_factor

    def broker_node_count(self) -> int:
        """Nodes of the embedded broker: as formed (``<kafka>/cluster.json``), else ``broker_nodes``."""
        path = self.kafka_dir / "cluster.json"
        try:
            return int(json.loads(path.read_text())["nodes"])
        except (OSError, ValueError, KeyError):
            return self.broker_nodes

    def node_ports(self, index: int) -> tuple[int, int]:
        """(client port, controller port) of node ``index`` (from 1) of the embedded broker."""
        return self.broker_port + 10 * (index - 1), self.controller_port + 10 * (index - 1)

    @property
    def bootstrap(self) -> str:
        if self.bootstrap_servers:
            return self.bootstrap_servers
        return ",".join(f"127.0.0.1:{self.node_ports(i)[0]}" for i in range(1, self.broker_node_count() + 1))

    def client_auth(self) -> tuple[str, str | None, str | None, str | None]:
        """(security protocol, SASL mechanism, username, password) the platform's clients use.

        CITYBRAIN_SASL_USERNAME/PASSWORD connect as someone else (a department, say); else a service's
        ``principal`` with its SCRAM-SHA-512 password from the credential store. Otherwise, on the embedded
        broker, the admin principal, whose password the broker wrote when it was formatted; on an external
        cluster, the settings as given.
        """
        password = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.principal and not self.sasl_username:
            protocol = "SASL_PLAINTEXT" if self.embedded else self.security_protocol
            return protocol, SASL_MECHANISM, self.principal, self.service_password(self.principal)
        if not self.embedded:
            return self.security_protocol, self.sasl_mechanism, self.sasl_username, password
        if self.sasl_username:
            return "SASL_PLAINTEXT", SASL_MECHANISM, self.sasl_username, password
        path = credentials_path(self.kafka_dir)
        if not path.exists():
            raise SettingsError(
                f"The embedded broker has no credentials yet ({path} is missing), so no client can log in. "
                "Fix: `citybrain broker up` creates them with the broker's storage.")
        creds = json.loads(path.read_text())
        return "SASL_PLAINTEXT", SASL_MECHANISM, creds["admin_user"], creds["admin_password"]

    def service_password(self, principal: str) -> str:
        """A platform service's broker password, from the owner-only credential store ``citybrain access apply``
        fills (``<access_dir>/credentials.json``)."""
        path = self.access_dir / CREDENTIAL_STORE
        try:
            return str(json.loads(path.read_text())[principal])
        except (OSError, ValueError, KeyError):
            raise SettingsError(
                f"CITYBRAIN_PRINCIPAL={principal} has no password in the credential store ({path.name} of the "
                "access folder), so the service cannot log in to the broker. Fix: declare it under `services:` in "
                "access.yaml and run `citybrain access apply` (`citybrain up` does on the embedded broker).") from None

    def as_service(self, principal: str) -> Settings:
        """The same platform, logged in as a platform service's own principal instead of the login configured (the
        embedded broker's super user, or the SASL login an external cluster's environment file gives)."""
        return self.model_copy(update={"principal": principal, "sasl_username": None, "sasl_password": None})

    def as_principal(self, username: str, password: str) -> Settings:
        """The same platform, logged in as another principal (a department's own credentials)."""
        return self.model_copy(update={"sasl_username": username, "sasl_password": SecretStr(password)})

    def aiokafka_config(self) -> dict[str, object]:
        """Connection settings for aiokafka clients."""
        cfg = self.kafka_client_config()
        cfg["bootstrap_servers"] = self.bootstrap
        cfg.pop("ssl_cafile", None)
        if "SSL" in str(cfg["security_protocol"]):
            cfg["ssl_context"] = self.ssl_context()
        return cfg

    def kafka_client_config(self) -> dict[str, object]:
        """Connection settings for kafka-python clients (producer, consumer, admin)."""
        protocol, mechanism, username, password = self.client_auth()
        cfg: dict[str, object] = {"bootstrap_servers": self.bootstrap.split(","), "security_protocol": protocol}
        if mechanism:
            cfg.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
        if "SSL" in protocol and self.ssl_cafile:
            cfg["ssl_cafile"] = str(self.ssl_cafile)
        return cfg

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of aiokafka and Faust clients (SSL, SASL_SSL): the cluster's CA, else the system's."""
        if "SSL" not in self.client_auth()[0]:
            return None
        return ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)


def api_keys(settings: Settings) -> dict[str, str]:
    """Gateway API key -> partner name, from ``CITYBRAIN_GATEWAY_API_KEYS`` ("partner:key,...")."""
    if settings.gateway_api_keys is None or not settings.gateway_api_keys.get_secret_value().strip():
        return {}
    keys: dict[str, str] = {}
    for item in settings.gateway_api_keys.get_secret_value().split(","):
        partner, sep, key = item.strip().partition(":")
        if not sep or not partner or len(key) < 8:
            raise SettingsError(
                "CITYBRAIN_GATEWAY_API_KEYS must be comma-separated partner:key pairs with keys of at least 8 "
                f"characters; an entry for partner {partner or '?'!r} is not. Fix: e.g. "
                "CITYBRAIN_GATEWAY_API_KEYS=district-app:3f9c...,iot-gw:77ab...")
        keys[key] = partner
    return keys


def _reject_unknown_env(environ: dict[str, str]) -> None:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise SettingsError(
            f"Unknown setting(s) {', '.join(unknown)}. Valid settings are: "
            f"{', '.join(sorted(known))}. Fix: correct the name or unset it."
        )


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment, rejecting unknown CITYBRAIN_* variables."""
    env = dict(os.environ if environ is None else environ)
    _reject_unknown_env(env)
    try:
        if environ is None:
            return Settings()
        values = {
            k[len(ENV_PREFIX):].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)
        }
        return Settings(**values)
    except Exception as exc:  # pydantic.ValidationError, rendered for people
        raise SettingsError(f"Invalid CityBrain settings: {exc}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()
