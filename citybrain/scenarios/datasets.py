"""Curated application-scenario datasets, computed with DuckDB over the lake's Parquet.

Each dataset declares its inputs (lake contract directories), its SQL and its contract:
the meaning of every field. ``build`` runs the SQL and returns an Arrow table plus the input
files it read (the release's lineage). Inputs are referenced in the SQL as ``{name}``; the
records' JSON is in the ``value`` column (see ``citybrain.lake.writer``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from citybrain.contracts.topics import REF_CITY

if TYPE_CHECKING:  # the DAG files read DATASETS at parse time: Arrow and the lake's store load in the functions
    import pyarrow as pa

    from citybrain.lake.layout import Lake
    from citybrain.lake.store import LakePath


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


#: ``utc``: an RFC 3339 UTC time from the JSON as a naive UTC timestamp; ``local``: a naive UTC timestamp
#: as the city's wall-clock time ({timezone}: the time zone of the city on ``raw.ref.city``); ``weight``: the
#: weight the city's 考核 gives a rate ('response', 'resolution', 'satisfaction': :func:`assessment_weights`).
MACROS = """
CREATE OR REPLACE MACRO utc(x) AS CAST(replace(x, 'Z', '') AS TIMESTAMP);
CREATE OR REPLACE MACRO local(x) AS timezone('{timezone}', x AT TIME ZONE 'UTC');
CREATE OR REPLACE MACRO local_day(x) AS CAST(local(x) AS DATE);
CREATE OR REPLACE MACRO j(v, f) AS json_extract_string(v, '$.' || f);
CREATE OR REPLACE MACRO weight(rate) AS CASE rate WHEN 'response' THEN {response} WHEN 'resolution' THEN {resolution}
  WHEN 'satisfaction' THEN {satisfaction} END;
"""

#: Each ticket's closed loop from its lifecycle events: ``ev`` (the events), ``as_of`` (the newest event) and
#: ``t`` (per ticket: received, dispatched, lead department, deadline, accepted, handled, resolved,
#: satisfaction, reopened). Needs the input ``{ticket_events}``. The department is the one responsible for the
#: matter (``assigned_department`` of the dispatch, since ticket events 1.1.0; before that the dispatch's actor);
#: the deadline that of the last level holding the ticket when it escalated through the city's areas.
TICKET_STATES = """ev AS (
  SELECT j(value, 'service_request_id') AS rid, j(value, 'event_type') AS kind, utc(j(value, 'occurred_at')) AS occurred,
         coalesce(j(value, 'assigned_department'), j(value, 'department')) AS dept, utc(j(value, 'sla_deadline')) AS deadline,
         j(value, 'satisfaction') AS satisfaction, j(value, 'resolved') = 'true' AS resolved
  FROM {ticket_events}),
as_of AS (SELECT max(occurred) AS latest_event FROM ev),
t AS (
  SELECT rid,
         min(occurred) FILTER (WHERE kind = 'received') AS received,
         min(occurred) FILTER (WHERE kind = 'dispatched') AS dispatched,
         arg_min(dept, occurred) FILTER (WHERE kind = 'dispatched') AS department,
         coalesce(max(deadline) FILTER (WHERE kind = 'escalated'), min(deadline) FILTER (WHERE kind = 'dispatched'))
           AS deadline,
         min(occurred) FILTER (WHERE kind = 'accepted') AS accepted,
         min(occurred) FILTER (WHERE kind = 'handled') AS handled,
         coalesce(bool_or(resolved) FILTER (WHERE kind IN ('handled', 'followed_up')), false) AS resolved,
         arg_max(satisfaction, occurred) FILTER (WHERE kind = 'followed_up') AS satisfaction,
         count(*) FILTER (WHERE kind = 'reopened') AS reopened
  FROM ev GROUP BY rid)"""

RESPOND_ON_RECEIPT = Dataset(
    name="respond_on_receipt_kpis",
    title="接诉即办 KPIs per department, district and day",
    description="Respond-on-receipt indicators of the 12345 hotline: how fast departments accept dispatched "
                "tickets, how many they handle within the SLA, resolve and satisfy, and how many run overdue or "
                "are reopened. Day = the day the ticket was received, in the city's time zone; overdue as of the newest "
                "lifecycle event in the data.",
    owner="hotline_12345",
    inputs={"ticket_events": "bronze/raw.hotline.ticket_event",
            "work_orders": "silver/dispatch.*.work_order"},
    key=("department", "district_code", "day"),
    fields={
        "department": "department the ticket was dispatched to (lead)",
        "district_code": "district of the ticket's location (from the fused work order), 'unknown' if unplaced",
        "day": "day the ticket was received (the city's time zone, raw.ref.city)",
        "tickets": "tickets dispatched to the department that day",
        "response_min_median": "median minutes from dispatch to the department accepting",
        "handled_on_time_rate": "share handled by the SLA deadline",
        "resolution_rate": "share the caller confirmed as resolved",
        "satisfaction_rate": "share of followed-up callers satisfied or basically satisfied",
        "followed_up": "tickets whose caller was followed up: the number satisfaction_rate rests on",
        "overdue": "tickets past their deadline without being handled, or handled late",
        "reopened": "tickets reopened at least once",
    },
    sql="""
