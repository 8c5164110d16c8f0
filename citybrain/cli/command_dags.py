"""`citybrain dags ...`: the Airflow DAGs (data quality, security monitoring, scenario releases), run locally."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from citybrain.cli.base import ExitCode, current_settings, err, fail, group, json_option, limit_option, out

if TYPE_CHECKING:  # pragma: no cover
    from citybrain.orchestration.api import AirflowAPIError

dags_app = group("dags", "The Airflow DAGs (data quality, security monitoring, scenario releases), run locally.")


def _api_failed(exc: AirflowAPIError, hint: str = "") -> typer.Exit:
    """The Airflow api-server's error as an exit: 4 when it did not answer, 2 for what it does not know, else 1."""
    code = {0: ExitCode.SERVICE_UNAVAILABLE, 404: ExitCode.BAD_INPUT}.get(exc.status, ExitCode.FAILURE)
    return fail(f"{exc}{hint}", code)


@dags_app.command("list")
def dags_list(as_json: bool = json_option()) -> None:
    """The DAGs in the order `dags run` runs them."""
    from citybrain.orchestration.local import dag_order

    if as_json:
        out.print_json(json.dumps(dag_order()))
        return
    for dag_id in dag_order():
        out.print(dag_id, highlight=False)


@dags_app.command("run")
def dags_run(dag_ids: list[str] = typer.Argument(None, help="DAG ids; default: every DAG, in dependency order."),
             as_json: bool = json_option("Each run (DAG, ok, seconds, log, task results) as JSON.")) -> None:
    """Run DAGs with the real Airflow (`airflow dags test`, SQLite metadata in var/airflow).

    Exit 1 if one fails."""
    from citybrain.orchestration.local import dag_order, run_dag

    known = dag_order()
    unknown = [d for d in dag_ids or [] if d not in known]
    if unknown:
        raise fail(f"unknown DAG(s) {', '.join(unknown)}; known: {', '.join(known)}", ExitCode.BAD_INPUT)
    failed, runs = [], []
    for dag_id in dag_ids or known:
        with err.status(f"airflow dags test {dag_id} ..."):
            run = run_dag(current_settings(), dag_id)
        runs.append({"dag_id": dag_id, "ok": run.ok, "seconds": round(run.seconds, 1), "log": str(run.log),
                     "results": run.results})
        if not run.ok:
            failed.append(dag_id)
        if as_json:
            continue
        mark = "[green]ok[/]" if run.ok else "[red]FAILED[/]"
        out.print(f"{dag_id}: {mark} in {run.seconds:.0f}s (log {run.log})", highlight=False)
        for r in run.results:
            out.print("  " + json.dumps(r, ensure_ascii=False, default=str)[:400], highlight=False, markup=False)
    if as_json:
        out.print_json(json.dumps(runs, ensure_ascii=False, default=str))
    if failed:
        raise fail(f"DAG(s) failed: {', '.join(failed)}; their logs say why", ExitCode.FAILURE)


def _api():  # type: ignore[no-untyped-def]
    from citybrain.orchestration.api import AirflowAPI

    return AirflowAPI(current_settings())


@dags_app.command("trigger")
def dags_trigger(dag_id: str = typer.Argument(..., help="The DAG to run now."),
                 conf: str = typer.Option("{}", help="The run's conf, a JSON object."),
                 as_json: bool = json_option("The run Airflow created, as JSON.")) -> None:
    """Ask the running Airflow (`citybrain up`) for a run of a DAG now, through its REST API; the scheduler runs it.

    Exit 2 for a DAG it does not know, 4 when it does not answer."""
    from citybrain.orchestration.api import AirflowAPIError

    try:
        body = json.loads(conf)
    except ValueError as exc:
        raise fail(f"--conf is not JSON ({exc}). Fix: e.g. --conf '{{\"hours\": 2}}'.", ExitCode.BAD_INPUT) from None
    if not isinstance(body, dict):
        raise fail("--conf must be a JSON object. Fix: e.g. --conf '{\"hours\": 2}'.", ExitCode.BAD_INPUT)
    try:
        run = _api().trigger(dag_id, body)
    except AirflowAPIError as exc:
        hint = " Fix: `citybrain dags runs` lists the DAGs the scheduler knows." if exc.status == 404 else ""
        raise _api_failed(exc, hint) from None
    if as_json:
        out.print_json(json.dumps(run, default=str))
        return
    out.print(f"{run['dag_id']}: run {run['dag_run_id']} {run['state']}; `citybrain dags runs {dag_id}` follows it",
              highlight=False)


@dags_app.command("runs")
def dags_runs(dag_id: str = typer.Argument(None, help="One DAG; default: every DAG."),
              limit: int = limit_option(20, "Newest runs first, at most this many (1 to 1000).", min=1, max=1000),
              as_json: bool = json_option()) -> None:
    """The latest DAG runs of the running Airflow (REST API), with what started them; import errors first.

    Exit 4 when it does not answer."""
    from rich.table import Table

    from citybrain.orchestration.api import AirflowAPIError

    api = _api()
    try:
        runs, errors = api.runs(dag_id, limit), api.import_errors()
    except AirflowAPIError as exc:
        raise _api_failed(exc) from None
    if as_json:
        out.print_json(json.dumps({"dag_runs": runs, "import_errors": errors}, default=str))
        return
    for e in errors:
        out.print(f"[red]import error[/] {e['filename']}: {e['stack_trace'].strip().splitlines()[-1]}", highlight=False)
    table = Table("dag", "run", "type", "state", "started", "ended", title="DAG runs (newest first)")
    for r in runs:
        table.add_row(r["dag_id"], r["dag_run_id"], r["run_type"], r["state"], str(r.get("start_date") or "-"),
                      str(r.get("end_date") or "-"))
    out.print(table)
