"""The command line behaves the same everywhere: exit codes, --json, one name per option, generators, dev tools.

Walks the whole command tree (typer's click commands), so a new command that breaks a rule fails here; runs
a few commands on deliberately bad input with typer's CliRunner against a temporary state dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import yaml
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.cli.base import ExitCode, exit_code_for, plain_table
from citybrain.errors import InputError, ServiceError
from citybrain.settings import PROJECT_ROOT, get_settings

#: Commands that print no data, so need no --json: servers and workers run until stopped (their output is a
#: log), actions print one confirmation line, and two print what is JSON or a log already.
NO_DATA = {
    "gateway": "server", "ui": "server", "streams fusion": "worker", "supervise": "the supervisor's own loop",
    "lake bronze": "sink service", "lake silver": "sink service", "notify run": "notifier service",
    "notify alertmanager": "bridge service",
    "dev airflow service": "Airflow service", "dev airflow events": "bridge service",
    "broker up": "action", "broker down": "action", "broker fetch": "action", "broker reset": "action",
    "down": "action", "access rotate": "action", "airflow clean-db": "action",
    "accounts set": "action", "accounts remove": "action",
    "city export": "action: writes a pack", "deploy systemd": "action: writes unit files", "city generate": "action: writes a pack",
    "audit export": "action: writes a file", "consume": "prints JSON lines already", "logs": "prints the services' own log lines",
}

#: One concept, one visible name: the spellings on the right may only live on as hidden aliases.
SYNONYMS = {
    "--limit": {"--last", "--lines", "--max", "--count", "--head", "--tail", "--top"},
    "--exit-when-idle": {"--until-idle", "--idle", "--stop-when-idle", "--exit-idle", "--idle-exit"},
    "--json": {"--as-json", "--machine", "--format-json"},
    "--check": {"--write", "--verify", "--readme", "--no-readme"},
    "--dry-run": {"--plan", "--what-if", "--noop"},
}

#: Commands that moved under `citybrain dev`, by their old name, kept hidden for one release.
MOVED = {"bench": "dev bench", "simulate": "dev simulate", "evaluate": "dev evaluate",
         "quality suites": "dev quality suites", "contracts dispatch": "dev contracts dispatch",
         "contracts models": "dev contracts models", "airflow service": "dev airflow service",
         "airflow events": "dev airflow events", "city exports": "dev city exports"}


def _walk(command: TyperGroup | TyperCommand, path: tuple[str, ...] = (), hidden: bool = False
          ) -> Iterator[tuple[str, TyperCommand, bool]]:
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name), hidden or sub.hidden)
    else:
        yield " ".join(path), command, hidden


TREE = {path: (command, hidden) for path, command, hidden in _walk(typer.main.get_command(app))}


def _visible_options(command: TyperCommand) -> set[str]:
    return {o for p in command.params if isinstance(p, TyperOption) and not p.hidden for o in p.opts + p.secondary_opts}


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A runner on an empty state dir: nothing running, no broker, no lake."""
    for key in [k for k in os.environ if k.startswith("CITYBRAIN_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CITYBRAIN_STATE_DIR", str(tmp_path / "state"))
    # Ports nobody listens on, so a stray local platform does not answer for the empty one.
    monkeypatch.setenv("CITYBRAIN_BROKER_PORT", "39092")
    monkeypatch.setenv("CITYBRAIN_CONTROLLER_PORT", "39093")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_the_tree_is_walked_whole() -> None:
    """Guards the walk itself: operators' commands, dev tools and the hidden old names are all in it."""
    assert {"status", "produce", "contracts check", "dev bench", "dev quality suites", "bench", "quality suites"} <= set(TREE)


def test_every_command_that_prints_data_has_json() -> None:
    missing = [path for path, (command, _hidden) in TREE.items()
               if MOVED.get(path, path) not in NO_DATA and "--json" not in {o for p in command.params for o in p.opts}]
    assert not missing, f"add `json_option()` from citybrain.cli.base to: {', '.join(missing)}"
    assert set(NO_DATA) <= set(TREE), f"commands listed as printing no data that do not exist: {set(NO_DATA) - set(TREE)}"


def test_one_name_per_option_concept() -> None:
    """A concept's other spellings only as hidden aliases; one parameter name, one option name, everywhere."""
    for path, (command, _hidden) in TREE.items():
        used = _visible_options(command)
        for name, others in SYNONYMS.items():
            assert not used & others, f"`citybrain {path}` spells {name} as {used & others}; keep the old name hidden"
        for p in command.params:
            if isinstance(p, TyperOption) and p.hidden:
                assert p.help and p.help.startswith("Old name of"), f"`citybrain {path}` hides {p.opts} without saying why"
    spellings: dict[str, dict[tuple[str, ...], str]] = {}
    for path, (command, _hidden) in TREE.items():
        for p in command.params:
            if isinstance(p, TyperOption) and not p.hidden:
                spellings.setdefault(str(p.name), {})[tuple(sorted(p.opts))] = path
    mixed = {name: by for name, by in spellings.items() if len(by) > 1}
    assert not mixed, f"one parameter, several option names: {mixed}"


def test_dev_commands_are_hidden_from_help_and_reachable_under_dev(cli: CliRunner) -> None:
    first = cli.invoke(app, ["--help"])
    assert first.exit_code == 0
    panel = first.stdout.split("Commands", 1)[1]
    listed = set(re.findall(r"^│ (\S+)\s{2,}", panel, flags=re.M))
    assert {"status", "produce", "contracts", "broker"} <= listed, listed
    assert not {"dev", "quality", "bench", "simulate", "evaluate"} & listed and "citybrain dev --help" in first.stdout
    for old, new in MOVED.items():
        assert new in TREE and TREE[new][1], f"`citybrain {new}` missing, or shown on the first screen"
        assert old in TREE and TREE[old][1], f"`citybrain {old}` must stay as a hidden alias for one release"
    assert "bench" in cli.invoke(app, ["dev", "--help"]).stdout


def test_an_old_name_still_works_and_names_the_new_one(cli: CliRunner, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(PROJECT_ROOT / "schemas", schemas)
    monkeypatch.setenv("CITYBRAIN_SCHEMAS_DIR", str(schemas))
    result = cli.invoke(app, ["contracts", "dispatch", "--check"])
    assert result.exit_code == ExitCode.OK, result.output
    assert "`citybrain dev contracts dispatch`" in result.stderr


def test_a_generator_writes_by_default_and_check_fails_when_out_of_date(cli: CliRunner, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(PROJECT_ROOT / "schemas", schemas)
    monkeypatch.setenv("CITYBRAIN_SCHEMAS_DIR", str(schemas))
    stale = next(schemas.glob("dispatch.*.work_order.v1.yaml"))
    stale.write_text(stale.read_text() + "# edited by hand\n")
    checked = cli.invoke(app, ["dev", "contracts", "dispatch", "--check"])
    assert checked.exit_code == ExitCode.FAILURE and "dev contracts dispatch" in checked.stderr
    assert stale.read_text().endswith("# edited by hand\n"), "--check must not write"
    written = cli.invoke(app, ["dev", "contracts", "dispatch", "--json"])
    assert written.exit_code == ExitCode.OK, written.output
    assert not stale.read_text().endswith("# edited by hand\n")
    assert cli.invoke(app, ["dev", "contracts", "dispatch", "--check"]).exit_code == ExitCode.OK


def test_checks_exit_1_on_a_problem_and_2_on_bad_input(cli: CliRunner, tmp_path: Path) -> None:
    empty_pack = tmp_path / "pack"
    empty_pack.mkdir()
    assert cli.invoke(app, ["city", "check", str(empty_pack)]).exit_code == ExitCode.FAILURE
    subs = tmp_path / "subscriptions.yaml"
    subs.write_text(yaml.safe_dump({"version": 1, "subscriptions": [{
        "id": "desk", "principal": "dept-nobody", "topic": "dispatch.water.work_order.v1",
        "endpoint": "http://127.0.0.1:1/notify"}]}))
    refused = cli.invoke(app, ["notify", "check", "--file", str(subs)])
    assert refused.exit_code == ExitCode.FAILURE and "dept-nobody" in refused.stderr
    for args in (["contracts", "show", "raw.sensor.no_such_thing"], ["lake", "compact", "gold-plated"],
                 ["logs", "no-such-service"], ["dags", "trigger", "data_quality", "--conf", "[1]"],
                 ["notify", "check", "--file", str(tmp_path / "missing.yaml")], ["status", "--no-such-option"]):
        result = cli.invoke(app, args)
        assert result.exit_code == ExitCode.BAD_INPUT, (args, result.output)


def test_status_is_not_zero_with_nothing_running(cli: CliRunner) -> None:
    table = cli.invoke(app, ["status"])
    assert table.exit_code == ExitCode.FAILURE, table.output
    assert "down: broker" in table.stderr
    as_json = cli.invoke(app, ["status", "--json"])
    assert as_json.exit_code == ExitCode.FAILURE
    rows = json.loads(as_json.stdout)
    assert rows and not any(r["up"] or r["restarting"] for r in rows)
    assert cli.invoke(app, ["broker", "status"]).exit_code == ExitCode.FAILURE


def test_piped_output_is_plain_lines(cli: CliRunner) -> None:
    """Not a terminal: no box drawing, no colour codes, no wrapping at 80 columns; a table is tab-separated."""
    result = cli.invoke(app, ["contracts", "list"])
    assert result.exit_code == ExitCode.OK
    lines = result.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["topic", "version", "owner"]
    assert "\x1b[" not in result.stdout and "│" not in result.stdout and "┃" not in result.stdout
    shown = cli.invoke(app, ["contracts", "show", "raw.sensor.air_quality.v1"]).stdout.splitlines()
    assert max(len(line) for line in shown) > 80, "a long line must not be wrapped when piped"


def test_plain_table_strips_markup_and_keeps_title_and_rows() -> None:
    from rich.table import Table

    table = Table("a", "b", title="two rows")
    table.add_row("[red]x[/]", "one\ntwo")
    assert plain_table(table) == "two rows\na\tb\nx\tone, two"


@pytest.mark.parametrize("error, code", [(InputError("bad"), ExitCode.BAD_INPUT),
                                         (ServiceError("down"), ExitCode.SERVICE_UNAVAILABLE),
                                         (RuntimeError("else"), ExitCode.FAILURE)])
def test_an_error_exits_with_the_code_of_its_kind(error: Exception, code: ExitCode) -> None:
    assert exit_code_for(error) == code