WITH """ + TICKET_STATES + """,
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
       count(t.satisfaction) AS followed_up,
       CAST(sum(CASE WHEN t.handled > t.deadline OR (t.handled IS NULL AND t.deadline < as_of.latest_event) THEN 1 ELSE 0 END)
         AS BIGINT) AS overdue,
       CAST(sum(CASE WHEN t.reopened > 0 THEN 1 ELSE 0 END) AS BIGINT) AS reopened
FROM t CROSS JOIN as_of LEFT JOIN place USING (rid)
WHERE t.dispatched IS NOT NULL AND t.department IS NOT NULL
GROUP BY 1, 2, 3
ORDER BY day, department, district_code
""")

TRAFFIC_CONGESTION = Dataset(
    name="traffic_congestion_index",
    title="Traffic congestion index per road segment and hour",
    description="From the traffic-flow sensors: mean speed against the segment's free-flow speed. The index is "
                "0 at free flow and 100 at a standstill (1 - mean speed / free-flow speed, in percent). Hour in UTC, "
                "and on the city's clock beside it.",
    owner="transport",
    inputs={"traffic_flow": "bronze/raw.sensor.traffic_flow", "road_segments": "bronze/raw.ref.road_segment"},
    key=("segment_id", "hour_start"),
    fields={
        "segment_id": "road segment (raw.ref.road_segment)",
        "road_name": "the segment's road name",
        "road_class": "arterial, secondary or branch",
        "street_code": "street the segment lies in",
        "hour_start": "start of the hour (UTC)",
        "hour_start_local": "the same moment on the city's clock (its time zone, raw.ref.city): for local days and hours",
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
SELECT r.segment_id, seg.road_name, seg.road_class, seg.street_code, r.hour_start,
       local(r.hour_start) AS hour_start_local, count(*) AS readings,
       CAST(sum(r.intensity) AS BIGINT) AS vehicles, round(avg(r.speed), 1) AS mean_speed_kmh, seg.free_speed_kmh,
       round(greatest(0.0, 1 - avg(r.speed) / seg.free_speed_kmh) * 100, 1) AS congestion_index
FROM r JOIN seg USING (segment_id)
WHERE r.speed IS NOT NULL
GROUP BY r.segment_id, seg.road_name, seg.road_class, seg.street_code, r.hour_start, seg.free_speed_kmh
ORDER BY r.hour_start, r.segment_id
""")

#: Latest record per key of a compacted reference input (areas, devices), as a SQL fragment.
STREETS = """(SELECT j(latest, 'area_code') AS area_code, j(latest, 'name') AS name, j(latest, 'level') AS level,
        j(latest, 'parent_code') AS parent_code, CAST(j(latest, 'population') AS BIGINT) AS population
 FROM (SELECT j(value, 'area_code') AS k, arg_max(value, "offset") AS latest FROM {admin_areas} GROUP BY 1))"""
DEVICES = """(SELECT k AS device_id, j(latest, 'street_code') AS street_code
 FROM (SELECT j(value, 'device_id') AS k, arg_max(value, "offset") AS latest FROM {devices} GROUP BY 1))"""
#: A record's deepest area: its street, else its district (a city whose pack has no streets there).
AREA = "coalesce(street_code, district_code)"
AREA_LEVEL = "CASE WHEN street_code IS NOT NULL THEN 'street' ELSE 'district' END"
#: Columns of an area dataset's row beyond its street ones, appended after them (released schemas only widen).
AREA_FIELDS = {"area_code": "the deepest area: the street, else the district (a city whose pack has no streets there)",
               "area_level": "street or district", "area_name": "the area's name"}
TICKET_ORDERS = """(SELECT j(value, 'source_id') AS rid, any_value(j(value, 'street_code')) AS street_code,
        any_value(j(value, 'district_code')) AS district_code, any_value(j(value, 'category')) AS category,
        any_value(j(value, 'department')) AS department, min(utc(j(value, 'received_at'))) AS received
 FROM {work_orders} WHERE j(value, 'source') = 'ticket' AND j(value, 'role') = 'lead' GROUP BY 1)"""

