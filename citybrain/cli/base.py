"""What every command shares: the app, the consoles, exit codes, failing with a fix, options, and loaders.

Command modules (``command_<group>.py``) import from here and register on :data:`app` (operators'
commands) or :data:`dev_app` (developer tools, ``citybrain dev ...``, hidden from the first screen);
``citybrain/cli/__init__.py`` imports them all. Nothing here imports a command module.

Every command follows the same rules, and ``tests/unit/test_cli.py`` checks them over the whole tree:

- it exits with an :class:`ExitCode`; an uncaught :class:`~citybrain.errors.CityBrainError` is
  printed as an error and exits with the code of its kind (:func:`exit_code_for`);
- a command that prints data has ``--json``;
- one name per option: ``--json``, ``--limit``/``-n``, ``--exit-when-idle``, ``--dry-run``, ``--check``;
- a generator writes by default; ``--check`` verifies without writing and exits 1 when out of date;
- when stdout is not a terminal, output is plain lines: no colour, no wrapping, tables as tab-separated rows.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from citybrain.errors import CityBrainError, ExitCode, exit_code_for  # noqa: F401 - ExitCode: what command modules exit with
from citybrain.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:  # pragma: no cover
    from citybrain.contracts.model import Contract
    from citybrain.ingest.producer import ProduceSummary

F = TypeVar("F", bound=Callable[..., Any])


class PlainWhenPiped(Console):
    """A console that prints plain lines when its output is not a terminal.

    On a terminal: rich as usual. Piped or redirected: no colour, no wrapping at 80 columns, and a
    table becomes its title, then its header and rows as tab-separated lines, so ``grep``, ``cut``
    and ``awk`` work on what a person reads (``--json`` is the machine-readable form).
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: A003 - rich's own name
        if not self.is_terminal:
            kwargs.setdefault("soft_wrap", True)
        if self.is_terminal or not any(isinstance(o, Table) for o in objects):
            super().print(*objects, **kwargs)
            return
        for o in objects:
            if isinstance(o, Table):
                self.file.write(plain_table(o) + "\n")   # as is: rich would expand the tabs to spaces
            else:
                super().print(o, **kwargs)


def _plain_cell(cell: object) -> str:
    text = cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain
    return text.replace("\t", " ").replace("\n", ", ")


def plain_table(table: Table) -> str:
    """A table as plain lines: its title, its header, then one tab-separated line per row."""
    lines = [_plain_cell(table.title)] if table.title else []
    if table.show_header:
        lines.append("\t".join(_plain_cell(c.header) for c in table.columns))
    lines += ["\t".join(_plain_cell(cell) for cell in row) for row in zip(*(c.cells for c in table.columns))]
    return "\n".join(lines)


class CommandTree(TyperGroup):
    """The root group: an uncaught CityBrainError is an error line and its kind's exit code, not a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CityBrainError as exc:
            raise fail(str(exc), exit_code_for(exc)) from None


app = typer.Typer(cls=CommandTree, help="CityBrain: the city-brain data platform.", no_args_is_help=True,
                  epilog="Exit codes: 0 ok, 1 a failure found, 2 bad input, 3 partly accepted (records dead-lettered), "
                         "4 a service unavailable. Developer tools (benchmark, simulator, generators, ...): "
                         "citybrain dev --help")

out = PlainWhenPiped()
err = PlainWhenPiped(stderr=True)


def fail(message: str, code: ExitCode = ExitCode.FAILURE) -> typer.Exit:
    """Print ``message`` as an error and return the exit to raise (``raise fail(...)``)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def fail_with(exc: BaseException) -> typer.Exit:
    """Print an error and return the exit of its kind (``raise fail_with(exc) from None``)."""
    return fail(str(exc), exit_code_for(exc))


def current_settings() -> Settings:
    """The process's settings, or exit 2 naming the bad CITYBRAIN_* variable."""
    try:
        return get_settings()
    except SettingsError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None


def audit(action: str, target: str, outcome: str = "ok", actor: str | None = None, **details: Any) -> None:
    """Put what a command did on the command line's audit trail (``audit.trail.event.v1``, trail ``cli``);
    the actor is ``actor`` when a command names one, else the login name."""
    import getpass

    from citybrain.ingest.audit import service_trail

    try:
        who = actor or getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        who = "unknown"
    service_trail(current_settings(), "cli").record(action, who, target, outcome, **details)


def current_contracts() -> dict[str, Contract]:
    """Every contract the platform runs on (the schemas folder's and the imported city's own departments'), by
    topic; exit 2 on a broken one."""
    from citybrain.contracts.model import ContractError, load_platform

    try:
        return load_platform(current_settings())
    except ContractError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None


