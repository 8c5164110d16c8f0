"""`citybrain catalog|query`: the curated scenario datasets, for scenario teams."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from citybrain.cli.base import ExitCode, app, audit, current_settings, fail, json_option, limit_option, out


@app.command("catalog")
def catalog_cmd(as_json: bool = json_option()) -> None:
    """The scenario datasets: latest version, rows, quality and age of each, and all their versions."""
    from citybrain.scenarios.catalog import catalog

    entries = catalog(current_settings().lake)
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
              as_json: bool = json_option("Rows as JSON (all of them)."),
              limit: int = limit_option(50, "Rows to print (0: all; the query itself is not limited).")) -> None:
    """Run SQL over the latest (or pinned) releases of the scenario datasets with DuckDB."""
    import duckdb

    from citybrain.scenarios.catalog import query

    pins = {}
    for p in pin:
        name, sep, version = p.partition("=")
        if not sep:
            raise fail(f"--pin {p!r}: write DATASET=VERSION (versions: `citybrain catalog`).", code=ExitCode.BAD_INPUT)
        pins[name] = version
    try:
        result = query(current_settings().lake, sql, pins)
    except LookupError as exc:
        raise fail(str(exc), code=ExitCode.BAD_INPUT) from None
    except duckdb.Error as exc:
        raise fail(f"the query failed: {exc}".strip() + " Fix: check the SQL; `citybrain catalog` lists the datasets "
                    "(each is a view of the same name).", code=ExitCode.BAD_INPUT) from None
    rows = result.to_pylist()
    audit("query", "scenario datasets", sql=sql, pins=pins or None, rows=len(rows))
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False, default=str))
        return
    table = Table(title=f"{len(rows):,} row(s)")
    for col in result.column_names:
        table.add_column(col)
    for row in rows[:limit or None]:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(table)
