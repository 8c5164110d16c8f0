"""`citybrain broker ...`: the embedded Apache Kafka broker (KRaft, 127.0.0.1)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from citybrain.cli.base import ExitCode, audit, current_settings, err, fail, fail_with, group, json_option, out

broker_app = group("broker", "The embedded Apache Kafka broker (KRaft, 127.0.0.1).")


def _broker(nodes: int | None = None):  # type: ignore[no-untyped-def]
    from citybrain.broker.local import BrokerError, LocalBroker

    try:
        return LocalBroker(current_settings(), nodes=nodes)
    except BrokerError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None


@broker_app.command("up")
def broker_up(nodes: Optional[int] = typer.Option(
        None, "--nodes", min=1, max=5, help="Form a local cluster of this many combined broker/controllers "
        "(3: replication factor 3, min.insync.replicas 2); default: as formed, else one.")) -> None:
    """Fetch (once), format (once) and start the broker; wait until it serves requests.

    Exit 4 when it does not."""
    from citybrain.broker.local import BrokerError

    broker = _broker(nodes)
    try:
        with err.status("starting Apache Kafka (first run fetches its jars with Maven)..."):
            status = broker.up()
    except BrokerError as exc:
        raise fail_with(exc) from None
    out.print(status.describe(), highlight=False)


@broker_app.command("down")
def broker_down() -> None:
    """Stop the broker cleanly. Its data stays on disk."""
    if _broker().status().running:   # recorded while the audit topic can still take it
        audit("admin_command", "broker down")
    stopped = _broker().down()
    out.print("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
def broker_status(as_json: bool = json_option()) -> None:
    """Is the broker running, where, and where is its data.

    Exit 1 when it is not running."""
    status = _broker().status()
    if as_json:
        out.print_json(json.dumps({
            "running": status.running, "pid": status.pid, "bootstrap": status.bootstrap,
            "version": status.version, "data_dir": str(status.data_dir), "log_file": str(status.log_file),
        }))
    else:
        out.print(status.describe(), highlight=False)
    raise typer.Exit(ExitCode.OK if status.running else ExitCode.FAILURE)


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Fetch the broker's jars from Maven Central into the cache (done by `up` when needed).

    Exit 4 when they cannot be fetched."""
    from citybrain.broker.local import BrokerError

    try:
        lib = _broker().fetch()
    except BrokerError as exc:
        raise fail_with(exc) from None
    out.print(f"Kafka jars ready in {lib}", highlight=False)


@broker_app.command("reset")
def broker_reset(yes: bool = typer.Option(False, "--yes", help="Confirm deleting every topic and record.")) -> None:
    """Stop the broker and delete its data. Jars stay cached; the lake stays, and its sinks refuse it from now on
    (it is ahead of the topics made anew): move it aside, or `make clean`, before they run again."""
    if not yes:
        raise fail("this deletes every topic and record of the embedded broker; add --yes to confirm.", ExitCode.BAD_INPUT)
    _broker().reset()
    out.print("broker data deleted")
    lake = current_settings().lake_dir
    if lake.exists():
        err.print(f"note: the lake in {lake} holds the deleted topics' records; the lake sinks refuse a lake ahead of its "
                  "topics, so move it aside (or `make clean`) before they run again", highlight=False)
