"""The services' logs: plain lines for people, or one JSON object a line for a log collector, and files kept small.

``CITYBRAIN_LOG_FORMAT=json`` makes every log record one line of JSON (:class:`JsonFormatter`) with ``time``
(UTC, to the millisecond), ``level``, ``service``, ``logger``, ``message``, ``trace_id`` when the record is about
a traced record or request, and ``exception`` (the traceback, in the same line) when there is one. A trace id is
known when the code logging says it (``log.info(..., extra={"trace_id": t})``) or runs inside :func:`traced`,
so one ticket can be followed through the gateway, the streams and the sinks by its trace id (the ``trace-id``
and W3C ``traceparent`` headers of its records, :mod:`citybrain.kafka.headers`).

The supervisor copies each service's output into ``<state_dir>/run/<service>.log`` through
:class:`RotatingLog`: at ``CITYBRAIN_LOG_MAX_BYTES`` the file moves to ``.1`` (the older ones to ``.2``...,
``CITYBRAIN_LOG_BACKUPS`` kept), so a service that talks a lot cannot fill the disk. Under systemd the
services log to the journal, which rotates its own files.

A foundation module beside ``metrics``: every service logs, so it imports none of them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import logging.handlers
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator, Literal

__all__ = ["TEXT_FORMAT", "JsonFormatter", "RotatingLog", "configure", "current_trace_id", "traced"]

LogFormat = Literal["text", "json"]
#: The plain line of the text format.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_TRACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("citybrain_trace_id", default=None)


def current_trace_id() -> str | None:
    """The trace id of the record or request being handled here (see :func:`traced`), or None."""
    return _TRACE.get()


@contextlib.contextmanager
def traced(trace_id: str | bytes | None) -> Iterator[None]:
    """Log records made inside carry ``trace_id`` (bytes as read from a header are decoded)."""
    if isinstance(trace_id, bytes):
        trace_id = trace_id.decode("utf-8", "replace")
    token = _TRACE.set(trace_id or None)
    try:
        yield
    finally:
        _TRACE.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, service, logger, message, and trace_id and exception when known."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:  # noqa: A003 - logging's own name
        when = datetime.fromtimestamp(record.created, timezone.utc)
        line: dict[str, str] = {"time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                                "level": record.levelname, "service": self.service, "logger": record.name,
                                "message": record.getMessage()}
        trace = getattr(record, "trace_id", None) or _TRACE.get()
        if trace:
            line["trace_id"] = trace.decode("utf-8", "replace") if isinstance(trace, bytes) else str(trace)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def configure(service: str, level: int, fmt: LogFormat = "text", stream: IO[str] | None = None,
              force: bool = False) -> None:
    """The process's root logger: one handler on ``stream`` (stderr) in ``fmt``, at ``level``; an existing
    handler (a test's capture) is kept unless ``force``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=force)


class RotatingLog:
    """A service's log file written line by line, moved aside at ``max_bytes`` (0: never) with ``backups`` kept:
    :class:`logging.handlers.RotatingFileHandler` writing each line as it came."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                            encoding="utf-8", errors="replace")
        self.handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, line: bytes | str) -> None:
        """Append one line (its line break is the file's own)."""
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        self.handler.handle(logging.makeLogRecord({"msg": text.rstrip("\r\n"), "levelno": logging.INFO}))

    def copy(self, stream: IO[bytes]) -> None:
        """Write every line of ``stream`` (a child's output) until it ends, then close it."""
        with stream:
            for line in iter(stream.readline, b""):
                self.write(line)

    def close(self) -> None:
        self.handler.close()
