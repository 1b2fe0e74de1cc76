"""What an epoch emits, decided from the shards table before a byte of any tar is read.

A sample's index `weight` is its expected number of appearances per epoch (docs/FORMAT.md). An
epoch draws one uniform `u` and lays the unit grid `u, u + 1, u + 2, ...` over the samples'
weights laid end to end (shards in table order, each shard's samples in a fresh random order per
epoch): sample `i` appears once per grid point inside its interval. An interval of length `w`
holds floor(w) or ceil(w) points, and exactly `w` on average over `u` (systematic rounding).
Because whole shards occupy fixed stretches `[C_{s-1}, C_s)` of the line (C = cumulative
`weight_sum`), every shard's emission count N_s, and so the epoch's total, follow from the
shards table alone; only where inside a shard the points fall needs its samples-index part.

A shard with weights up to `weight_max` is visited V_s = ceil(weight_max) times per epoch (at
most N_s); grid point m of the shard goes to visit m mod V_s, so the floor(w)/ceil(w) copies of a
sample (consecutive points) land in different visits, spread over the epoch. Every visit's size
is known from the table too, so the epoch's visits, shuffled (each shard's spread evenly over
the epoch), split into per-slot ranges of
exactly equal length (+-1): every (rank, loader worker) slot emits the same number of samples
per epoch, and a visit cut by a range boundary is read in part by each of two slots. When an
epoch has fewer visits than the slots can keep open (`open_shards` each), every visit is cut
into strided parts read by different slots (`EpochPlan.parts`), so that each slot still
interleaves many shards.

`natural` sampling is the same with every sample once per epoch (one visit per shard).
Everything here is a pure function of (seed, epoch, the shards table, the index weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

_EPOCH, _ORDER, _WITHIN = 11, 12, 13
_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser on a Python int: a fast, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def shuffled(n: int, *key: int) -> np.ndarray:
    """A permutation of range(n), a pure function of `key`: positions sorted by a 64-bit hash
    of (key, position). Per-shard permutations are drawn for every visit opened, where
    building a numpy Generator (tens of microseconds) would cost more than the hash."""
    h = 0
    for part in key:
        h = _mix(h ^ (int(part) & _MASK))
    x = np.arange(n, dtype=np.uint64) ^ np.uint64(h)
    x += np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return np.argsort(x, kind="stable")


@dataclass(frozen=True)
class Plan:
    """Everything the order depends on besides the slot: the shards table's sizes, weight sums
    and maxima, the seed, the law and the two mixing knobs."""

    weight_sums: tuple[float, ...]
    sizes: tuple[int, ...]
    weight_maxes: tuple[float, ...] | None = None
    seed: int = 0
    mode: str = "weighted"
    open_shards: int = 16
    buffer_size: int = 1000

    def __post_init__(self) -> None:
        if self.mode not in ("weighted", "natural"):
            raise ValueError(f"sampling must be 'weighted' or 'natural', not {self.mode!r}")
        if self.buffer_size < 1:
            raise ValueError("shuffle buffer size must be at least 1")
        if self.open_shards < 1:
            raise ValueError("open shards must be at least 1")
        if len(self.sizes) != len(self.weight_sums):
            raise ValueError("one size per shard weight sum")

    @property
    def num_shards(self) -> int:
        return len(self.weight_sums)

    @cached_property
    def _cum(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(np.asarray(self.weight_sums, dtype=np.float64))])

    @property
    def expected_epoch_size(self) -> float:
        """Samples per epoch on average (exact to +-1 in every epoch)."""
        return float(sum(self.sizes)) if self.mode == "natural" else float(self._cum[-1])

    def shard_points(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(N_s, a_s): each shard's emissions in `epoch`, and where its first grid point lies
        inside its stretch of the line (0 <= a_s < 1)."""
        if self.mode == "natural":
            return np.asarray(self.sizes, dtype=np.int64), np.zeros(self.num_shards)
        u = np.random.default_rng([self.seed, _EPOCH, epoch]).random()
        first = np.ceil(self._cum - u)  # index k of the first point k + u >= C
        counts = np.diff(first).astype(np.int64)
        return np.maximum(counts, 0), first[:-1] + u - self._cum[:-1]

    def visits(self, counts: np.ndarray) -> np.ndarray:
        """V_s for each shard given its emissions N_s: ceil(weight_max), or where that is
        unknown (no column, NaN) the shard's mean copies per sample, ceil(N_s / n_s); one
        under `natural`; never more than N_s."""
        if self.mode == "natural":
            per = np.ones(self.num_shards, dtype=np.int64)
        else:
            sizes = np.maximum(np.asarray(self.sizes, dtype=np.int64), 1)
            per = np.maximum(1, -(-counts // sizes))
            if self.weight_maxes is not None:
                wmax = np.asarray(self.weight_maxes, dtype=np.float64)
                known = np.isfinite(wmax) & (wmax >= 0)
                ceil = np.ceil(np.clip(np.where(known, wmax, 1.0), 0, 1e12) - 1e-9)
                per = np.where(known, np.maximum(1, ceil).astype(np.int64), per)
        return np.where(counts > 0, np.minimum(per, np.maximum(counts, 1)), 0)


@dataclass(frozen=True)
class Piece:
    """Emissions `lo..hi` of part `part` of `parts` of visit `visit` of shard `shard`: what one
    slot reads of one visit. A visit's emissions are its samples in stored order; part r of
    g holds every g-th of them from the r-th."""

    shard: int
    visit: int
    lo: int
    hi: int
    part: int = 0
    parts: int = 1

    @property
    def size(self) -> int:
        return self.hi - self.lo


class EpochPlan:
    """One epoch: per-shard emissions and visits, the shuffled visit order, the slot ranges."""

    def __init__(self, plan: Plan, epoch: int) -> None:
        self.plan, self.epoch = plan, epoch
        self.counts, self.offsets = plan.shard_points(epoch)
        self.per_shard = plan.visits(self.counts)
        shard_of = np.repeat(np.arange(plan.num_shards), self.per_shard)
        starts = np.concatenate([[0], np.cumsum(self.per_shard)[:-1]])
        visit_of = np.arange(len(shard_of)) - np.repeat(starts, self.per_shard)
        # Stratified: visit v of shard s sits at (v + r_s) / V_s of the epoch (r_s uniform),
        # so a shard's visits, and with them a sample's copies, are spread evenly over the
        # epoch and the visits open together are rarely of the same shard.
        r = np.random.default_rng([plan.seed, _ORDER, epoch]).random(plan.num_shards)
        keys = (visit_of + r[shard_of]) / np.maximum(self.per_shard[shard_of], 1)
        order = np.argsort(keys, kind="stable")
        self.shard_of, self.visit_of = shard_of[order], visit_of[order]
        n, v = self.counts[self.shard_of], self.per_shard[self.shard_of]
        self.visit_sizes = (n - self.visit_of + v - 1) // v
        self.ends = np.cumsum(self.visit_sizes)
        self._points: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def total(self) -> int:
        """Emissions in this epoch, over every slot."""
        return int(self.ends[-1]) if len(self.ends) else 0

    def slot_range(self, slot: int, n_slots: int) -> tuple[int, int]:
        total = self.total
        return slot * total // n_slots, (slot + 1) * total // n_slots

    def parts(self, n_slots: int) -> int:
        """Into how many strided parts each visit is cut for `n_slots` slots: 1 when the epoch
        has `open_shards` visits per slot or more; else enough that every slot's share spans
        `open_shards` visits (at most one part per slot). Part r of every visit lies in the
        r-th of g rounds of the epoch, so the parts of one visit go to different slots."""
        visits = len(self.visit_sizes)
        want = n_slots * self.plan.open_shards
        if visits == 0 or want <= visits:
            return 1
        return int(min(n_slots, -(-want // visits)))

    def pieces(self, slot: int, n_slots: int) -> list[Piece]:
        """The visits (or parts of them) slot `slot` of `n_slots` emits, in order."""
        g = self.parts(n_slots)
        a, b = self.slot_range(slot, n_slots)
        out: list[Piece] = []
        if a >= b:
            return out
        visits = len(self.visit_sizes)
        sizes = np.concatenate([(self.visit_sizes - r + g - 1) // g for r in range(g)])
        ends = np.cumsum(sizes)
        first = int(np.searchsorted(ends, a, side="right"))
        for k in range(first, len(ends)):
            start = int(ends[k] - sizes[k])
            if start >= b:
                break
            lo, hi = max(a, start) - start, min(b, int(ends[k])) - start
            if hi > lo:
                v = k % visits
                out.append(
                    Piece(int(self.shard_of[v]), int(self.visit_of[v]), lo, hi, k // visits, g)
                )
        return out

    def piece_positions(self, piece: Piece, weights: np.ndarray) -> np.ndarray:
        """The positions a piece emits, in order (ascending), from its shard's index weights."""
        whole = self.visit_positions(piece.shard, piece.visit, weights)
        return whole[piece.part :: piece.parts][piece.lo : piece.hi]

    def point_positions(self, shard: int, weights: np.ndarray) -> np.ndarray:
        """The position (index row of the shard) of each of the shard's N_s grid points, from
        the shard's index weights. The weights are rescaled to the shard's `weight_sum`, so an
        index disagreeing in the last bits (or a row whose unusable weight was replaced) moves
        no other shard's counts; index weights summing to 0 give no points (a visit that emits
        nothing)."""
        cached = self._points.get(shard)
        if cached is not None and cached[0] is weights:
            return cached[1]
        plan = self.plan
        count, rows = int(self.counts[shard]), len(weights)
        if count == 0 or rows == 0:
            out = np.zeros(0, dtype=np.int64)
        elif plan.mode == "natural":
            out = np.arange(count, dtype=np.int64) * rows // count
        else:
            perm = shuffled(rows, plan.seed, _WITHIN, self.epoch, shard)
            cum = np.cumsum(np.asarray(weights, dtype=np.float64)[perm])
            total = float(cum[-1])
            if not (math.isfinite(total) and total > 0):
                # the index gives the shard nothing (all 0, or a NaN the reader lets through)
                out = np.zeros(0, dtype=np.int64)
            else:
                cum *= float(plan.weight_sums[shard]) / total
                points = self.offsets[shard] + np.arange(count, dtype=np.float64)
                out = perm[np.minimum(np.searchsorted(cum, points, side="right"), rows - 1)]
        self._points[shard] = (weights, out)
        return out

    def shard_counts(self, shard: int, weights: np.ndarray) -> np.ndarray:
        """How many times this epoch emits each sample of the shard (over all its visits)."""
        return np.bincount(self.point_positions(shard, weights), minlength=len(weights))

    def visit_positions(self, shard: int, visit: int, weights: np.ndarray) -> np.ndarray:
        """Positions (ascending; a position repeated when it has more than one copy in the
        visit) that visit `visit` of `shard` emits: grid points m = visit (mod V_s)."""
        v = int(self.per_shard[shard])
        return np.sort(self.point_positions(shard, weights)[visit::v]) if v else np.zeros(0, int)


def epoch_total(plan: Plan, epoch: int) -> int:
    """Emissions of `epoch` over every slot, from the shards table alone."""
    return int(plan.shard_points(epoch)[0].sum())


def steps_for_epochs(plan: Plan, epochs: int, global_batch: int) -> int:
    """Optimizer steps that consume `epochs` whole epochs: the epochs' exact emission totals
    over the global batch, rounded down (the last partial global batch would straddle the
    next epoch)."""
    return sum(epoch_total(plan, e) for e in range(epochs)) // global_batch