HOTLINE_HOTSPOTS = Dataset(
    name="hotline_hotspots",
    title="12345 hotline hotspots and emerging risks by street",
    description="Tickets per street and category from the fused work orders (lead department, located tickets); "
                "per district where the city's pack has no streets there (area_code, area_level). "
                "A hotspot has at least 5 tickets and three times the median street of its category; an emerging "
                "risk has at least 3 tickets in the last 6 hours of the data at three times the street's earlier "
                "hourly rate. Fused city incidents in the street are counted beside them.",
    owner="hotline_12345",
    inputs={"work_orders": "silver/dispatch.*.work_order", "incidents": "silver/city.event.incident",
            "admin_areas": "bronze/raw.ref.admin_area"},
    key=("area_code", "category"),
    fields={
        "street_code": "street (raw.ref.admin_area); null for a district's row", "street_name": "the street's name",
        "district_code": "district of the street, or the district's own row", "category": "ticket category",
        "tickets": "tickets of the category in the street", "tickets_last_6h": "of which in the last 6 hours of the data",
        "vs_category_median": "tickets / the median street's tickets of the category",
        "recent_rate_ratio": "hourly rate in the last 6 hours / the street's earlier hourly rate",
        "incidents": "fused city incidents (any category) in the street",
        "hotspot": "true when tickets >= 5 and >= 3x the category's median street",
        "emerging": "true when tickets_last_6h >= 3 and the recent rate >= 3x the earlier one",
        "as_of": "newest ticket in the data (UTC)", **AREA_FIELDS,
    },
    sql="""
WITH wo AS (SELECT *, """ + AREA + """ AS area_code, """ + AREA_LEVEL + """ AS area_level
            FROM """ + TICKET_ORDERS + """ WHERE """ + AREA + """ IS NOT NULL),
span AS (SELECT max(received) AS latest, min(received) AS earliest FROM wo),
agg AS (
  SELECT area_code, any_value(area_level) AS area_level, any_value(street_code) AS street_code,
         any_value(district_code) AS district_code, category, count(*) AS tickets,
         count(*) FILTER (WHERE received > latest - INTERVAL 6 HOUR) AS last_6h,
         count(*) FILTER (WHERE received <= latest - INTERVAL 6 HOUR) AS before_6h,
         greatest(epoch(latest - earliest) / 3600.0 - 6, 1.0) AS hours_before, latest AS as_of
  FROM wo CROSS JOIN span GROUP BY area_code, category, latest, earliest),
cat AS (SELECT category, median(tickets) AS med FROM agg GROUP BY 1),
ev AS (SELECT """ + AREA + """ AS area_code, count(DISTINCT event_id) AS incidents
       FROM (SELECT j(value, 'street_code') AS street_code, j(value, 'district_code') AS district_code,
                    j(value, 'event_id') AS event_id FROM {incidents}) GROUP BY 1),
streets AS """ + STREETS + """
SELECT a.street_code, s.name AS street_name, a.district_code, a.category, a.tickets, a.last_6h AS tickets_last_6h,
       round(a.tickets / cat.med, 2) AS vs_category_median,
       round((a.last_6h / 6.0) / greatest(a.before_6h / a.hours_before, 0.1), 2) AS recent_rate_ratio,
       coalesce(ev.incidents, 0) AS incidents,
       a.tickets >= 5 AND a.tickets >= 3 * cat.med AS hotspot,
       a.last_6h >= 3 AND (a.last_6h / 6.0) >= 3 * greatest(a.before_6h / a.hours_before, 0.1) AS emerging,
       a.as_of, a.area_code, a.area_level, ar.name AS area_name
FROM agg a JOIN cat USING (category) LEFT JOIN streets s ON s.area_code = a.street_code
     LEFT JOIN streets ar ON ar.area_code = a.area_code LEFT JOIN ev ON ev.area_code = a.area_code
ORDER BY a.tickets DESC, a.area_code, a.category
""")

ENV_EXCEEDANCES = Dataset(
    name="environmental_exceedances",
    title="Environmental exceedances by street and hour, with the complaints that followed",
    description="Hours in which a street's mean PM2.5 exceeded 75 µg/m³ (GB 3095 grade II, 24-hour limit used as "
                "an hourly screening value) or its mean noise level LAeq exceeded 60 dB(A) by day / 50 dB(A) by night "
                "(GB 3096 class 2; night 22:00-06:00 in the city's time zone), with the hotline complaints of the matching "
                "category (air_pollution, noise) received in the street from the start of that hour to 6 hours after "
                "its end. Hour in UTC, and on the city's clock beside it.",
    owner="environment",
    inputs={"air_quality": "bronze/raw.sensor.air_quality", "noise_level": "bronze/raw.sensor.noise_level",
            "devices": "bronze/raw.ref.device", "work_orders": "silver/dispatch.*.work_order"},
    key=("street_code", "pollutant", "hour_start"),
    fields={
        "street_code": "street of the sensors (device registry)", "pollutant": "pm25 or noise_laeq",
        "unit": "unit of mean_value and limit_value", "hour_start": "start of the hour (UTC)",
        "hour_start_local": "the same moment on the city's clock (its time zone, raw.ref.city): for local days and hours",
        "mean_value": "mean of the street's readings in the hour", "peak_value": "highest reading in the hour",
        "limit_value": "the limit it exceeded", "readings": "readings in the hour", "devices": "sensors reporting",
        "complaints_within_6h": "matching hotline complaints in the street within 6 hours",
        "first_complaint_after_min": "minutes from the start of the hour to the first such complaint",
    },
    sql="""
WITH dev AS """ + DEVICES + """,
r AS (
  SELECT 'pm25' AS pollutant, 'µg/m³' AS unit, j(value, 'refDevice') AS device_id,
         date_trunc('hour', utc(j(value, 'dateObserved'))) AS hour_start, CAST(j(value, 'pm25') AS DOUBLE) AS v
  FROM {air_quality}
  UNION ALL
  SELECT 'noise_laeq', 'dB(A)', j(value, 'refDevice'), date_trunc('hour', utc(j(value, 'dateObservedFrom'))),
         CAST(j(value, 'LAeq') AS DOUBLE)
  FROM {noise_level}),
ex AS (
  SELECT dev.street_code, r.pollutant, r.unit, r.hour_start, round(avg(r.v), 1) AS mean_value, max(r.v) AS peak_value,
         CAST(CASE WHEN r.pollutant = 'pm25' THEN 75.0
              WHEN hour(local(r.hour_start)) BETWEEN 6 AND 21 THEN 60.0 ELSE 50.0 END AS DOUBLE) AS limit_value,
         count(*) AS readings, count(DISTINCT r.device_id) AS devices
  FROM r JOIN dev USING (device_id) WHERE r.v IS NOT NULL AND dev.street_code IS NOT NULL
  GROUP BY dev.street_code, r.pollutant, r.unit, r.hour_start),
c AS (SELECT street_code, category, received FROM """ + TICKET_ORDERS + """ WHERE category IN ('noise', 'air_pollution'))
SELECT ex.street_code, ex.pollutant, ex.unit, ex.hour_start, local(ex.hour_start) AS hour_start_local, ex.mean_value,
       ex.peak_value, ex.limit_value, ex.readings, ex.devices, count(c.received) AS complaints_within_6h,
       round(min(epoch(c.received - ex.hour_start) / 60.0), 1) AS first_complaint_after_min
FROM ex LEFT JOIN c ON c.street_code = ex.street_code
  AND c.category = CASE ex.pollutant WHEN 'pm25' THEN 'air_pollution' ELSE 'noise' END
  AND c.received >= ex.hour_start AND c.received < ex.hour_start + INTERVAL 7 HOUR
WHERE ex.mean_value > ex.limit_value
GROUP BY ALL
ORDER BY ex.hour_start, ex.street_code, ex.pollutant
""")

