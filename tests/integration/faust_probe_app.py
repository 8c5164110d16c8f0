"""A minimal Faust app used by the integration suite to prove faust-streaming + aiokafka
work against the pinned Kafka broker: a consumer group, headers, and a table whose
changelog topic Faust creates and writes itself."""

from __future__ import annotations

import os
from pathlib import Path

import faust

TRACE = os.environ["FAUST_PROBE_TRACE"].encode()
EXPECTED = int(os.environ["FAUST_PROBE_EXPECTED"])
RESULT = Path(os.environ["FAUST_PROBE_RESULT"])

app = faust.App(
    f"citybrain-faust-probe-{TRACE.decode()}",
    broker=f"kafka://{os.environ['FAUST_PROBE_BOOTSTRAP']}",
    # The test broker is secured like every CityBrain broker: SASL SCRAM-SHA-512 as the admin principal.
    broker_credentials=faust.SASLCredentials(username=os.environ["FAUST_PROBE_USER"],
                                             password=os.environ["FAUST_PROBE_PASSWORD"], mechanism="SCRAM-SHA-512"),
    store="memory://",
    datadir=os.environ["FAUST_PROBE_DATADIR"],
    topic_replication_factor=1,
    topic_partitions=1,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
)
source = app.topic("raw.sensor.noise_level.v1", value_serializer="raw")
# A table must have as many partitions as its source topic (6 for the sensor topics).
counts = app.Table("probe_counts", default=int, partitions=6)
seen = {"n": 0}


@app.agent(source)
async def count(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        if (event.headers or {}).get("trace-id") != TRACE:
            continue
        counts["mine"] += 1
        seen["n"] += 1
        if seen["n"] == EXPECTED:
            RESULT.write_text(str(counts["mine"]))
