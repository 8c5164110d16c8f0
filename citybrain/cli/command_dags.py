"""`citybrain dags ...`: the Airflow DAGs (data quality, security monitoring, scenario releases), run locally."""

from __future__ import annotations

import json

import typer

from citybrain.cli.base import group, EXIT_USAGE, current_settings, fail, out

dags_app = group("dags", "The Airflow DAGs (data quality, security monitoring, scenario releases), run locally.")


@dags_app.command("list")
def dags_list() -> None:
    """The DAGs in the order `dags run` runs them."""
    from citybrain.airflow_local import dag_order

    for dag_id in dag_order():
        out.print(dag_id)


@dags_app.command("run")
def dags_run(dag_ids: list[str] = typer.Argument(None, help="DAG ids; default: every DAG, in dependency order.")) -> None:
    """Run DAGs with the real Airflow (`airflow dags test`, SQLite metadata in var/airflow); exit 1 if one fails."""
    from citybrain.airflow_local import dag_order, run_dag

    known = dag_order()
    unknown = [d for d in dag_ids or [] if d not in known]
    if unknown:
        raise fail(f"unknown DAG(s) {', '.join(unknown)}; known: {', '.join(known)}", EXIT_USAGE)
    failed = []
    for dag_id in dag_ids or known:
        with out.status(f"airflow dags test {dag_id} ..."):
            run = run_dag(current_settings(), dag_id)
        mark = "[green]ok[/]" if run.ok else "[red]FAILED[/]"
        out.print(f"{dag_id}: {mark} in {run.seconds:.0f}s (log {run.log})", highlight=False)
        for r in run.results:
            out.print("  " + json.dumps(r, ensure_ascii=False, default=str)[:400], highlight=False, markup=False)
        if not run.ok:
            failed.append(dag_id)
    if failed:
        raise fail(f"DAG(s) failed: {', '.join(failed)}; their logs say why", 1)
