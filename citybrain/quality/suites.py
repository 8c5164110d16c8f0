"""Great Expectations suites generated from the contracts, hand-tuned by ``expectations/tuning.yaml``.

Two suites per layer and contract, kept as GX 1.x suite JSON in ``expectations/<layer>/``:

- ``<layer>.<contract>.records`` runs on each partition (one hour of records):
  completeness (required fields not null), validity (enums, ranges, patterns of the JSON
  Schema), uniqueness of event ids (exact redeliveries collapsed first), referential
  integrity (devices, areas, road segments known to the reference topics).
- ``<layer>.<contract>.partitions`` runs on a summary with one row per hour of the contract:
  volume against the median hour of its history, freshness of the newest record's event time (records
  loaded long after they happened are a backfill: recognised, reported, and not taken for a live feed).
- ``<layer>.<contract>.devices`` (contracts tuned with ``device_completeness``) runs on one row per device
  that declares its reporting interval: the share of its readings missing between its first and last one.

Values only known at run time (reference ids, volume bounds, the freshness limit) are
``$PARAMETER``s filled by the runner. ``citybrain dev quality suites`` rewrites the files;
``--check`` fails when they are stale (the test suite runs it).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import yaml

from citybrain.contracts.model import Contract
from citybrain.lake.layout import ZONES

#: Which lake layer a contract's zone lands in (the sink's own mapping).
LAYER_OF_ZONE = {zone: layer for layer, zones in ZONES.items() for zone in zones}


def load_tuning(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def tuning_for(tuning: dict[str, Any], contract_id: str) -> dict[str, Any]:
    merged = dict(tuning.get("defaults") or {})
    for pattern, override in (tuning.get("contracts") or {}).items():
        if fnmatch.fnmatchcase(contract_id, pattern):
            merged.update(override or {})
    return merged


def _exp(kind: str, check: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"check": check}}


def records_suite(contract: Contract, layer: str, tune: dict[str, Any]) -> dict[str, Any]:
    exps: list[dict[str, Any]] = []
    schema = contract.schema
    required = set(schema.get("required", ()))
    for name, sub in (schema.get("properties") or {}).items():
        types = sub.get("type", ())
        types = (types,) if isinstance(types, str) else tuple(types)
        nullable = "null" in types
        if name in required and not nullable:
            exps.append(_exp("expect_column_values_to_not_be_null", "completeness", column=name))
        if "enum" in sub:
            exps.append(_exp("expect_column_values_to_be_in_set", "validity", column=name,
                             value_set=[v for v in sub["enum"] if v is not None]))
        lo, hi = sub.get("minimum", sub.get("exclusiveMinimum")), sub.get("maximum", sub.get("exclusiveMaximum"))
        if (lo is not None or hi is not None) and set(types) & {"integer", "number"}:
            exps.append(_exp("expect_column_values_to_be_between", "validity", column=name, min_value=lo, max_value=hi,
                             strict_min="exclusiveMinimum" in sub, strict_max="exclusiveMaximum" in sub))
        if "pattern" in sub and "string" in types:
            exps.append(_exp("expect_column_values_to_match_regex", "validity", column=name, regex=sub["pattern"]))
    unique = tune.get("uniqueness")
    if unique:
        if len(unique) == 1:
            exps.append(_exp("expect_column_values_to_be_unique", "uniqueness", column=unique[0]))
        else:
            exps.append(_exp("expect_compound_columns_to_be_unique", "uniqueness", column_list=list(unique)))
    refs = tune.get("references") or {}
    for name in (schema.get("properties") or {}):
        if name in refs:
            exps.append(_exp("expect_column_values_to_be_in_set", "referential_integrity", column=name,
                             value_set={"$PARAMETER": f"ref_{refs[name]}"}, mostly=tune.get("referential_mostly", 1.0)))
    return {"name": f"{layer}.{contract.id}.records", "expectations": exps,
            "meta": {"generated_from": f"{contract.id}@{contract.version}", "layer": layer, "tuning": "expectations/tuning.yaml"}}


def partitions_suite(contract: Contract, layer: str, tune: dict[str, Any]) -> dict[str, Any]:
    exps: list[dict[str, Any]] = []
    if tune.get("volume"):
        exps.append(_exp("expect_column_values_to_be_between", "volume", column="rows",
                         max_value={"$PARAMETER": "rows_max"}))
        # An hour still filling can only be too big; the lower bound applies to closed hours.
        exps.append(_exp("expect_column_values_to_be_between", "volume", column="rows",
                         min_value={"$PARAMETER": "rows_min"}, row_condition="closed == True", condition_parser="pandas"))
    if tune.get("freshness_min"):
        exps.append(_exp("expect_column_min_to_be_between", "freshness", column="lag_min",
                         min_value=None, max_value=float(tune["freshness_min"])))
    return {"name": f"{layer}.{contract.id}.partitions", "expectations": exps,
            "meta": {"generated_from": f"{contract.id}@{contract.version}", "layer": layer,
                     "volume": tune.get("volume") or None, "backfill_after_min": tune.get("backfill_after_min"),
                     "tuning": "expectations/tuning.yaml"}}


def devices_suite(contract: Contract, layer: str, tune: dict[str, Any]) -> dict[str, Any] | None:
    """Completeness per device against its declared reporting interval; None when the contract is not tuned for it."""
    spec = tune.get("device_completeness")
    if not spec:
        return None
    exps = [_exp("expect_column_values_to_be_between", "completeness", column="missing_share", min_value=None,
                 max_value=float(spec["max_missing_share"]))]
    return {"name": f"{layer}.{contract.id}.devices", "expectations": exps,
            "meta": {"generated_from": f"{contract.id}@{contract.version}", "layer": layer,
                     "device_field": spec["field"], "tuning": "expectations/tuning.yaml"}}


def generate(contracts: dict[str, Contract], tuning: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Relative file path -> suite, for every contract whose zone lands in the lake."""
    out: dict[str, dict[str, Any]] = {}
    for contract in sorted(contracts.values(), key=lambda c: c.id):
        layer = LAYER_OF_ZONE.get(contract.zone)
        if layer is None:
            continue
        tune = tuning_for(tuning, contract.id)
        for suite in (records_suite(contract, layer, tune), partitions_suite(contract, layer, tune),
                      devices_suite(contract, layer, tune)):
            if suite is not None:
                out[f"{layer}/{suite['name']}.json"] = suite
    return out


def render(suite: dict[str, Any]) -> str:
    return json.dumps(suite, ensure_ascii=False, indent=2) + "\n"


def write(root: Path, suites: dict[str, dict[str, Any]], check: bool = False) -> list[str]:
    """Write the suites (or, with ``check``, only report stale files); returns the files that differ."""
    stale = []
    wanted = set(suites)
    for rel, suite in suites.items():
        path = root / rel
        if not path.exists() or path.read_text() != render(suite):
            stale.append(rel)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(render(suite))
    for path in sorted(root.glob("*/*.json")):
        rel = str(path.relative_to(root))
        if rel not in wanted:
            stale.append(rel)
            if not check:
                path.unlink()
    return stale


def load_suites(root: Path) -> dict[str, dict[str, Any]]:
    """Suite name -> suite, as committed in ``expectations/``."""
    return {json.loads(p.read_text())["name"]: json.loads(p.read_text()) for p in sorted(root.glob("*/*.json"))}
