"""Quarantine: a partition that failed its quality check leaves the lake, with the reason beside it.

Scenario datasets no longer see it; the security checks still read it (failing quality is
evidence). Moving the files back and running ``data_quality`` again releases it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from citybrain.lake.layout import Lake, Partition, quarantine_dir
from citybrain.lake.store import as_lake
from citybrain.times import iso


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
