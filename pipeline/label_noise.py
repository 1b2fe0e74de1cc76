"""Label noise for the papers' noise ablation (`weakly ingest --label-noise P`), pure functions.

Each label of a train image is replaced with probability P by a synset drawn from the label
marginal (images per synset over the job's train rows, as Mahajan et al. draw replacements from
the hashtag distribution), conditioned on not being one of the image's own labels nor a
replacement already drawn for it: a replacement is always a wrong label and the image keeps its
k labels. (Drawing from the whole marginal would redraw the original now and then: nominal 0.5
changed 0.43 of the labels.) The realised fraction is counted and reported in plan.json,
dataset.json and the run summary. Seeded per key, so the noise depends on neither row order
nor chunking. Held-out rows are never noised: they are scored against the labels as given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass
class NoiseTally:
    """Labels the noise could touch and how many it replaced."""

    labels: int = 0
    replaced: int = 0

    def add(self, other: NoiseTally | dict) -> NoiseTally:
        other = other if isinstance(other, NoiseTally) else NoiseTally(**other)
        self.labels += other.labels
        self.replaced += other.replaced
        return self

    def report(self, nominal: float) -> dict:
        realised = self.replaced / self.labels if self.labels else 0.0
        return {
            "nominal": nominal,
            "labels": self.labels,
            "replaced": self.replaced,
            "realised": realised,
        }


class Marginal:
    """A label distribution to draw from with some labels excluded, exactly: the excluded
    intervals are cut out of the cumulative line rather than redrawn until a miss."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.names = sorted(w for w, c in counts.items() if c > 0)
        self.code = {w: i for i, w in enumerate(self.names)}
        self.mass = np.array([counts[w] for w in self.names], np.float64)
        self.after = np.cumsum(self.mass)
        self.before = self.after - self.mass

    def draw(self, u: float, excluded: set[str]) -> str | None:
        """The label at quantile u in [0, 1) of the marginal without `excluded`; None when
        nothing is left to draw."""
        cut = sorted(self.code[w] for w in excluded if w in self.code)
        left = float(self.after[-1]) - float(self.mass[cut].sum()) if self.names else 0.0
        if left <= 0:
            return None
        x = u * left
        for e in cut:  # map x from the line without the excluded intervals to the full line
            if x >= self.before[e]:
                x += self.mass[e]
            else:
                break
        i = min(int(np.searchsorted(self.after, x, side="right")), len(self.names) - 1)
        while self.names[i] in excluded:  # float rounding at an interval's edge
            i = (i + 1) % len(self.names)
        return self.names[i]


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng(
        int.from_bytes(hashlib.sha1(f"{seed}:{key}".encode()).digest()[:8])
    )


def noise_one(labels: list[str], rng, p: float, marginal: Marginal) -> tuple[list[str], int]:
    """(the image's labels with noise, how many were replaced)."""
    own = set(labels)
    out, replaced = [], 0
    for label in labels:
        if rng.random() < p:
            new = marginal.draw(rng.random(), own | set(out))
            if new is not None:
                out.append(new)
                replaced += 1
                continue
        out.append(label)
    return sorted(out), replaced


def apply_label_noise(
    wnids: list[list[str]], keys: list[str], counts: Mapping[str, int], p: float, seed: int
) -> tuple[list[list[str]], NoiseTally]:
    """Every image's labels with noise P, and the tally (labels, replaced)."""
    tally = NoiseTally(labels=sum(len(labels) for labels in wnids))
    if p <= 0:
        return wnids, tally
    marginal = Marginal(counts)
    out = []
    for key, labels in zip(keys, wnids, strict=True):
        noisy, replaced = noise_one(labels, _rng(seed, key), p, marginal)
        out.append(noisy)
        tally.replaced += replaced
    return out, tally


def noisy_labels(wnid_lists: pa.Array, key_column: pa.Array, rows: np.ndarray, marginal, config):
    """(every row's labels with `config.label_noise` applied to the rows in the boolean mask
    `rows`, the tally); replacements are drawn from `marginal`."""
    at = np.flatnonzero(rows).tolist()
    wnids = wnid_lists.to_pylist()
    keys = key_column.to_pylist()
    noisy, tally = apply_label_noise(
        [wnids[i] for i in at], [keys[i] for i in at], marginal, config.label_noise, config.seed
    )
    for i, labels in zip(at, noisy, strict=True):
        wnids[i] = labels
    return pa.array(wnids, pa.list_(pa.string())), tally
