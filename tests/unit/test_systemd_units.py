"""`citybrain deploy systemd`: the units pass `systemd-analyze verify`, run what the supervisor runs, never as root.

`systemd-analyze verify` checks that each ExecStart= binary exists and is executable, so the units are written for
a deployment in a temporary folder whose venv holds a stub `bin/citybrain` (a shell script): the check is of the
units, not of an installation. That each ExecStart's arguments are ones the command line takes is checked against
the real typer app, as the tutorials' commands are (tests/unit/test_docs.py).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.cli.base import ExitCode
from citybrain.platform.supervisor import SERVICES
from citybrain.platform.systemd import (ALERTMANAGER_UNIT, BROKER_UNIT, SINK_TEMPLATE, TARGET, Deployment, unit_name,
                                       write)
from citybrain.settings import PROJECT_ROOT
from tests.unit.test_docs import resolve

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze (Debian's systemd) is not installed")


def deployment(tmp_path: Path, broker: bool = True, alertmanager_url: str | None = None) -> Deployment:
    """A deployment in tmp_path whose venv has an executable stub `citybrain`."""
    bin_dir = tmp_path / "opt" / ".venv" / "streams" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "citybrain").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "citybrain").chmod(0o755)
    (tmp_path / "state").mkdir()
    return Deployment(prefix=tmp_path / "opt", env_file=tmp_path / "citybrain.env", state_dir=tmp_path / "state",
                      broker=broker, alertmanager_url=alertmanager_url)


def units_in(folder: Path) -> dict[str, configparser.ConfigParser]:
    parsed = {}
    for path in sorted(folder.iterdir()):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign] - systemd keys are case-sensitive
        unit.read(path)
        parsed[path.name] = unit
    return parsed


def instances(folder: Path) -> list[Path]:
    """Every unit as systemd would load it: the sinks' template as its two instances."""
    return [folder / unit_name(s) for s in SERVICES] + [p for p in folder.iterdir() if "@" not in p.name
                                                        and p.name not in {unit_name(s) for s in SERVICES}]


def verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SYSTEMD_ANALYZE), "verify", *map(str, paths)], capture_output=True, text=True,
                          env={**os.environ, "SYSTEMD_LOG_COLOR": "0"}, timeout=60)


@needs_systemd
@pytest.mark.parametrize("broker", [True, False])
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path, broker: bool) -> None:
    d = deployment(tmp_path, broker)
    out = tmp_path / "units"
    write(d, out)
    run = verify(instances(out))
    ours = [line for line in (run.stdout + run.stderr).splitlines() if "citybrain" in line]
    assert run.returncode == 0 and not ours, run.stdout + run.stderr


@needs_systemd
def test_the_alertmanager_bridges_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    d = deployment(tmp_path, alertmanager_url="http://127.0.0.1:9093/am%20prefix")
    out = tmp_path / "units"
    write(d, out)
    run = verify(instances(out))
    ours = [line for line in (run.stdout + run.stderr).splitlines() if "citybrain" in line]
    assert run.returncode == 0 and not ours, run.stdout + run.stderr


def test_given_alertmanager_a_unit_runs_the_bridge_to_it_after_the_broker(tmp_path: Path) -> None:
    d = deployment(tmp_path, alertmanager_url="http://127.0.0.1:9093/am%20prefix")
    write(d, tmp_path / "units")
    units = units_in(tmp_path / "units")
    bridge = units[ALERTMANAGER_UNIT]
    start = bridge["Service"]["ExecStart"]
    # systemd reads %% as one percent sign: the command gets the address as given
    assert start == f"{d.citybrain} notify alertmanager --url http://127.0.0.1:9093/am%%20prefix"
    resolve(" ".join(["citybrain", *start.split()[1:]]).replace("%%", "%"))
    assert BROKER_UNIT in bridge["Unit"]["After"] and ALERTMANAGER_UNIT in units[TARGET]["Unit"]["Wants"].split()
    assert bridge["Service"]["User"] == "citybrain" and bridge["Service"]["ProtectSystem"] == "strict"
    write(deployment(tmp_path / "without"), tmp_path / "without" / "units")
    assert not (tmp_path / "without" / "units" / ALERTMANAGER_UNIT).exists()


@needs_systemd
def test_verify_refuses_units_whose_citybrain_is_not_installed(tmp_path: Path) -> None:
    """Guards the check above: it fails when the venv named in ExecStart= has no citybrain."""
    d = deployment(tmp_path)
    (d.citybrain).unlink()
    write(d, tmp_path / "units")
    run = verify(instances(tmp_path / "units"))
    assert run.returncode != 0 and "is not executable" in run.stderr


def test_every_supervised_service_has_a_unit_running_the_supervisors_command(tmp_path: Path) -> None:
    d = deployment(tmp_path)
    out = tmp_path / "units"
    write(d, out)
    units = units_in(out)
    wanted = units[TARGET]["Unit"]["Wants"].split()
    for service in SERVICES:
        name = unit_name(service)
        instance = name.split("@")[1].removesuffix(".service") if "@" in name else ""
        file = name if not instance else SINK_TEMPLATE
        assert file in units, f"`citybrain up` supervises {service.name}, and no unit runs it"
        start = units[file]["Service"]["ExecStart"].replace("%i", instance).split()
        assert start == [str(d.citybrain), *service.args], f"{name} does not run what the supervisor runs"
        assert name in wanted, f"{TARGET} does not start {name}"
    assert BROKER_UNIT in wanted and units[BROKER_UNIT]["Service"]["LimitNOFILE"] == "100000"


