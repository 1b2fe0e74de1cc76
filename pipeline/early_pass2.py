"""Pass-2 chunks run in the driver while an embedded Ray starts.

Why: starting a local Ray takes 5-7 s (its own processes, then the workers' imports), and for
a manifest of a few MiB the plan is ready within a second or two of that (pipeline/plan.py
`plan_in_driver`), so the driver would otherwise sit idle with cores free. A chunk is a pure
function of (store, file, chunk, config, counts, law, eval index) that commits its own outputs
and its `done` marker last (pipeline/pass2.py), so the driver can run the first chunks itself
and Ray's pass 2 the rest: the output is the same bytes whoever ran which chunk.

The hand-over is a claim under a lock: the driver claims a chunk before running it, and once
Ray is up `stop()` freezes the claimed set, so Ray's pass 2 skips exactly those chunks. A
claimed chunk that fails here (whatever the reason) is handed back to Ray, which runs it with
its usual retries and reports its error the usual way: the driver's side never fails a job.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

from weakly_base.storage import Store

from . import work_layout as lay
from .ingest_config import IngestConfig
from .pass2 import process_chunk
from .phases import PhaseClock, maybe
from .plan import Plan

Chunk = tuple[int, int]  # (manifest file, chunk) as pass 2 numbers them


def pending_chunks(plan: Plan, store: Store, chunk_rows: int) -> Iterator[Chunk]:
    """Every pass-2 chunk without a `done` marker, file by file, in order (one listing per
    file, made when the file is reached)."""
    for f, live in enumerate(plan.live):
        done = set(store.list(lay.chunk_done_dir(f)))
        for c in range(math.ceil(live / chunk_rows)):
            if lay.chunk_done(f, c).rsplit("/", 1)[1] not in done:
                yield f, c


class EarlyPass2:
    """Runs pending chunks one after another in a driver thread until `stop()`."""

    def __init__(
        self,
        store: Store,
        config: IngestConfig,
        eval_index,
        clock: PhaseClock | None = None,
        limit: int | None = None,
    ) -> None:
        self.store, self.config, self.eval_index, self.clock = store, config, eval_index, clock
        self.limit = limit  # at most this many chunks (tests); None: until stopped
        self.done: dict[Chunk, dict] = {}  # the `done` counts of each chunk finished here
        self.failed: list[Chunk] = []  # claimed, not finished: Ray runs them
        self._claimed: set[Chunk] = set()
        self._stopped = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, plan: Plan) -> None:
        """Begin on `plan`'s pending chunks in a thread (a no-op once stopped)."""
        with self._lock:
            if self._stopped or self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, args=(plan,), name="weakly-early-pass2", daemon=True
            )
            self._thread.start()

    def stop(self) -> frozenset[Chunk]:
        """No more claims: the chunks claimed so far (finished or in flight), for Ray's pass 2
        to skip. Safe to call before `start` (then nothing is ever claimed)."""
        with self._lock:
            self._stopped = True
            return frozenset(self._claimed)

    def join(self) -> None:
        """Wait for the thread to end by itself: no chunk left, `limit` reached, a failure."""
        if self._thread is not None:
            self._thread.join()

    def finish(self) -> tuple[dict[Chunk, dict], list[Chunk]]:
        """Stop, wait for the chunk in flight; (done counts by chunk, chunks to run on Ray)."""
        self.stop()
        self.join()
        return self.done, self.failed

    def _claim(self, chunk: Chunk) -> bool:
        with self._lock:
            if self._stopped or (self.limit is not None and len(self._claimed) >= self.limit):
                return False
            self._claimed.add(chunk)
            return True

    def _run(self, plan: Plan) -> None:
        counts, law = plan.counts, plan.solved_law()
        with maybe(self.clock, "pass 2 in the driver"):
            for f, c in pending_chunks(plan, self.store, self.config.chunk_rows):
                if not self._claim((f, c)):
                    return
                try:
                    self.done[(f, c)] = process_chunk(
                        self.store, f, c, self.config, counts, law, self.eval_index
                    )
                except Exception:  # handed back: Ray runs it and reports any error itself
                    self.failed.append((f, c))
                    self.stop()
                    return
