"""Run the quality suites over the lake with Great Expectations 1.x (the data_quality DAG).

Each partition whose files changed since it was last checked is validated against its
``records`` suite; each contract's hourly summary against its ``partitions`` suite (volume
per hour, freshness of the newest event time among the records that came in live); each
device that declares its reporting interval against the ``devices`` suite (readings missed,
gaps named). Partitions are hours of event time: a backfill (records loaded more than
``backfill_after_min`` after they happened) lands in the hours it describes, is reported as
one, and is not taken for a live feed. Results go to the quality table (``<lake>/quality/``, Parquet, one row
per expectation and partition) and to Great Expectations data docs (HTML). A failing
partition is moved to ``<lake>/quarantine/`` with a ``reason.json`` and an alert is sent
to ``alert.data_quality.failure.v1``; scenario datasets read only partitions whose latest
check passed (``passed_files``).

Great Expectations is imported only here: it lives in the Airflow environment. Reading the results back
(``passed_files``, ``results``) and where the GX context lives (``gx_dir``) belong to the lake room
(``citybrain.lake.quality_results``, ``citybrain.lake.layout``); they are re-exported here for the callers
that import them from this module.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from citybrain.contracts import topics
from citybrain.contracts.model import load_all
from citybrain.lake import layout, reader, store
from citybrain.lake.layout import Lake, Partition, gx_dir, partitions, quality_dir
from citybrain.lake.quality_results import RESULT_SCHEMA, latest_states, passed_files, results
from citybrain.lake.quarantine import quarantine
from citybrain.lake.store import LakePath
from citybrain.quality import devices as device_checks
from citybrain.quality.frames import load
from citybrain.quality.suites import generate, load_suites, load_tuning
from citybrain.times import iso

__all__ = ["GX", "RESULT_SCHEMA", "Report", "gx_dir", "latest_states", "passed_files", "reference_sets", "results",
           "run_quality"]

log = logging.getLogger(__name__)

#: Reference sets the suites check against: name -> (register topic, its key column).
REFERENCES = {"device": (topics.REF_DEVICES, "device_id"), "area": (topics.REF_AREAS, "area_code"),
              "road_segment": (topics.REF_ROAD_SEGMENTS, "segment_id"), "service": (topics.REF_SERVICES, "service_code")}


@dataclass
class Report:
    run_id: str
    checked: int = 0
    passed: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)       # alerts raised
    skipped_unchanged: int = 0
    volume_not_evaluated: list[str] = field(default_factory=list)
    freshness_not_evaluated: list[str] = field(default_factory=list)
    backfills: list[dict[str, Any]] = field(default_factory=list)     # per contract: records loaded late, their span
    device_gaps: list[str] = field(default_factory=list)              # devices missing readings, gaps named
    docs: Path | None = None
    table: LakePath | None = None

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "checked": self.checked, "passed": self.passed,
                "failed": len([f for f in self.failed if f.get("partition")]),
                "alerts": len(self.failed), "skipped_unchanged": self.skipped_unchanged,
                "quarantined": [f["quarantine"] for f in self.failed if f.get("quarantine")],
                "backfills": self.backfills, "freshness_not_evaluated": self.freshness_not_evaluated,
                "device_gaps": self.device_gaps,
                "docs": str(self.docs) if self.docs else None, "table": str(self.table) if self.table else None}


def reference_sets(lake: Lake) -> dict[str, list[str]]:
    """The value sets suites check references against (device ids, area codes, road segments, service codes)
    from bronze."""
    return {f"ref_{name}": sorted(reader.field_values(layout.files(lake, "bronze", layout.contract_of(topic)), column))
            for name, (topic, column) in REFERENCES.items()}


def _rows_of(p: Partition) -> int:
    return sum(store.read_metadata(p.path / f).num_rows for f in p.files)


#: Minutes after its event time a record must come in to count as a backfill, where the suite names none.
BACKFILL_AFTER_MIN = 1440


def _newest_live(parts: list[Partition], backfill_after: timedelta) -> datetime | None:
    """The newest event time among records that came in live (within ``backfill_after`` of it), newest hour first;
    None when every record came in a backfill."""
    for p in reversed(parts):
        table = reader.read([p.path / f for f in p.files], ["timestamp", "event_time"])
        loaded, events = table.column("timestamp").to_pylist(), table.column("event_time").to_pylist()
        live = [e or t for t, e in zip(loaded, events) if e is None or t - e <= backfill_after]
        if live:
            return max(live)
    return None


def _late(frame: Any, backfill_after: timedelta) -> Any:
    """The rows of a partition's frame that came in a backfill."""
    if frame.empty or "_event_time" not in frame.columns:
        return frame.iloc[0:0]
    import pandas as pd

    loaded = pd.to_datetime(frame["_timestamp"], utc=True)
    happened = pd.to_datetime(frame["_event_time"], utc=True)
    return frame[(loaded - happened) > backfill_after]


