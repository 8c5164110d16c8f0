"""The Data page's view of the broker: records per topic, each consumer group's lag, the dead letters' reasons.

Read with the platform's admin client when the page asks (the page shows the lake's figures first and
these when they arrive); a broker that is down is said so, not hidden.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any, Iterable

from citybrain.contracts.topics import INGEST_DEAD_LETTERS
from citybrain.settings import Settings

log = logging.getLogger(__name__)

#: Consumer groups shown at most (the newest test or bench groups would crowd the table).
MAX_GROUPS = 40


def broker_stats(settings: Settings, topics: Iterable[str]) -> dict[str, Any]:
    """{"records": topic -> records on the broker, "groups": [group, committed, lag], "dead_letters": {contract:
    {rule: n}}}; {"error": ...} when the broker cannot be read."""
    from citybrain.kafka import clients
    from citybrain.kafka.topics import end_offsets, read_topic

    try:
        ends = end_offsets(settings, list(topics))
        records: Counter[str] = Counter()
        for (topic, _p), end in ends.items():
            records[topic] += end
        admin = clients.admin(settings)
        try:
            names = sorted(str(g.get("group_id") if isinstance(g, dict) else g[0]) for g in admin.list_groups())[:MAX_GROUPS]
            committed = admin.list_group_offsets(names) if names else {}
        finally:
            admin.close()
        groups = []
        for name in names:
            offsets = {(tp.topic, tp.partition): max(0, o.offset) for tp, o in (committed.get(name) or {}).items()}
            lag = sum(max(0, ends.get(tp, offset) - offset) for tp, offset in offsets.items())
            groups.append({"group": name, "topics": sorted({t for t, _p in offsets}), "committed": sum(offsets.values()),
                           "lag": lag})
        reasons: dict[str, Counter[str]] = {}
        for msg in read_topic(settings, INGEST_DEAD_LETTERS, timeout_s=20):
            try:
                letter = json.loads(msg.value)
            except ValueError:
                continue
            reasons.setdefault(str(letter.get("contract")), Counter())[str(letter.get("rule"))] += 1
    except Exception as exc:   # a broker down, a timeout, a refused read: the page says why
        log.warning("ui: the broker could not be read: %s: %s", type(exc).__name__, exc)
        return {"error": f"the broker could not be read ({type(exc).__name__}: {exc}). Fix: `citybrain broker up`."}
    return {"records": dict(records), "groups": groups, "dead_letters": {k: dict(v) for k, v in reasons.items()}}
