"""Scenario dataset releases: immutable version folders of Parquet plus a manifest.

Layout: ``<lake>/gold/<dataset>/<version>/data.parquet`` and ``manifest.json`` next to it,
``version`` = ``v<UTC time of release>``. Its data file is written first and its manifest last,
each atomically (``citybrain.lake.store``): a release exists once its manifest does, on local disk
and on object storage alike. On local disk its files are then made read-only; it is never changed. The manifest
(format ``citybrain.release/1``) carries the dataset's contract (schema and field meanings),
row count, SHA-256 of every file, the quality result it was released under, and lineage:
every input file with its checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from citybrain.lake.layout import Lake, gold_dir, release_manifests
from citybrain.lake.store import LakePath, as_lake
from citybrain.times import iso

MANIFEST_FORMAT = "citybrain.release/1"


def sha256(path: LakePath) -> str:
    digest = hashlib.sha256()
    with as_lake(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Release:
    dataset: str
    version: str
    path: LakePath
    manifest: dict[str, Any]


def publish(lake: Lake, dataset: str, table: pa.Table, contract: dict[str, Any], quality: dict[str, Any],
            inputs: list[LakePath], now: datetime | None = None) -> Release:
    """Write one immutable release of ``dataset``; refuses when ``quality`` did not pass."""
    if not quality.get("passed"):
        raise ValueError(f"{dataset}: not released, its inputs failed quality checks ({quality.get('failed')}). "
                         "Fix the data (see the quality report), then release again.")
    missing = [f for f in contract["fields"] if f not in table.column_names]
    if missing:
        raise ValueError(f"{dataset}: the query lost declared fields {missing}; fix the dataset's SQL or its contract")
    now = now or datetime.now(timezone.utc)
    version = now.strftime("v%Y%m%dT%H%M%S%fZ")
    lake = as_lake(lake)
    final = gold_dir(lake) / dataset / version
    if final.exists():
        raise FileExistsError(f"{dataset}: release {version} exists already; releases are immutable")
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    (final / "data.parquet").write_bytes(data)
    manifest = {
        "format": MANIFEST_FORMAT, "dataset": dataset, "version": version,
        "released_at": iso(now),
        "contract": contract, "rows": table.num_rows,
        "schema": {f.name: str(f.type) for f in table.schema},
        "files": {"data.parquet": hashlib.sha256(data).hexdigest()},
        "quality": quality,
        "lineage": [{"path": str(p.relative_to(lake)), "sha256": sha256(p)} for p in sorted(inputs)],
    }
    (final / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2))
    if final.local:   # object storage keeps releases immutable by its own policies (object lock, IAM)
        for f in final.iterdir():
            os.chmod(f.path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return Release(dataset, version, final, manifest)


def releases(lake: Lake, dataset: str | None = None) -> list[Release]:
    """Every release in the lake (of one dataset), oldest first."""
    found = []
    for manifest in release_manifests(lake, dataset):
        data = json.loads(manifest.read_text())
        found.append(Release(data["dataset"], data["version"], manifest.parent, data))
    return found


def resolve(lake: Lake, dataset: str, version: str | None = None) -> Release:
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