def test_every_exec_line_is_one_the_command_line_takes(tmp_path: Path) -> None:
    d = deployment(tmp_path)
    write(d, tmp_path / "units")
    lines = [(name, key, unit["Service"][key]) for name, unit in units_in(tmp_path / "units").items()
             if unit.has_section("Service") for key in ("ExecStart", "ExecStop") if key in unit["Service"]]
    assert len(lines) == len(SERVICES) - 1 + 2   # the sinks share a template; the broker starts and stops
    for name, key, line in lines:
        exe, *args = line.split()
        assert exe == str(d.citybrain), f"{name} {key} runs {exe}, not the deployment's citybrain"
        for instance in (["bronze", "silver"] if "%i" in line else [""]):
            resolve(" ".join(["citybrain", *args]).replace("%i", instance))


def test_no_unit_runs_as_root_and_each_is_hardened(tmp_path: Path) -> None:
    d = deployment(tmp_path)
    write(d, tmp_path / "units")
    for name, unit in units_in(tmp_path / "units").items():
        if not unit.has_section("Service"):
            continue
        s = unit["Service"]
        assert s.get("User") == "citybrain" and s.get("Group") == "citybrain", name
        assert (s["NoNewPrivileges"], s["ProtectSystem"], s["ProtectHome"], s["PrivateTmp"]) == \
            ("yes", "strict", "yes", "yes"), name
        assert s["ReadWritePaths"] == str(d.state_dir) and s["Restart"] == "on-failure", name
        assert s["EnvironmentFile"] == str(d.env_file), name


def test_a_city_with_its_own_kafka_has_no_broker_unit(tmp_path: Path) -> None:
    write(deployment(tmp_path, broker=False), tmp_path / "units")
    assert not (tmp_path / "units" / BROKER_UNIT).exists()
    assert not [p.name for p in (tmp_path / "units").iterdir() if BROKER_UNIT in p.read_text()]


def test_airflow_services_stop_before_the_api_server_and_it_before_postgresql(tmp_path: Path) -> None:
    """systemd stops in reverse start order: the supervisor's stop tiers (everything, api-server, database)."""
    write(deployment(tmp_path), tmp_path / "units")
    units = units_in(tmp_path / "units")
    after = {name: u["Unit"].get("After", "").split() for name, u in units.items()}
    assert "citybrain-airflow-db.service" in after["citybrain-airflow-api.service"]
    for name in ("scheduler", "dag-processor", "triggerer", "events"):
        assert "citybrain-airflow-api.service" in after[f"citybrain-airflow-{name}.service"], name


@pytest.mark.parametrize("args, complaint", [
    (["--user", "root"], "never root"),
    (["--group", "root"], "never root"),
    (["--user", "0"], "plain name"),
    (["--prefix", "opt/citybrain"], "absolute paths"),
    (["--alertmanager-url", "127.0.0.1:9093"], "Alertmanager's base address"),
    (["--alertmanager-url", "http://am:9093 --retry-max 1"], "no spaces"),
])
def test_a_bad_option_is_refused_with_the_fix(tmp_path: Path, args: list[str], complaint: str) -> None:
    result = CliRunner().invoke(app, ["deploy", "systemd", "--out", str(tmp_path / "units"), *args])
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert complaint in " ".join(result.output.split()) and not (tmp_path / "units").exists()


def test_an_environment_file_naming_another_state_folder_is_refused(tmp_path: Path) -> None:
    """The environment file overrides the units' CITYBRAIN_STATE_DIR; the services could not write there."""
    env = tmp_path / "citybrain.env"
    shutil.copy(PROJECT_ROOT / "infra" / "cluster" / "citybrain.env", env)   # names /var/lib/citybrain, the default
    cli = CliRunner()
    assert cli.invoke(app, ["deploy", "systemd", "--out", str(tmp_path / "ok"), "--env-file", str(env)]).exit_code == 0
    env.write_text(env.read_text() + "CITYBRAIN_STATE_DIR=/srv/citybrain\n")
    result = cli.invoke(app, ["deploy", "systemd", "--out", str(tmp_path / "units"), "--env-file", str(env)])
    assert result.exit_code == ExitCode.BAD_INPUT and "--state-dir /srv/citybrain" in " ".join(result.output.split())


def test_check_fails_when_a_unit_was_edited(tmp_path: Path) -> None:
    cli, out = CliRunner(), tmp_path / "units"
    assert cli.invoke(app, ["deploy", "systemd", "--out", str(out)]).exit_code == ExitCode.OK
    assert cli.invoke(app, ["deploy", "systemd", "--out", str(out), "--check"]).exit_code == ExitCode.OK
    (out / "citybrain-fusion.service").write_text("# edited by hand\n")
    checked = cli.invoke(app, ["deploy", "systemd", "--out", str(out), "--check"])
    assert checked.exit_code == ExitCode.FAILURE and "citybrain-fusion.service" in checked.output
    assert (out / "citybrain-fusion.service").read_text() == "# edited by hand\n", "--check must not write"
