"""The fusion logic run in-process over a recomputed simulation (no broker): what the stream would
have detected, for ``citybrain dev evaluate --replay`` and for tests.

The simulation the ground truth describes is computed again from its seeds; records the edge
would refuse are skipped (they were dead-lettered there); the rest are fed to a pipeline as
the worker feeds them, with the same event ids. Callers' pseudonyms match the stream's when
``protector`` is the platform's (``protector_from_settings``).

With ``shards`` above one, the records are split by their area key (``citybrain.fusion.keys``) over
that many pipelines, each seeing only its share of the districts (and all the reference data) and sharing the
city-wide calls baseline, as fusion split across workers does (the workers exchange it on their city-calls
topic): what detection loses to the split shows before any worker runs.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.contracts.validate import RecordValidator
from citybrain.fusion.calls import DEFAULT_FALSE_ALARM_RATE
from citybrain.fusion.fuse import CityCalls
from citybrain.fusion.keys import AreaKeys, share_of
from citybrain.fusion.pipeline import REFERENCE, Pipeline
from citybrain.access.privacy import Protector
from citybrain.times import parse_time


def replay_detections(truth: dict[str, Any], contracts: Mapping[str, Contract], protector: Protector,
                      shards: int = 1, call_false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(city events, early warnings) the pipeline raises over the simulation ``truth`` describes (split over
    ``shards`` pipelines by area key), judging calls at ``call_false_alarm_rate`` (the city's setting, as the
    worker does)."""
    outputs = replay_outputs(truth, contracts, protector, shards, call_false_alarm_rate)
    return outputs.get(topics.CITY_EVENTS, []), outputs.get(topics.EARLY_WARNINGS, [])


def replay_outputs(truth: dict[str, Any], contracts: Mapping[str, Contract], protector: Protector,
                   shards: int = 1, call_false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
                   ) -> dict[str, list[dict[str, Any]]]:
    """Every output, by topic, the pipeline produces over the simulation ``truth`` describes (split over
    ``shards`` pipelines by area key, calls judged at ``call_false_alarm_rate``), swept every five minutes of stream time: what the stream publishes, once
    each (the worker sweeps on a timer too, so windows still open when the day ends may close there as well)."""
    from citybrain.sim.engine import Simulation
    from citybrain.sim.model import INCIDENT_KINDS, SimConfig

    by_id = {c.id: c for c in contracts.values()}
    checks = {k: RecordValidator(c) for k, c in by_id.items()}
    kinds = tuple(i["kind"] for i in truth["incidents"] if i["kind"] in INCIDENT_KINDS)
    start, end = parse_time(truth["start"]), parse_time(truth["end"])
    sim = Simulation(SimConfig(seed=truth["seed"], city_seed=truth.get("city_seed", 7), start=start,
                               hours=(end - start).total_seconds() / 3600, interval_min=truth["interval_min"],
                               scale=truth["scale"], incidents=kinds))
    city = CityCalls()
    pipelines = [Pipeline(contracts, protector, city_calls=city, call_false_alarm_rate=call_false_alarm_rate)
                 for _ in range(max(1, shards))]
    keys = AreaKeys()
    outputs: dict[str, list[dict[str, Any]]] = {}
    for t, batch in sim.ticks():
        for e in batch:
            if checks[e.contract](e.value):
                continue   # dead-lettered at the edge
            payload = json.dumps(e.value, ensure_ascii=False, separators=(",", ":")).encode()
            topic_in = by_id[e.contract].topic
            if topic_in in REFERENCE:
                keys.reference(topic_in, e.value)
                targets = pipelines
            else:
                targets = [pipelines[share_of(keys.key(topic_in, e.value), len(pipelines))]]
            for topic, record in (out for p in targets for out in p.feed_message(topic_in, {}, payload, t)):
                outputs.setdefault(topic, []).append(record)
    return outputs
