"""Where an ingest's time goes: wall and driver CPU seconds per phase (Ray start-up, lexicon,
each pass-1 round, pass 2, shards, index), so a user can see why a small job is slower per
image than a large one, and `weakly ingest --profile` can print it. Recording costs two clock
reads per phase, so it is always on.

CPU is the phase's own thread's (`time.thread_time`): some phases run in a driver thread while
the main thread waits for Ray to start, and process CPU would count both. Such phases are
marked `overlapped` (timed outside the main thread): their wall time is not on the job's
critical path."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseClock:
    """Accumulates (wall, driver CPU) seconds per named phase, in the order first seen."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.overlapped: set[str] = set()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block; one run outside the main thread is marked overlapped."""
        overlapped = threading.current_thread() is not threading.main_thread()
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - wall, time.thread_time() - cpu)
            if overlapped:
                self.overlapped.add(name)

    def add(self, name: str, wall: float, cpu: float = 0.0) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu

    def as_dict(self) -> dict[str, dict[str, float]]:
        """{phase: {"wall": s, "cpu": s}}, rounded to milliseconds."""
        return {
            n: {
                "wall": round(self.wall[n], 3),
                "cpu": round(self.cpu[n], 3),
                **({"overlapped": True} if n in self.overlapped else {}),
            }
            for n in self.wall
        }


def phase_rows(phases: dict[str, dict[str, float]], total: float) -> list[str]:
    """The `--profile` table: each phase's wall and driver-CPU seconds and its share of the
    job's wall time; what no phase covers is shown as `other`. An overlapped phase ran in a
    driver thread alongside another (Ray start) and is marked `(overlapped)`."""
    lines = [f"{'phase':<28}{'wall s':>10}{'cpu s':>9}{'share':>8}"]
    covered = 0.0
    for name, t in phases.items():
        share = t["wall"] / total if total > 0 else 0.0
        mark = ""
        if t.get("overlapped"):
            mark = "  (overlapped)"
        else:
            covered += t["wall"]
        line = f"{'  ' + name:<28}{t['wall']:>10.3f}{t['cpu']:>9.3f}{share:>8.1%}{mark}"
        lines.append(line)
    rest = max(0.0, total - covered)
    share = rest / total if total > 0 else 0.0
    lines.append(f"{'  other':<28}{rest:>10.3f}{'':>9}{share:>8.1%}")
    lines.append(f"{'job total':<28}{total:>10.3f}")
    return lines


@contextmanager
def maybe(clock: PhaseClock | None, name: str) -> Iterator[None]:
    """`clock.phase(name)`, or nothing when there is no clock."""
    if clock is None:
        yield
    else:
        with clock.phase(name):
            yield


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc), or None elsewhere: what the
    interpreter and imports cost before `ingest()` was called."""
    import os

    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
