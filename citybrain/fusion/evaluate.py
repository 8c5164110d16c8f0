"""Score what the platform detected against the simulator's ground truth.

Expected items of the ground truth with output ``city.event`` or ``alert.early_warning``
are matched to detections of the same category in the same street whose time falls in
the incident's window (from an hour before it starts to two hours after it ends). Expected
items for other outputs (``alert.security``, ``data_quality``) belong to the DAGs and are
listed as not scored here.

- precision: detections that match an injected incident (or, for sensor-fault events, one of the
  fleet's background stuck or drifting gauges) / all detections
- recall: expected items matched by at least one detection / expected items
- lead time: for matched early warnings, the incident's complaint peak minus the time the
  warning was raised (positive = before the peak), in minutes; the median is reported.
"""

from __future__ import annotations

import statistics
from datetime import timedelta
from typing import Any

from citybrain.times import iso, parse_time

SCORED = {"city.event": "category", "alert.early_warning": "category"}
SLACK_BEFORE, SLACK_AFTER = timedelta(hours=1), timedelta(hours=2)


def _matches(expected: dict[str, Any], incident: dict[str, Any], detection: dict[str, Any]) -> bool:
    if detection.get("category") != expected.get("category"):
        return False
    where = expected.get("street_code")   # the simulator's unit: a street, or a district standing in for streets
    if where and (detection.get("street_code") or detection.get("district_code")) != where:
        return False
    device = expected.get("device_id")
    if device and device not in (detection.get("evidence", {}).get("devices") or []):
        return False
    at = parse_time(detection.get("first_seen") or detection.get("observed_at") or detection["detected_at"])
    return parse_time(incident["start"]) - SLACK_BEFORE <= at <= parse_time(incident["end"]) + SLACK_AFTER


def evaluate(truth: dict[str, Any], events: list[dict[str, Any]], warnings: list[dict[str, Any]]) -> dict[str, Any]:
    """Precision, recall and lead time of ``events`` (latest state per event id) and ``warnings``."""
    latest: dict[str, dict[str, Any]] = {}
    for e in events:   # the latest state of each event, detected when it was first published
        first = latest.get(e["event_id"], e)
        latest[e["event_id"]] = {**e, "first_seen": min(first["first_seen"], e["first_seen"]),
                                 "detected_at": min(first["detected_at"], e["detected_at"])}
    detections = [("city.event", e) for e in latest.values()] + [("alert.early_warning", w) for w in warnings]
    matched_detections: set[int] = set()
    items, not_scored, leads = [], [], []
    for incident in truth["incidents"]:
        for expected in incident["expected"]:
            output = expected["output"]
            if output not in SCORED:
                not_scored.append({"incident_id": incident["incident_id"], **expected})
                continue
            hits = [i for i, (out, d) in enumerate(detections) if out == output and _matches(expected, incident, d)]
            matched_detections.update(hits)
            item: dict[str, Any] = {"incident_id": incident["incident_id"], "output": output,
                                    "category": expected.get("category"), "detected": bool(hits)}
            if hits:
                first = min(parse_time(detections[i][1]["detected_at"]) for i in hits)
                item["first_detected_at"] = iso(first)
                peak = incident.get("evidence", {}).get("complaint_peak")
                if output == "alert.early_warning" and peak:
                    lead = (parse_time(peak) - first).total_seconds() / 60
                    item["lead_time_min"] = round(lead, 1)
                    leads.append(lead)
            items.append(item)
    # Sensor-fault events for the fleet's own background faults (stuck or drifting gauges) are right too.
    faults = [f for f in truth.get("sensor_faults", []) if f["fault"] in ("stuck", "drift")]
    background = 0
    for i, (out, d) in enumerate(detections):
        if i in matched_detections or out != "city.event" or d.get("category") != "sensor_fault":
            continue
        devices = set(d.get("evidence", {}).get("devices") or [])
        if any(f["device_id"] in devices for f in faults):
            matched_detections.add(i)
            background += 1
    false_positives = [d for i, (_o, d) in enumerate(detections) if i not in matched_detections]
    scored = len(items)
    return {
        "precision": round(len(matched_detections) / len(detections), 3) if detections else None,
        "recall": round(sum(i["detected"] for i in items) / scored, 3) if scored else None,
        "median_lead_time_min": round(statistics.median(leads), 1) if leads else None,
        "detections": len(detections), "events": len(latest), "warnings": len(warnings),
        "expected": scored, "matched": sum(i["detected"] for i in items), "items": items,
        "background_faults_detected": background, "background_faults": len(faults),
        "false_positives": [{k: d.get(k) for k in ("event_id", "warning_id", "category", "kind", "street_name",
                                                   "detected_at") if d.get(k)} for d in false_positives[:50]],
        "not_scored_here": not_scored,
    }


def in_window(truth: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The detections (city events, early warnings) that concern the ground truth's window."""
    return [r for r in records if truth["start"] <= (r.get("first_seen") or r.get("observed_at") or "") <= truth["end"]]
