"""A department reads its CityBrain topic: the example the README's department guide runs.

Usage::

    python examples/department_consumer.py police.json [--topic TOPIC] [--max N] [--idle SECONDS]

``police.json`` is what the data office hands over, made with
``citybrain access client-config police --json``. The consumer joins a group named after
the department's principal (the only groups it may use), reads from the earliest record,
prints each work order's id, street, deadline and caller pseudonym, commits, and stops after
``--max`` records or ``--idle`` seconds without one. It needs only ``aiokafka``.

Exit codes: 0 read; 3 the topic is not granted to this department; 4 the credentials were refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError


async def consume(cfg: dict, topic: str, max_records: int, idle_s: float) -> int:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=cfg["bootstrap_servers"],
        security_protocol=cfg["security_protocol"],
        sasl_mechanism=cfg["sasl_mechanism"],
        sasl_plain_username=cfg["sasl_username"],
        sasl_plain_password=cfg["sasl_password"],
        group_id=cfg["group_prefix"] + "example",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    read = 0
    try:
        await consumer.start()
        while read < max_records:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=max_records - read)
            if not batches:
                break
            for records in batches.values():
                for r in records:
                    order = json.loads(r.value)
                    read += 1
                    print(f"{order.get('work_order_id', r.key)}  {order.get('street_name') or '-'}  "
                          f"due {order.get('sla_deadline', '-')}  caller {order.get('caller_ref') or '-'}")
            await consumer.commit()
    except KafkaConnectionError as exc:
        print(f"refused: {cfg['sasl_username']} could not log in ({exc}). Ask the data office for current "
              "credentials (`citybrain access client-config`).", file=sys.stderr)
        return 4
    except TopicAuthorizationFailedError:
        print(f"refused: TopicAuthorizationFailed: {cfg['principal']} is not granted read on {topic}. "
              f"Ask the data office (`citybrain access show --department {cfg['department']}`).", file=sys.stderr)
        return 3
    finally:
        await consumer.stop()
    print(f"{read} record(s) read from {topic} as {cfg['principal']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="the department's client config (JSON)")
    parser.add_argument("--topic", help="default: the department's dispatch topic")
    parser.add_argument("--max", type=int, default=20, help="stop after this many records")
    parser.add_argument("--idle", type=float, default=5.0, help="stop after this many seconds without a record")
    args = parser.parse_args()
    cfg = json.loads(args.config.read_text())
    topic = args.topic or f"dispatch.{cfg['department']}.work_order.v1"
    return asyncio.run(consume(cfg, topic, args.max, args.idle))


if __name__ == "__main__":
    sys.exit(main())
