"""Leases: one sink writes a topic into a lake layer at a time; a second one is refused, naming the first.

The lake's exactly-once rests on one writer per partition: two sinks on one topic each write every
batch and each move the checkpoint, and the lake holds records twice. A sink therefore holds a lease
per topic, ``<lake>/_leases/<layer>/<topic>.json``: who holds it (a random writer id, user, pid,
host), since when, its last heartbeat and when it expires. The holder renews it as it goes
(:meth:`Lease.check`, a heartbeat every third of its time to live) and re-reads it before every batch
and every checkpoint: a writer that finds its lease taken stops (:class:`LeaseLost`) without moving
its checkpoint. A holder that crashed stops renewing; once its lease expired, the next sink takes it
over (and its recovery removes the crashed batch's leftovers). A holder whose process is gone from
this host and pid namespace (a sink killed, then restarted by the supervisor) is taken over at once;
elsewhere a pid says nothing, and only the expiry does.

Local lake: every read-check-write of a lease runs under an exclusive ``fcntl.flock`` on
``<topic>.json.lock`` (released by the kernel when its process dies, so a crash never leaves it
held), and the lease is written atomically and fsynced: two sinks can never both take it.

Object storage: pyarrow's filesystems have no create-if-absent (S3's conditional writes are not
exposed), so the lease is last-writer-wins, made safe by reading it back: a sink writes its lease,
waits ``settle_s`` and reads it again; only the sink whose id it finds holds it, the other is
refused. Two sinks can both believe they hold it only when one's read-then-write took longer than
``settle_s`` (a stall in the middle of starting); the re-read before every batch and checkpoint then
stops the one whose id is gone before it moves a checkpoint, so the lake may get that one batch's
files twice, never a checkpoint past records it did not write. Expiry compares wall clocks: hosts
that share a lake must keep their clocks within a small part of the time to live (NTP).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Iterator, Sequence

from citybrain.errors import CityBrainError
from citybrain.lake import layout
from citybrain.lake.layout import Lake
from citybrain.lake.store import as_lake
from citybrain.times import iso

__all__ = ["LEASE_TTL_S", "SETTLE_S", "Holder", "Lease", "LeaseHeld", "LeaseLost", "hold"]

log = logging.getLogger(__name__)

#: Seconds a lease lives without a heartbeat (a crashed sink's topics wait this long for the next one).
LEASE_TTL_S = 60.0
#: Seconds a sink waits on object storage between writing its lease and reading it back.
SETTLE_S = 2.0


class LeaseHeld(CityBrainError):
    """Another sink holds the lease of a topic and layer: this one must not write it."""


class LeaseLost(CityBrainError):
    """The lease this sink held was taken over (it stalled past its expiry): it stops without a checkpoint."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as written in it."""

    writer: str       # a random id per sink run
    who: str
    pid: int
    host: str
    since: float      # epoch seconds
    heartbeat: float
    expires: float
    pidns: str = ""   # the holder's pid namespace (``/proc/self/ns/pid``): a pid means something only inside it

    def gone(self) -> bool:
        """The holder ran on this host, in this pid namespace, and its process is no more (a crashed or killed
        sink): its lease need not run out first. Anywhere else nothing can be told, and the expiry decides."""
        if not self.pidns or self.host != socket.gethostname() or self.pidns != _pid_namespace():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:   # alive, another user's
            return False
        return False

    def describe(self, now: float) -> str:
        state = f"expires in {self.expires - now:.0f} s" if self.expires > now else \
            f"expired {now - self.expires:.0f} s ago"
        return (f"{self.who} (pid {self.pid} on {self.host}, writer {self.writer[:8]}) since {_iso(self.since)}, "
                f"last heartbeat {now - self.heartbeat:.0f} s ago, {state}")


