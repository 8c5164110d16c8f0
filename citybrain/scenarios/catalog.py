"""What scenario teams see: the datasets released, their versions, quality and freshness; SQL over them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from citybrain.lake import store
from citybrain.lake.layout import Lake
from citybrain.scenarios.datasets import DATASETS
from citybrain.scenarios.release import releases, resolve
from citybrain.times import parse_time


def catalog(lake: Lake, now: datetime | None = None) -> list[dict[str, Any]]:
    """One entry per dataset (declared or released): latest version, rows, quality, age, versions."""
    now = now or datetime.now(timezone.utc)
    by_name: dict[str, list[Any]] = {name: [] for name in DATASETS}
    for r in releases(lake):
        by_name.setdefault(r.dataset, []).append(r)
    out = []
    for name, found in sorted(by_name.items()):
        declared = DATASETS.get(name)
        entry: dict[str, Any] = {"dataset": name, "title": declared.title if declared else found[-1].manifest["contract"]["title"],
                                 "owner": declared.owner if declared else found[-1].manifest["contract"]["owner"],
                                 "versions": [r.version for r in found], "latest": None}
        if found:
            m = found[-1].manifest
            released = parse_time(m["released_at"])
            entry.update(latest=m["version"], rows=m["rows"], released_at=m["released_at"],
                         age_h=round((now - released).total_seconds() / 3600, 1),
                         quality="passed" if m["quality"].get("passed") else "failed",
                         path=str(found[-1].path / "data.parquet"))
        out.append(entry)
    return out


def query(lake: Lake, sql: str, pins: dict[str, str] | None = None) -> pa.Table:
    """Run ``sql`` with every released dataset as a view of its latest (or pinned) version."""
    import duckdb

    pins = pins or {}
    con = duckdb.connect()
    try:
        for name in sorted({r.dataset for r in releases(lake)} | set(pins)):
            release = resolve(lake, name, pins.get(name))
            store.register(con, name, [release.path / "data.parquet"])
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()