FLOOD_RISK = Dataset(
    name="flood_risk_by_street",
    title="Waterlogging and flood risk by street",
    description="Per street: its water-level gauges (highest level as a share of the reference level, readings in "
                "warning and flooded state), waterlogging complaints to the hotline and fused flood incidents. "
                "Per district where the city's pack has no streets there (area_code, area_level): its tickets and "
                "incidents (the device registry places gauges by street only). "
                "risk_score 0-100 = 50 x the level ratio (99th percentile, capped at 1) + 20 if any gauge reported flooded "
                "+ 5 per waterlogging ticket (at most 20) + 10 if a flood incident was fused in the street; "
                "risk_level low < 30 <= elevated < 60 <= high.",
    owner="water",
    inputs={"water_level": "bronze/raw.sensor.water_level", "devices": "bronze/raw.ref.device",
            "work_orders": "silver/dispatch.*.work_order", "incidents": "silver/city.event.incident",
            "admin_areas": "bronze/raw.ref.admin_area"},
    key=("area_code",),
    fields={
        "street_code": "street; null for a district's row", "street_name": "the street's name",
        "district_code": "district of the street (the district itself for a district's row)",
        "gauges": "water-level gauges in the street", "underpass_gauges": "of which at underpasses",
        "max_level_ratio": "99th percentile of current level / flooding level over the street's readings (a faulty "
                       "gauge's single spikes do not count)",
        "warning_readings": "readings in warning state", "flooded_readings": "readings in flooded state",
        "waterlogging_tickets": "hotline tickets about waterlogging", "flood_incidents": "fused flood incidents",
        "risk_score": "0 (none) ... 100 (flooding now)", "risk_level": "low, elevated or high", **AREA_FIELDS,
    },
    sql="""
WITH dev AS """ + DEVICES + """,
wl AS (SELECT j(value, 'refDevice') AS device_id, CAST(j(value, 'currentLevel') AS DOUBLE) AS lvl,
              CAST(j(value, 'referenceLevel') AS DOUBLE) AS ref, j(value, 'floodLevelStatus') AS status,
              j(value, 'siteType') AS site FROM {water_level}),
g AS (SELECT dev.street_code, count(DISTINCT wl.device_id) AS gauges,
             count(DISTINCT wl.device_id) FILTER (WHERE site = 'underpass') AS underpass_gauges,
             quantile_cont(lvl / nullif(ref, 0), 0.99) AS max_level_ratio,
             count(*) FILTER (WHERE status = 'warning') AS warning_readings,
             count(*) FILTER (WHERE status = 'flooded') AS flooded_readings
      FROM wl JOIN dev USING (device_id) GROUP BY 1),
t AS (SELECT """ + AREA + """ AS area_code, count(*) AS waterlogging_tickets FROM """ + TICKET_ORDERS + """
      WHERE category = 'waterlogging' GROUP BY 1),
e AS (SELECT """ + AREA + """ AS area_code, count(DISTINCT event_id) AS flood_incidents
      FROM (SELECT j(value, 'street_code') AS street_code, j(value, 'district_code') AS district_code,
                   j(value, 'event_id') AS event_id FROM {incidents} WHERE j(value, 'category') = 'flood') GROUP BY 1),
streets AS """ + STREETS + """,
areas AS (SELECT * FROM streets WHERE level = 'street' OR (level = 'district' AND area_code NOT IN
            (SELECT parent_code FROM streets WHERE level = 'street' AND parent_code IS NOT NULL))),
scored AS (
  SELECT CASE WHEN s.level = 'street' THEN s.area_code END AS street_code,
         CASE WHEN s.level = 'street' THEN s.name END AS street_name,
         CASE WHEN s.level = 'street' THEN s.parent_code ELSE s.area_code END AS district_code,
         coalesce(g.gauges, 0) AS gauges, coalesce(g.underpass_gauges, 0) AS underpass_gauges,
         round(g.max_level_ratio, 3) AS max_level_ratio, coalesce(g.warning_readings, 0) AS warning_readings,
         coalesce(g.flooded_readings, 0) AS flooded_readings, coalesce(t.waterlogging_tickets, 0) AS waterlogging_tickets,
         coalesce(e.flood_incidents, 0) AS flood_incidents, s.area_code, s.level AS area_level, s.name AS area_name
  FROM areas s LEFT JOIN g ON g.street_code = s.area_code LEFT JOIN t ON t.area_code = s.area_code
       LEFT JOIN e ON e.area_code = s.area_code)
SELECT * EXCLUDE (area_code, area_level, area_name),
       round(least(100.0, 50 * least(coalesce(max_level_ratio, 0), 1.0) + CASE WHEN flooded_readings > 0 THEN 20 ELSE 0 END
                + least(20, 5 * waterlogging_tickets) + CASE WHEN flood_incidents > 0 THEN 10 ELSE 0 END), 1) AS risk_score,
       CASE WHEN risk_score >= 60 THEN 'high' WHEN risk_score >= 30 THEN 'elevated' ELSE 'low' END AS risk_level,
       area_code, area_level, area_name
FROM scored ORDER BY risk_score DESC, area_code
""")

