"""The fusion worker (faust-streaming): raw feeds in; city events, early warnings, SLA alerts,
metrics and work orders out.

Each fetch from the raw topics arrives as one batch (``BatchApp.batch_agent``, see
:mod:`citybrain.streams.batching`), the shared package's ``Pipeline`` does the work (enrich,
dedupe, detect, fuse, dispatch), each output is validated against its contract before it is
sent, and the batch's offsets are acknowledged once its outputs are on the broker. On start
the worker loads the reference data, then rebuilds its state from the raw topics
(:mod:`citybrain.streams.warmup`) so a restart neither forgets duplicates nor reopens cases.
Stream time is the records' Kafka timestamp, which the simulator sets to simulated time.
With ``CITYBRAIN_STREAMS_PARTITIONS`` = N > 0 the workers of a group share the city by district
instead (:mod:`citybrain.streams.shares`).

Outputs once across a crash: each batch's outputs, dead letters and input offsets commit in one
Kafka transaction (:mod:`citybrain.kafka.transactions`), and everything in the platform reads
``read_committed``, so a batch is seen whole or not at all. A worker killed halfway leaves an open
transaction that the broker aborts when its restart (same transactional id) fences it; the
restart rebuilds its state up to the committed offsets and does the batch again. Keyed by area,
each owned partition commits through a producer of its own whose id moves with the partition, so
the partition's next owner fences the last; a share sweeps as its records move its stream time, so
the next owner's warm-up rebuilds what the last owner's sweeps sent too and sends none of it again
(:class:`~citybrain.streams.shares.Share`).

Laid out as faust's "Projects and Directory Layout" lays out an app:

- :mod:`~citybrain.streams.fusion.app`: the faust app from the settings, the garbage collector's
  tuning, ``create_app(settings)`` and ``main()`` (what ``python -m citybrain.streams.fusion`` and
  ``citybrain streams fusion`` run);
- :mod:`~citybrain.streams.fusion.topics`: the topic objects, and the keyed group's own topics;
- :mod:`~citybrain.streams.fusion.worker`: :class:`FusionWorker`, the state and work apart from
  faust (the default mode, and what the keyed mode shares);
  :mod:`~citybrain.streams.fusion.keyed`: :class:`KeyedFusionWorker`, keyed by area;
- :mod:`~citybrain.streams.fusion.loop`: the batch loop both modes' agents share;
- :mod:`~citybrain.streams.fusion.agents`: one agent per mode, and the default mode's sweep timer.

Nothing happens at import time.
"""

from __future__ import annotations

from citybrain.streams.fusion.app import (FREEZE_EVERY_S, FULL_GC_EVERY_S, GC_THRESHOLD, SESSION_TIMEOUT_S, create_app,
                                          main, tune_gc)
from citybrain.streams.fusion.keyed import KeyedFusionWorker
from citybrain.streams.fusion.topics import ensure_keyed_topics
from citybrain.streams.fusion.worker import PRODUCER, SWEEP_EVERY_S, FusionWorker, Produced

__all__ = [
    "FREEZE_EVERY_S", "FULL_GC_EVERY_S", "GC_THRESHOLD", "PRODUCER", "SESSION_TIMEOUT_S", "SWEEP_EVERY_S",
    "FusionWorker", "KeyedFusionWorker", "Produced", "create_app", "ensure_keyed_topics", "main", "tune_gc",
]
