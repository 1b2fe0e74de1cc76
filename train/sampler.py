"""Sample order: a pure function of (seed, stream slot, number of slots, position).

The global stream is a sequence of shard *visits* numbered 0, 1, 2, ...; visit `g` belongs to
slot `g % n_slots`, where a slot is one (rank, loader worker) pair. What a visit does depends
only on (seed, g):

* weighted: the shard is drawn with probability proportional to its `weight_sum`; sample `i`
  of it is emitted `floor(x) + [u_i < frac(x)]` times with `x = c * w_i / weight_sum`, so its
  expected count per visit is `c * w_i / total_weight` -- proportional to `w_i` whatever the
  shard sizes (DESIGN.md, "Streaming sampler").
* natural: visits walk a fresh permutation of the shards every pass; each sample once.

Each slot then passes its emissions through a shuffle buffer whose pick for output `o` is also
a function of (seed, slot, o). The state needed to resume a slot exactly is a cursor, an output
count and references (visit, position, copy) to what sits in the buffer -- never sample bytes.
Because the stream never ends, every rank can draw exactly as many batches as asked: no rank
runs dry before another (the DDP hang at epoch ends cannot happen).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

_VISIT, _PICK, _PERM = 1, 2, 3
_PICK_BLOCK = 4096


class StreamError(ValueError):
    """The stream cannot go on: no visit emits anything, or a saved state does not fit the
    data. The message is one line."""


def empty_visit_limit(num_shards: int) -> int:
    """Consecutive visits that emit nothing after which a stream stops.

    A visit emits `c` copies in expectation (c = mean shard size >= 1), so with valid weights
    a run of 256 empty visits has probability below e^-256. Natural order visits every shard
    once per pass, so empty shards alone can give up to two passes' worth in a row; hence
    3 x shards when that is more."""
    return max(256, 3 * num_shards)


@dataclass(frozen=True)
class Plan:
    """Everything the order depends on besides the slot."""

    weight_sums: tuple[float, ...]
    seed: int = 0
    mode: str = "weighted"
    mean_shard_size: float = 1.0
    buffer_size: int = 1000

    def __post_init__(self) -> None:
        if self.mode not in ("weighted", "natural"):
            raise ValueError(f"sampling must be 'weighted' or 'natural', not {self.mode!r}")
        if self.buffer_size < 1:
            raise ValueError("shuffle buffer size must be at least 1")

    @property
    def num_shards(self) -> int:
        return len(self.weight_sums)


def visit_rng(plan: Plan, visit: int) -> np.random.Generator:
    return np.random.default_rng([plan.seed, _VISIT, visit])


def visit_shard(plan: Plan, visit: int, rng: np.random.Generator | None = None) -> int:
    """Which shard global visit `visit` reads."""
    if plan.mode == "natural":
        n = plan.num_shards
        perm = np.random.default_rng([plan.seed, _PERM, visit // n]).permutation(n)
        return int(perm[visit % n])
    rng = rng if rng is not None else visit_rng(plan, visit)
    cum = np.cumsum(np.asarray(plan.weight_sums, dtype=np.float64))
    u = rng.random() * cum[-1]
    return int(min(np.searchsorted(cum, u, side="right"), len(cum) - 1))


def visit_draws(plan: Plan, visit: int) -> tuple[int, np.random.Generator]:
    """The shard of a visit and the generator whose next draws are its rounding uniforms."""
    rng = visit_rng(plan, visit)
    return visit_shard(plan, visit, rng), rng


def emission_count(weight: float, weight_sum: float, c: float, u: float) -> int:
    """Stochastic rounding of `c * weight / weight_sum`: exact in expectation."""
    if weight_sum <= 0 or weight <= 0:
        return 0
    x = c * weight / weight_sum
    whole = math.floor(x)
    return whole + int(u < x - whole)


@dataclass
class StreamState:
    """Where a slot's stream stands; enough to continue it exactly.

    `visit` counts this slot's visits (global visit = slot + visit * n_slots); (`sample`,
    `copy`) is the next emission to push; `buffer` holds (visit, sample, copy) of what is
    buffered, in buffer order; `out` is how many items have left the buffer.
    """

    visit: int = 0
    sample: int = 0
    copy: int = 0
    out: int = 0
    buffer: list[tuple[int, int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "visit": self.visit,
            "sample": self.sample,
            "copy": self.copy,
            "out": self.out,
            "buffer": [list(r) for r in self.buffer],
        }

    @classmethod
    def from_dict(cls, d: dict) -> StreamState:
        buf = d.get("buffer", [])
        if hasattr(buf, "tolist"):
            buf = buf.tolist()
        return cls(
            visit=int(d["visit"]),
            sample=int(d["sample"]),
            copy=int(d["copy"]),
            out=int(d["out"]),
            buffer=[(int(a), int(b), int(c)) for a, b, c in buf],
        )


Reader = Callable[[int], Iterable[tuple[float, object]]]


class SampleStream:
    """The endless, shuffled emission stream of one slot.

    `read(shard)` yields (weight, payload) for each sample of a shard in stored order; payloads
    are opaque here (a key for audits, bytes and labels for training). Iteration yields
    ((visit, sample, copy), payload); `state()` taken between two items resumes after the
    last one yielded.
    """

    def __init__(
        self,
        plan: Plan,
        slot: int,
        n_slots: int,
        read: Reader,
        state: StreamState | None = None,
    ) -> None:
        if not 0 <= slot < n_slots:
            raise ValueError(f"slot {slot} outside 0..{n_slots - 1}")
        self.plan, self.slot, self.n_slots, self.read = plan, slot, n_slots, read
        self._start = state or StreamState()
        self._cursor = (self._start.visit, self._start.sample, self._start.copy)
        self._out = self._start.out
        self._buffer: list[tuple[tuple[int, int, int], object]] = []
        self._picks: np.ndarray | None = None
        self._pick_block = -1

    def global_visit(self, local_visit: int) -> int:
        return self.slot + local_visit * self.n_slots

    def state(self) -> StreamState:
        v, s, c = self._cursor
        return StreamState(v, s, c, self._out, [ref for ref, _ in self._buffer])

    def _pick(self) -> int:
        block = self._out // _PICK_BLOCK
        if block != self._pick_block:
            rng = np.random.default_rng([self.plan.seed, _PICK, self.slot, block])
            self._picks = rng.random(_PICK_BLOCK)
            self._pick_block = block
        return int(self._picks[self._out % _PICK_BLOCK] * len(self._buffer))

    def _counts(self, local_visit: int) -> Iterator[tuple[int, int, object]]:
        """(position, emission count, payload) for every sample the visit reads."""
        shard, rng = visit_draws(self.plan, self.global_visit(local_visit))
        ws = self.plan.weight_sums[shard]
        c = self.plan.mean_shard_size
        for i, (w, payload) in enumerate(self.read(shard)):
            if self.plan.mode == "natural":
                yield i, 1, payload
            else:
                yield i, emission_count(w, ws, c, float(rng.random())), payload

    def _restore_buffer(self) -> None:
        wanted: dict[int, set[int]] = {}
        for v, s, _ in self._start.buffer:
            wanted.setdefault(v, set()).add(s)
        payloads: dict[tuple[int, int], object] = {}
        for v, positions in wanted.items():
            for i, _, payload in self._counts(v):
                if i in positions:
                    payloads[(v, i)] = payload
            lost = positions - {i for (w, i) in payloads if w == v}
            if lost:
                raise StreamError(
                    f"the saved shuffle buffer holds sample {min(lost)} of visit {v}, which its "
                    "shard does not have: the checkpoint's loader state belongs to other data"
                )
        self._buffer = [((v, s, c), payloads[(v, s)]) for v, s, c in self._start.buffer]

    def __iter__(self) -> Iterator[tuple[tuple[int, int, int], object]]:
        self._restore_buffer()
        visit, first_sample, first_copy = self._cursor
        size = self.plan.buffer_size
        empty, limit = 0, empty_visit_limit(self.plan.num_shards)
        while True:
            empty += 1
            for i, count, payload in self._counts(visit):
                if i < first_sample:
                    continue
                start = first_copy if i == first_sample else 0
                if count > start:
                    empty = 0
                for copy in range(start, count):
                    item = ((visit, i, copy), payload)
                    self._cursor = (visit, i, copy + 1)
                    if len(self._buffer) < size:
                        self._buffer.append(item)
                        continue
                    j = self._pick()
                    out, self._buffer[j] = self._buffer[j], item
                    self._out += 1
                    yield out
                self._cursor = (visit, i + 1, 0)
            if empty >= limit:
                raise StreamError(
                    f"{empty} visits in a row drew no sample: every weight is 0, or the "
                    "shards are empty"
                )
            visit, first_sample, first_copy = visit + 1, 0, 0
            self._cursor = (visit, 0, 0)
