"""Keeping the local state bounded: what the `maintenance` DAG removes and compacts.

Removed, each by its own rule (``Settings.retention_*``): releases of a dataset beyond the newest
``retention_releases`` (the newest is never removed); Great Expectations data-docs pages and
validation results older than ``retention_docs_days``; quarantined partitions and quality results
older than ``retention_quarantine_days`` and ``retention_quality_days``; Airflow logs older than
``retention_airflow_log_days``; release folders a crashed publish left without a manifest, after an
hour. Compacted: every lake hour with more than one file per partition
whose newest file is over an hour old (an hour a sink may still be writing is left to the sink).
"""

from __future__ import annotations

import re
import shutil
import stat
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Union

from citybrain.lake import layout
from citybrain.lake.store import LakePath
from citybrain.settings import Settings

#: An hour whose newest file is younger than this may still be written by a sink: not compacted here.
QUIET_S = 3600.0


#: A lake path or a local one (Airflow's logs, the Great Expectations context).
AnyPath = Union[LakePath, Path]


def _size(path: AnyPath) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _remove(path: AnyPath) -> int:
    """Delete a file or folder (local releases are read-only: made writable first); the bytes freed."""
    freed = _size(path)
    if isinstance(path, LakePath):
        if not path.local:
            if path.is_dir():
                path.rmtree()
            else:
                path.unlink()
            return freed
        path = Path(path.path)
    if path.is_dir():
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR | (stat.S_IXUSR if p.is_dir() else 0))
        shutil.rmtree(path)
    else:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
        path.unlink()
    return freed


def _older_files(root: AnyPath, cutoff: float) -> list[AnyPath]:
    return [f for f in root.rglob("*") if f.is_file() and f.stat().st_mtime < cutoff] if root.exists() else []


def _prune_empty(root: AnyPath) -> None:
    if not root.exists():
        return
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def maintain(settings: Settings, now: datetime | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Apply every retention rule and compact quiet hours; what was removed (counts, bytes) and merged."""
    from citybrain.lake.writer import LakeWriter
    from citybrain.quality.runner import gx_dir
    from citybrain.scenarios.release import releases

    now = now or datetime.now(timezone.utc)
    lake, epoch = settings.lake, now.timestamp()
    removed: dict[str, int] = {}
    freed = 0

    def drop(kind: str, paths: list[AnyPath]) -> None:
        nonlocal freed
        removed[kind] = removed.get(kind, 0) + len(paths)
        for p in paths:
            freed += _size(p) if dry_run else _remove(p)

    by_dataset: dict[str, list[Any]] = {}
    for r in releases(lake):
        by_dataset.setdefault(r.dataset, []).append(r)
    keep = max(1, settings.retention_releases)
    drop("releases", [r.path for found in by_dataset.values() for r in found[:-keep]])
    released = {r.path for found in by_dataset.values() for r in found}
    drop("unfinished_releases", [v for v in layout.gold_dir(lake).glob("*/v*")
                                 if v not in released and _newest_mtime(v) < epoch - QUIET_S])

    gx = gx_dir(lake, settings.state_dir) / "gx" / "uncommitted"
    docs_cutoff = epoch - settings.retention_docs_days * 86400
    drop("data_docs_pages", _older_files(gx / "data_docs" / "local_site" / "validations", docs_cutoff))
    drop("validation_results", _older_files(gx / "validations", docs_cutoff))

    q_cutoff = now - timedelta(days=settings.retention_quarantine_days)
    runs = (lake / "quarantine").glob("*/*/date=*/hour=*/*") if (lake / "quarantine").exists() else []
    drop("quarantined_partitions", [p for p in runs if p.is_dir() and _run_time(p.name, p) < q_cutoff])

    day_cutoff = (now - timedelta(days=settings.retention_quality_days)).strftime("%Y-%m-%d")
    drop("quality_results", [p for p in (lake / "quality").glob("checked=*") if p.name[8:] < day_cutoff])

    log_cutoff = epoch - settings.retention_airflow_log_days * 86400
    drop("airflow_logs", _older_files(settings.airflow_dir / "logs", log_cutoff)
         + _older_files(settings.airflow_dir / "runs", log_cutoff))

    merged = 0
    if not dry_run:
        for root in (gx / "data_docs" / "local_site" / "validations", gx / "validations", lake / "quarantine",
                     settings.airflow_dir / "logs"):
            _prune_empty(root)
        for layer in layout.LAYERS:
            hours = [h for h in (lake / layer).glob(f"*/{layout.HOUR_GLOB}")
                     if h.is_dir() and _newest_mtime(h) < time.time() - QUIET_S]
            merged += LakeWriter(lake, layer).compact(hours=hours).merged_files
    return {"removed": removed, "bytes_freed": freed, "files_compacted": merged, "dry_run": dry_run,
            "kept_releases_per_dataset": keep}


def _newest_mtime(folder: AnyPath) -> float:
    return max((f.stat().st_mtime for f in folder.iterdir()), default=0.0)


RUN_RE = re.compile(r"^(\d{8}T\d{6})Z")


def _run_time(name: str, path: AnyPath) -> datetime:
    """When a quarantine run happened: from its id (``20261203T141244Z-...``), else the folder's mtime."""
    m = RUN_RE.match(name)
    if m:
        return datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
