"""Quarantine: what leaves the lake, with the reason beside it.

A partition that failed its quality check (:func:`quarantine`): scenario datasets no longer see it;
the security checks still read it (failing quality is evidence). Moving the files back and running
``data_quality`` again releases it.

A file no reader could read (:func:`set_aside`, called by :mod:`citybrain.lake.reader`): a torn
or corrupt Parquet file would otherwise fail every page and check that reads its hour. It goes to
``quarantine/_unreadable/`` with the error beside it; its offsets still count for the sink's
checkpoint rebuild, so they are not written twice.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from citybrain.lake.layout import Lake, Partition, quarantine_dir, unreadable_path
from citybrain.lake.store import LakePath, as_lake
from citybrain.times import iso

log = logging.getLogger(__name__)


def quarantine(lake: Lake, p: Partition, run_id: str, checks: list[dict[str, Any]], now: datetime) -> str:
    """Move a failing partition out of the lake; returns where to, relative to the lake."""
    target = quarantine_dir(lake, p, run_id)
    for f in p.files:
        (p.path / f).replace(target / f)
    (target / "reason.json").write_text(json.dumps(
        {"run_id": run_id, "quarantined_at": iso(now), "partition": p.key,
         "failed": [c for c in checks if not c["success"]],
         "fix": "Inspect the records (Parquet here), correct the source or the contract's tuning in "
                "expectations/tuning.yaml, then move the files back to the lake and run data_quality again."},
        ensure_ascii=False, indent=2, default=str))
    try:
        p.path.rmdir()
    except OSError:
        pass
    return str(target.relative_to(as_lake(lake)))


def set_aside(path: LakePath, error: BaseException, now: datetime | None = None) -> LakePath | None:
    """Move an unreadable file out of the lake, the error beside it (``<file>.reason.json``); where to, or None
    when it could not be moved (a read-only lake, another reader moved it first): its readers skip it either way."""
    target = unreadable_path(path)
    reason = {"file": str(path), "error": f"{type(error).__name__}: {error}",
              "set_aside_at": iso(now or datetime.now(timezone.utc)),
              "fix": "Restore the file from a copy and move it back; or, if the records are lost, write the offsets "
                     "its name gives (p<partition>-<first>-<last>) from the topic again while the broker keeps them."}
    try:
        path.replace(target)
        target.with_name(f"{target.name}.reason.json").write_text(json.dumps(reason, ensure_ascii=False, indent=2))
    except OSError as exc:
        log.warning("%s cannot be read (%s) nor set aside (%s); skipping it", path, reason["error"], exc)
        return None
    log.warning("%s cannot be read (%s): set aside as %s, its readers skip it", path, reason["error"], target)
    return target
