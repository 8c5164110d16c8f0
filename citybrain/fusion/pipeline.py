"""The stream layer's logic in one object: raw records in, city events, warnings, dispatch out.

``Pipeline.feed_message`` takes one raw record as it comes off a topic (topic, headers, JSON
payload, Kafka timestamp, partition) in arrival order and returns what it causes:
``(topic, record)`` pairs for ``city.event.incident.v1``, ``alert.early_warning.risk.v1``,
``alert.sla.ticket.v1``, ``dispatch.<dept>.work_order.v1``, ``dispatch.territorial.work_order.v1``
and, as windows close, ``metrics.city.aggregate.v1``. The fusion worker, its warm-up and ``citybrain dev evaluate
--replay`` all feed it that way; ``Pipeline.feed`` takes a decoded value and its event id.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from datetime import datetime, timedelta
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

try:   # the stream workers' environment has orjson (several times faster); the others use the standard library
    from orjson import loads as _loads
except ImportError:   # pragma: no cover - depends on the environment
    from json import loads as _loads

from citybrain.city.pack import languages
from citybrain.city.working_time import WorkingHoursError, WorkingTime
from citybrain.contracts import topics
from citybrain.contracts.model import Contract
from citybrain.fusion.calls import DEFAULT_FALSE_ALARM_RATE
from citybrain.fusion.detect import SensorWatch
from citybrain.fusion.dispatch import Dispatcher, SlaTracker
from citybrain.fusion.fuse import CityCalls, Fusion
from citybrain.fusion.metrics import Metrics
from citybrain.fusion.signals import Enricher
from citybrain.fusion.watermark import Clock
from citybrain.geo import AreaIndex, changed
from citybrain.kafka.headers import record_event_id
from citybrain.access.privacy import Protector

log = logging.getLogger(__name__)

#: The fused outputs, by the names the stream workers and the CLI import them by.
EVENT_TOPIC, WARNING_TOPIC = topics.CITY_EVENTS, topics.EARLY_WARNINGS
#: The reference topics the pipeline keeps (areas, devices, routing rules, the city and its time zone) rather
#: than fuses.
REFERENCE = (topics.REF_AREAS, topics.REF_DEVICES, topics.REF_ROUTING_RULES, topics.REF_CITY)


class Deduper:
    """Event ids seen within ``window`` (by event time); older ids are forgotten in arrival order."""

    def __init__(self, window: timedelta = timedelta(hours=2), max_ids: int = 2_000_000) -> None:
        self.window, self.max_ids = window, max_ids
        self.seen: OrderedDict[str, datetime] = OrderedDict()

    def is_duplicate(self, event_id: str, at: datetime) -> bool:
        if event_id in self.seen:
            return True
        self.seen[event_id] = at
        while self.seen and (len(self.seen) > self.max_ids or at - next(iter(self.seen.values())) > self.window):
            self.seen.popitem(last=False)
        return False


class Pipeline:
    """``auto_sweep``: check SLAs and close quiet cases as stream time passes (in-order replays);
    a worker reading partitions at different speeds calls ``sweep`` with ``clock.watermark()`` instead."""

    def __init__(self, contracts: Mapping[str, Contract], protector: Protector, auto_sweep: bool = True,
                 city_calls: CityCalls | None = None,
                 call_false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE, quiet_after: timedelta | None = None) -> None:
        """``contracts`` by topic: their event-id rules and the hotline's personal-data rules; ``protector``
        pseudonymises callers in work orders. There is no default key: a replay that should match the
        stream passes the platform's (``protector_from_settings``), a test ``Protector.ephemeral()``.
        ``city_calls``: the city's recent calls by category, shared by the pipelines of one worker that each
        fuse a share of the city (and learnt from the group's other workers), so the trending-hotspot detector
        judges a street against the whole city. ``call_false_alarm_rate``: the chance per call that a street
        at its usual rate is warned of (the city's setting, ``Settings.call_false_alarm_rate``).
        ``quiet_after``: judge an input partition quiet by stream time rather than by the wall clock
        (:class:`~citybrain.fusion.watermark.Clock`), for a pipeline whose sweeps must be reproduced from its records."""
        self.contracts = contracts
        self.auto_sweep = auto_sweep
        #: Event streams move stream time; compacted registers (reference data, the care register) do not.
        self.clock = Clock({t for t, c in contracts.items() if c.zone == "raw" and c.cleanup_policy == "delete"},
                           quiet_after=quiet_after)
        self.areas: dict[str, dict[str, Any]] = {}
        self.enricher = Enricher()
        self.watch = SensorWatch()
        self.dispatcher = Dispatcher(protector=protector, hotline=contracts[topics.SERVICE_REQUESTS])
        self.fusion = Fusion(route=self.dispatcher.event_rule, deadline=self.dispatcher.sla_deadline,
                             call_false_alarm_rate=call_false_alarm_rate)
        self.fusion.wind = self.watch.wind
        if city_calls is not None:
            self.fusion.hotspots.city = city_calls
        self.sla = SlaTracker()
        self.dedupe = Deduper()
        self.metrics = Metrics()
        self.now: datetime | None = None
        self.counts: Counter[str] = Counter()
        self._areas_dirty = False
        self._last_sweep: datetime | None = None

    def reference(self, topic: str, value: dict[str, Any]) -> None:
        if topic == topics.REF_AREAS:
            if changed(self.areas.get(value["area_code"]), value):
                self._areas_dirty = True
            self.areas[value["area_code"]] = value
            if value.get("status") == "withdrawn":
                self.fusion.hotspots.population.pop(value["area_code"], None)
                self.fusion.hotspots.district_population.pop(value["area_code"], None)
            elif value.get("level") == "street" and value.get("population"):
                self.fusion.hotspots.population[value["area_code"]] = int(value["population"])
            elif value.get("level") == "district" and value.get("population"):
                self.fusion.hotspots.district_population[value["area_code"]] = int(value["population"])
        elif topic == topics.REF_DEVICES:
            self.enricher.update_device(value)
        elif topic == topics.REF_ROUTING_RULES:
            self.dispatcher.update_rule(value)
        elif topic == topics.REF_CITY:
            self._city_zone(value)
            self.fusion.hotspots.language = languages(value)[0]

    def _city_zone(self, city: dict[str, Any]) -> None:
        """The time zone of the city being served (its latest record's), in which the sensor watch tells day
        from night and SLAs count the city's working hours; a zone this machine does not know leaves the one
        before."""
        name = city.get("timezone")
        try:
            zone = ZoneInfo(str(name))
        except (ValueError, ZoneInfoNotFoundError):
            log.error("city %s's time zone %r is not an IANA time zone this machine knows; day and night stay as "
                      "before (%s). Fix: give the pack's manifest a zone of the tz database (e.g. Asia/Shanghai) and "
                      "import it again, or update the tzdata package", city.get("city_code"), name, self.watch.tz)
            return
        if zone != self.watch.tz:
            log.info("city %s: noise judged by day and night in %s", city.get("city_code"), zone)
            self.watch.tz = zone
        self._working_time(city, zone)

    def _working_time(self, city: dict[str, Any], zone: ZoneInfo) -> None:
        """The city's working time, in which the SLAs of rules with ``sla_clock: working`` run; a record without
        one puts every SLA on the calendar, one the clock cannot count with leaves the working time before."""
        block = city.get("working_hours")
        try:
            working = WorkingTime.from_block(block, zone) if block is not None else None
        except WorkingHoursError as e:
            log.error("city %s's working hours cannot be counted in (%s); SLAs stay on the working time before. "
                      "Fix: correct the pack's manifest (`citybrain city check`) and import it again",
                      city.get("city_code"), e)
            return
        if working != self.dispatcher.working:
            log.info("city %s: SLAs with sla_clock working count %s", city.get("city_code"),
                     f"{block['start']}-{block['end']} on {', '.join(block['days'])} in {zone}" if block else
                     "on the calendar (no working_hours)")
            self.dispatcher.working = working

    def feed_message(self, topic: str, headers: Mapping[str, bytes], payload: bytes, at: datetime,
                     partition: int = 0) -> list[tuple[str, dict[str, Any]]]:
        """Process one record as consumed: decode it, move stream time, take its event id (header, else the
        contract's rule) and feed it. Raises on a record that cannot be decoded or processed."""
        value = _loads(payload)
        if topic in REFERENCE:
            self.reference(topic, value)
            return []
        self.clock.saw(topic, partition, at)
        return self.feed(topic, value, record_event_id(self.contracts[topic], headers, payload, value), at)

    def feed(self, topic: str, value: dict[str, Any], event_id: str, now: datetime | None = None,
             ) -> list[tuple[str, dict[str, Any]]]:
        """Process one raw record that arrived at ``now`` (the record's Kafka timestamp; default: the
        latest observation time seen, which a device with a fast clock can push ahead)."""
        if topic in REFERENCE:
            self.reference(topic, value)
            return []
        if self._areas_dirty:
            self.enricher.index = AreaIndex.from_records(self.areas.values())
            self.fusion.neighbours, self.fusion.centre = self.enricher.index.neighbours, self.enricher.index.centre
            self._areas_dirty = False
        out: list[tuple[str, dict[str, Any]]] = []
        if topic == topics.TICKET_EVENTS:
            self.sla.event(value, self.dispatcher.ticket_clock(value))
            return out
        signal = self.enricher.signal(topic, value, event_id)
        if signal is None:
            return out
        if self.dedupe.is_duplicate(event_id, signal.at):
            self.counts["duplicate"] += 1
            return out
        self.counts[signal.kind] += 1
        arrived = now or signal.at
        self.now = max(self.now or arrived, arrived)
        self.metrics.add(signal)
        anomalies = self.watch.check(signal)
        for kind, record in self.fusion.add(signal, anomalies, arrived):
            if kind == "event":
                out.append((topics.CITY_EVENTS, record))
                out += self.dispatcher.event_orders(record)
            else:
                out.append((topics.EARLY_WARNINGS, record))
        if signal.kind == "ticket" and signal.state in ("received", "dispatched", "escalated"):
            out += self.dispatcher.ticket_orders(value, (signal.district_code, signal.street_code, signal.street_name,
                                                         signal.community_code))
        if self.auto_sweep and (self._last_sweep is None or self.now - self._last_sweep >= timedelta(minutes=5)):
            out += self.sweep(self.now)
        for t, _r in out:
            self.counts[t] += 1
        return out

    def sweep(self, now: datetime) -> list[tuple[str, dict[str, Any]]]:
        """SLA alerts due and city events closed by ``now`` (stream time every input has reached)."""
        self._last_sweep = now
        return [(topics.SLA_ALERTS, a) for a in self.sla.alerts(now)] + \
            [(topics.CITY_EVENTS, e) for _kind, e in self.fusion.close_quiet(now)] + \
            [(topics.CITY_METRICS, m) for m in self.metrics.close(now)]
