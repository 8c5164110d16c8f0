"""The CPU seconds each measured run of `make bench` used, and what they say per record.

On the benchmark's 2 shared cores, wall-clock records per second cannot show whether a second worker
scales: two workers and the broker share the cores, so the second worker's gain is capped by the cores,
not by the worker. The CPU each process spent per record it handled can: a worker that adds no
overhead per record keeps its CPU-microseconds per record whatever the cores do.

Where the seconds come from: the kernel's ``utime + stime`` (user and system time, in clock ticks of
``SC_CLK_TCK``) from ``/proc/<pid>/stat`` for a process (a fusion worker, the broker's JVM: every
thread of it), and from ``/proc/self/task/<tid>/stat`` for the one thread that runs the plain aiokafka
consumer in the benchmark's own process (aiokafka does its fetching, unpacking and decompression on
the event loop's thread, and the benchmark's process holds other threads that are not the consumer's
cost). One source and one clock for every figure, read at the start and the end of each run's timed
window (a tick is 10 ms at Linux's usual 100 Hz, against runs of several seconds). Without ``/proc`` (not Linux) every CPU figure is ``None``, reported as not measured.

Two workers of one group: each worker's records are its share of the group's backlog records, in
proportion to the offsets the group committed on the partitions (raw, by-area, ticket events) that
worker owned when they were committed (:func:`attribute`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["NOT_LINUX", "attribute", "cpu_figures", "owners", "parse_stat", "proc_missing", "process_cpu_s",
           "processes_cpu_s", "shares", "thread_cpu_s", "us_per_record", "used"]

#: Why a CPU figure is missing on a machine without ``/proc``.
NOT_LINUX = "not measured: no /proc on this machine (CPU seconds are read from Linux's /proc/<pid>/stat)"
#: ``utime`` and ``stime`` are fields 14 and 15 of ``/proc/<pid>/stat`` (proc(5)); after the name's closing
#: parenthesis the fields start at 3 (``state``), so they are the 12th and 13th there.
_UTIME, _STIME = 14 - 3, 15 - 3


def parse_stat(line: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from one ``/proc/<pid>/stat`` line.

    The second field is the command name in parentheses, and the name may itself hold spaces and
    parentheses (``12 (python3 (x) y) S ...``): the fields are counted after its *last* ``)``."""
    close = line.rfind(")")
    fields = line[close + 1:].split()
    if close < 0 or len(fields) <= _STIME:
        raise ValueError(f"not a /proc/<pid>/stat line: {line[:80]!r}; expected 'pid (name) state ...' with at "
                         "least 15 fields (proc(5)). Fix: read /proc/<pid>/stat of a live process")
    return int(fields[_UTIME]), int(fields[_STIME])


def proc_missing(proc: Path = Path("/proc")) -> str | None:
    """Why no CPU figure can be measured here (:data:`NOT_LINUX`), or None where ``/proc`` is."""
    return None if (proc / "self" / "stat").exists() else NOT_LINUX


def _ticks_per_s() -> int | None:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return None


def _stat_cpu_s(path: Path) -> float | None:
    """User plus system seconds of the process or thread whose stat file ``path`` is; None if it cannot be read."""
    ticks = _ticks_per_s()
    if not ticks:
        return None
    try:
        line = path.read_text()
    except OSError:
        return None
    utime, stime = parse_stat(line)
    return (utime + stime) / ticks


def process_cpu_s(pid: int, proc: Path = Path("/proc")) -> float | None:
    """CPU seconds (user + system, all threads) process ``pid`` has used so far; None without ``/proc`` or the process."""
    return _stat_cpu_s(proc / str(pid) / "stat")


def thread_cpu_s(proc: Path = Path("/proc")) -> float | None:
    """CPU seconds the calling thread has used so far (its own ``/proc/self/task/<tid>/stat``); None without ``/proc``."""
    return _stat_cpu_s(proc / "self" / "task" / str(threading.get_native_id()) / "stat")


def used(start: float | None, end: float | None) -> float | None:
    """CPU seconds between two readings; None unless both were read."""
    return None if start is None or end is None else round(end - start, 2)


def us_per_record(cpu_s: float | None, records: float) -> float | None:
    """CPU-microseconds per record; None when the CPU was not measured or no record was handled."""
    if cpu_s is None or records <= 0:
        return None
    return round(cpu_s * 1e6 / records, 2)