ELDERLY_CARE = Dataset(
    name="elderly_care_demand",
    title="Elderly-care service demand by street",
    description="From the civil-affairs elderly-care register (newest record per resident) and the hotline: "
                "registered residents, how many live alone, their care levels, the services they need, and "
                "elderly-assistance tickets. Aggregates only, no personal data; streets with fewer than 3 "
                "registered residents are left out so that no one can be singled out.",
    owner="civil_affairs",
    inputs={"elderly_care": "bronze/raw.civil_affairs.elderly_care", "work_orders": "silver/dispatch.*.work_order",
            "admin_areas": "bronze/raw.ref.admin_area"},
    key=("street_code",),
    fields={
        "street_code": "street", "street_name": "the street's name", "district_code": "district of the street",
        "residents": "residents in the register", "living_alone": "of whom living alone",
        "aged_80_plus": "of whom 80 or older (by birth year, as of the record's update)",
        "full_assistance": "residents needing full assistance", "partial_assistance": "residents needing partial assistance",
        "need_meals": "residents needing meal service", "need_medical_visit": "residents needing medical visits",
        "need_emergency_call": "residents needing an emergency-call device",
        "need_companionship": "residents needing companionship",
        "assistance_tickets": "hotline tickets in the street about elderly assistance",
        "demand_score": "full_assistance x 3 + partial_assistance x 2 + living_alone + assistance_tickets x 2",
    },
    sql="""
WITH r AS (
  SELECT j(latest, 'street_code') AS street_code, j(latest, 'care_level') AS care_level,
         j(latest, 'living_alone') = 'true' AS alone,
         year(utc(j(latest, 'updated_at'))) - CAST(j(latest, 'birth_year') AS INTEGER) AS age,
         coalesce(json_extract_string(latest, '$.needs[*]'), []) AS needs
  FROM (SELECT j(value, 'resident_key') AS k, arg_max(value, "offset") AS latest FROM {elderly_care} GROUP BY 1)),
agg AS (
  SELECT street_code, count(*) AS residents, count(*) FILTER (WHERE alone) AS living_alone,
         count(*) FILTER (WHERE age >= 80) AS aged_80_plus,
         count(*) FILTER (WHERE care_level = 'full_assistance') AS full_assistance,
         count(*) FILTER (WHERE care_level = 'partial_assistance') AS partial_assistance,
         count(*) FILTER (WHERE list_contains(needs, 'meals')) AS need_meals,
         count(*) FILTER (WHERE list_contains(needs, 'medical_visit')) AS need_medical_visit,
         count(*) FILTER (WHERE list_contains(needs, 'emergency_call')) AS need_emergency_call,
         count(*) FILTER (WHERE list_contains(needs, 'companionship')) AS need_companionship
  FROM r GROUP BY 1 HAVING count(*) >= 3),
t AS (SELECT street_code, count(*) AS assistance_tickets FROM """ + TICKET_ORDERS + """
      WHERE category = 'elderly_assistance' GROUP BY 1),
streets AS """ + STREETS + """
SELECT agg.street_code, s.name AS street_name, s.parent_code AS district_code, residents, living_alone, aged_80_plus,
       full_assistance, partial_assistance, need_meals, need_medical_visit, need_emergency_call, need_companionship,
       coalesce(t.assistance_tickets, 0) AS assistance_tickets,
       full_assistance * 3 + partial_assistance * 2 + living_alone + coalesce(t.assistance_tickets, 0) * 2 AS demand_score
FROM agg LEFT JOIN streets s ON s.area_code = agg.street_code LEFT JOIN t USING (street_code)
ORDER BY demand_score DESC, street_code
""")

