"""Sampling laws: each image's expected number of appearances per epoch (pure functions).

`f(h)` is the number of `train` images carrying synset `h` (held-out images never count). A
sample's `weight` is its expected number of appearances in one epoch of `E` samples
(`--epoch-size N`, or `Mx`: M times the N train images), so the train weights sum to E:

  natural   r(I) = E / N                                  (r = 1 at E = N)
  sqrt      r(h) = max(1, sqrt(t / f(h))), r(I) = max_h r(h)   Mahajan et al. 2018
  uniform   r(h) = max(1, t / f(h)),       r(I) = max_h r(h)   Mahajan's third arm, phi(x) = x
  inv-sqrt  r(I) = s * max_h f(h)^-1/2 * (U if I has a rare tag, else 1)   SWAG (Singh 2022)

For sqrt and uniform the threshold `t` is solved so that sum_I r(I) = E: every image appears
at least once (so E >= N), tags with f(h) >= t keep their natural frequency and rarer ones are
lifted. For inv-sqrt the scale `s` makes the weights sum to E; U is `rare_upsample`.

Rare (inv-sqrt): the rarest tags that together carry at most `rare_mass` of all (image, tag)
pairs, i.e. f(h) <= the largest count c whose tags of count <= c hold <= rare_mass of the
pairs (`rare_cutoff`). A fraction of the label mass means the same on 1e3 and on 1e9 images
and on any vocabulary size; an absolute count (the old `--rare-threshold 10`) marked 75% of a
300-image set rare and nothing of a large one.

With reduce=max an image's weight depends only on m(I) = min_h f(h), the count of its rarest
tag, so t is solved from a histogram of m over the train images (tasks fold it from per-file
counts; the driver never holds rows) by an exact piecewise solution (`solve_threshold`).
`reduce=mean` (inv-sqrt only; natural ignores it) averages f(h)^-1/2 over the image's tags.
Held-out (`val`) samples get weight 1 (`VAL_WEIGHT`): the trainer never samples them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .exact_sum import exact_parts, merge_parts, parts_total

SCHEMES = ("inv-sqrt", "sqrt", "uniform", "natural")
REDUCERS = ("max", "mean")
# E when --epoch-size is not given: one pass over the images for the laws that need no slack,
# twice the images for the laws that lift the tail (at 1x they would equal `natural`).
DEFAULT_EPOCH = {"natural": "1x", "inv-sqrt": "1x", "sqrt": "2x", "uniform": "2x"}
REPLICATING = ("sqrt", "uniform")  # r(I) >= 1: the epoch must hold every train image
POWER = {"sqrt": 0.5, "uniform": 1.0}
VAL_WEIGHT = 1.0


def parse_epoch_size(spec: str) -> tuple[float, bool]:
    """(value, relative): `Mx` is M times the train images, a bare integer is samples."""
    text = str(spec).strip().lower()
    try:
        if text.endswith("x"):
            value, relative = float(text[:-1]), True
        else:
            value, relative = float(int(text)), False
    except ValueError:
        value, relative = -1.0, False
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"--epoch-size {spec!r}: use a sample count (e.g. 1000000) or a multiple of the "
            "train images (e.g. 2x)"
        )
    return value, relative


@dataclass(frozen=True)
class WeightConfig:
    """The law as asked for (`weakly ingest --weighting ...`); `Law` is it solved on counts."""

    scheme: str = "inv-sqrt"
    reduce: str = "max"
    rare_mass: float = 0.001
    rare_upsample: float = 100.0
    epoch_size: str | None = field(default=None)  # None: DEFAULT_EPOCH[scheme]

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"--weighting {self.scheme!r}: use one of {', '.join(SCHEMES)}")
        if self.reduce not in REDUCERS:
            raise ValueError(f"--weight-reduce {self.reduce!r}: use max or mean")
        if self.reduce == "mean" and self.scheme in REPLICATING:
            raise ValueError(
                f"--weight-reduce mean: {self.scheme} takes r(I) = max over the image's tags "
                "(Mahajan et al.); use --weight-reduce max"
            )
        if not 0.0 <= self.rare_mass < 1.0:
            raise ValueError(f"--rare-mass {self.rare_mass}: use 0 <= Q < 1")
        if not self.rare_upsample >= 1:
            raise ValueError(f"--rare-upsample {self.rare_upsample}: use a factor >= 1")
        spec = DEFAULT_EPOCH[self.scheme] if self.epoch_size is None else str(self.epoch_size)
        value, relative = parse_epoch_size(spec)
        if relative and value < 1 and self.scheme in REPLICATING:
            raise ValueError(
                f"--epoch-size {spec}: {self.scheme} shows every train image at least once per "
                "epoch; use 1x or more"
            )
        object.__setattr__(self, "epoch_size", spec.strip().lower())

    def as_dict(self) -> dict:
        return asdict(self)

    def epoch_samples(self, images: int) -> float:
        """E for `images` train images; a too-small E for sqrt/uniform is a one-line error."""
        value, relative = parse_epoch_size(self.epoch_size)
        epoch = value * images if relative else value
        if self.scheme in REPLICATING and images and epoch < images:
            raise ValueError(
                f"--epoch-size {self.epoch_size} is {epoch:,.0f} samples, fewer than the "
                f"{images:,} train images: {self.scheme} shows every image at least once per "
                "epoch; use a larger size (or 1x or more)"
            )
        return epoch


def rare_cutoff(counts: np.ndarray, rare_mass: float) -> int:
    """The largest count c such that the tags with f(h) <= c carry at most `rare_mass` of all
    (image, tag) pairs; 0 when none do. Tags of equal count are all rare or none is."""
    counts = np.asarray(counts, np.int64)
    used = counts[counts > 0]
    if len(used) == 0 or rare_mass <= 0:
        return 0
    values, n = np.unique(used, return_counts=True)
    mass = np.cumsum(values * n)
    fits = np.flatnonzero(mass <= rare_mass * mass[-1])
    return int(values[fits[-1]]) if len(fits) else 0


def solve_threshold(min_counts: dict[int, int], epoch: float, power: float) -> float:
    """t with sum_m n_m * max(1, (t / m)^power) = epoch, for the histogram `min_counts`
    {m: n_m} of each image's rarest-tag count (epoch >= the images).

    Exact per piece: on [m_j, m_j+1] the sum is t^p * A_j + B_j with A_j = sum_{i<=j} n_i m_i^-p
    and B_j = sum_{i>j} n_i, increasing in t; the piece is the last whose left end is <= epoch.
    """
    if not min_counts:
        return 0.0
    m = np.array(sorted(min_counts), np.float64)
    n = np.array([min_counts[k] for k in sorted(min_counts)], np.float64)
    a = np.cumsum(n * m**-power)
    b = n.sum() - np.cumsum(n)
    at_left = m**power * a + b
    j = max(0, int(np.searchsorted(at_left, epoch, side="right")) - 1)
    return float(((epoch - b[j]) / a[j]) ** (1.0 / power))


def lift(scheme: str, x):
    """r = max(1, phi(x)) at x = t / m: phi = sqrt for sqrt, the identity for uniform."""
    return np.maximum(1.0, np.sqrt(x) if scheme == "sqrt" else x)


def _row_starts(parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows with labels, index of each row's first pair) for pairs sorted by row."""
    return np.unique(parents, return_index=True)


