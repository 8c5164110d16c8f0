"""Reading a topic as a department would: the check that a grant (or its absence) holds on the broker."""

from __future__ import annotations

from typing import Any

from citybrain.kafka import clients
from citybrain.settings import Settings

__all__ = ["try_read"]


def try_read(settings: Settings, config: dict[str, Any], topic: str, idle_s: float = 3.0) -> tuple[bool, int | str]:
    """Read ``topic`` as a department would (its own credentials from ``config``, subscribed by name,
    nothing committed): (True, records read) or (False, the broker's refusal). aiokafka, because it
    raises on a refused topic where kafka-python's consumer silently reads nothing."""
    import asyncio

    from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

    department = settings.as_principal(config["sasl_username"], config["sasl_password"])

    async def run() -> tuple[bool, int | str]:
        consumer = clients.aio_consumer(department, topic, group_id=config["group_prefix"] + "probe",
                                        auto_offset_reset="earliest", enable_auto_commit=False)
        read = 0
        try:
            await consumer.start()
            while batches := await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10_000):
                read += sum(len(b) for b in batches.values())
        except TopicAuthorizationFailedError:
            return False, "TopicAuthorizationFailed"
        except KafkaConnectionError as exc:
            return False, "SaslAuthenticationFailed" if "SaslAuthenticationFailed" in str(exc) else str(exc)
        finally:
            await consumer.stop()
        return True, read

    return asyncio.run(run())