DISTRICT_SAFETY = Dataset(
    name="district_safety_index",
    title="District safety index, composed from the other scenario datasets",
    description="Per district, from the latest releases of flood_risk_by_street, hotline_hotspots, "
                "environmental_exceedances and respond_on_receipt_kpis: safety_index = 100 - (0.35 x the highest "
                "street flood risk + 0.25 x min(100, 20 x hotspot streets) + 0.20 x min(100, 5 x exceedance hours) "
                "+ 0.20 x 100 x the share of tickets overdue). 100 is the calmest possible district.",
    owner="data_bureau",
    inputs={"flood": "gold/flood_risk_by_street", "hotspots": "gold/hotline_hotspots",
            "exceedances": "gold/environmental_exceedances", "kpis": "gold/respond_on_receipt_kpis",
            "admin_areas": "bronze/raw.ref.admin_area"},
    key=("district_code",),
    fields={
        "district_code": "district", "district_name": "the district's name", "population": "registered population",
        "max_flood_risk": "highest flood risk score of its streets",
        "hotspot_streets": "streets (districts without streets) with a hotline hotspot",
        "emerging_risks": "street/category pairs flagged emerging", "exceedance_hours": "street-hours over an environmental limit",
        "overdue_share": "share of the district's dispatched tickets overdue",
        "safety_index": "0 ... 100 (calmest)",
    },
    sql="""
WITH streets AS """ + STREETS + """,
d AS (SELECT area_code AS district_code, name AS district_name, population FROM streets WHERE level = 'district'),
f AS (SELECT district_code, max(risk_score) AS max_flood_risk FROM {flood} GROUP BY 1),
h AS (SELECT district_code, count(DISTINCT """ + AREA + """) FILTER (WHERE hotspot) AS hotspot_streets,
             count(*) FILTER (WHERE emerging) AS emerging_risks FROM {hotspots} GROUP BY 1),
x AS (SELECT s.parent_code AS district_code, count(*) AS exceedance_hours
      FROM {exceedances} e JOIN streets s ON s.area_code = e.street_code GROUP BY 1),
k AS (SELECT district_code, sum(overdue) / greatest(sum(tickets), 1) AS overdue_share FROM {kpis} GROUP BY 1)
SELECT d.district_code, d.district_name, d.population, coalesce(f.max_flood_risk, 0) AS max_flood_risk,
       coalesce(h.hotspot_streets, 0) AS hotspot_streets, coalesce(h.emerging_risks, 0) AS emerging_risks,
       coalesce(x.exceedance_hours, 0) AS exceedance_hours, round(coalesce(k.overdue_share, 0), 4) AS overdue_share,
       round(100 - (0.35 * coalesce(f.max_flood_risk, 0) + 0.25 * least(100, 20 * coalesce(h.hotspot_streets, 0))
                    + 0.20 * least(100, 5 * coalesce(x.exceedance_hours, 0)) + 0.20 * 100 * coalesce(k.overdue_share, 0)), 1)
         AS safety_index
FROM d LEFT JOIN f USING (district_code) LEFT JOIN h USING (district_code) LEFT JOIN x USING (district_code)
     LEFT JOIN k USING (district_code)
ORDER BY safety_index, district_code
""")

COMMUNITY_ASSESSMENT = Dataset(
    name="community_assessment",
    title="社区考核: the hotline's three rates per community, ranked in its street and the city",
    description="Grid governance assessment (考核) of every community (社区/村) with dispatched tickets, from the "
                "fused work orders (the lead order names the community the ticket's position lies in) and the "
                "tickets' lifecycle events: the response rate (accepted by the department before the SLA "
                "deadline), the resolution rate (confirmed resolved) and the satisfaction rate (of the followed-up "
                "callers, satisfied or basically satisfied), each with the number of tickets behind it. score = "
                "100 x (the weighted rates: the weights the city pack declares, assessment.weights on raw.ref.city, "
                "by default 0.3 x response + 0.4 x resolution + 0.3 x satisfaction), ranked in the city and in the "
                "street.",
    owner="hotline_12345",
    inputs={"ticket_events": "bronze/raw.hotline.ticket_event", "work_orders": "silver/dispatch.*.work_order",
            "admin_areas": "bronze/raw.ref.admin_area"},
    key=("community_code",),
    fields={
        "community_code": "community (raw.ref.admin_area, level community)", "community_name": "its name",
        "street_code": "its street", "street_name": "the street's name", "district_code": "its district",
        "tickets": "tickets dispatched for a position in the community",
        "responded": "of them, accepted by the department before the deadline", "response_rate": "responded / tickets",
        "resolved": "of them, confirmed resolved", "resolution_rate": "resolved / tickets",
        "followed_up": "of them, followed up with the caller", "satisfied": "of those, satisfied or basically satisfied",
        "satisfaction_rate": "satisfied / followed_up (null when nobody was followed up)",
        "score": "0 ... 100", "rank_in_city": "1 = best score in the city", "rank_in_street": "1 = best in its street",
    },
    sql="""
WITH """ + TICKET_STATES + """,
areas AS """ + STREETS + """,
place AS (
  SELECT j(value, 'source_id') AS rid, any_value(j(value, 'community_code')) AS community_code
  FROM {work_orders} WHERE j(value, 'source') = 'ticket' AND j(value, 'role') = 'lead'
    AND j(value, 'community_code') IS NOT NULL GROUP BY 1),
c AS (
  SELECT place.community_code, count(*) AS tickets,
         count(*) FILTER (WHERE t.accepted IS NOT NULL AND t.accepted <= t.deadline) AS responded,
         count(*) FILTER (WHERE t.resolved) AS resolved,
         count(*) FILTER (WHERE t.satisfaction IS NOT NULL) AS followed_up,
         count(*) FILTER (WHERE t.satisfaction IS NOT NULL AND t.satisfaction <> 'dissatisfied') AS satisfied
  FROM t JOIN place USING (rid) WHERE t.dispatched IS NOT NULL GROUP BY 1),
r AS (
  SELECT c.*, round(responded / tickets, 4) AS response_rate, round(resolved / tickets, 4) AS resolution_rate,
         CASE WHEN followed_up > 0 THEN round(satisfied / followed_up, 4) END AS satisfaction_rate
  FROM c),
s AS (
  SELECT r.*, round(100 * (weight('response') * response_rate + weight('resolution') * resolution_rate
                           + weight('satisfaction') * coalesce(satisfaction_rate, 0)), 1) AS score
  FROM r)
SELECT s.community_code, com.name AS community_name, com.parent_code AS street_code, st.name AS street_name,
       st.parent_code AS district_code, s.tickets, s.responded, s.response_rate, s.resolved, s.resolution_rate,
       s.followed_up, s.satisfied, s.satisfaction_rate, s.score,
       rank() OVER (ORDER BY s.score DESC) AS rank_in_city,
       rank() OVER (PARTITION BY com.parent_code ORDER BY s.score DESC) AS rank_in_street
FROM s JOIN areas com ON com.area_code = s.community_code LEFT JOIN areas st ON st.area_code = com.parent_code
ORDER BY rank_in_city, community_code
""")

