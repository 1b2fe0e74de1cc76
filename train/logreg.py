"""Multinomial logistic regression on frozen features, in torch (no scikit-learn at run time).

Full-batch L-BFGS with a strong-Wolfe line search: probe sets are small enough (1e3-1e5 images,
1e2-1e3 classes) that the whole feature matrix fits in memory, and the problem is convex, so a
quasi-Newton method reaches the optimum in tens of iterations where SGD needs a learning-rate
schedule. Features are standardised with the training part's statistics, so one L2 grid suits
every trunk. The L2 strength is picked on a seeded split of the training part only; the test
part is scored once, at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class LinearModel:
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # [C, D]
    bias: torch.Tensor  # [C]

    def logits(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        return ((x - self.mean) / self.std) @ self.weight.T + self.bias


def fit(
    x: np.ndarray, y: np.ndarray, num_classes: int, l2: float, max_iter: int = 200
) -> LinearModel:
    """Minimise mean cross-entropy + l2/2 * ||W||^2 (the bias is not penalised)."""
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    mean = xt.mean(0)
    std = xt.std(0, unbiased=False).clamp(min=1e-6)
    z = (xt - mean) / std
    w = torch.zeros(num_classes, z.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearModel(mean, std, w.detach(), b.detach())


def top_k_accuracy(logits: torch.Tensor, y: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == torch.as_tensor(y, dtype=torch.long)[:, None]).any(1).float().mean())


def select_l2(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    grid: Sequence[float] = DEFAULT_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The grid value with the best top-1 on a held-out part of the training set (ties: the
    stronger penalty, the safer choice), and every value's score."""
    if len(grid) == 1:
        return float(grid[0]), {}
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = max(1, int(round(val_fraction * len(y))))
    val, tr = order[:n_val], order[n_val:]
    if len(tr) < 2 or len(np.unique(y[tr])) < 2:
        raise ValueError(f"too few training images ({len(y)}) to choose the L2 strength")
    scores = {}
    for l2 in grid:
        model = fit(x[tr], y[tr], num_classes, l2)
        scores[float(l2)] = top_k_accuracy(model.logits(x[val]), y[val], 1)
    best = max(scores, key=lambda v: (scores[v], v))
    return best, scores
