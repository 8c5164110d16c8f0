"""`citybrain notify ...`: NGSI-LD notifications out to department systems (``infra/subscriptions.yaml``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from citybrain.cli.base import (ExitCode, current_contracts, current_settings, fail, fail_with, group, idle_option,
                                json_option, old_option, out, renamed)

notify_app = group("notify", "NGSI-LD notifications out: department systems sent their topics (infra/subscriptions.yaml).")

FILE_OPTION = typer.Option(None, "--file", exists=True, dir_okay=False,
                           help="The subscriptions file (default: infra/subscriptions.yaml).")


def _subscriptions(path: Optional[Path], code: ExitCode = ExitCode.BAD_INPUT):  # type: ignore[no-untyped-def]
    """The subscriptions, or exit with ``code`` naming what is wrong with them."""
    from citybrain.access.grants import ACCESS_FILE, AccessError, load
    from citybrain.notify.notifier import SUBSCRIPTIONS_FILE, SubscriptionError, load_subscriptions

    contracts = current_contracts()
    try:
        return load_subscriptions(path or SUBSCRIPTIONS_FILE, contracts, load(ACCESS_FILE, contracts))
    except (AccessError, SubscriptionError) as exc:
        raise fail(str(exc), code) from None


@notify_app.command("check")
def check_cmd(path: Optional[Path] = FILE_OPTION, as_json: bool = json_option("The valid subscriptions as JSON.")) -> None:
    """Validate the subscriptions: principals, their grants on the topics, endpoints.

    Exit 1 on a problem."""
    subs = _subscriptions(path, ExitCode.FAILURE)
    if as_json:
        out.print_json(json.dumps([{"id": s.id, "principal": s.principal, "topic": s.topic, "endpoint": s.endpoint,
                                    "accept": s.accept, "format": s.format} for s in subs], ensure_ascii=False))
        return
    table = Table("subscription", "principal", "topic", "endpoint", "accept", "format")
    for s in subs:
        table.add_row(s.id, s.principal, s.topic, s.endpoint, s.accept, s.format)
    out.print(table)
    out.print(f"[green]✓[/] {len(subs)} subscription(s) valid")


@notify_app.command("run")
def run_cmd(path: Optional[Path] = FILE_OPTION,
            exit_when_idle: Optional[float] = idle_option("Stop once every subscription has been caught up and quiet "
                                                          "for this many seconds."),
            until_idle: Optional[float] = old_option("--until-idle", "--exit-when-idle"),
            retry_base: float = typer.Option(0.5, "--retry-base", help="First retry backoff in seconds (doubles).")) -> None:
    """Send each record of every subscription's topic to its endpoint as an NGSI-LD Notification."""
    import signal

    from citybrain.notify.notifier import Notifier, SubscriptionError, passwords_for

    settings, subs = current_settings(), _subscriptions(path)
    try:
        passwords = passwords_for(settings, subs)
    except SubscriptionError as exc:
        raise fail_with(exc) from None
    if not subs:
        out.print("no subscriptions in the file: nothing to send", highlight=False)
    idle_exit_s = renamed(exit_when_idle, until_idle, "--until-idle", "--exit-when-idle")
    notifier = Notifier(settings, current_contracts(), subs, passwords, retry_base_s=retry_base)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, notifier.stopping.set)
        await notifier.run(idle_exit_s=idle_exit_s)

    try:
        asyncio.run(main())
    except Exception as exc:   # noqa: BLE001 - a clear line for the supervisor's log, then exit 1
        raise fail(f"the notifier stopped: {type(exc).__name__}: {exc}. Nothing undelivered was committed: "
                   "it is sent when the notifier runs again.") from None
    table = Table("subscription", "delivered", "retries", "dead-lettered", "reasons", "failing")
    for sub in subs:
        st = notifier.state[sub.id]
        table.add_row(sub.id, str(st.delivered), str(st.retries), str(st.dead_lettered),
                      ", ".join(f"{k} {v}" for k, v in sorted(st.reasons.items())) or "-", "yes" if st.failing else "no")
    out.print(table)
