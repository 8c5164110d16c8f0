"""`citybrain notify ...`: NGSI-LD notifications out to department systems (``infra/subscriptions.yaml``), and the
platform's alert records out to Alertmanager."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from citybrain.cli.base import (ExitCode, current_contracts, current_settings, fail, fail_with, group, idle_option,
                                json_option, old_option, out, renamed)

notify_app = group("notify", "NGSI-LD notifications out: department systems sent their topics "
                             "(subscriptions.yaml); the alert topics to Alertmanager.")

FILE_OPTION = typer.Option(None, "--file", exists=True, dir_okay=False,
                           help="The subscriptions file (default: CITYBRAIN_CONFIG_DIR's subscriptions.yaml, else the template).")


def _subscriptions(path: Optional[Path], code: ExitCode = ExitCode.BAD_INPUT):  # type: ignore[no-untyped-def]
    """The subscriptions, or exit with ``code`` naming what is wrong with them."""
    from citybrain.access.grants import AccessError, load
    from citybrain.notify.subscriptions import SubscriptionError, load_subscriptions

    settings, contracts = current_settings(), current_contracts()
    try:
        return load_subscriptions(path or settings.subscriptions_file, contracts, load(settings.access_file, contracts))
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
            retry_base: float = typer.Option(0.5, "--retry-base", help="First retry backoff in seconds (doubles)."),
            pause_max: float = typer.Option(60.0, "--pause-max", min=0.01,
                                            help="Longest wait in seconds between tries of a paused subscription's "
                                                 "endpoint.")) -> None:
    """Send each record of every subscription's topic to its endpoint as an NGSI-LD Notification.

    A record the endpoint does not take pauses its subscription until the endpoint takes it.

    Only a record refused for good (a 4xx but 408, 429) or that cannot be read is dead-lettered."""
    import signal

    from citybrain import metrics
    from citybrain.notify.notifier import PRINCIPAL, Notifier
    from citybrain.notify.subscriptions import SubscriptionError, passwords_for

    settings, subs = current_settings(), _subscriptions(path)
    try:
        passwords = passwords_for(settings, subs)
    except SubscriptionError as exc:
        raise fail_with(exc) from None
    if not subs:
        out.print("no subscriptions in the file: nothing to send", highlight=False)
    idle_exit_s = renamed(exit_when_idle, until_idle, "--until-idle", "--exit-when-idle")
    notifier = Notifier(settings.as_service(PRINCIPAL), current_contracts(), subs, passwords, retry_base_s=retry_base,
                        pause_max_s=pause_max)
    metrics.serve("notify", settings.metrics_host, settings.metrics_port)

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
    table = Table("subscription", "delivered", "retries", "dead-lettered", "reasons", "paused")
    for sub in subs:
        st = notifier.state[sub.id]
        table.add_row(sub.id, str(st.delivered), str(st.retries), str(st.dead_lettered),
                      ", ".join(f"{k} {v}" for k, v in sorted(st.reasons.items())) or "-",
                      f"since {st.paused_since}, {st.waiting} waiting: {st.last_error}" if st.paused else "no")
    out.print(table)


@notify_app.command("alertmanager")
def alertmanager_cmd(
    url: str = typer.Option(..., "--url", help="Alertmanager's base address, e.g. http://127.0.0.1:9093 (alerts go "
                                               "to its /api/v2/alerts)."),
    exit_when_idle: Optional[float] = idle_option("Stop once the alert topics are read to their ends and quiet for "
                                                  "this many seconds."),
    retry_base: float = typer.Option(1.0, "--retry-base", min=0.01, help="First wait in seconds before a batch "
                                                                         "Alertmanager did not take is sent again "
                                                                         "(doubles)."),
    retry_max: float = typer.Option(60.0, "--retry-max", min=0.01, help="Longest wait in seconds between tries."),
    generator_url: Optional[str] = typer.Option(None, "--generator-url", help="The link each alert carries back to "
                                                                              "the platform (its generatorURL), e.g. "
                                                                              "the operations view's address."),
) -> None:
    """Send the platform's alert records (alert.* topics) to Alertmanager, one stream with Prometheus' alerts.

    A batch is committed once Alertmanager took it (2xx); otherwise it is sent again after a backoff, never
    dropped. A record that cannot be read, or an alert Alertmanager refuses as invalid, is dead-lettered."""
    import signal
    import threading

    from citybrain import metrics
    from citybrain.errors import InputError
    from citybrain.notify import alert_bridge

    settings = current_settings()
    try:
        alert_bridge.alerts_url(url)
    except InputError as exc:
        raise fail_with(exc) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    metrics.serve(alert_bridge.SERVICE, settings.metrics_host, settings.metrics_port)
    try:
        state = alert_bridge.run(settings.as_service(alert_bridge.PRINCIPAL), current_contracts(), url, stop=stop,
                                 idle_exit_s=exit_when_idle, retry_base_s=retry_base, retry_max_s=retry_max,
                                 generator_url=generator_url)
    except Exception as exc:   # noqa: BLE001 - a clear line for the service's log, then exit 1
        raise fail(f"the Alertmanager bridge stopped: {type(exc).__name__}: {exc}. Nothing Alertmanager did not "
                   "take was committed: it is sent when the bridge runs again.") from None
    table = Table("sent", "batches", "expired", "dead-lettered", "reasons", "retries", "failing")
    table.add_row(str(state.sent), str(state.batches), str(state.expired), str(state.dead_lettered),
                  ", ".join(f"{k} {v}" for k, v in sorted(state.reasons.items())) or "-", str(state.retries),
                  f"since {state.failing_since}: {state.last_error}" if state.failing_since else "no")
    out.print(table)


def _time_option(name: str, help: str) -> Any:  # noqa: A002 - typer's own word
    return typer.Option(None, name, help=f"{help} (RFC 3339, e.g. 2026-11-23T08:00:00Z).")


@notify_app.command("replay")
def replay_cmd(path: Optional[Path] = FILE_OPTION,
               subscription: Optional[str] = typer.Option(None, "--subscription", help="Only this subscription's "
                                                                                       "dead letters."),
               since: Optional[str] = _time_option("--since", "Only letters dead-lettered at or after this time"),
               until: Optional[str] = _time_option("--until", "Only letters dead-lettered before this time"),
               dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be sent again; send nothing."),
               as_json: bool = json_option("Each letter's result as JSON.")) -> None:
    """Send dead-lettered notifications again to their subscriptions' endpoints (dlq.notify.undelivered.v1).

    Each notification keeps its id; one a replay delivered is not sent again by the next.

    Exit 3 when some failed again (they stay dead letters: replay later), 4 when the broker cannot be read."""
    from citybrain.notify import replay
    from citybrain.times import parse_time

    settings, subs = current_settings(), _subscriptions(path)
    if subscription is not None and subscription not in {s.id for s in subs}:
        raise fail(f"--subscription {subscription!r} is not in the subscriptions file. Fix: one of "
                   f"{', '.join(s.id for s in subs) or '(none)'}.", ExitCode.BAD_INPUT)
    window = {}
    for name, text in (("since", since), ("until", until)):
        try:
            window[name] = parse_time(text) if text else None
        except ValueError:
            raise fail(f"--{name} {text!r} is not a time. Fix: RFC 3339, e.g. 2026-11-23T08:00:00Z.",
                       ExitCode.BAD_INPUT) from None
    try:
        letters = replay.select(replay.read_dead_letters(settings), subscription, window["since"], window["until"])
    except replay.DeadLettersUnavailable as exc:
        raise fail_with(exc) from None
    results = asyncio.run(replay.replay(letters, subs, replay.ledger_path(settings), dry_run=dry_run))
    counts = {k: sum(1 for r in results if r.result == k)
              for k in (replay.DELIVERED, replay.FAILED, replay.SKIPPED, replay.WOULD_SEND)}
    if as_json:
        out.print_json(json.dumps({**counts, "dry_run": dry_run, "letters": [r.as_dict() for r in results]},
                                  ensure_ascii=False))
    else:
        table = Table("subscription", "notification", "event", "dead-lettered", "reason", "result", "detail",
                      title="dead letters" + (" (dry run: nothing sent)" if dry_run else ""))
        for r in results:
            d = r.as_dict()
            table.add_row(d["subscription_id"], d["notification_id"], d["event_id"], d["failed_at"], d["reason"],
                          d["result"], d["detail"])
        out.print(table)
        out.print(", ".join(f"{v} {k}" for k, v in counts.items() if v or k != replay.WOULD_SEND), highlight=False)
    if counts[replay.FAILED]:
        raise typer.Exit(ExitCode.PARTLY_ACCEPTED)