def print_summary(summary: ProduceSummary) -> None:
    """One produce or load run: counts, rate, and the first dead-lettered records with rule and fix."""
    from citybrain.ingest.producer import DLQ_TOPIC

    rate = f" in {summary.elapsed_s:.2f}s ({summary.read / summary.elapsed_s:,.0f} records/s)" if summary.elapsed_s else ""
    out.print(f"{summary.topic}: read {summary.read}, accepted {summary.accepted}, "
              f"dead-lettered {summary.dead_lettered} to {DLQ_TOPIC}{rate}", highlight=False)
    if summary.rejections:
        table = Table("source", "rule", "field", "problem", "fix", title="dead-lettered records (first 20)")
        for source, r in summary.rejections:
            table.add_row(source, r.rule, r.field, r.message, r.fix)
        out.print(table)


def group(name: str, help: str, parent: typer.Typer | None = None, hidden: bool = False) -> typer.Typer:  # noqa: A002
    """A command group (``citybrain <name> ...``, or under ``parent``) registered on the app."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    (parent or app).add_typer(sub, name=name, hidden=hidden)
    return sub


dev_app = group("dev", "Developer tools: benchmark, simulator, detection scores, generated contracts and quality "
                       "suites, sample exports, the live Airflow's services.", hidden=True)


def moved(old_group: typer.Typer, name: str, old: str, new: str) -> Callable[[F], F]:
    """Keep a command that moved reachable by its old name for one release: hidden, with one line on stderr.

    ``@moved(app, "bench", "citybrain bench", "citybrain dev bench")`` under ``@dev_app.command("bench")``
    registers the same function as ``citybrain bench`` too.
    """
    def register(func: F) -> F:
        @functools.wraps(func)
        def alias(*args: Any, **kwargs: Any) -> Any:
            err.print(f"note: `{old}` is now `{new}`; the old name goes in the next release.", highlight=False)
            return func(*args, **kwargs)

        old_group.command(name, hidden=True)(alias)
        return func
    return register


# -- options every command names the same way --------------------------------------------------------------

def json_option(help: str = "Machine-readable JSON on stdout.") -> Any:  # noqa: A002 - typer's own word
    """``--json``: the command's data as JSON on stdout (progress and notes stay on stderr)."""
    return typer.Option(False, "--json", help=help)


def limit_option(default: int, help: str, min: int = 0, max: Optional[int] = None) -> Any:  # noqa: A002
    """``--limit``/``-n``: at most this many items (records, rows, runs, log lines, audit entries)."""
    return typer.Option(default, "--limit", "-n", min=min, max=max, help=help)


def idle_option(help: str = "Stop after this many seconds without anything new.") -> Any:  # noqa: A002
    """``--exit-when-idle``: a long-running command stops once it has been idle this long."""
    return typer.Option(None, "--exit-when-idle", min=0, help=help)


def check_option() -> Any:
    """``--check``: a generator verifies the files without writing them, and exits 1 when they are out of date."""
    return typer.Option(False, "--check", help="Verify the files without writing them; exit 1 when out of date.")


def old_option(name: str, new: str, is_flag: bool = False) -> Any:
    """A hidden option kept for one release under its old name; :func:`renamed` says the new one."""
    if is_flag:
        return typer.Option(False, name, hidden=True, help=f"Old name of {new}.")
    return typer.Option(None, name, hidden=True, help=f"Old name of {new}.")


def say_renamed(old: str, new: str) -> None:
    """One line on stderr: an old option was used, and what to use instead."""
    err.print(f"note: {old} is now {new}; the old name goes in the next release.", highlight=False)


def renamed(value: Any, old_value: Optional[Any], old: str, new: str) -> Any:
    """The option's value, or the old spelling's when given (with one line on stderr naming the new one)."""
    if old_value is None:
        return value
    say_renamed(old, new)
    return old_value


def service_name(argv: list[str]) -> str:
    """The service a command line runs, as the supervisor and ``citybrain status`` name it (``notify run`` is
    ``notify``), else ``citybrain`` and its command words: the ``service`` of its JSON log lines."""
    from citybrain.platform.supervisor import SERVICES

    words = tuple(a for a in argv if not a.startswith("-"))
    for service in SERVICES:
        if words[:len(service.args)] == service.args:
            return service.name
    return " ".join(("citybrain", *words[:2]))


def configure_logging(level: int, force: bool = False) -> None:
    """Log at ``level`` in the format ``CITYBRAIN_LOG_FORMAT`` asks for (plain text when the settings cannot be
    read: the command reports that itself), as the service this command line runs."""
    import sys

    from citybrain.logs import configure

    try:
        fmt = get_settings().log_format
    except SettingsError:
        fmt = "text"
    configure(service_name(sys.argv[1:]), level, fmt, force=force)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress and details.")) -> None:
    configure_logging(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        # kafka-python logs retried metadata and shutdown hiccups at ERROR; real failures raise.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        # aiokafka logs a refused topic at ERROR before raising TopicAuthorizationFailedError.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
