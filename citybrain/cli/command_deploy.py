"""`citybrain deploy ...`: the files that run the platform on a city's own hosts (systemd units)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from citybrain.cli.base import ExitCode, check_option, err, fail, group, out

deploy_app = group("deploy", "Files that run the platform on a city's own hosts: systemd units.")


@deploy_app.command("systemd")
def deploy_systemd(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write the units into (/etc/systemd/system to install)."),
    user: str = typer.Option("citybrain", "--user", help="The unprivileged system account the services run as."),
    group_name: Optional[str] = typer.Option(None, "--group", help="Its group (default: the same name as --user)."),
    prefix: Path = typer.Option(Path("/opt/citybrain"), "--prefix", help="Where CityBrain is installed (its schemas, "
                                                                         "dags, infra and .venv/airflow)."),
    venv: Optional[Path] = typer.Option(None, "--venv", help="The venv whose bin/citybrain runs the services "
                                                             "(default: PREFIX/.venv/streams)."),
    env_file: Path = typer.Option(Path("/etc/citybrain/citybrain.env"), "--env-file",
                                  help="The CITYBRAIN_* settings every service reads (EnvironmentFile=)."),
    state_dir: Path = typer.Option(Path("/var/lib/citybrain"), "--state-dir",
                                   help="CITYBRAIN_STATE_DIR: the only folder the services may write."),
    broker: bool = typer.Option(True, "--broker/--no-broker", help="A unit for the embedded broker; --no-broker when "
                                                                    "the city runs its own Kafka cluster."),
    alertmanager_url: Optional[str] = typer.Option(None, "--alertmanager-url",
                                                   help="Also a unit bridging the alert topics to this Alertmanager "
                                                        "(citybrain notify alertmanager), e.g. http://127.0.0.1:9093."),
    check: bool = check_option(),
) -> None:
    """Write a systemd unit per service `citybrain up` supervises, the broker's, the Alertmanager bridge's (with
    --alertmanager-url), and citybrain.target.

    Exit 2 on a bad option (root, a relative path); with --check, 1 when a unit in --out differs."""
    from citybrain.platform.systemd import Deployment, UnitError, render, write

    deployment = Deployment(user=user, group=group_name or user, prefix=prefix, venv=venv, env_file=env_file,
                            state_dir=state_dir, broker=broker, alertmanager_url=alertmanager_url)
    try:
        units = render(deployment)
    except UnitError as exc:
        raise fail(str(exc), ExitCode.BAD_INPUT) from None
    if check:
        stale = [name for name, text in sorted(units.items())
                 if not (out_dir / name).exists() or (out_dir / name).read_text(encoding="utf-8") != text]
        if stale:
            raise fail(f"out of date in {out_dir}: {', '.join(stale)}. Fix: run the same command without --check.")
        err.print(f"{len(units)} units in {out_dir} are up to date", highlight=False)
        return
    for path in write(deployment, out_dir):
        out.print(str(path), highlight=False)
    err.print("next: systemctl daemon-reload && systemctl enable --now citybrain.target", highlight=False)