def _observed(result: dict[str, Any]) -> str | None:
    value = result.get("observed_value")
    if value is None and result.get("partial_unexpected_list"):
        value = result["partial_unexpected_list"][:5]
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)[:200]


class GX:
    """A Great Expectations file context (``gx_dir``: suites, results, data docs)."""

    def __init__(self, root: Path) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        root.mkdir(parents=True, exist_ok=True)
        self.ctx = gx.get_context(mode="file", project_root_dir=str(root))
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.source = self.ctx.data_sources.add_or_update_pandas("citybrain_lake")
        self._defs: dict[str, Any] = {}

    def definition(self, suite_json: dict[str, Any]) -> Any:
        name = suite_json["name"]
        if name not in self._defs:
            gx = self.gx
            asset = next((a for a in self.source.assets if a.name == name), None) or self.source.add_dataframe_asset(name)
            batch = next(iter(asset.batch_definitions), None) or asset.add_batch_definition_whole_dataframe("hour")
            suite = self.ctx.suites.add_or_update(gx.ExpectationSuite(**suite_json))
            self._defs[name] = self.ctx.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=name, data=batch, suite=suite))
        return self._defs[name]

    def run(self, suite_json: dict[str, Any], frame: Any, params: dict[str, Any], complete: bool = False,
            samples: int = 5) -> Any:
        """``samples``: unexpected values kept in results, data docs and alerts (0 for contracts with
        personal data, so a failing phone-number check does not copy numbers out of the raw zone)."""
        return self.definition(suite_json).run(
            batch_parameters={"dataframe": frame}, expectation_parameters=params,
            result_format={"result_format": "COMPLETE" if complete else "SUMMARY", "partial_unexpected_count": samples})

    def build_docs(self) -> Path:
        self.ctx.build_data_docs()
        return Path(self.ctx.root_directory) / "uncommitted" / "data_docs" / "local_site" / "index.html"


def _rows_for(result: Any) -> list[dict[str, Any]]:
    out = []
    for r in result.results:
        cfg = r.expectation_config
        res = r.result or {}
        if r.exception_info and r.exception_info.get("raised_exception"):
            res = {**res, "observed_value": str(r.exception_info.get("exception_message"))[:200]}
        out.append({"expectation": cfg.type, "check": (cfg.meta or {}).get("check", "validity"),
                    "column": cfg.kwargs.get("column") or ",".join(cfg.kwargs.get("column_list") or []) or None,
                    "success": bool(r.success), "unexpected_count": res.get("unexpected_count"),
                    "unexpected_percent": res.get("unexpected_percent"), "observed": _observed(res)})
    return out


