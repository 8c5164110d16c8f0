"""Curated application-scenario datasets, computed with DuckDB over the lake's Parquet.

Each dataset declares its inputs (lake contract directories), its SQL and its contract:
the meaning of every field. ``build`` runs the SQL and returns an Arrow table plus the input
files it read (the release's lineage). Inputs are referenced in the SQL as ``{name}``; the
records' JSON is in the ``value`` column (see ``citybrain.lake.sink``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    description: str
    owner: str
    inputs: dict[str, str]          # SQL name -> "<layer>/<contract dir>"
    sql: str
    fields: dict[str, str]          # field -> meaning
    key: tuple[str, ...] = field(default_factory=tuple)

    def contract(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "description": self.description, "owner": self.owner,
                "key": list(self.key), "fields": self.fields, "inputs": sorted(self.inputs.values())}


#: Parse an RFC 3339 UTC time from the JSON into a naive UTC timestamp.
MACROS = """
CREATE OR REPLACE MACRO utc(x) AS CAST(replace(x, 'Z', '') AS TIMESTAMP);
CREATE OR REPLACE MACRO local_day(x) AS CAST(x + INTERVAL 8 HOUR AS DATE);
CREATE OR REPLACE MACRO j(v, f) AS json_extract_string(v, '$.' || f);
"""

RESPOND_ON_RECEIPT = Dataset(
    name="respond_on_receipt_kpis",
    title="接诉即办 KPIs per department, district and day",
    description="Respond-on-receipt indicators of the 12345 hotline: how fast departments accept dispatched "
                "tickets, how many they handle within the SLA, resolve and satisfy, and how many run overdue or "
                "are reopened. Day = the day the ticket was received, Beijing time; overdue as of the newest "
                "lifecycle event in the data.",
    owner="hotline_12345",
    inputs={"ticket_events": "bronze/raw.hotline.ticket_event",
            "work_orders": "silver/dispatch.*.work_order"},
    key=("department", "district_code", "day"),
    fields={
        "department": "department the ticket was dispatched to (lead)",
        "district_code": "district of the ticket's location (from the fused work order), 'unknown' if unplaced",
        "day": "day the ticket was received (Asia/Shanghai)",
        "tickets": "tickets dispatched to the department that day",
        "response_min_median": "median minutes from dispatch to the department accepting",
        "handled_on_time_rate": "share handled by the SLA deadline",
        "resolution_rate": "share the caller confirmed as resolved",
        "satisfaction_rate": "share of followed-up callers satisfied or basically satisfied",
        "overdue": "tickets past their deadline without being handled, or handled late",
        "reopened": "tickets reopened at least once",
    },
    sql="""
WITH ev AS (
  SELECT j(value, 'service_request_id') AS rid, j(value, 'event_type') AS kind, utc(j(value, 'occurred_at')) AS occurred,
         j(value, 'department') AS dept, utc(j(value, 'sla_deadline')) AS deadline,
         j(value, 'satisfaction') AS satisfaction, j(value, 'resolved') = 'true' AS resolved
  FROM {ticket_events}),
as_of AS (SELECT max(occurred) AS latest_event FROM ev),
t AS (
  SELECT rid,
         min(occurred) FILTER (WHERE kind = 'received') AS received,
         min(occurred) FILTER (WHERE kind = 'dispatched') AS dispatched,
         arg_min(dept, occurred) FILTER (WHERE kind = 'dispatched') AS department,
         min(deadline) FILTER (WHERE kind = 'dispatched') AS deadline,
         min(occurred) FILTER (WHERE kind = 'accepted') AS accepted,
         min(occurred) FILTER (WHERE kind = 'handled') AS handled,
         coalesce(bool_or(resolved) FILTER (WHERE kind IN ('handled', 'followed_up')), false) AS resolved,
         arg_max(satisfaction, occurred) FILTER (WHERE kind = 'followed_up') AS satisfaction,
         count(*) FILTER (WHERE kind = 'reopened') AS reopened
  FROM ev GROUP BY rid),
place AS (
  SELECT j(value, 'source_id') AS rid, any_value(j(value, 'district_code')) AS district_code
  FROM {work_orders} WHERE j(value, 'source') = 'ticket' AND j(value, 'role') = 'lead' GROUP BY 1)