def owners(group: Mapping[str, Any]) -> dict[tuple[str, int], str]:
    """(topic, partition) -> client id of the member that owns it, from kafka-python's ``describe_groups`` of the
    group (``members``, each with ``client_id`` and its decoded ``member_assignment``)."""
    owned: dict[tuple[str, int], str] = {}
    for member in group.get("members") or ():
        assignment = member.get("member_assignment")
        entries = (assignment.get("assigned_partitions") or ()) if isinstance(assignment, Mapping) else ()
        for entry in entries:
            for partition in entry["partitions"]:
                owned[(entry["topic"], partition)] = member["client_id"]
    return owned


def attribute(handled: dict[str, int], owned: Mapping[tuple[str, int], str],
              before: Mapping[tuple[str, int], int], after: Mapping[tuple[str, int], int]) -> None:
    """Add to ``handled`` (client id -> offsets) the offsets each partition's owner committed between two readings
    of the group's committed offsets; a partition nobody is known to own counts for ``"?"``."""
    for tp, offset in after.items():
        moved = offset - before.get(tp, 0)
        if moved > 0:
            owner = owned.get(tp, "?")
            handled[owner] = handled.get(owner, 0) + moved


def shares(records: int, handled: Iterable[int]) -> list[float]:
    """Each worker's part of ``records``, in proportion to the offsets it committed (even parts if none did)."""
    counts = list(handled)
    total = sum(counts)
    if total <= 0:
        return [records / len(counts)] * len(counts) if counts else []
    return [records * n / total for n in counts]


def _run_figures(run: Mapping[str, Any]) -> dict[str, Any]:
    """CPU-microseconds per record of one run of workers: the group's, and each worker's."""
    cpu = run.get("cpu_s") or []
    total = None if not cpu or any(c is None for c in cpu) else sum(cpu)
    each = [us_per_record(c, part) for c, part in zip(cpu, shares(run["records"], run.get("handled") or [0] * len(cpu)))]
    return {"us_per_record": us_per_record(total, run["records"]), "each_us_per_record": each,
            "broker_us_per_record": us_per_record(run.get("broker_cpu_s"), run["records"])}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def cpu_figures(plain: Mapping[str, Any], default: Mapping[str, Any], one: Mapping[str, Any],
                two: Mapping[str, Any]) -> dict[str, Any]:
    """The CPU figures of a bench run from its four measured runs (each ``records``, ``seconds``, ``cpu_s``: the
    seconds of each of its processes or ``None``, ``handled`` per worker, ``broker_cpu_s``):

    - ``us_per_record`` per run, and ``each_us_per_record`` of each worker;
    - ``scaling_cpu``: CPU per record of two keyed workers over one (≤ 1.15: the second adds no overhead per
      record), with ``scaling_wall``, the wall-clock records/s (``per_s``) of two over one, beside it;
    - ``keyed_per_cpu_s``: one keyed worker's records per CPU second over the default worker's (≥ 0.8)."""
    runs = {"plain": _run_figures(plain), "default": _run_figures(default), "keyed_one": _run_figures(one),
            "keyed_two": _run_figures(two)}
    wall_one, wall_two = (run.get("per_s") or run["records"] / run["seconds"] for run in (one, two))
    return {
        "runs": runs,
        "broker_cpu_s": {name: run.get("broker_cpu_s") for name, run in
                         (("plain", plain), ("default", default), ("keyed_one", one), ("keyed_two", two))},
        "scaling_cpu": _ratio(runs["keyed_two"]["us_per_record"], runs["keyed_one"]["us_per_record"]),
        "scaling_wall": round(wall_two / wall_one, 3) if wall_one else None,
        # records per CPU second is 1e6 / (µs per record): the keyed worker's over the default's is the inverse ratio.
        "keyed_per_cpu_s": _ratio(runs["default"]["us_per_record"], runs["keyed_one"]["us_per_record"]),
        "targets": {"scaling_cpu": 1.15, "keyed_per_cpu_s": 0.8},
    }


def processes_cpu_s(pids: Iterable[int], proc: Path = Path("/proc")) -> float | None:
    """CPU seconds the processes have used so far, summed (a broker of several nodes); None if there are none or
    one cannot be read."""
    seconds = [process_cpu_s(pid, proc) for pid in pids]
    return None if not seconds or None in seconds else sum(s for s in seconds if s is not None)
