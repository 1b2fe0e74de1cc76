"""Who holds an output (host, pid, start time), and whether that process still lives.

The writer lock of an output (pipeline/output_lock.py) records its holder so that a refused run
can say who is writing, and so that a lock left behind by a killed run can be taken over at
once when the dead process was on this machine. "On this machine" must mean "its pid names a
process here": a host name can be shared (containers with host networking) and a container
has its own pid numbers, so the node is the kernel's boot id plus the pid namespace, and a pid
is the same process only if its start time (clock ticks since boot) matches too, since pids
are reused.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def this_node() -> str:
    """The boot id and pid namespace of this process ("" where /proc does not tell)."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}/{namespace}" if boot else ""


def start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (/proc/PID/stat field 22); None
    when there is no such process (or no /proc)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; field 3 follows it
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Holder:
    """One run holding (or having held) an output's writer lock."""

    host: str
    pid: int
    started: str  # UTC, ISO 8601, when this run took the lock
    node: str = ""  # `this_node()` of the holder; "" when unknown
    ticks: int = 0  # `start_ticks(pid)` of the holder; 0 when unknown
    token: str = ""  # unique per run: tells two holders apart whatever their pids

    @classmethod
    def me(cls) -> Holder:
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            node=this_node(),
            ticks=start_ticks(os.getpid()) or 0,
            token=uuid.uuid4().hex,
        )

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"

    def gone(self) -> bool | None:
        """True when the holder was a process on this machine that no longer runs; False when
        it still runs; None when it ran elsewhere (or we cannot tell): then only the lease's
        expiry says it is gone."""
        if not self.node or self.node != this_node() or not self.ticks:
            return None
        return start_ticks(self.pid) != self.ticks

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: object) -> Holder | None:
        """The holder a lock records, or None for anything that is not one (a torn or foreign
        object must not stop a run forever)."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                host=str(value["host"]),
                pid=int(value["pid"]),
                started=str(value["started"]),
                node=str(value.get("node", "")),
                ticks=int(value.get("ticks", 0)),
                token=str(value.get("token", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def parse(data: bytes) -> dict:
    """A lock object's JSON mapping, {} when it is not one."""
    try:
        value = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class OutputLocked(ValueError):
    """Another live run holds the output (a ValueError: the CLI prints it as one line)."""


class OutputLockLost(RuntimeError):
    """This run's lease was taken over or ran out while it was still writing."""


def refusal(url: str, holder: Holder | None, detail: str = "") -> str:
    """The one line a second writer gets."""
    who = holder.describe() if holder else "holder unknown, it has only just started"
    return (
        f"{url} is being written by another run ({who}{detail}); two runs writing one output "
        "would mix their files: wait for it to end or stop it, or use another --out"
    )


def takeover(url: str, holder: Holder | None, why: str) -> str:
    """The one line a run prints when it takes over the lock of a run that is gone."""
    who = holder.describe() if holder else "holder unknown"
    return f"{url}: taking over the writer lock of a run that is gone ({who}): {why}"
