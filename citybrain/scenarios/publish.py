"""Release a scenario dataset from checked data and announce it (the publish_<dataset> DAGs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from citybrain.lake.layout import Lake
from citybrain.lake.quality_results import passed_files
from citybrain.lake.store import as_lake
from citybrain.scenarios.datasets import DATASETS, build
from citybrain.scenarios.release import Release, publish


def release_dataset(lake: Lake, name: str, announce: Callable[[dict[str, Any]], None] | None = None,
                    now: datetime | None = None) -> Release:
    """Build ``name`` from the partitions that passed their latest quality check, release it, announce it.

    Partitions never checked, or failed (quarantined), are not read; the manifest's quality
    section says how many were left out and which quality runs vouched for the rest."""
    if name not in DATASETS:
        raise LookupError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    dataset = DATASETS[name]
    lake = as_lake(lake)
    ok, summary = passed_files(lake)
    if not ok:
        quality = {"passed": False, "failed": "no partition of the lake has passed a quality check yet "
                                              "(run the data_quality DAG first)"}
        table, used = None, []
    else:
        table, used = build(lake, dataset, allowed=ok)
        lake_inputs = [p for p in used if "gold" not in p.relative_to(lake).parts[:1]]
        quality = {"passed": True, "checked_partitions_read": len({p.parent for p in lake_inputs}),
                   "gold_inputs": len(used) - len(lake_inputs), "quality_runs": summary["runs"],
                   "left_out_failed": len(summary["failed"]), "left_out_unchecked": len(summary["unchecked"])}
    release = publish(lake, name, table, dataset.contract(), quality, used, now=now)  # type: ignore[arg-type]
    if announce is not None:
        m = release.manifest
        announce({"release_id": f"{name}@{release.version}", "dataset": name, "version": release.version,
                  "title": dataset.title, "owner": dataset.owner, "rows": m["rows"],
                  "path": str(release.path.relative_to(lake)), "sha256": m["files"]["data.parquet"],
                  "quality_passed": True, "input_partitions": quality["checked_partitions_read"],
                  "released_at": m["released_at"]})
    return release
