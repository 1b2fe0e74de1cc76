"""Optimiser pieces as pure functions: parameter groups and the learning-rate schedule.

Weight decay is only applied to weight matrices and conv kernels. Decaying BatchNorm/LayerNorm
scales and biases pulls them towards zero for no regularising benefit (they do not set the
capacity of the network) and measurably hurts large-batch SGD (Goyal et al., sec. 5.1 notes;
torchvision's reference recipes do the same with `norm_weight_decay=0`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two SGD groups: decayed (tensors of rank >= 2) and not decayed (biases, norm affine).

    Rank is the test rather than module type so that every norm layer (BatchNorm, LayerNorm,
    GroupNorm) and every bias is caught whatever the architecture calls it. ViT's class token
    and position embedding have rank 3 and stay decayed, as in torchvision's reference.
    """
    decay, no_decay = [], []
    for _, p in sorted(model.named_parameters()):
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_factor(
    step: int, warmup: int, total: int, schedule: str = "cosine", halve_every: int = 0
) -> float:
    """Multiplier of the peak LR for the update at `step` (0-based).

    Linear warmup, then either a cosine to zero over the remaining steps or step halving:
    the LR halves every `halve_every` steps after warmup (default: a quarter of the remaining
    steps, so a run ends at 1/8 of the peak like the halving recipe of Mahajan et al.).
    """
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
    if schedule == "step":
        every = halve_every if halve_every > 0 else max(1, math.ceil(span / 4))
        return 0.5 ** ((step - warmup) // every)
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine or step")


class EMA:
    """Exponential moving average of a model's state (parameters and float buffers).

    Kept as a plain tensor dict on the model's device, updated after each optimiser step;
    integer buffers (BatchNorm's batch counter) are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema decay must be in (0, 1), not {decay}")
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            mine = self.state[k]
            if mine.is_floating_point():
                mine.lerp_(v.detach(), 1.0 - self.decay)
            else:
                mine.copy_(v)

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.state[k].copy_(v)
