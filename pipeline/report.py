"""`index/report.png`: the tag-frequency long tail before and after reweighting, and the
distribution of sampling weights, so a user can see what the weights buy before training.

Drawn from the plan's aggregates (synset counts, weighted synset shares, a weight histogram),
never from per-image rows, so `--plan-only` on a billion rows draws it in the same second."""

from __future__ import annotations

import io

import numpy as np


def shares(values: np.ndarray) -> np.ndarray:
    """Each class's share of the total (zeros when there is nothing)."""
    values = np.asarray(values, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else values


def warm_report() -> None:
    """Import the plotting library now (about a second), so that drawing the report later is
    only the drawing: the driver calls this while it waits for Ray to start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def render_report(
    counts: np.ndarray, weighted: np.ndarray, hist: np.ndarray, edges: np.ndarray
) -> bytes:
    """The PNG: `counts` f(s) and `weighted` (sum of the weights of the images carrying s) per
    synset, and a histogram of log10 image weights over `edges`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    natural, after = shares(counts), shares(weighted)
    order = np.argsort(-natural, kind="stable")
    order = order[natural[order] > 0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    ranks = np.arange(1, len(order) + 1)
    left.loglog(ranks, natural[order], label="natural (f(s))")
    left.loglog(ranks, after[order], label="after reweighting")
    left.set_xlabel("synset rank by image count")
    left.set_ylabel("share of sampled labels")
    left.set_title("Tag frequency long tail")
    left.legend()
    hist = np.asarray(hist)
    right.stairs(hist, edges, fill=True)
    right.set_xlabel("log10 sampling weight")
    right.set_ylabel("images")
    right.set_title(f"Weights of {int(hist.sum()):,} train images to fetch")
    fig.tight_layout()
    sink = io.BytesIO()
    fig.savefig(sink, dpi=80, format="png", metadata={"Software": None})
    plt.close(fig)
    return sink.getvalue()
