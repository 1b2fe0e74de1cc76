"""Scores and intervals for the ablation grid (pure functions over arrays).

Tail metrics count only the group's own labels: an image with a head and a tail label scores a
tail top-1 hit only when the top prediction is its tail label (a hit on the co-occurring head
label is a head hit, not a tail hit). Per-group mAP averages AP over the group's classes only.
Groups are thirds of the classes by clean training frequency (train/metrics.py's
`frequency_groups`).

Intervals are 95% percentile intervals of a two-level (cluster) bootstrap: resample data seeds
with replacement, then training seeds within each resampled data seed, and take the mean. Runs
on one data seed share its images, so they are not independent draws; resampling the data
seeds first carries that dependence into the interval. With 3 data seeds the outer level is
coarse: the interval reflects the spread seen, not a guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from train.metrics import GROUPS, frequency_groups, per_label_ap, top_k


def group_of_classes(counts: Sequence[int]) -> np.ndarray:
    """[C] group index (0 head, 1 torso, 2 tail; -1 if never in training)."""
    counts = np.asarray(counts)
    out = np.full(len(counts), -1, np.int64)
    for g, members in enumerate(frequency_groups(counts).values()):
        out[members] = g
    return out


def grid_scores(scores: np.ndarray, labels: Sequence[Sequence[int]], groups: np.ndarray) -> dict:
    """top1 (any label), mAP, and per group: top1 over images carrying a label of the group
    (hit = top prediction is one of the image's labels in that group), mAP over the group's
    classes that have positives."""
    top = top_k(scores, 1)[:, 0]
    aps = per_label_ap(scores, labels)
    out = {
        "top1": float(np.mean([t in lab for t, lab in zip(top.tolist(), labels, strict=True)])),
        "mAP": float(np.mean(list(aps.values()))),
    }
    for g, name in enumerate(GROUPS):
        hits = []
        for t, lab in zip(top.tolist(), labels, strict=True):
            mine = [c for c in lab if groups[c] == g]
            if mine:
                hits.append(t in mine)
        group_aps = [ap for c, ap in aps.items() if groups[c] == g]
        out[f"{name}_top1"] = float(np.mean(hits)) if hits else None
        out[f"{name}_mAP"] = float(np.mean(group_aps)) if group_aps else None
    return out


def cluster_bootstrap(
    values: dict[int, list[float]], reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean over all runs and a 95% two-level bootstrap interval.
    `values` maps data seed -> that seed's values over training seeds."""
    groups = [np.asarray(v, np.float64) for v in values.values() if len(v)]
    if not groups:
        return (float("nan"),) * 3
    mean = float(np.mean(np.concatenate(groups)))
    if sum(len(g) for g in groups) < 2:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    sizes = np.array([len(g) for g in groups])
    padded = np.zeros((len(groups), sizes.max()))
    for d, g in enumerate(groups):
        padded[d, : len(g)] = g
    outer = rng.integers(0, len(groups), (reps, len(groups)))  # [R, D] data seeds
    n = sizes[outer]  # [R, D] each picked seed's run count
    inner = (rng.random((reps, len(groups), sizes.max())) * n[..., None]).astype(np.int64)
    used = np.arange(sizes.max())[None, None, :] < n[..., None]
    picked = padded[outer[..., None], inner]
    means = (picked * used).sum((1, 2)) / used.sum((1, 2))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return mean, float(lo), float(hi)


def paired_differences(
    runs: list[dict], metric: str, key_a: dict, key_b: dict
) -> dict[int, list[float]]:
    """data seed -> [a - b] over training seeds, pairing runs that match on data and training
    seed and differ only in `key_a` vs `key_b` (e.g. loss softmax vs bce at a fixed law)."""

    def select(match: dict) -> dict[tuple[int, int], float]:
        return {
            (r["data_seed"], r["train_seed"]): r[metric]
            for r in runs
            if all(r[k] == v for k, v in match.items()) and r[metric] is not None
        }

    a, b = select(key_a), select(key_b)
    out: dict[int, list[float]] = {}
    for key in sorted(a.keys() & b.keys()):
        out.setdefault(key[0], []).append(a[key] - b[key])
    return out


def cell_values(runs: list[dict], metric: str, match: dict) -> dict[int, list[float]]:
    """data seed -> values of `metric` over the runs matching `match`."""
    out: dict[int, list[float]] = {}
    for r in runs:
        if all(r[k] == v for k, v in match.items()) and r[metric] is not None:
            out.setdefault(r["data_seed"], []).append(r[metric])
    return out


def verdict(lo: float, hi: float) -> str:
    """Sign of a difference's interval: 'yes' above 0, 'no (reversed)' below, else 'unclear'."""
    if lo > 0:
        return "yes"
    if hi < 0:
        return "no (reversed)"
    return "unclear (interval spans 0)"
