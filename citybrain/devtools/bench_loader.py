"""How fast ``citybrain load`` takes an ordinary export: one station-year-scale CSV through the real loader.

The export has the shape of one station file of the Beijing Multi-Site Air-Quality Data (35,064
hourly rows: No, year/month/day/hour of Beijing time, six pollutants in µg/m³ with CO among them,
weather, a compass wind direction, the station), with ``NA`` cells where readings are missing,
as in the real files. It is loaded with the feed ``air_quality_hourly`` (infra/feeds/) through
:func:`~citybrain.ingest.feeds.read_feed` and :class:`~citybrain.ingest.producer.BatchProducer`,
exactly as the CLI does, under the ``raw.sensor.air_quality`` contract, to a topic of the benchmark's
own (``bench.raw.sensor.air_quality.v1``, made from that contract and deleted afterwards): four years
of a station the city does not have would otherwise stay in the city's raw topic, its lake and its
security findings.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from citybrain.contracts.model import Contract, load_all, resolve
from citybrain.ingest.feeds import load_feeds, read_feed
from citybrain.ingest.producer import BatchProducer, RejectionReport
from citybrain.kafka.topics import apply_topics
from citybrain.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["FEED", "HOURS", "bench_loader", "write_station_export"]

FEED = "air_quality_hourly"
#: One station's hours from 2013-03-01 00:00 to 2017-02-28 23:00, as in the real export.
HOURS = 35_064
HEADER = ["No", "year", "month", "day", "hour", "PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP",
          "RAIN", "wd", "WSPM", "station"]
_COMPASS = ["N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW"]
#: Share of NA cells per column, close to the real files' (CO is missing most often).
_MISSING = {"PM2.5": 0.02, "PM10": 0.015, "SO2": 0.02, "NO2": 0.03, "CO": 0.05, "O3": 0.03, "TEMP": 0.001,
            "PRES": 0.001, "DEWP": 0.001, "RAIN": 0.001, "wd": 0.004, "WSPM": 0.001}


def write_station_export(path: Path, hours: int = HOURS, station: str = "Aotizhongxin", seed: int = 2013) -> int:
    """Write one station's hourly export in the real files' shape; returns the rows written."""
    rng = random.Random(seed)
    start = datetime(2013, 3, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(",".join(f'"{h}"' for h in HEADER) + "\n")   # as the real files: text quoted, numbers and NA bare
        pm25 = 80.0
        for n in range(hours):
            t = start + timedelta(hours=n)
            pm25 = min(900.0, max(3.0, pm25 * rng.uniform(0.8, 1.25)))
            readings: dict[str, Any] = {
                "PM2.5": round(pm25), "PM10": round(pm25 * rng.uniform(1.0, 1.6)), "SO2": round(rng.uniform(2, 120)),
                "NO2": round(rng.uniform(5, 180)), "CO": max(100, int(round(pm25 * rng.uniform(8, 16), -2))),   # µg/m³
                "O3": round(rng.uniform(2, 250)), "TEMP": round(rng.uniform(-15, 38), 1),
                "PRES": round(rng.uniform(990, 1040), 1), "DEWP": round(rng.uniform(-30, 27), 1),
                "RAIN": round(rng.choice([0.0] * 19 + [rng.uniform(0.1, 20)]), 1), "wd": f'"{rng.choice(_COMPASS)}"',
                "WSPM": round(rng.uniform(0, 8), 1),
            }
            for column, share in _MISSING.items():
                if rng.random() < share:
                    readings[column] = "NA"
            cells = [n + 1, t.year, t.month, t.day, t.hour, *(readings[c] for c in HEADER[5:17]), f'"{station}"']
            f.write(",".join(map(str, cells)) + "\n")
    return hours


def bench_loader(work_dir: Path, settings: Settings) -> dict[str, Any]:
    """Write the export into ``work_dir``, load it to the broker as ``citybrain load`` does, and say how fast.

    Returns rows, seconds, rows_per_s, accepted and dead_lettered (and where the export and the
    rejections file are). Raises DeliveryError when the broker or its topics are not there.
    """
    contracts = load_all(settings.schemas_dir)
    feed = load_feeds(settings.feeds_dir, contracts)[FEED]
    real = resolve(contracts, feed.contract)
    contract = Contract({**real.raw, "contract": f"bench.{real.id}"}, real.source)
    export = work_dir / "PRSA_Data_Aotizhongxin_20130301-20170228.csv"
    rows = write_station_export(export)
    rejections = RejectionReport(work_dir / "rejections.jsonl")
    apply_topics(settings, [contract])
    try:
        started = time.perf_counter()
        with rejections:
            summary = BatchProducer(settings, producer_id=f"load.{feed.name}").produce(
                contract, read_feed(feed, export, "utf-8", settings.max_record_bytes, max_depth=settings.json_max_depth),
                report=rejections)
        seconds = time.perf_counter() - started
    finally:
        _drop(settings, contract.topic)
    log.info("loaded %d rows in %.2f s: %d accepted, %d dead-lettered", summary.read, seconds, summary.accepted,
             summary.dead_lettered)
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(summary.read / seconds, 1),
            "accepted": summary.accepted, "dead_lettered": summary.dead_lettered, "export": str(export),
            "rejections_file": str(rejections.path) if rejections.records else None, "topic": contract.topic}


def _drop(settings: Settings, topic: str) -> None:
    from kafka.errors import KafkaError

    from citybrain.kafka import clients

    admin = clients.admin(settings)
    try:
        admin.delete_topics([topic])
    except KafkaError as exc:
        log.warning("could not delete %s after the benchmark: %s", topic, exc)
    finally:
        admin.close()
