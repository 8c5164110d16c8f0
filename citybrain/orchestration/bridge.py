"""The lake's announcements as Airflow asset events (`citybrain airflow events`, a service of `citybrain up`).

Each record of ``catalog.lake.compacted.v1`` (a sink compacted the hours it wrote) becomes an
asset event of ``citybrain://lake/<layer>`` through the Airflow REST API, with the
announcement as the event's ``extra``; the scheduler then runs the DAGs scheduled on that
asset (data_quality). The offset is committed only after Airflow answered, so an
announcement made while Airflow is down, or before the dag-processor has parsed the DAG
that declares the asset, is posted once Airflow can take it: nothing is lost. A crash
between the post and the commit posts that announcement again: the DAGs then run once more
on data they have already checked, which they do without harm.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from citybrain.settings import Settings
from citybrain.times import now_iso

log = logging.getLogger(__name__)

TOPIC = "catalog.lake.compacted.v1"
GROUP = "citybrain.airflow-events"
MAX_BACKOFF_S = 30.0


def lake_asset(layer: str) -> str:
    """The asset a lake layer's new data is (declared by the data_quality DAG's schedule)."""
    return f"citybrain://lake/{layer}"


def status_path(settings: Settings):  # type: ignore[no-untyped-def]
    return settings.state_dir / "run" / "airflow-events.json"


def run_bridge(settings: Settings, stop_when_idle_s: float | None = None) -> dict[str, int]:
    """Post every announcement as an asset event, in order, until interrupted (or idle)."""
    from kafka import OffsetAndMetadata, TopicPartition

    from citybrain.orchestration.api import AirflowAPI, AirflowAPIError
    from citybrain.kafka import clients
    from citybrain.settings import write_private

    api = AirflowAPI(settings, user="citybrain-lake" if settings.airflow_url is None else None)
    consumer = clients.consumer(settings, TOPIC, group_id=GROUP, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=50)
    counts = {"posted": 0, "retries": 0}
    last: dict[str, Any] = {}
    idle_since = time.monotonic()

    def report(state: str) -> None:
        write_private(status_path(settings), json.dumps({"state": state, "updated_at": now_iso(), **counts, **last}))

    try:
        report("waiting")
        while True:
            try:
                polled = consumer.poll(timeout_ms=1000)
            except KeyboardInterrupt:
                break
            if not polled:
                if stop_when_idle_s is not None and time.monotonic() - idle_since >= stop_when_idle_s:
                    break
                continue
            for tp, records in polled.items():
                for record in records:
                    announcement = json.loads(record.value)
                    uri = lake_asset(announcement["layer"])
                    backoff = 1.0
                    while True:
                        try:
                            api.asset_event(uri, announcement)
                            break
                        except AirflowAPIError as exc:
                            counts["retries"] += 1
                            report(f"retrying: {exc}"[:300])
                            log.warning("asset event for %s not taken (%s); again in %.0f s", uri, exc, backoff)
                            time.sleep(backoff)
                            backoff = min(MAX_BACKOFF_S, backoff * 2)
                    consumer.commit({TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(record.offset + 1, "", -1)})
                    counts["posted"] += 1
                    last = {"last_asset": uri, "last_announcement": announcement["announcement_id"],
                            "last_posted_at": now_iso()}
                    log.info("asset event %s (%d hour(s), %d records)", uri, len(announcement["hours"]),
                             announcement["records"])
            idle_since = time.monotonic()
            report("posting")
    except KeyboardInterrupt:
        pass
    finally:
        report("stopped")
        consumer.close()
    return counts
