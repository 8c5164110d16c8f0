"""A Python whose wall clock runs ahead (the chaos test's skewed fusion worker): ``time.time`` and ``time.time_ns``
return the real time plus ``CB_CLOCK_SKEW_S`` seconds; the monotonic clock, which timeouts and sleeps use, is left
alone, as it is on a host whose clock is simply wrong. Loaded by putting this folder on ``PYTHONPATH``.

libfaketime's ``LD_PRELOAD`` does the same for the whole process, but its ``nanosleep`` hook made kafka-python's
consumer fail with ``EINVAL`` (Python 3.11 sleeps with ``clock_nanosleep`` on the monotonic clock; measured with
Debian's 0.9.10, with and without ``DONT_FAKE_MONOTONIC``). ``datetime.now`` reads the clock in C and is not
skewed: the skew reaches the Kafka clients' record timestamps, the fusion loop's and repartitioner's clocks and
the logs, which take wall-clock time from ``time.time``, not the ISO stamps ``times.now_iso`` writes."""

from __future__ import annotations

import os
import time

_SKEW_S = float(os.environ.get("CB_CLOCK_SKEW_S", "0"))
_time, _time_ns = time.time, time.time_ns


def _skewed_time() -> float:
    return _time() + _SKEW_S


def _skewed_time_ns() -> int:
    return _time_ns() + int(_SKEW_S * 1e9)


if _SKEW_S:
    time.time = _skewed_time
    time.time_ns = _skewed_time_ns