class Lease:
    """The lease of one topic in one layer, as one sink run holds it."""

    def __init__(self, lake: Lake, layer: str, topic: str, ttl_s: float = LEASE_TTL_S,
                 settle_s: float = SETTLE_S) -> None:
        self.lake, self.layer, self.topic = as_lake(lake), layer, topic
        self.path = layout.lease_path(self.lake, layer, topic)
        self.ttl_s, self.settle_s = ttl_s, settle_s
        self.writer = uuid.uuid4().hex
        self.since = 0.0
        self.renewed = 0.0   # when this run last wrote its lease (0: not held)

    # -- the protocol ------------------------------------------------------------------------------------

    def take(self) -> None:
        """Write this run's lease unless another live one is there (:class:`LeaseHeld` naming its holder);
        on object storage, :meth:`confirm` after ``settle_s`` makes it sure (see :func:`hold`)."""
        with self._locked():
            now = time.time()
            holder = self.read()
            if holder is not None and holder.writer != self.writer:
                if holder.expires > now and not holder.gone():
                    raise LeaseHeld(self._held_message(holder, now))
                log.warning("%s/%s: taking over the lease of %s (%s%s)", self.layer, self.topic, holder.who,
                            holder.describe(now), "; its process is gone" if holder.expires > now else "")
            self.since = now
            self._write(now)

    def due(self) -> bool:
        """Whether a heartbeat is due (a third of the time to live since the last one)."""
        return time.time() - self.renewed >= self.ttl_s / 3

    def check(self) -> None:
        """Before a batch or a checkpoint: still ours (else :class:`LeaseLost`); renewed when a heartbeat is due."""
        if not self.due():
            self.confirm()
            return
        with self._locked():
            self.confirm()
            self._write(time.time())

    def confirm(self) -> None:
        """Read the lease back: :class:`LeaseLost` unless it still names this run."""
        holder = self.read()
        if holder is None or holder.writer != self.writer:
            now = time.time()
            by = holder.describe(now) if holder else "nobody (the lease file is gone)"
            raise LeaseLost(
                f"{self.layer} lake sink for {self.topic}: its lease ({self.path}) is now held by {by}, not by this "
                f"run (writer {self.writer[:8]}), which stalled past its {self.ttl_s:.0f} s lease. It stops without "
                f"moving its checkpoint; the holder writes the topic on. Fix: nothing to do if that sink is meant "
                f"to run; otherwise stop it and start this one again.")

    def release(self) -> None:
        """Give the lease up (only if it is still this run's)."""
        if not self.renewed:
            return
        with self._locked():
            holder = self.read()
            if holder is not None and holder.writer == self.writer:
                self.path.unlink(missing_ok=True)
        self.renewed = 0.0

    def read(self) -> Holder | None:
        """The lease as written, or None when there is none (or it is not a lease: then it is taken over)."""
        try:
            data = json.loads(self.path.read_text())
            return Holder(**{k: data[k] for k in Holder.__dataclass_fields__ if k != "pidns"},
                          pidns=str(data.get("pidns", "")))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s is not a lease (%s); it is taken over", self.path, exc)
            return None

    # -- helpers -----------------------------------------------------------------------------------------

    def _write(self, now: float) -> None:
        me = Holder(self.writer, _user(), os.getpid(), socket.gethostname(), self.since, now, now + self.ttl_s,
                    _pid_namespace())
        self.path.write_text(json.dumps({**asdict(me), "layer": self.layer, "topic": self.topic,
                                         "since_utc": _iso(me.since), "expires_utc": _iso(me.expires)}))
        self.renewed = now

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive against every other lease operation on this topic (local lake; nothing on object storage)."""
        if not self.path.local:
            yield
            return
        lock = self.path.with_name(f"{self.path.name}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)   # closing releases the lock

    def _held_message(self, holder: Holder, now: float) -> str:
        return (f"{self.layer} lake sink for {self.topic} refused: another sink writes it, lease held by "
                f"{holder.describe(now)} ({self.path}). Two sinks on one topic write its records twice. Fix: stop "
                f"that sink (`citybrain down`, or kill pid {holder.pid} on {holder.host}) or let it finish; a "
                f"crashed holder's lease is taken over at once on its own host, elsewhere once it expires "
                f"({self.ttl_s:.0f} s without a heartbeat).")


def hold(lake: Lake, layer: str, topics: Sequence[str], ttl_s: float = LEASE_TTL_S,
         settle_s: float = SETTLE_S) -> list[Lease]:
    """Take the leases of ``topics`` in ``layer``, all or none (:class:`LeaseHeld` naming the first holder)."""
    leases = [Lease(lake, layer, t, ttl_s, settle_s) for t in topics]
    taken: list[Lease] = []
    try:
        for lease in leases:
            lease.take()
            taken.append(lease)
        if leases and not leases[0].path.local:   # last writer wins: wait, then read back who did
            time.sleep(settle_s)
            for lease in leases:
                holder = lease.read()
                if holder is None or holder.writer != lease.writer:
                    lease.renewed = 0.0   # not ours to release
                    raise LeaseHeld(lease._held_message(holder, time.time()) if holder else
                                    f"{layer} lake sink for {lease.topic} refused: its lease ({lease.path}) vanished "
                                    "while it was being taken, so another sink is starting. Fix: start one sink.")
    except BaseException:
        for lease in taken:
            lease.release()
        raise
    return leases


def _pid_namespace() -> str:
    """This process's pid namespace (``pid:[4026531836]``), or "" where the system does not say."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):   # no name for this uid (a container)
        return f"uid {os.getuid()}"


def _iso(epoch: float) -> str:
    return iso(datetime.fromtimestamp(epoch, timezone.utc))
