"""The quality table read back: each partition's latest verdict and the files it vouches for.

The data_quality DAG (``citybrain.quality.runner``, Great Expectations in the Airflow environment)
writes one row per expectation and partition to ``<lake>/quality/``; everyone else reads it from
here, without Great Expectations: scenario releases take only files that passed
(:func:`passed_files`), the operations view shows the verdicts.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from citybrain.lake import layout, store
from citybrain.lake.layout import Lake
from citybrain.lake.store import LakePath

__all__ = ["RESULT_SCHEMA", "latest_states", "passed_files", "results"]

#: One row per expectation and partition (``partition`` empty for a contract's hourly summary checks).
RESULT_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("checked_at", pa.timestamp("ms", tz="UTC")), ("layer", pa.string()),
    ("contract", pa.string()), ("partition", pa.string()), ("fingerprint", pa.string()), ("files", pa.string()),
    ("rows", pa.int64()), ("redelivered", pa.int64()), ("suite", pa.string()), ("expectation", pa.string()),
    ("check", pa.string()), ("column", pa.string()), ("success", pa.bool_()), ("unexpected_count", pa.int64()),
    ("unexpected_percent", pa.float64()), ("observed", pa.string()), ("partition_passed", pa.bool_()),
    ("action", pa.string()),
])


def results(lake: Lake) -> pa.Table | None:
    """The whole quality table (every run), or None before the first run."""
    files = layout.quality_runs(lake)
    return pa.concat_tables([store.read_table(f, schema=RESULT_SCHEMA) for f in files]) if files else None


def latest_states(lake: Lake) -> dict[str, tuple[str, bool, str]]:
    """Partition key -> (fingerprint, passed, run id) of its latest check."""
    table = results(lake)
    if table is None:
        return {}
    out: dict[str, tuple[str, bool, str, Any]] = {}
    cols = table.select(["layer", "contract", "partition", "fingerprint", "partition_passed", "run_id",
                         "checked_at", "suite"]).to_pylist()
    for r in cols:
        if not r["partition"] or r["suite"].endswith(".partitions"):
            continue
        key = f"{r['layer']}/{r['contract']}/{r['partition']}"
        if key not in out or r["checked_at"] >= out[key][3]:
            out[key] = (r["fingerprint"], bool(r["partition_passed"]), r["run_id"], r["checked_at"])
    return {k: v[:3] for k, v in out.items()}


def passed_files(lake: Lake) -> tuple[set[LakePath], dict[str, Any]]:
    """The lake files whose partition passed its latest check with these very files, and a summary."""
    return layout.passed_files(lake, latest_states(lake))
