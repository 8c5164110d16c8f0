"""What every command shares: the app, the consoles, exit codes, failing with a fix, and loaders.

Command modules (``command_<group>.py``) import from here and register on :data:`app`;
``citybrain/cli/__init__.py`` imports them all. Nothing here imports a command module.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from citybrain.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:  # pragma: no cover
    from citybrain.contracts.model import Contract
    from citybrain.ingest.producer import ProduceSummary

app = typer.Typer(help="CityBrain: the city-brain data platform.", no_args_is_help=True, add_completion=False)

out = Console()
err = Console(stderr=True)

#: 0 done; 1 failed (a service, a check); 2 bad usage or input, nothing done; 3 done, some records dead-lettered.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEAD_LETTERED = 0, 1, 2, 3


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``message`` as an error and return the exit to raise (``raise fail(...)``)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def current_settings() -> Settings:
    """The process's settings, or exit 2 naming the bad CITYBRAIN_* variable."""
    try:
        return get_settings()
    except SettingsError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def current_contracts() -> dict[str, Contract]:
    """Every contract in the settings' schemas folder, by topic; exit 2 on a broken one."""
    from citybrain.contracts.model import ContractError, load_all

    try:
        return load_all(current_settings().schemas_dir)
    except ContractError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


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


def group(name: str, help: str) -> typer.Typer:  # noqa: A002 - typer's own word
    """A command group (``citybrain <name> ...``) registered on the app."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress and details.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # kafka-python logs retried metadata and shutdown hiccups at ERROR; real failures raise.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        # aiokafka logs a refused topic at ERROR before raising TopicAuthorizationFailedError.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