def run_quality(lake: Lake, schemas_dir: Path, expectations_dir: Path, now: datetime | None = None,
                send_alert: Callable[[dict[str, Any]], None] | None = None, docs: bool = True,
                progress: Callable[[str], None] | None = None, state_dir: Path | None = None,
                city_contracts_dir: Path | None = None) -> Report:
    """Validate every changed partition of the lake; quarantine failures; keep the results. The dispatch contracts
    of the city's own departments (``city_contracts_dir``) get their suites generated here, with the committed
    tuning, as ``citybrain dev quality suites`` generates the committed ones."""
    import pandas as pd

    now = now or datetime.now(timezone.utc)
    say = progress or log.info
    run_id = now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    report = Report(run_id)
    city = load_all(city_contracts_dir) if city_contracts_dir is not None else {}
    contracts = {c.id: c for c in [*load_all(schemas_dir).values(), *city.values()]}
    suites = load_suites(expectations_dir)
    suites.update({s["name"]: s for s in generate(city, load_tuning(expectations_dir / "tuning.yaml")).values()})
    states = latest_states(lake)
    params = reference_sets(lake)
    engine = GX(gx_dir(lake, state_dir))
    rows: list[dict[str, Any]] = []
    # device -> reporting interval (s), read before any check can move the register's partitions to quarantine
    registry = device_checks.cadences(reader.latest_values(
        layout.files(lake, "bronze", layout.contract_of(topics.REF_DEVICES)), "device_id")) \
        if any(name.endswith(".devices") for name in suites) else {}
    by_contract: dict[tuple[str, str], list[Partition]] = defaultdict(list)
    for p in partitions(lake):
        by_contract[(p.layer, p.contract)].append(p)

    for (layer, cid), parts in sorted(by_contract.items()):
        contract = contracts.get(cid)
        rec_suite = suites.get(f"{layer}.{cid}.records")
        part_suite = suites.get(f"{layer}.{cid}.partitions")
        if contract is None or rec_suite is None or part_suite is None:
            raise LookupError(f"no quality suite for {layer}/{cid}. Fix: `citybrain dev quality suites` writes the suites "
                              "of every contract into expectations/ (commit them).")
        todo = [p for p in parts if states.get(p.key, ("",))[0] != p.fingerprint]
        report.skipped_unchanged += len(parts) - len(todo)
        if not todo:
            continue
        say(f"quality {layer}/{cid}: {len(todo)} partition(s) to check")
        # Hourly summary: volume against the contract's own history, freshness of the newest record.
        counts = {p.key: _rows_of(p) for p in parts}
        # Closed: the next hour has data (the feed moved on). The newest hour may still fill, and the hour
        # before a gap may be cut short by it; a stopped feed is freshness's to catch.
        starts = {p.start for p in parts}
        is_closed = [p.end in starts for p in parts]
        closed = [counts[p.key] for p, c in zip(parts, is_closed) if c]
        vol = part_suite["meta"].get("volume") or {}
        volume_failed: dict[str, dict[str, Any]] = {}
        part_results: list[dict[str, Any]] = []
        backfill_after = timedelta(minutes=part_suite["meta"].get("backfill_after_min") or BACKFILL_AFTER_MIN)
        if part_suite["expectations"]:
            skip: set[str] = set()
            newest = None
            if any(e["meta"]["check"] == "freshness" for e in part_suite["expectations"]):
                newest = _newest_live(parts, backfill_after)
                if newest is None:
                    skip.add("freshness")
                    report.freshness_not_evaluated.append(
                        f"{layer}/{cid}: every record came in a backfill (loaded more than {backfill_after} after its "
                        "event time); freshness is judged once records come in live")
            summary = pd.DataFrame({"partition": [p.name for p in parts], "rows": [counts[p.key] for p in parts],
                                    "closed": is_closed})
            lag = None if newest is None else max(0.0, (now - newest).total_seconds() / 60)
            summary["lag_min"] = [None] * (len(parts) - 1) + [lag]
            run_params: dict[str, Any] = {}
            if vol and len(closed) >= vol.get("min_history", 6):
                median = statistics.median(closed)
                run_params = {"rows_min": median * vol["low"], "rows_max": median * vol["high"]}
            elif vol:
                skip.add("volume")
                report.volume_not_evaluated.append(f"{layer}/{cid}: {len(closed)} closed hour(s) of history, "
                                                   f"{vol.get('min_history', 6)} needed")
            exps = {**part_suite, "expectations": [e for e in part_suite["expectations"] if e["meta"]["check"] not in skip]}
            if exps["expectations"]:
                res = engine.run(exps, summary, run_params, complete=True)
                for r in res.results:
                    cfg = r.expectation_config
                    check = (cfg.meta or {}).get("check")
                    if check == "volume":
                        for i in (r.result or {}).get("unexpected_index_list") or []:
                            p = parts[int(i)]
                            volume_failed.setdefault(p.key, {
                                "expectation": cfg.type, "check": "volume", "column": "rows", "success": False,
                                "unexpected_count": 1, "unexpected_percent": None,
                                "observed": f"{counts[p.key]} rows; usual hour {statistics.median(closed):.0f}, "
                                            f"allowed {vol['low']}x..{vol['high']}x"})
                part_results = _rows_for(res)
                for r in part_results:
                    rows.append({"run_id": run_id, "checked_at": now, "layer": layer, "contract": cid, "partition": None,
                                 "fingerprint": None, "files": None, "rows": sum(counts.values()), "redelivered": None,
                                 "suite": exps["name"], **r, "partition_passed": None, "action": None})
                stale = [r for r in part_results if r["check"] == "freshness" and not r["success"]]
                if stale and send_alert is not None:
                    alert = {"alert_id": f"DQ-{run_id}:{layer}:{cid}:freshness", "run_id": run_id, "dataset": cid,
                             "layer": layer, "check": "freshness",
                             "failed_expectations": [_alert_exp(r) for r in stale], "detected_at": iso(now),
                             "action": "alerted"}
                    report.failed.append(alert)
                    send_alert(alert)
        # Records of each partition.
        late_rows, late_spans = 0, []
        for p in todo:
            frame, redelivered = load(p)
            late = _late(frame, backfill_after)
            if len(late):
                late_rows += len(late)
                late_spans.append((min(late["_event_time"]), max(late["_event_time"]),
                                   min(late["_timestamp"]), max(late["_timestamp"])))
            for name in contract.schema.get("properties", {}):
                if name not in frame.columns:
                    frame[name] = None
            res = engine.run(rec_suite, frame, params, samples=0 if contract.personal_fields() else 5)
            checks = _rows_for(res)
            if p.key in volume_failed:
                checks.append(volume_failed[p.key])
            passed = all(c["success"] for c in checks)
            report.checked += 1
            report.passed += passed
            action, moved = None, None
            if not passed:
                moved = quarantine(lake, p, run_id, checks, now)
                action = "quarantined"
                bad = [c for c in checks if not c["success"]]
                alert = {"alert_id": f"DQ-{run_id}:{layer}:{cid}:{p.name}", "run_id": run_id, "dataset": cid,
                         "layer": layer, "partition": p.name, "check": bad[0]["check"],
                         "failed_expectations": [_alert_exp(c) for c in bad], "rows": len(frame),
                         "detected_at": iso(now), "action": action, "quarantine": moved}
                report.failed.append(alert)
                if send_alert is not None:
                    send_alert(alert)
                say(f"  {p.name}: FAILED {', '.join(sorted({c['check'] for c in bad}))} -> {moved}")
            for c in checks:
                rows.append({"run_id": run_id, "checked_at": now, "layer": layer, "contract": cid, "partition": p.name,
                             "fingerprint": p.fingerprint, "files": ",".join(p.files), "rows": len(frame),
                             "redelivered": redelivered, "suite": rec_suite["name"], **c,
                             "partition_passed": passed, "action": action})
        if late_rows:
            backfill = {"layer": layer, "contract": cid, "records": late_rows,
                        "observed_from": iso(min(s[0] for s in late_spans)), "observed_to": iso(max(s[1] for s in late_spans)),
                        "loaded_from": iso(min(s[2] for s in late_spans)), "loaded_to": iso(max(s[3] for s in late_spans))}
            report.backfills.append(backfill)
            say(f"  backfill: {late_rows} record(s) observed {backfill['observed_from']}..{backfill['observed_to']}, "
                f"loaded {backfill['loaded_from']}..{backfill['loaded_to']}")
        dev_suite = suites.get(f"{layer}.{cid}.devices")
        if dev_suite is not None:
            rows += _device_completeness(engine, dev_suite, lake, layer, contract, registry, run_id, now, report,
                                         send_alert, say)
    if rows:
        out = quality_dir(lake) / f"checked={now.strftime('%Y-%m-%d')}" / f"run-{run_id}.parquet"
        store.write_table(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), out)
        report.table = out
    if docs:
        report.docs = engine.build_docs()
        root = store.as_lake(lake)
        if not root.local:   # for the operations view and anyone else who reads the lake, not this disk
            copied = store.upload_tree(report.docs.parent, layout.data_docs_dir(root))
            say(f"data docs: {copied} page(s) copied to {layout.data_docs_dir(root)}")
    return report