#: The units a 考核 ranks, by the column of ``k`` (below) naming each ticket's.
RANKED = {"district": "district_code", "street": "street_code", "department": "department"}

HOTLINE_RANKINGS = Dataset(
    name="hotline_rankings",
    title="考核 rankings: districts, streets and departments by the hotline's three rates",
    description="The assessment (考核) of the 12345 hotline's closed loop: per district and street (of the ticket's "
                "position, from the fused lead work order) and per department (the one dispatched to), the three "
                "rates of respond_on_receipt_kpis over all its tickets (handled on time and resolved over the "
                "tickets, satisfied over the callers followed up), each with the number it rests on, and a score: "
                "100 x the rates weighted as the city pack declares (assessment.weights on raw.ref.city; by "
                "default response 0.3, resolution 0.4, satisfaction 0.3); a unit whose callers were not followed "
                "up yet is scored on the other two rates, their weights scaled to add up to 1. Ranked within each "
                "scope, 1 the best.",
    owner="hotline_12345",
    inputs={"ticket_events": "bronze/raw.hotline.ticket_event", "work_orders": "silver/dispatch.*.work_order"},
    key=("scope", "unit"),
    fields={
        "scope": "district, street or department", "unit": "the district's or street's code, or the department id",
        "tickets": "tickets dispatched in the unit: the number the handled-on-time and resolution rates rest on",
        "handled_on_time_rate": "响应率: share handled by the SLA deadline",
        "resolution_rate": "解决率: share the caller confirmed as resolved",
        "satisfaction_rate": "满意率: share of followed-up callers satisfied or basically satisfied (null: none yet)",
        "followed_up": "tickets whose caller was followed up: the number satisfaction_rate rests on",
        "score": "0 ... 100: the rates weighted as the city declares",
        "rank": "1 = the best score of its scope",
        "weight_response": "the weight the score gave 响应率", "weight_resolution": "the weight it gave 解决率",
        "weight_satisfaction": "the weight it gave 满意率",
    },
    sql="""
WITH """ + TICKET_STATES + """,
place AS (
  SELECT j(value, 'source_id') AS rid, any_value(j(value, 'district_code')) AS district_code,
         any_value(j(value, 'street_code')) AS street_code
  FROM {work_orders} WHERE j(value, 'source') = 'ticket' AND j(value, 'role') = 'lead' GROUP BY 1),
k AS (
  SELECT t.rid, t.department, place.district_code, place.street_code,
         CASE WHEN t.handled IS NOT NULL AND t.handled <= t.deadline THEN 1.0 ELSE 0.0 END AS on_time,
         CASE WHEN t.resolved THEN 1.0 ELSE 0.0 END AS resolved,
         CASE WHEN t.satisfaction IS NULL THEN NULL WHEN t.satisfaction = 'dissatisfied' THEN 0.0 ELSE 1.0 END AS satisfied
  FROM t LEFT JOIN place USING (rid) WHERE t.dispatched IS NOT NULL AND t.department IS NOT NULL),
u AS (""" + "\n  UNION ALL ".join(
        f"SELECT '{scope}' AS scope, {column} AS unit, on_time, resolved, satisfied FROM k WHERE {column} IS NOT NULL"
        for scope, column in RANKED.items()) + """),
r AS (
  SELECT scope, unit, count(*) AS tickets, round(avg(on_time), 4) AS handled_on_time_rate,
         round(avg(resolved), 4) AS resolution_rate, round(avg(satisfied), 4) AS satisfaction_rate,
         count(satisfied) AS followed_up
  FROM u GROUP BY 1, 2),
s AS (
  SELECT r.*, round(100 * (weight('response') * handled_on_time_rate + weight('resolution') * resolution_rate
                           + coalesce(weight('satisfaction') * satisfaction_rate, 0))
                    / nullif(weight('response') + weight('resolution')
                             + CASE WHEN satisfaction_rate IS NULL THEN 0 ELSE weight('satisfaction') END, 0), 1) AS score
  FROM r)
SELECT scope, unit, tickets, handled_on_time_rate, resolution_rate, satisfaction_rate, followed_up, score,
       rank() OVER (PARTITION BY scope ORDER BY score DESC NULLS LAST) AS rank,
       weight('response') AS weight_response, weight('resolution') AS weight_resolution,
       weight('satisfaction') AS weight_satisfaction
FROM s
ORDER BY scope, rank, unit
""")

