"""Where everything lives in the lake: one module names every path, the others ask it.

```
<lake>/bronze|silver/<contract>/date=YYYY-MM-DD/hour=HH/p<partition>-<first>-<last>[-<n>].parquet
<lake>/_checkpoints/<layer>/<topic>/<partition>.json      the sink's next offset per partition
<lake>/_compactions/<layer>/<id>.json                      journals of compactions under way
<lake>/_leases/<layer>/<topic>.json                        the one sink writing a topic into a layer (and .lock)
<lake>/quarantine/<layer>/<contract>/date=/hour=/<run>/    partitions that failed their quality check
<lake>/quarantine/_unreadable/<layer>/<contract>/date=/hour=/<file>[.reason.json]
                                                           files a reader could not read, set aside
<lake>/quality/checked=<date>/<run>.parquet                every quality check's result
<lake>/quality/gx/                                         Great Expectations' context and data docs (local lake)
<lake>/quality/data_docs/                                  the data docs' copy, when the lake is on object storage
<lake>/gold/<dataset>/v<UTC time>/data.parquet|manifest.json  immutable scenario releases
<lake>/reports/<kind>/date=<date>/                         daily reports (security)
```

``<contract>`` is the topic without its major version (``raw.sensor.noise_level``); date and
hour are those of the record's Kafka timestamp, in UTC. ``<lake>`` is a local folder or an object
storage prefix (``CITYBRAIN_LAKE_URI``); paths are ``citybrain.lake.store.LakePath``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable, Mapping, Union

from citybrain.lake.store import LakePath, LakeStorageError, as_lake

#: A lake root: a LakePath, or a local folder or URI (opened with ``as_lake``).
Lake = Union[LakePath, Path, str]

#: The layers the sinks write, and the topic zones each holds (gold is written by releases, not sinks).
ZONES: dict[str, tuple[str, ...]] = {"bronze": ("raw",), "silver": ("city", "alert", "dispatch", "metrics", "audit")}
LAYERS = tuple(ZONES)
HOUR_GLOB = "date=*/hour=*"
PART_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})$")


def contract_of(topic: str) -> str:
    """A topic's folder name in the lake: the topic without its major version."""
    return topic.rsplit(".v", 1)[0]


def layer_dir(lake: Lake, layer: str) -> LakePath:
    return as_lake(lake) / layer


def hour_dir(lake: Lake, layer: str, topic: str, at: datetime) -> LakePath:
    """The folder of ``topic``'s records of the hour ``at`` (UTC) falls in."""
    return layer_dir(lake, layer) / contract_of(topic) / f"date={at:%Y-%m-%d}" / f"hour={at:%H}"


def files(lake: Lake, layer: str, contracts: str = "*") -> list[LakePath]:
    """Every Parquet file of a layer's contract folders matching ``contracts`` (a glob), sorted."""
    return sorted(layer_dir(lake, layer).glob(f"{contracts}/{HOUR_GLOB}/*.parquet"))


def quarantined_files(lake: Lake, layer: str, contracts: str = "*") -> list[LakePath]:
    """The files quality checks moved out of a layer (they are still evidence for the security checks)."""
    return sorted((as_lake(lake) / "quarantine" / layer).glob(f"{contracts}/{HOUR_GLOB}/*/*.parquet"))


def unreadable_files(lake: Lake, layer: str, contracts: str = "*") -> list[LakePath]:
    """The files of a layer readers set aside as unreadable (:func:`unreadable_path`)."""
    return sorted((as_lake(lake) / "quarantine" / UNREADABLE / layer).glob(f"{contracts}/{HOUR_GLOB}/*.parquet"))


#: The quarantine folder of files no reader could read (not a layer: quality's quarantine globs skip it).
UNREADABLE = "_unreadable"


def unreadable_path(path: LakePath) -> LakePath:
    """Where an unreadable file goes: a layer's file (``<layer>/<contract>/date=/hour=/<file>``) to
    ``<lake>/quarantine/_unreadable/`` under the same names; any other file to ``_unreadable/`` in its folder."""
    parts = path.parts
    if len(parts) >= 5 and parts[-5] in LAYERS and PART_RE.match(f"{parts[-3]}/{parts[-2]}"):
        lake = path.parent.parent.parent.parent.parent
        return lake / "quarantine" / UNREADABLE / "/".join(parts[-5:])
    return path.parent / UNREADABLE / path.name


def lease_path(lake: Lake, layer: str, topic: str) -> LakePath:
    """The lease of the one sink that may write ``topic`` into ``layer``."""
    return as_lake(lake) / "_leases" / layer / f"{topic}.json"


def checkpoints_dir(lake: Lake, layer: str) -> LakePath:
    return as_lake(lake) / "_checkpoints" / layer


