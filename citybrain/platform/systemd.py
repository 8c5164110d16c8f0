"""systemd units for one host: each service `citybrain up` supervises, as a unit of its own.

``citybrain deploy systemd`` writes them. Each unit runs the very command the supervisor runs
(:data:`citybrain.platform.supervisor.SERVICES`), with the deployment's venv, as a non-root user,
with the settings from an environment file; systemd restarts it on failure as the supervisor would and
stops it as the supervisor does (SIGTERM to all its processes, SIGKILL after ``STOP_TIMEOUT_S``).
The lake sinks are one template (``citybrain-sink@.service``, instances ``bronze`` and ``silver``);
``citybrain.target`` groups them all. The embedded broker is ``citybrain-broker.service``
(``citybrain broker up`` forks the broker and returns once it serves requests); a city with its own
Kafka cluster leaves it out (``broker=False``). Ordering repeats the supervisor's stop tiers: the
Airflow services start after the api-server, which starts after PostgreSQL, so they stop before it.
Given Alertmanager's address, a unit of its own runs the alert topics' bridge to it
(``citybrain-notify-alertmanager.service``: ``citybrain notify alertmanager --url ...``); `citybrain up`
does not run it, as a developer's checkout has no Alertmanager.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from citybrain.errors import InputError
from citybrain.platform.supervisor import SERVICES, STOP_TIMEOUT_S, Service

TARGET = "citybrain.target"
BROKER_UNIT = "citybrain-broker.service"
SINK_TEMPLATE = "citybrain-sink@.service"
#: Open files for the broker: Kafka keeps every log segment and connection open (its docs ask for 100,000+).
BROKER_NOFILE = 100_000
RESTART_SEC = 5
#: `citybrain broker down` waits 60 s for a controlled shutdown before it kills the broker.
BROKER_STOP_S = 90
#: Alertmanager's address as an ExecStart= argument takes it: no spaces, quotes or backslashes (``%`` is escaped).
_URL = re.compile(r"^https?://[^\s'\"\\]+$")
#: The unit of the alert topics' bridge to Alertmanager (``citybrain notify alertmanager``), when asked for.
ALERTMANAGER_UNIT = "citybrain-notify-alertmanager.service"
#: A POSIX user name as systemd takes it (``User=``), and not a number.
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")


class UnitError(InputError):
    """An option the units cannot be written with; the message names the value, the rule and the fix."""


@dataclass(frozen=True)
class Deployment:
    """Where CityBrain lives on the host and who runs it."""

    user: str = "citybrain"
    group: str = "citybrain"
    prefix: Path = Path("/opt/citybrain")          # the installed checkout: schemas, dags, infra, .venv/airflow
    venv: Path | None = None                       # the streams venv; default <prefix>/.venv/streams
    env_file: Path = Path("/etc/citybrain/citybrain.env")
    state_dir: Path = Path("/var/lib/citybrain")   # the only folder the services write
    broker: bool = True                            # run the embedded broker (False: the city's own Kafka)
    alertmanager_url: str | None = None            # bridge the alert topics to this Alertmanager (None: no bridge)

    @property
    def citybrain(self) -> Path:
        return (self.venv or self.prefix / ".venv" / "streams") / "bin" / "citybrain"

    def check(self) -> None:
        """Refuse what a unit must not say: root, a user name systemd rejects, relative paths."""
        for what, name in (("--user", self.user), ("--group", self.group)):
            if name == "root" or not _USER_NAME.match(name):
                raise UnitError(f"{what} {name!r}: the services run as an unprivileged system account with a plain "
                                "name (lower-case letters, digits, '_' or '-'), never root. Fix: "
                                f"`useradd --system --home-dir {self.state_dir} citybrain` and {what} citybrain.")
        for what, path in (("--prefix", self.prefix), ("--venv", self.venv), ("--env-file", self.env_file),
                           ("--state-dir", self.state_dir)):
            if path is not None and not path.is_absolute():
                raise UnitError(f"{what} {str(path)!r}: systemd needs absolute paths. Fix: give the full path.")
        url = self.alertmanager_url
        if url is not None and (not _URL.match(url) or "?" in url or "#" in url):
            raise UnitError(f"--alertmanager-url {url!r}: Alertmanager's base address, http:// or https:// with no "
                            "spaces, quotes, query or fragment. Fix: e.g. --alertmanager-url http://127.0.0.1:9093.")
        named = _state_dir_in(self.env_file)
        if named is not None and named != self.state_dir:
            raise UnitError(f"{self.env_file} sets CITYBRAIN_STATE_DIR={named}, and the units may write only to "
                            f"--state-dir {self.state_dir} (the environment file overrides the units' own setting). "
                            f"Fix: --state-dir {named}, or change the environment file.")


def _state_dir_in(env_file: Path) -> Path | None:
    """The state folder an existing environment file names (systemd's KEY=VALUE lines), or None."""
    try:
        lines = env_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    values = [line.split("=", 1)[1].strip().strip("'\"") for line in lines
              if line.strip().startswith("CITYBRAIN_STATE_DIR=")]
    return Path(values[-1]) if values else None


def unit_name(service: Service) -> str:
    """The unit that runs a supervised service: ``citybrain-<name>.service``, the sinks as template instances."""
    if service.name.startswith("lake-"):
        return f"citybrain-sink@{service.name.removeprefix('lake-')}.service"
    return f"citybrain-{service.name}.service"


def _after(service: Service, broker: bool) -> list[str]:
    """What a service starts after (and wants): the broker for Kafka clients, PostgreSQL then the api-server
    for Airflow's services."""
    if service.name == "airflow-db":
        return []
    if service.name == "airflow-api":
        return ["citybrain-airflow-db.service"]
    if service.airflow and service.name != "airflow-events":
        return ["citybrain-airflow-db.service", "citybrain-airflow-api.service"]
    needs = [BROKER_UNIT] if broker else []
    return needs + (["citybrain-airflow-api.service"] if service.name == "airflow-events" else [])


def _unit(description: str, after: list[str], service_lines: list[str], d: Deployment,
          stop_timeout_s: float = STOP_TIMEOUT_S) -> str:
    ordering = [f"After=network-online.target {' '.join(after)}".rstrip(), "Wants=network-online.target"]
    if after:
        ordering.append(f"Wants={' '.join(after)}")
    return "\n".join([
        "# Written by `citybrain deploy systemd`; write it again rather than edit it.",
        "[Unit]", f"Description=CityBrain {description}", "PartOf=" + TARGET, *ordering, "",
        "[Service]", f"User={d.user}", f"Group={d.group}", f"EnvironmentFile={d.env_file}",
        f"Environment=CITYBRAIN_STATE_DIR={d.state_dir}", f"Environment=CITYBRAIN_CACHE_DIR={d.state_dir / 'cache'}",
        f"WorkingDirectory={d.state_dir}", *service_lines,
        "Restart=on-failure", f"RestartSec={RESTART_SEC}", f"TimeoutStopSec={stop_timeout_s:.0f}",
        "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
        f"ReadWritePaths={d.state_dir}", "",
        "[Install]", f"WantedBy={TARGET}", "",
    ])


def render(d: Deployment) -> dict[str, str]:
    """Every unit file (name to text): one per supervised service, the broker's when local, and the target."""
    d.check()
    units: dict[str, str] = {}
    for service in SERVICES:
        name = unit_name(service)
        args = service.args
        if "@" in name:                      # the sinks' template: `lake %i`
            name, args = SINK_TEMPLATE, (*args[:-1], "%i")
            what = "lake sink: %i topics to Parquet"
        else:
            what = service.what
        units[name] = _unit(what, _after(service, d.broker),
                            [f"ExecStart={d.citybrain} {' '.join(args)}"], d)
    if d.broker:
        units[BROKER_UNIT] = _unit("embedded Apache Kafka broker", [], [
            "Type=forking", f"PIDFile={d.state_dir / 'kafka' / 'broker.pid'}",
            f"ExecStart={d.citybrain} broker up", f"ExecStop={d.citybrain} broker down",
            "TimeoutStartSec=300", f"LimitNOFILE={BROKER_NOFILE}"], d, stop_timeout_s=BROKER_STOP_S)
    if d.alertmanager_url is not None:   # systemd reads % as a specifier: %% is a percent sign
        units[ALERTMANAGER_UNIT] = _unit("the alert topics to Alertmanager, one stream with Prometheus' alerts",
                                         [BROKER_UNIT] if d.broker else [],
                                         [f"ExecStart={d.citybrain} notify alertmanager --url "
                                          f"{d.alertmanager_url.replace('%', '%%')}"], d)
    wanted = [unit_name(s) for s in SERVICES] + ([BROKER_UNIT] if d.broker else []) + \
        ([ALERTMANAGER_UNIT] if d.alertmanager_url is not None else [])
    units[TARGET] = "\n".join([
        "# Written by `citybrain deploy systemd`; write it again rather than edit it.",
        "[Unit]", "Description=CityBrain: every service of the platform on this host",
        f"Wants={' '.join(wanted)}", "", "[Install]", "WantedBy=multi-user.target", ""])
    return units


def write(d: Deployment, out: Path) -> list[Path]:
    """Write the units into ``out`` (created); the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(render(d).items()):
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written
