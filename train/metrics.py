"""Hashtag metrics (pure functions over a score matrix and label sets).

The papers score a weakly supervised model on held-out hashtags by whether its top predictions
fall in the image's tag set (Mahajan et al. 2018 report top-1 / top-5 "hashtag accuracy"), and
by mean average precision per label. Averages over all labels are dominated by the head of a
long-tailed vocabulary, so every figure is also given for the head, torso and tail thirds of the
labels by training frequency: tail accuracy is what reweighted sampling is meant to buy.

Conventions:
- `scores` is an [N, C] float array, `labels` a sequence of N label-index sequences (non-empty).
- Top-k is by descending score; ties go to the lower class index (a stable order), so results
  are the same on every machine.
- Average precision is the step-wise area under the precision-recall curve with tied scores
  taken as one threshold (the definition scikit-learn's `average_precision_score` uses).
- A label's group (head/torso/tail) comes from `counts`, the images per label in training; labels
  with count 0 belong to no group. An image is counted in the group of its rarest label, the
  same label the `max` weight reducer lets decide its sampling weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GROUPS = ("head", "torso", "tail")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """[N, k] class indices by descending score, ties to the lower index."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def top_k_hits(scores: np.ndarray, labels: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """[N] bool: whether any of the top-k predictions is one of the image's labels."""
    picked = top_k(scores, k)
    return np.array(
        [bool(set(row.tolist()) & set(lab)) for row, lab in zip(picked, labels, strict=True)],
        dtype=bool,
    )


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP of one label: sum over distinct thresholds of (recall step) x precision."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s, p = np.asarray(scores)[order], positive[order]
    tp = np.cumsum(p)
    fp = np.cumsum(~p)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie group
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float((recall_step * precision).sum())


def label_positives(labels: Sequence[Sequence[int]], num_classes: int) -> list[np.ndarray]:
    """For each class, the indices of the images that carry it (no dense N x C matrix)."""
    out: list[list[int]] = [[] for _ in range(num_classes)]
    for i, lab in enumerate(labels):
        for c in set(lab):
            out[c].append(i)
    return [np.asarray(x, dtype=np.int64) for x in out]


def per_label_ap(
    scores: np.ndarray, labels: Sequence[Sequence[int]], min_images: int = 1
) -> dict[int, float]:
    """AP of every label with at least `min_images` positive images in this eval set."""
    n, c = scores.shape
    out = {}
    for cls, pos in enumerate(label_positives(labels, c)):
        if len(pos) >= max(1, min_images):
            mask = np.zeros(n, dtype=bool)
            mask[pos] = True
            out[cls] = average_precision(scores[:, cls], mask)
    return out


def frequency_groups(counts: Sequence[int]) -> dict[str, np.ndarray]:
    """Labels with count > 0, most frequent first (ties: lower index), cut into three near-equal
    thirds by number of labels: head, torso, tail."""
    counts = np.asarray(counts, dtype=np.int64)
    seen = np.flatnonzero(counts > 0)
    order = seen[np.lexsort((seen, -counts[seen]))]
    return dict(zip(GROUPS, np.array_split(order, 3), strict=True))


def _mean(values: Sequence[float] | np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else None


def hashtag_metrics(
    scores: np.ndarray,
    labels: Sequence[Sequence[int]],
    counts: Sequence[int],
    min_images: int = 1,
) -> dict:
    """Top-1/top-5 hit rate and mAP, overall and per head/torso/tail third.

    `None` stands for "no image / no label to average over" (JSON has no NaN).
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] != len(labels):
        raise ValueError(f"scores {scores.shape} do not match {len(labels)} label sets")
    if len(counts) != scores.shape[1]:
        raise ValueError(f"{len(counts)} label counts for {scores.shape[1]} classes")
    hit1, hit5 = top_k_hits(scores, labels, 1), top_k_hits(scores, labels, 5)
    aps = per_label_ap(scores, labels, min_images)
    out = {
        "images": len(labels),
        "top1": _mean(hit1),
        "top5": _mean(hit5),
        "mAP": _mean(list(aps.values())),
        "map_labels": len(aps),
        "min_images": min_images,
        "groups": {},
    }
    counts_arr = np.asarray(counts, dtype=np.int64)
    groups = frequency_groups(counts_arr)
    group_of = np.full(len(counts_arr), -1)
    for g, members in enumerate(groups.values()):
        group_of[members] = g
    image_group = np.array(
        [
            group_of[min(lab, key=lambda c: (counts_arr[c] if counts_arr[c] > 0 else 1 << 62, c))]
            for lab in labels
        ],
        dtype=np.int64,
    )
    for g, (name, members) in enumerate(groups.items()):
        mine = image_group == g
        group_aps = [aps[c] for c in members.tolist() if c in aps]
        out["groups"][name] = {
            "labels": len(members),
            "images": int(mine.sum()),
            "top1": _mean(hit1[mine]),
            "top5": _mean(hit5[mine]),
            "mAP": _mean(group_aps),
            "map_labels": len(group_aps),
        }
    return out


def format_metrics(m: dict) -> str:
    """A short table for the console."""

    def pct(v):
        return "   -  " if v is None else f"{100 * v:6.2f}"

    lines = [
        f"{'':8}{'images':>8}{'labels':>8}{'top-1%':>8}{'top-5%':>8}{'mAP%':>8}",
        f"{'all':8}{m['images']:>8}{m['map_labels']:>8}{pct(m['top1']):>8}{pct(m['top5']):>8}"
        f"{pct(m['mAP']):>8}",
    ]
    for name, g in m["groups"].items():
        lines.append(
            f"{name:8}{g['images']:>8}{g['labels']:>8}{pct(g['top1']):>8}{pct(g['top5']):>8}"
            f"{pct(g['mAP']):>8}"
        )
    return "\n".join(lines)