def _device_completeness(engine: GX, suite: dict[str, Any], lake: Lake, layer: str, contract: Any,
                         registry: dict[str, int], run_id: str, now: datetime, report: Report,
                         send_alert: Callable[[dict[str, Any]], None] | None,
                         say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run a contract's ``devices`` suite over every device that declares its cadence; one result row for the suite,
    one per device with gaps (named), and an alert naming the devices over the limit."""
    field_name = suite["meta"]["device_field"]
    files = layout.files(lake, layer, contract.id)
    measured = device_checks.measure(files, contract.key_fields[0] == field_name, field_name, registry)
    if not measured:
        return []
    res = engine.run(suite, device_checks.frame(measured), {}, complete=True)
    base = {"run_id": run_id, "checked_at": now, "layer": layer, "contract": contract.id, "partition": None,
            "fingerprint": None, "files": None, "rows": sum(m.observed for m in measured), "redelivered": None,
            "suite": suite["name"], "partition_passed": None, "action": None}
    out = [{**base, **r} for r in _rows_for(res)]
    limit = float(suite["expectations"][0]["kwargs"]["max_value"])
    over = []
    for m in measured:
        if not m.gaps:
            continue
        ok = m.missing_share <= limit
        text = m.describe()
        report.device_gaps.append(text)
        out.append({**base, "expectation": suite["expectations"][0]["type"], "check": "completeness",
                    "column": f"{field_name}={m.device}", "success": ok, "unexpected_count": m.missing,
                    "unexpected_percent": round(100 * m.missing_share, 3), "observed": text})
        if not ok:
            over.append(m)
    if over:
        say(f"  devices: {len(over)} of {len(measured)} miss more than {limit:.0%} of their readings")
        alert = {"alert_id": f"DQ-{run_id}:{layer}:{contract.id}:devices", "run_id": run_id, "dataset": contract.id,
                 "layer": layer, "check": "completeness",
                 "failed_expectations": [{"expectation": suite["expectations"][0]["type"], "check": "completeness",
                                          "column": f"{field_name}={m.device}"[:120], "unexpected_count": m.missing,
                                          "unexpected_percent": round(100 * m.missing_share, 3),
                                          "observed": m.describe()[:200]} for m in over[:20]],
                 "detected_at": iso(now), "action": "alerted"}
        report.failed.append(alert)
        if send_alert is not None:
            send_alert(alert)
    return out


def _alert_exp(c: dict[str, Any]) -> dict[str, Any]:
    out = {"expectation": c["expectation"], "check": c["check"]}
    if c.get("column"):
        out["column"] = c["column"][:120]
    if c.get("unexpected_count") is not None:
        out["unexpected_count"] = int(c["unexpected_count"])
    if c.get("unexpected_percent") is not None:
        out["unexpected_percent"] = float(c["unexpected_percent"])
    if c.get("observed"):
        out["observed"] = c["observed"][:200]
    return out
