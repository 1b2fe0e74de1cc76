"""`index/report.png`: the tag-frequency long tail before and after reweighting, and the
distribution of sampling weights, so a user can see what the weights buy before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def expected_share(labels: list[list[int]], weights: list[float], n_classes: int) -> np.ndarray:
    """Each class's expected share of sampled labels when images are drawn ∝ weight."""
    share = np.zeros(n_classes)
    for row, w in zip(labels, weights, strict=True):
        for c in row:
            share[c] += w
    total = share.sum()
    return share / total if total > 0 else share


def write_report(out: Path, labels: list[list[int]], weights: list[float], vocabulary) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    natural = expected_share(labels, [1.0] * len(labels), len(vocabulary))
    weighted = expected_share(labels, weights, len(vocabulary))
    order = np.argsort(-natural, kind="stable")
    order = order[natural[order] > 0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    ranks = np.arange(1, len(order) + 1)
    left.loglog(ranks, natural[order], label="natural (f(s))")
    left.loglog(ranks, weighted[order], label="after reweighting")
    left.set_xlabel("synset rank by image count")
    left.set_ylabel("share of sampled labels")
    left.set_title("Tag frequency long tail")
    left.legend()
    if weights:
        right.hist(np.log10(np.asarray(weights)), bins=40)
    right.set_xlabel("log10 sampling weight")
    right.set_ylabel("images")
    right.set_title(f"Weights of {len(weights):,} written images")
    fig.tight_layout()
    path = out / "index" / "report.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
