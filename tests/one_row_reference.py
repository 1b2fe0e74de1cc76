"""One-row reference definitions the vectorised pipeline code is tested against.

Production computes keys, duplicates, weights and DCT blocks for whole tables or batches with
Arrow and numpy kernels (pipeline/keys.py, pass1.py, weights.py, phash.py); these are the same
rules written plainly, one row or one image at a time, so a test can compare the two.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from pipeline.label_plan import first_occurrence
from pipeline.phash import dct_blocks, luma32

_NULL = "\x01"  # the null marker of derived keys (pipeline/keys.py)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\x00", "\\0").replace("\x01", "\\1")


def row_key(url: str | None, path: str | None, image: bytes | None, tags: list[str] | None) -> str:
    """The key `pipeline.keys.row_keys` derives for a row without one: a digest of its image
    reference and tags, fields escaped and joined by NUL, null fields as \\x01."""
    fields = [
        _NULL if url is None else _escape(url),
        _NULL if path is None else _escape(path),
        _NULL if image is None else hashlib.sha1(image).hexdigest(),
        _NULL if tags is None else f"{len(tags)}:" + "\x00".join(_escape(t) for t in tags),
    ]
    return hashlib.sha1("\x00".join(fields).encode("utf-8", "surrogatepass")).hexdigest()[:20]


def duplicate_of(keys: list[str | None]) -> list[int | None]:
    """For each row, the index of the earlier row with the same key (None if first or keyless)."""
    first = first_occurrence(pa.array(keys, pa.string()))
    return [None if f < 0 or f == i else int(f) for i, f in enumerate(first.tolist())]


def plain_rare_cutoff(counts: Mapping[str, int], mass: float) -> int:
    """The rare cutoff (`pipeline.weights.rare_cutoff`) walked tag by tag: add tags from the
    rarest up, a whole count value at a time, while they hold at most `mass` of all pairs."""
    total = sum(c for c in counts.values() if c > 0)
    held, cutoff = 0, 0
    for value in sorted({c for c in counts.values() if c > 0}):
        held += value * sum(1 for c in counts.values() if c == value)
        if held > mass * total:
            break
        cutoff = value
    return cutoff


def bisect_threshold(rarest: Sequence[int], epoch: float, scheme: str) -> float:
    """t with sum_I max(1, phi(t / m_I)) = epoch by bisection (`solve_threshold` solves it
    exactly per piece): the sum is continuous and increasing in t."""
    phi = math.sqrt if scheme == "sqrt" else (lambda x: x)

    def total(t: float) -> float:
        return sum(max(1.0, phi(t / m)) for m in rarest)

    lo, hi = 0.0, 1.0
    while total(hi) < epoch:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) < epoch else (lo, mid)
    return hi


def law_weight(labels: Sequence[str], counts: Mapping[str, int], law) -> float:
    """One train image's weight under a solved law (`Law.weights` does every row at once)."""
    if not labels:
        raise ValueError("an image needs at least one label to have a weight")
    f = [counts[s] for s in labels]
    if law.scheme == "natural":
        return law.scale
    if law.scheme == "sqrt":
        return max(1.0, math.sqrt(law.t / min(f)))
    if law.scheme == "uniform":
        return max(1.0, law.t / min(f))
    per = [x**-0.5 for x in f]
    raw = max(per) if law.reduce == "max" else sum(per) / len(per)
    return law.scale * raw * (law.rare_upsample if min(f) <= law.rare_cutoff else 1.0)


def plain_weights(
    label_lists: Sequence[Sequence[str]], config, epoch: float
) -> tuple[list[float], float]:
    """(every train image's weight, the weight of an image carrying only the rarest synset:
    the bucket reference) from the labels alone, each law written out plainly: counts, rare
    cutoff, t by bisection or the scale by a plain sum."""
    counts: dict[str, int] = {}
    for labels in label_lists:
        for s in labels:
            counts[s] = counts.get(s, 0) + 1
    if not label_lists:
        return [], 1.0
    n = len(label_lists)
    rarest = [min(counts[s] for s in ls) for ls in label_lists]
    phi = math.sqrt if config.scheme == "sqrt" else (lambda x: x)
    if config.scheme == "natural":
        return [epoch / n] * n, epoch / n
    if config.scheme in ("sqrt", "uniform"):
        t = bisect_threshold(rarest, epoch, config.scheme)
        return [max(1.0, phi(t / m)) for m in rarest], max(1.0, phi(t / min(rarest)))
    cutoff = plain_rare_cutoff(counts, config.rare_mass)

    def raw(labels) -> float:
        per = [counts[s] ** -0.5 for s in labels]
        w = max(per) if config.reduce == "max" else sum(per) / len(per)
        rare = min(counts[s] for s in labels) <= cutoff
        return w * (config.rare_upsample if rare else 1.0)

    scale = epoch / math.fsum(raw(ls) for ls in label_lists)
    top = scale * raw([min(counts, key=counts.get)])
    return [scale * raw(ls) for ls in label_lists], top


def dct_block(img) -> np.ndarray:
    """8x8 DCT block of one decoded image (`pipeline.phash.dct_blocks` does a batch)."""
    return dct_blocks(luma32(img)[None])[0]