def rarest_counts(parents, codes, counts, n: int) -> np.ndarray:
    """m(I) = min over the row's labels of f(h) per row; 0 for rows without labels."""
    out = np.zeros(n, np.int64)
    if len(codes):
        rows, starts = _row_starts(parents)
        out[rows] = np.minimum.reduceat(np.asarray(counts, np.int64)[codes], starts)
    return out


def inv_sqrt_raw(
    parents, codes, counts, n: int, reduce: str, upsample: float, cutoff: int
) -> np.ndarray:
    """SWAG's unscaled weight per row: max (or mean) of f(h)^-1/2 over its labels, times
    `rare_upsample` when its rarest tag has f <= cutoff; 0 for rows without labels and for
    labels no train image carries (f = 0: only held-out rows have those)."""
    counts = np.asarray(counts, np.float64)
    per = np.zeros_like(counts)
    per[counts > 0] = counts[counts > 0] ** -0.5
    out = np.zeros(n, np.float64)
    if len(codes) == 0:
        return out
    rows, starts = _row_starts(parents)
    values = per[codes]
    if reduce == "max":
        raw = np.maximum.reduceat(values, starts)
    else:
        raw = np.add.reduceat(values, starts) / np.diff(np.append(starts, len(codes)))
    rarest = np.minimum.reduceat(counts[codes], starts)
    out[rows] = np.where((rarest > 0) & (rarest <= cutoff), raw * upsample, raw)
    return out


