"""Scenario dataset releases: immutable version folders of Parquet plus a manifest.

Layout: ``<lake>/gold/<dataset>/<version>/data.parquet`` and ``manifest.json`` next to it,
``version`` = ``v<UTC time of release>``. A release is written to a hidden folder and renamed
into place (atomic), then made read-only; it is never changed afterwards. The manifest
(format ``citybrain.release/1``) carries the dataset's contract (schema and field meanings),
row count, SHA-256 of every file, the quality result it was released under, and lineage:
every input file with its checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from citybrain.lake.layout import gold_dir, release_manifests
from citybrain.times import iso

MANIFEST_FORMAT = "citybrain.release/1"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Release:
    dataset: str
    version: str
    path: Path
    manifest: dict[str, Any]


def publish(lake: Path, dataset: str, table: pa.Table, contract: dict[str, Any], quality: dict[str, Any],
            inputs: list[Path], now: datetime | None = None) -> Release:
    """Write one immutable release of ``dataset``; refuses when ``quality`` did not pass."""
    if not quality.get("passed"):
        raise ValueError(f"{dataset}: not released, its inputs failed quality checks ({quality.get('failed')}). "
                         "Fix the data (see the quality report), then release again.")
    missing = [f for f in contract["fields"] if f not in table.column_names]
    if missing:
        raise ValueError(f"{dataset}: the query lost declared fields {missing}; fix the dataset's SQL or its contract")
    now = now or datetime.now(timezone.utc)
    version = now.strftime("v%Y%m%dT%H%M%S%fZ")
    base = gold_dir(lake) / dataset
    final = base / version
    tmp = base / f".{version}.tmp"
    tmp.mkdir(parents=True)
    pq.write_table(table, tmp / "data.parquet", compression="zstd")
    manifest = {
        "format": MANIFEST_FORMAT, "dataset": dataset, "version": version,
        "released_at": iso(now),
        "contract": contract, "rows": table.num_rows,
        "schema": {f.name: str(f.type) for f in table.schema},
        "files": {"data.parquet": sha256(tmp / "data.parquet")},
        "quality": quality,
        "lineage": [{"path": str(p.relative_to(lake)), "sha256": sha256(p)} for p in sorted(inputs)],
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2))
    os.replace(tmp, final)
    for f in final.iterdir():
        f.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return Release(dataset, version, final, manifest)


def releases(lake: Path, dataset: str | None = None) -> list[Release]:
    """Every release in the lake (of one dataset), oldest first."""
    found = []
    for manifest in release_manifests(lake, dataset):
        data = json.loads(manifest.read_text())
        found.append(Release(data["dataset"], data["version"], manifest.parent, data))
    return found


def resolve(lake: Path, dataset: str, version: str | None = None) -> Release:
    """The latest release of ``dataset``, or the pinned ``version``; a clear error otherwise."""
    all_ = releases(lake, dataset)
    if not all_:
        known = sorted({r.dataset for r in releases(lake)})
        raise LookupError(f"no release of dataset {dataset!r}. Known: {', '.join(known) or 'none yet'}. "
                          "Fix: `citybrain catalog` lists them; the scenario DAGs publish them.")
    if version is None:
        return all_[-1]
    for r in all_:
        if r.version == version:
            return r
    raise LookupError(f"dataset {dataset!r} has no version {version!r}; it has {', '.join(r.version for r in all_)}")


def verify(release: Release) -> list[str]:
    """Files whose checksum no longer matches the manifest (empty when the release is intact)."""
    return [name for name, digest in release.manifest["files"].items() if sha256(release.path / name) != digest]
