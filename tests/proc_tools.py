"""Finding the processes of one job through /proc, so a test kills only what it started."""

from __future__ import annotations

import os
import sys
import tracemalloc
from pathlib import Path


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after it
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` in the process tree."""
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process has had so far (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def rss_kib(pid: int) -> int:
    """VmRSS: resident memory now (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class HeapPeak:
    """`with HeapPeak() as heap: ...` then `heap.peak`: the Python heap's peak inside the block,
    traced by tracemalloc. On CPython 3.11 tracemalloc's start/stop race with native threads
    entering Python (CPython gh-128679, fixed in 3.12.9/3.13.2 only): a worker still hosting Ray's
    core-worker threads from an earlier ingest test segfaulted here, so this process's Ray is
    stopped first (the next test that needs Ray starts it again)."""

    peak = 0

    def __enter__(self) -> HeapPeak:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        tracemalloc.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return False