@dataclass
class LawTally:
    """What the law needs from the train rows, folded over files: the image count, the
    histogram {m: images} of each image's rarest-tag count, and the exact sum of inv-sqrt's
    unscaled weights (pipeline/exact_sum.py)."""

    images: int = 0
    min_counts: dict = field(default_factory=dict)
    raw_parts: dict = field(default_factory=dict)

    def add(self, other: LawTally | dict) -> LawTally:
        other = other if isinstance(other, LawTally) else LawTally(**other)
        self.images += other.images
        for m, k in other.min_counts.items():
            self.min_counts[int(m)] = self.min_counts.get(int(m), 0) + int(k)
        merge_parts(self.raw_parts, other.raw_parts)
        return self


def tally_rows(parents, codes, counts, n: int, train, config: WeightConfig) -> LawTally:
    """The LawTally of the train rows among n rows given as (row, code) pairs sorted by row."""
    rarest = rarest_counts(parents, codes, counts, n)
    mine = np.asarray(train, bool) & (rarest > 0)
    values, k = np.unique(rarest[mine], return_counts=True)
    tally = LawTally(int(mine.sum()), dict(zip(values.tolist(), k.tolist(), strict=True)))
    if config.scheme == "inv-sqrt":
        cutoff = rare_cutoff(counts, config.rare_mass)
        raw = inv_sqrt_raw(parents, codes, counts, n, config.reduce, config.rare_upsample, cutoff)
        tally.raw_parts = exact_parts(raw[mine])
    return tally


@dataclass(frozen=True)
class Law:
    """A WeightConfig solved on the job's counts: every number a task needs to weigh its rows
    (saved in plan.json as `law`)."""

    scheme: str
    reduce: str
    epoch_size: float  # E, samples per epoch
    images: int  # N, train images
    t: float = 0.0  # sqrt / uniform threshold
    scale: float = 1.0  # natural: E / N; inv-sqrt: E / sum of unscaled weights
    rare_cutoff: int = 0  # inv-sqrt: f(h) <= this is rare (0: nothing is)
    rare_upsample: float = 1.0
    holdout: float = 0.0  # rows whose key hashes into `val` get VAL_WEIGHT
    reference: float = 1.0  # the largest weight any row can have: buckets are cut from it

    def as_dict(self) -> dict:
        return asdict(self)

    def weights(self, parents, codes, counts, n: int, train) -> np.ndarray:
        """Per-row weight; 0 for rows without labels, VAL_WEIGHT for held-out rows."""
        train = np.asarray(train, bool)
        has = np.zeros(n, bool)
        has[np.asarray(parents, np.int64)] = True
        out = np.zeros(n, np.float64)
        mine = has & train
        if self.scheme == "natural":
            out[mine] = self.scale
        elif self.scheme in REPLICATING:
            rarest = rarest_counts(parents, codes, counts, n)[mine]
            out[mine] = lift(self.scheme, self.t / np.maximum(rarest, 1))
        else:
            raw = inv_sqrt_raw(
                parents, codes, counts, n, self.reduce, self.rare_upsample, self.rare_cutoff
            )
            out[mine] = self.scale * raw[mine]
        out[has & ~train] = VAL_WEIGHT
        return out


def solve_law(config: WeightConfig, counts, tally: LawTally, holdout: float = 0.0) -> Law:
    """The law's numbers from the train counts and the folded tally (a pure function)."""
    images = tally.images
    epoch = config.epoch_samples(images)
    cutoff = rare_cutoff(counts, config.rare_mass) if config.scheme == "inv-sqrt" else 0
    t, scale, top = 0.0, 1.0, 1.0
    rarest = min(tally.min_counts) if tally.min_counts else 0
    if images and config.scheme == "natural":
        scale = top = epoch / images
    elif images and config.scheme in REPLICATING:
        t = solve_threshold(tally.min_counts, epoch, POWER[config.scheme])
        top = float(lift(config.scheme, np.float64(t / rarest)))
    elif images:
        scale = epoch / parts_total(tally.raw_parts)
        # exact for max (the rarest tag gives the largest weight, and is rare if any is); an
        # upper bound for mean
        top = scale * rarest**-0.5 * (config.rare_upsample if 0 < rarest <= cutoff else 1.0)
    if holdout > 0:
        top = max(top, VAL_WEIGHT)
    return Law(
        scheme=config.scheme,
        reduce=config.reduce,
        epoch_size=float(epoch),
        images=images,
        t=t,
        scale=scale,
        rare_cutoff=cutoff,
        rare_upsample=config.rare_upsample if config.scheme == "inv-sqrt" else 1.0,
        holdout=holdout,
        reference=float(top),
    )
