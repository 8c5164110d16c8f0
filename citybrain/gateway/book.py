"""What the gateway knows of requests and places: read back from the broker, kept current.

A background thread reads ``raw.hotline.service_request.v1`` (the latest state of every
request, whoever changed it: the gateway, the hotline's CRM, a department), so ``GET
requests.json`` shows the status as the platform knows it, and the city's reference data:
``raw.ref.admin_area.v1`` (the polygons a position is checked against), ``raw.ref.city.v1``
(the jurisdiction), ``raw.ref.service.v1`` (the services offered) and ``raw.ref.department.v1``
(who handles them). An imported city pack changes what the gateway serves without a restart.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Any

from citybrain.contracts import topics
from citybrain.gateway.open311 import Catalogue
from citybrain.geo import AreaIndex
from citybrain.settings import Settings
from citybrain.times import iso

log = logging.getLogger(__name__)

REQUESTS_TOPIC, AREAS_TOPIC = topics.SERVICE_REQUESTS, topics.REF_AREAS
CITY_TOPIC, SERVICES_TOPIC, DEPARTMENTS_TOPIC = topics.REF_CITY, topics.REF_SERVICES, topics.REF_DEPARTMENTS
#: Reference topic -> the key field of its records.
REFERENCE = {CITY_TOPIC: "city_code", SERVICES_TOPIC: "service_code", DEPARTMENTS_TOPIC: "department_id"}
#: Fields kept per request: what the public view and the filters need.
KEPT = ("service_request_id", "status", "status_notes", "service_name", "service_code", "agency_responsible",
        "service_notice", "requested_datetime", "updated_datetime", "expected_datetime", "address_id", "zipcode",
        "lat", "long", "media_url", "lifecycle_state", "category", "priority", "dispatch_department", "channel",
        "source_request_id", "source_requested_datetime")


class RequestBook:
    """Latest state per service request plus the area index, fed by a consumer thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._requests: dict[str, dict[str, Any]] = {}
        self._areas: dict[str, dict[str, Any]] = {}
        self._reference: dict[str, dict[str, dict[str, Any]]] = {topic: {} for topic in REFERENCE}
        self._city: dict[str, Any] | None = None      # the latest city record: the city being served
        self.index: AreaIndex | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="citybrain-request-book", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def put(self, state: dict[str, Any]) -> None:
        """Record a state the gateway itself just wrote (before the consumer sees it)."""
        with self._lock:
            self._keep(state)

    def _keep(self, state: dict[str, Any]) -> None:
        rid = state.get("service_request_id")
        if not isinstance(rid, str):
            return
        old = self._requests.get(rid)
        if old is None or str(state.get("updated_datetime", "")) >= str(old.get("updated_datetime", "")):
            self._requests[rid] = {k: state[k] for k in KEPT if k in state}

    def catalogue(self) -> Catalogue | None:
        """The jurisdiction, postal codes, languages, services and departments as the reference topics have them;
        None before a city was imported."""
        with self._lock:
            if self._city is None:
                return None
            return Catalogue.of_city(self._city, dict(self._reference[SERVICES_TOPIC]),
                                     dict(self._reference[DEPARTMENTS_TOPIC]))

    def get(self, rid: str) -> dict[str, Any] | None:
        with self._lock:
            return self._requests.get(rid)

    def query(self, ids: set[str] | None, codes: set[str] | None, statuses: set[str] | None,
              start: datetime | None, end: datetime | None, limit: int) -> list[dict[str, Any]]:
        """Requests matching the GeoReport v2 filters, newest first."""
        with self._lock:
            candidates = [self._requests[i] for i in ids if i in self._requests] if ids else list(self._requests.values())
        out = []
        for r in candidates:
            if codes and r.get("service_code") not in codes:
                continue
            if statuses and r.get("status") not in statuses:
                continue
            requested = r.get("requested_datetime", "")
            if start and requested < start.strftime("%Y-%m-%dT%H:%M:%S"):
                continue
            if end and requested > iso(end):
                continue
            out.append(r)
        out.sort(key=lambda r: r.get("requested_datetime", ""), reverse=True)
        return out[:limit]

    def __len__(self) -> int:
        return len(self._requests)

    def _run(self) -> None:
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        from citybrain.kafka import clients

        try:
            consumer = clients.consumer(self.settings, enable_auto_commit=False, client_id="citybrain-gateway-book")
            partitions = [TopicPartition(t, p) for t in (REQUESTS_TOPIC, AREAS_TOPIC, *REFERENCE)
                          for p in sorted(consumer.partitions_for_topic(t) or ())]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            end = consumer.end_offsets(partitions)
        except KafkaError as exc:
            self.error = f"cannot read {REQUESTS_TOPIC} from {self.settings.bootstrap}: {exc!r}"
            log.error("%s", self.error)
            self.caught_up.set()
            return
        areas_dirty = False
        while not self._stop.is_set():
            try:
                batches = consumer.poll(timeout_ms=300, max_records=5000)
            except KafkaError as exc:   # retriable: keep serving what is known
                log.warning("request book poll failed, retrying: %r", exc)
                continue
            for tp, records in batches.items():
                for rec in records:
                    try:
                        value = json.loads(rec.value)
                    except (TypeError, ValueError):
                        continue
                    if tp.topic in REFERENCE:
                        key = str(value.get(REFERENCE[tp.topic]))
                        with self._lock:   # a withdrawn service or department is no longer served
                            if value.get("status") == "withdrawn":
                                self._reference[tp.topic].pop(key, None)
                            else:
                                self._reference[tp.topic][key] = value
                            if tp.topic == CITY_TOPIC:
                                self._city = value
                    elif tp.topic == AREAS_TOPIC:
                        self._areas[value.get("area_code", "")] = value
                        areas_dirty = True
                    else:
                        with self._lock:
                            self._keep(value)
            if areas_dirty:
                try:
                    self.index = AreaIndex.from_records(self._areas.values())
                except (KeyError, TypeError) as exc:
                    log.warning("admin areas unusable: %r", exc)
                areas_dirty = False
            if not self.caught_up.is_set() and all(consumer.position(p) >= end[p] for p in partitions):
                self.caught_up.set()
                log.info("request book caught up: %d requests, %d areas", len(self._requests), len(self._areas))
        consumer.close()
