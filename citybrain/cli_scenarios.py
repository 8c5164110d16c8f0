"""`citybrain catalog|query|release`: the curated scenario datasets, for scenario teams."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from citybrain.cli import EXIT_USAGE, _fail, _settings, app, out


@app.command("catalog")
def catalog_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable, for scripts.")) -> None:
    """The scenario datasets: latest version, rows, quality and age of each, and all their versions."""
    from citybrain.scenarios.catalog import catalog

    entries = catalog(_settings().state_dir / "lake")
    if as_json:
        out.print_json(json.dumps(entries, ensure_ascii=False))
        return
    table = Table(title="scenario datasets")
    for col in ("dataset", "owner", "latest", "rows", "quality", "age (h)", "versions"):
        table.add_column(col)
    for e in entries:
        table.add_row(e["dataset"], e["owner"], e["latest"] or "not released yet", f"{e.get('rows', '')}",
                      e.get("quality", ""), f"{e.get('age_h', '')}", str(len(e["versions"])))
    out.print(table)


@app.command("query")
def query_cmd(sql: str = typer.Argument(..., help="SQL (DuckDB); every dataset is a view named after it."),
              pin: list[str] = typer.Option([], "--pin", help="DATASET=VERSION: query that release, not the latest."),
              as_json: bool = typer.Option(False, "--json", help="Rows as JSON."),
              limit: int = typer.Option(50, help="Rows to print (the query itself is not limited).")) -> None:
    """Run SQL over the latest (or pinned) releases of the scenario datasets with DuckDB."""
    import duckdb

    from citybrain.scenarios.catalog import query

    pins = {}
    for p in pin:
        name, sep, version = p.partition("=")
        if not sep:
            raise _fail(f"--pin {p!r}: write DATASET=VERSION (versions: `citybrain catalog`).", code=EXIT_USAGE)
        pins[name] = version
    try:
        result = query(_settings().state_dir / "lake", sql, pins)
    except LookupError as exc:
        raise _fail(str(exc), code=EXIT_USAGE) from None
    except duckdb.Error as exc:
        raise _fail(f"the query failed: {exc}".strip() + " Fix: check the SQL; `citybrain catalog` lists the datasets "
                    "(each is a view of the same name).", code=EXIT_USAGE) from None
    rows = result.to_pylist()
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False, default=str))
        return
    table = Table(title=f"{len(rows):,} row(s)")
    for col in result.column_names:
        table.add_column(col)
    for row in rows[:limit]:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(table)


dags_app = typer.Typer(help="The Airflow DAGs (data quality, security monitoring, scenario releases), run locally.")
quality_app = typer.Typer(help="Data-quality suites (Great Expectations) generated from the contracts.")
app.add_typer(dags_app, name="dags")
app.add_typer(quality_app, name="quality")


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
        raise _fail(f"unknown DAG(s) {', '.join(unknown)}; known: {', '.join(known)}", EXIT_USAGE)
    failed = []
    for dag_id in dag_ids or known:
        with out.status(f"airflow dags test {dag_id} ..."):
            run = run_dag(_settings(), dag_id)
        mark = "[green]ok[/]" if run.ok else "[red]FAILED[/]"
        out.print(f"{dag_id}: {mark} in {run.seconds:.0f}s (log {run.log})", highlight=False)
        for r in run.results:
            out.print("  " + json.dumps(r, ensure_ascii=False, default=str)[:400], highlight=False, markup=False)
        if not run.ok:
            failed.append(dag_id)
    if failed:
        raise _fail(f"DAG(s) failed: {', '.join(failed)}; their logs say why", 1)


@quality_app.command("suites")
def quality_suites(check: bool = typer.Option(False, "--check", help="Only report suites that are stale; exit 1 if any.")) -> None:
    """Write expectations/<layer>/*.json from the contracts and expectations/tuning.yaml."""
    from citybrain.contracts.model import load_all
    from citybrain.quality.suites import generate, load_tuning, write
    from citybrain.settings import PROJECT_ROOT

    settings = _settings()
    root = PROJECT_ROOT / "expectations"
    suites = generate(load_all(settings.schemas_dir), load_tuning(root / "tuning.yaml"))
    stale = write(root, suites, check=check)
    if check and stale:
        raise _fail(f"{len(stale)} quality suite(s) differ from the contracts: {', '.join(stale[:5])}. "
              "Fix: `citybrain quality suites`, then commit expectations/.", 1)
    out.print(f"{len(suites)} suites {'up to date' if not stale else f'written ({len(stale)} changed)'}")
