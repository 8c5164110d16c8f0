"""The lake's announcements as Airflow asset events (`citybrain airflow events`, a service of `citybrain up`).

Each record of ``catalog.lake.compacted.v1`` (a sink compacted the hours it wrote) becomes an
asset event of ``citybrain://lake/<layer>`` through the Airflow REST API, with the
announcement as the event's ``extra``; the scheduler then runs the DAGs scheduled on that
asset (data_quality). The offset is committed only after Airflow answered, so an
announcement made while Airflow is down, or before the dag-processor has parsed the DAG
that declares the asset, is posted once Airflow can take it: nothing is lost. A crash
between the post and the commit posts that announcement again: the DAGs then run once more
on data they have already checked, which they do without harm. A refusal that trying again
cannot fix (the user's password or role, a bad request) stops the bridge, saying the fix, in
its log and its status file, rather than retrying it forever.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from citybrain.contracts import topics
from citybrain.settings import Settings
from citybrain.times import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

TOPIC = topics.LAKE_COMPACTIONS
GROUP = "citybrain.airflow-events"
MAX_BACKOFF_S = 30.0


def lake_asset(layer: str) -> str:
    """The asset a lake layer's new data is (declared by the data_quality DAG's schedule)."""
    return f"citybrain://lake/{layer}"


def status_path(settings: Settings) -> Path:
    """Where the running bridge says what it posted and whether it waits, retries or stopped."""
    return settings.state_dir / "run" / "airflow-events.json"


def run_bridge(settings: Settings, stop_when_idle_s: float | None = None) -> dict[str, int]:
    """Post every announcement as an asset event, in order, until interrupted (or, with ``stop_when_idle_s``,
    drained). Airflow not answering, failing (5xx) or not knowing the asset yet is retried with a backoff
    doubling up to ``MAX_BACKOFF_S``; a refusal trying again cannot fix (a 401 or 403, a missing password, a
    bad request) stops the bridge with that :class:`~citybrain.orchestration.api.AirflowAPIError`, its message
    naming the fix, and the status file says so (the announcement stays uncommitted, posted once fixed)."""
    from citybrain.kafka import clients
    from citybrain.kafka.follow import Follower, StatusFile, commit
    from citybrain.orchestration.api import AirflowAPI, AirflowAPIError

    api = AirflowAPI(settings, user="citybrain-lake" if settings.airflow_url is None else None)
    consumer = clients.consumer(settings, TOPIC, group_id=GROUP, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=50)
    status = StatusFile(status_path(settings))
    counts = {"posted": 0, "retries": 0}
    last: dict[str, Any] = {}

    def report(state: str) -> None:
        status.write({"state": state, **counts, **last})

    def post(tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        nonlocal last
        for record in records:
            announcement = json.loads(record.value)
            uri = lake_asset(announcement["layer"])
            backoff = 1.0
            while True:
                try:
                    api.asset_event(uri, announcement)
                    break
                except AirflowAPIError as exc:
                    if not exc.retriable:
                        raise
                    counts["retries"] += 1
                    report(f"retrying: {exc}"[:300])
                    log.warning("asset event for %s not taken (%s); again in %.0f s", uri, exc, backoff)
                    time.sleep(backoff)
                    backoff = min(MAX_BACKOFF_S, backoff * 2)
            commit(consumer, tp, record.offset + 1)
            counts["posted"] += 1
            last = {"last_asset": uri, "last_announcement": announcement["announcement_id"],
                    "last_posted_at": now_iso()}
            log.info("asset event %s (%d hour(s), %d records)", uri, len(announcement["hours"]),
                     announcement["records"])

    def tick(polled: bool) -> None:
        if polled:
            report("posting")

    state = "stopped"
    try:
        report("waiting")
        Follower(consumer, post, on_tick=tick, poll_ms=1000, idle_s=stop_when_idle_s).run()
    except KeyboardInterrupt:   # SIGINT, or SIGTERM from `citybrain down`, while posting or backing off
        pass
    except AirflowAPIError as exc:
        state = f"stopped, not retriable: {exc}"
        log.error("the bridge stops: %s", exc)
        raise
    finally:
        report(state)
        consumer.close()
    return counts