def compactions_dir(lake: Lake, layer: str) -> LakePath:
    return as_lake(lake) / "_compactions" / layer


def quality_dir(lake: Lake) -> LakePath:
    return as_lake(lake) / "quality"


def quality_runs(lake: Lake) -> list[LakePath]:
    """Every quality run's results file, oldest first (by date, then run id)."""
    return sorted(quality_dir(lake).glob("checked=*/*.parquet"))


def gx_dir(lake: Lake, state_dir: Path | None = None) -> Path:
    """Where the Great Expectations context (suites, validation results, data docs) lives: beside the quality
    table in a local lake (``<lake>/quality/gx``); on the local disk (``<state>/quality-gx``) when the lake is
    on object storage, since GX's file context needs a folder."""
    root = as_lake(lake)
    if root.local:
        return Path(root.path) / "quality" / "gx"
    if state_dir is None:
        raise LakeStorageError(f"the lake {root} is on object storage: the quality run needs a local folder "
                               "for Great Expectations' context. Fix: pass state_dir (Settings.state_dir).")
    return state_dir / "quality-gx"


def gx_data_docs_dir(lake: Lake, state_dir: Path | None = None) -> Path:
    """The folder Great Expectations builds the data docs in (``index.html`` and the validation pages)."""
    return gx_dir(lake, state_dir) / "gx" / "uncommitted" / "data_docs" / "local_site"


def reports_dir(lake: Lake, kind: str) -> LakePath:
    return as_lake(lake) / "reports" / kind


def data_docs_dir(lake: Lake) -> LakePath:
    """The quality data docs' copy in a lake on object storage (a local lake has them in its GX context)."""
    return as_lake(lake) / "quality" / "data_docs"


def gold_dir(lake: Lake) -> LakePath:
    return as_lake(lake) / "gold"


def release_manifests(lake: Lake, dataset: str | None = None) -> list[LakePath]:
    """Every release's manifest (of one dataset), oldest first (versions sort by time)."""
    return sorted(gold_dir(lake).glob(f"{dataset or '*'}/v*/manifest.json"))


def release_data(lake: Lake, dataset: str | None = None) -> list[LakePath]:
    """Every release's data file (of one dataset), oldest first (a release exists once its manifest does)."""
    return [m.parent / "data.parquet" for m in release_manifests(lake, dataset)]


@dataclass(frozen=True)
class Partition:
    """One contract's files of one hour in one layer: the unit quality checks judge."""

    layer: str
    contract: str
    date: str
    hour: str
    path: LakePath
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"date={self.date}/hour={self.hour}"

    @property
    def start(self) -> datetime:
        return datetime.fromisoformat(f"{self.date}T{self.hour}:00:00+00:00")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=1)

    @property
    def fingerprint(self) -> str:
        """Changes when the partition's files change (new records, compaction)."""
        return hashlib.sha256("\n".join(self.files).encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.contract}/{self.name}"


def partitions(lake: Lake, layers: Iterable[str] = LAYERS) -> list[Partition]:
    """Every partition of the given layers that holds files, oldest first per contract."""
    found = []
    for layer in layers:
        for directory in sorted(layer_dir(lake, layer).glob(f"*/{HOUR_GLOB}")):
            names = tuple(sorted(p.name for p in directory.glob("*.parquet")))
            if not names:
                continue
            m = PART_RE.match(f"{directory.parent.name}/{directory.name}")
            if m:
                found.append(Partition(layer, directory.parent.parent.name, m.group(1), m.group(2), directory, names))
    return found


def quarantine_dir(lake: Lake, p: Partition, run_id: str) -> LakePath:
    return as_lake(lake) / "quarantine" / p.layer / p.contract / f"date={p.date}" / f"hour={p.hour}" / run_id


def quarantine_runs(lake: Lake) -> list[LakePath]:
    """Every quarantined partition's folder (one per quality run that failed it), sorted."""
    return sorted((as_lake(lake) / "quarantine").glob(f"*/*/{HOUR_GLOB}/*"))


def passed_files(lake: Lake, states: Mapping[str, tuple[str, bool, str]]) -> tuple[set[LakePath], dict[str, object]]:
    """The files whose partition passed its latest quality check with these very files, and a summary.

    ``states``: partition key -> (fingerprint, passed, run id) of its latest check
    (``citybrain.lake.quality_results.latest_states``)."""
    ok: set[LakePath] = set()
    unchecked, failed, runs = [], [], set()
    for p in partitions(lake):
        state = states.get(p.key)
        if state is None or state[0] != p.fingerprint:
            unchecked.append(p.key)
        elif not state[1]:
            failed.append(p.key)
        else:
            runs.add(state[2])
            ok.update(p.path / f for f in p.files)
    return ok, {"unchecked": unchecked, "failed": failed, "runs": sorted(runs)}
