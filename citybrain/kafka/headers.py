"""The standard headers every CityBrain record carries, and the one rule for its event id.

``contract-id`` and ``contract-version`` say which contract the value follows, ``producer``
who wrote it, ``event-id`` which event it is (stable across redeliveries, so consumers and
the lake can collapse them), ``trace-id`` which request or input it belongs to, and
``traceparent`` the same trace in W3C Trace Context form (``00-<32 hex trace id>-<16 hex parent
id>-01``), which tracing tools read. A trace id that is not 32 hex digits (a simulation run's id)
appears in ``traceparent`` as a hash of it; the parent id is this record's own, a hash of its
producer and event id, so a record sent again carries the same one. :func:`trace_of` reads a
record's trace back: its ``trace-id``, else the trace id of a valid ``traceparent`` (a record
from a W3C-traced producer); a malformed ``traceparent`` is ignored.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from typing import Any, Iterable

from citybrain.contracts.model import Contract

__all__ = ["EVENT_ID_NAMESPACE", "event_id", "new_trace_id", "read_headers", "record_event_id", "standard_headers",
           "trace_of", "traceparent", "uuid5_hex"]

#: Namespace for deterministic event ids of records that carry none of their own.
EVENT_ID_NAMESPACE = uuid.UUID("6f0e2a4c-3b1d-5c7e-9a8b-0c1d2e3f4a5b")
#: RFC 4122 version 5 and variant bits, as ``uuid.UUID(version=5)`` sets them
_UUID5_KEEP = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID5_MARK = (5 << 76) | (0x8000 << 48)
#: A W3C ``traceparent``: version, trace id, parent id, flags (lower-case hex); a later version may add fields.
_TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_TRACE_HEX = re.compile(r"^[0-9a-f]{32}$")


def new_trace_id() -> str:
    """A 128-bit random trace id (W3C trace-context size). Unique, not secret: no syscall per record."""
    return f"{random.getrandbits(128):032x}"


def event_id(contract: Contract, value: dict[str, Any], payload: str) -> str:
    """The record's stable event id: its contract's event-id field, else a hash of topic and JSON payload."""
    if contract.event_id_field:
        return str(value[contract.event_id_field])
    return uuid5_hex(EVENT_ID_NAMESPACE, contract.topic + "\0" + payload)


def uuid5_hex(namespace: uuid.UUID, name: str) -> str:
    """``uuid.uuid5(namespace, name).hex``, without building the UUID object: a quarter of the time, once per
    record of a file."""
    number = int.from_bytes(hashlib.sha1(namespace.bytes + name.encode("utf-8"), usedforsecurity=False).digest()[:16])
    return f"{number & _UUID5_KEEP | _UUID5_MARK:032x}"



def standard_headers(contract: Contract, producer: str, event: str, trace_id: str | bytes | None = None
                     ) -> list[tuple[str, bytes]]:
    """The six headers of a record under ``contract`` (a new trace id when none is given)."""
    trace = trace_id if isinstance(trace_id, bytes) else (trace_id or new_trace_id()).encode()
    return [("contract-id", contract.id.encode()), ("contract-version", contract.version.encode()),
            ("producer", producer.encode()), ("event-id", event.encode()), ("trace-id", trace),
            ("traceparent", traceparent(trace.decode("utf-8", "replace"), producer + "\0" + event))]


def traceparent(trace_id: str, span: str) -> bytes:
    """The W3C ``traceparent`` (version 00, sampled) of ``trace_id`` for the span named ``span``: the trace id
    itself when it is 32 lower-case hex digits and not all zeros, else a hash of it; the parent id a hash of
    ``span`` (never all zeros, which the standard forbids)."""
    trace = trace_id if _TRACE_HEX.match(trace_id) and trace_id.strip("0") else _hex(trace_id, 32)
    return f"00-{trace}-{_hex(span, 16)}-01".encode()


def _hex(text: str, digits: int) -> str:
    """``digits`` hex digits of a hash of ``text`` (BLAKE2b: the cheapest of hashlib's, once per record), not all
    zeros."""
    found = hashlib.blake2b(text.encode("utf-8"), digest_size=digits // 2).hexdigest()
    return found if found.strip("0") else "0" * (digits - 1) + "1"


def trace_of(headers: dict[str, bytes]) -> bytes | None:
    """A consumed record's trace id: its ``trace-id`` header, else the trace id of its ``traceparent`` when that
    is valid (version not ff, ids not all zeros; version 00 exactly four fields), else None."""
    found = headers.get("trace-id")
    if found:
        return found
    match = _TRACEPARENT.match(headers.get("traceparent") or b"")
    if match is None:
        return None
    version, trace, parent, _flags, more = match.groups()
    if version == b"ff" or (version == b"00" and more) or not trace.strip(b"0") or not parent.strip(b"0"):
        return None
    return trace


def read_headers(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, bytes]:
    """A record's headers as a mapping (the last value of a repeated header wins)."""
    return dict(headers or ())


def record_event_id(contract: Contract, headers: dict[str, bytes], payload: bytes, value: dict[str, Any]) -> str:
    """A consumed record's event id: its ``event-id`` header, else the contract's rule over the value."""
    found = headers.get("event-id")
    if found:
        return found.decode()
    return event_id(contract, value, payload.decode("utf-8", "replace"))