SELECT t.department, coalesce(place.district_code, 'unknown') AS district_code,
       local_day(coalesce(t.received, t.dispatched)) AS day,
       count(*) AS tickets,
       round(median(epoch(t.accepted - t.dispatched) / 60.0), 1) AS response_min_median,
       round(avg(CASE WHEN t.handled IS NOT NULL AND t.handled <= t.deadline THEN 1.0 ELSE 0.0 END), 4) AS handled_on_time_rate,
       round(avg(CASE WHEN t.resolved THEN 1.0 ELSE 0.0 END), 4) AS resolution_rate,
       round(avg(CASE WHEN t.satisfaction IS NULL THEN NULL WHEN t.satisfaction = 'dissatisfied' THEN 0.0 ELSE 1.0 END), 4)
         AS satisfaction_rate,
       sum(CASE WHEN t.handled > t.deadline OR (t.handled IS NULL AND t.deadline < as_of.latest_event) THEN 1 ELSE 0 END) AS overdue,
       sum(CASE WHEN t.reopened > 0 THEN 1 ELSE 0 END) AS reopened
FROM t CROSS JOIN as_of LEFT JOIN place USING (rid)
WHERE t.dispatched IS NOT NULL AND t.department IS NOT NULL
GROUP BY 1, 2, 3
ORDER BY day, department, district_code
""")

TRAFFIC_CONGESTION = Dataset(
    name="traffic_congestion_index",
    title="Traffic congestion index per road segment and hour",
    description="From the traffic-flow sensors: mean speed against the segment's free-flow speed. The index is "
                "0 at free flow and 100 at a standstill (1 - mean speed / free-flow speed, in percent). Hour in UTC.",
    owner="transport",
    inputs={"traffic_flow": "bronze/raw.sensor.traffic_flow", "road_segments": "bronze/raw.ref.road_segment"},
    key=("segment_id", "hour_start"),
    fields={
        "segment_id": "road segment (raw.ref.road_segment)",
        "road_name": "the segment's road name",
        "road_class": "arterial, secondary or branch",
        "street_code": "street the segment lies in",
        "hour_start": "start of the hour (UTC)",
        "readings": "sensor readings in the hour",
        "vehicles": "vehicles counted in the hour",
        "mean_speed_kmh": "mean of the readings' average vehicle speed (km/h)",
        "free_speed_kmh": "the segment's free-flow speed (km/h)",
        "congestion_index": "0 free flow ... 100 standstill",
    },
    sql="""
WITH r AS (
  SELECT j(value, 'refRoadSegment') AS segment_id, date_trunc('hour', utc(j(value, 'dateObservedFrom'))) AS hour_start,
         CAST(j(value, 'averageVehicleSpeed') AS DOUBLE) AS speed, CAST(j(value, 'intensity') AS BIGINT) AS intensity
  FROM {traffic_flow}),
seg AS (
  SELECT segment_id, j(latest, 'name') AS road_name, j(latest, 'road_class') AS road_class,
         j(latest, 'street_code') AS street_code, CAST(j(latest, 'free_speed_kmh') AS DOUBLE) AS free_speed_kmh
  FROM (SELECT j(value, 'segment_id') AS segment_id, arg_max(value, "offset") AS latest FROM {road_segments} GROUP BY 1))
SELECT r.segment_id, seg.road_name, seg.road_class, seg.street_code, r.hour_start, count(*) AS readings,
       sum(r.intensity) AS vehicles, round(avg(r.speed), 1) AS mean_speed_kmh, seg.free_speed_kmh,
       round(greatest(0.0, 1 - avg(r.speed) / seg.free_speed_kmh) * 100, 1) AS congestion_index
FROM r JOIN seg USING (segment_id)
WHERE r.speed IS NOT NULL
GROUP BY r.segment_id, seg.road_name, seg.road_class, seg.street_code, r.hour_start, seg.free_speed_kmh
ORDER BY r.hour_start, r.segment_id
""")

DATASETS: dict[str, Dataset] = {d.name: d for d in (RESPOND_ON_RECEIPT, TRAFFIC_CONGESTION)}


def input_files(lake: Path, pattern: str) -> list[Path]:
    layer, contract = pattern.split("/", 1)
    return sorted((lake / layer).glob(f"{contract}/date=*/hour=*/*.parquet"))


def build(lake: Path, dataset: Dataset) -> tuple[pa.Table, list[Path]]:
    """Run the dataset's SQL over the lake; (result, the input files read)."""
    import duckdb

    sources, used = {}, []
    for name, pattern in dataset.inputs.items():
        files = input_files(lake, pattern)
        if not files:
            raise LookupError(f"{dataset.name}: no Parquet for input {pattern!r} under {lake}. Fix: fill the lake first "
                              "(`citybrain lake bronze` / `citybrain lake silver`, or `make demo`).")
        used += files
        sources[name] = "read_parquet([{}], union_by_name = true)".format(", ".join(f"'{f}'" for f in files))
    con = duckdb.connect()
    try:
        con.execute(MACROS)
        return con.sql(dataset.sql.format(**sources)).to_arrow_table(), used
    finally:
        con.close()
