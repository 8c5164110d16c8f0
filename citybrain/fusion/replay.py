"""The fusion logic run in-process over a recomputed simulation (no broker): what the stream would
have detected, for ``citybrain evaluate --replay`` and for tests.

The simulation the ground truth describes is computed again from its seeds; records the edge
would refuse are skipped (they were dead-lettered there); the rest are fed to a pipeline as
the worker feeds them, with the same event ids. Callers' pseudonyms match the stream's when
``protector`` is the platform's (``protector_from_settings``).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.fusion.pipeline import EVENT_TOPIC, WARNING_TOPIC, Pipeline
from citybrain.privacy import Protector
from citybrain.times import parse_time


def replay_detections(truth: dict[str, Any], contracts: Mapping[str, Contract], protector: Protector
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(city events, early warnings) the pipeline raises over the simulation ``truth`` describes."""
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import INCIDENT_KINDS, SimConfig

    by_id = {c.id: c for c in contracts.values()}
    checks = {k: RecordValidator(c) for k, c in by_id.items()}
    kinds = tuple(i["kind"] for i in truth["incidents"] if i["kind"] in INCIDENT_KINDS)
    start, end = parse_time(truth["start"]), parse_time(truth["end"])
    sim = Simulation(SimConfig(seed=truth["seed"], city_seed=truth.get("city_seed", 7), start=start,
                               hours=(end - start).total_seconds() / 3600, interval_min=truth["interval_min"],
                               scale=truth["scale"], incidents=kinds))
    pipeline = Pipeline(contracts, protector)
    events: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    for t, batch in sim.ticks():
        for e in batch:
            if checks[e.contract](e.value):
                continue   # dead-lettered at the edge
            payload = json.dumps(e.value, ensure_ascii=False, separators=(",", ":")).encode()
            for topic, record in pipeline.feed_message(by_id[e.contract].topic, {}, payload, t):
                if topic == EVENT_TOPIC:
                    events.append(record)
                elif topic == WARNING_TOPIC:
                    warnings.append(record)
    return events, warnings