DATASETS: dict[str, Dataset] = {d.name: d for d in (RESPOND_ON_RECEIPT, TRAFFIC_CONGESTION, HOTLINE_HOTSPOTS, ENV_EXCEEDANCES,
                                                    FLOOD_RISK, ELDERLY_CARE, DISTRICT_SAFETY, COMMUNITY_ASSESSMENT,
                                                    HOTLINE_RANKINGS)}


def input_files(lake: Lake, pattern: str) -> list[LakePath]:
    """The Parquet files of one input: a lake contract directory, or ``gold/<dataset>`` (its latest release)."""
    from citybrain.lake import layout

    layer, contract = pattern.split("/", 1)
    if layer == "gold":
        return layout.release_data(lake, contract)[-1:]
    return layout.files(lake, layer, contract)


class NoInputError(LookupError):
    """The city has no data at all for an input of a dataset (not even quarantined): e.g. a city whose pack
    lists no civil-affairs department has no elderly-care register. The dataset cannot be published for it."""


#: The time zone of city-facing figures before the lake holds a city record.
DEFAULT_TIMEZONE = "Asia/Shanghai"


#: How a 考核 weighs the three rates when the city pack declares nothing (manifest assessment.weights): the
#: community assessment's weights from before a city could declare them.
DEFAULT_WEIGHTS = {"response": 0.3, "resolution": 0.4, "satisfaction": 0.3}


def _city(lake: Lake) -> dict[str, Any]:
    """The latest ``raw.ref.city`` record the lake holds (as imported from the city pack), {} before one."""
    from citybrain.lake import layout
    from citybrain.lake.reader import latest_values

    cities = latest_values(layout.files(lake, "bronze", layout.contract_of(REF_CITY)), "city_code")
    return max(cities.values(), key=lambda c: str(c.get("updated_at", "")), default={})


def city_timezone(lake: Lake) -> str:
    """The IANA time zone of the city the lake holds (its latest ``raw.ref.city`` record, as imported
    from its city pack), else DEFAULT_TIMEZONE."""
    import re

    zone = str(_city(lake).get("timezone") or DEFAULT_TIMEZONE)
    return zone if re.fullmatch(r"[A-Za-z0-9_+/-]{1,60}", zone) else DEFAULT_TIMEZONE   # it goes into SQL


def assessment_weights(lake: Lake) -> dict[str, float]:
    """The weights the city's 考核 gives the three rates (``assessment.weights`` of its latest ``raw.ref.city``
    record, since 1.4.0), else DEFAULT_WEIGHTS."""
    declared = (_city(lake).get("assessment") or {}).get("weights") or {}
    return {rate: float(declared.get(rate, default)) for rate, default in DEFAULT_WEIGHTS.items()}   # into SQL


def build(lake: Lake, dataset: Dataset, allowed: set[LakePath] | None = None) -> tuple[pa.Table, list[LakePath]]:
    """Run the dataset's SQL over the lake; (result, the input files read).

    With ``allowed`` (the files whose partitions passed the quality checks), bronze and
    silver inputs are limited to those files; gold inputs are releases, which passed already."""
    import duckdb

    from citybrain.lake import layout, store

    sources, used, files_of = {}, [], {}
    for name, pattern in dataset.inputs.items():
        files = input_files(lake, pattern)
        if allowed is not None and not pattern.startswith("gold/"):
            files = [f for f in files if f in allowed]
        layer, contracts = pattern.split("/", 1)
        if not files and layer != "gold" and layout.files(lake, layer) and not input_files(lake, pattern) \
                and not layout.quarantined_files(lake, layer, contracts):   # a filled lake without this feed
            raise NoInputError(f"{dataset.name}: the lake holds no record of input {pattern!r} at all under {lake} "
                               "(this city has no such feed), so the dataset is not published for it. Fix: if the city "
                               "has the feed, load it (`citybrain load`, the gateway) or list its department in the "
                               "city pack.")
        if not files:
            what = ("no release yet: publish it first" if pattern.startswith("gold/") else
                    "fill the lake first (`citybrain lake bronze` / `citybrain lake silver`, or `make demo`)"
                    + (" and run the data_quality DAG: only checked, passing partitions are read" if allowed is not None else ""))
            raise LookupError(f"{dataset.name}: no Parquet for input {pattern!r} under {lake}. Fix: {what}.")
        used += files
        files_of[name] = files
        sources[name] = f"_input_{name}"
    con = duckdb.connect()
    try:
        for name in sources:
            store.register(con, sources[name], files_of[name])
        con.execute(MACROS.format(timezone=city_timezone(lake), **assessment_weights(lake)))
        return con.sql(dataset.sql.format(**sources)).to_arrow_table(), used
    finally:
        con.close()
