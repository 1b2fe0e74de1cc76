"""Losses on padded label indices ([B, Kmax], -1 = padding); no dense [B, C] target is built.

With 17k-28k classes a dense float target costs B*C memory and a full read for a handful of
non-zeros; the softmax loss only needs the logits at the k label positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bf16 logits from autocast are widened; float64 (reference checks) is kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def multilabel_softmax_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of logsumexp(z) - mean_{j in labels} z_j.

    This is the cross-entropy against a target of 1/k on each of the k labels (Mahajan et al.
    2018). Rows without any label contribute zero and do not count in the mean.
    """
    logits = _at_least_float32(logits)
    mask = targets >= 0
    k = mask.sum(dim=1)
    picked = logits.gather(1, targets.clamp(min=0))
    label_mean = (picked * mask).sum(dim=1) / k.clamp(min=1)
    per_image = torch.logsumexp(logits, dim=1) - label_mean
    valid = k > 0
    return (per_image * valid).sum() / valid.sum().clamp(min=1)


def dense_targets(targets: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    """Multi-hot [B, C] from padded indices (for BCE and for reference checks)."""
    dense = torch.zeros(targets.shape[0], num_classes + 1, dtype=dtype, device=targets.device)
    idx = torch.where(targets >= 0, targets, num_classes)
    dense.scatter_(1, idx, 1.0)
    return dense[:, :num_classes]


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-tag sigmoid BCE, summed over classes, mean over the batch: the papers' baseline."""
    logits = _at_least_float32(logits)
    dense = dense_targets(targets, logits.shape[1], logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, dense, reduction="sum")
    return loss / logits.shape[0]


LOSSES = {"softmax": multilabel_softmax_loss, "bce": bce_loss}


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]
