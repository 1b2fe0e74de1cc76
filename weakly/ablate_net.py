"""Many small models trained at once, for ablation grids that must run on two CPU cores.

Why: an ablation of loss x law x noise x 8 training seeds x 3 data seeds is ~600 training runs.
One tiny CNN per run spends most of its time in per-call overhead, not arithmetic, so here S
independent models ("members") are one network with grouped convolutions: member s owns
channel block s of every layer, sees only its own batch (drawn with its own sampling weights
from its own labels), has its own learning rate, and its own head. The members share no
parameter and no statistic (BatchNorm is per channel), so the result is S separate runs, made
in one pass. Images are decoded once into a tensor (cached per data seed by the caller):
nothing is read or decoded during training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from train.loss import dense_targets, multilabel_softmax_loss

MEAN, STD = 127.5, 64.0


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """[N, H, W, 3] uint8 -> [N, 3, H, W] float32, roughly standardised."""
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - MEAN) / STD


class GroupedNet(nn.Module):
    """S copies of a three-block strided CNN (like train/models.py's TinyNet) as one module.

    Input [B, S*3, H, W] (member s in channels 3s..3s+2); output [S, B, C]."""

    def __init__(self, members: int, classes: int, width: int = 16) -> None:
        super().__init__()
        self.members, self.classes = members, classes
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(members * c_in, members * c_out, 3, 2, 1, groups=members, bias=False),
                nn.BatchNorm2d(members * c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dim = c_in
        bound = 1 / math.sqrt(c_in)
        self.weight = nn.Parameter(torch.empty(members, classes, c_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(members, classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S*3, H, W] -> [S, B, D] pooled trunk features."""
        f = self.features(x).mean(dim=(2, 3))
        return f.view(f.shape[0], self.members, self.dim).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("sbd,scd->sbc", self.embed(x), self.weight) + self.bias[:, None]


def stack_inputs(pool: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """pool [P, 3, H, W], index [S, B] -> [B, S*3, H, W]."""
    s, b = index.shape
    x = pool[index.reshape(-1)].view(s, b, *pool.shape[1:])
    return x.transpose(0, 1).reshape(b, s * pool.shape[1], *pool.shape[2:])


def member_loss(name: str, logits: torch.Tensor, targets: torch.Tensor, present: torch.Tensor):
    """Sum over members of each member's mean loss. logits [S, B, C], targets [S, B, K] padded
    with -1, present [S, C] bool: the classes in that member's training labels. Softmax masks
    absent classes out of the normaliser; BCE sums only over present classes (Mahajan et al.'s
    baseline is per-tag BCE over the hashtag vocabulary, not over unused outputs)."""
    s, b, c = logits.shape
    if name == "softmax":
        masked = logits.masked_fill(~present[:, None, :], -1e4)
        return multilabel_softmax_loss(masked.reshape(s * b, c), targets.reshape(s * b, -1)) * s
    if name == "bce":
        dense = dense_targets(targets.reshape(s * b, -1), c).view(s, b, c)
        per = F.binary_cross_entropy_with_logits(logits, dense, reduction="none")
        return (per * present[:, None, :]).sum() / b
    raise ValueError(f"unknown loss {name!r}: use softmax or bce")


@dataclass
class MemberData:
    """One member's training inputs: indices into the pool, labels, sampling weights."""

    index: np.ndarray  # [N] int64 rows of the pool
    labels: list[list[int]]  # training labels (noisy where the cell has noise)
    weights: np.ndarray  # [N] float64, sampling weight of each image (any scale)
    lr: float
    seed: int


def _pad(labels: list[list[int]], k: int) -> torch.Tensor:
    out = torch.full((len(labels), k), -1, dtype=torch.long)
    for i, lab in enumerate(labels):
        out[i, : len(lab)] = torch.tensor(lab[:k])
    return out


@dataclass(frozen=True)
class Schedule:
    steps: int = 300
    batch_size: int = 64
    warmup: int = 15
    momentum: float = 0.9
    weight_decay: float = 5e-4
    width: int = 16


def _init_members(net: GroupedNet, seeds: list[int]) -> None:
    """Member s's parameters from torch's default init under its own seed, so a member's
    start does not depend on which group it trains in."""
    with torch.no_grad():
        for s, seed in enumerate(seeds):
            torch.manual_seed(seed)
            for module in net.features:
                if isinstance(module, nn.Conv2d):
                    w = module.weight.view(net.members, -1, *module.weight.shape[1:])[s]
                    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            bound = 1 / math.sqrt(net.dim)
            net.weight[s].uniform_(-bound, bound)


def train_members(
    pool: torch.Tensor, members: list[MemberData], loss: str, classes: int, sched: Schedule
) -> GroupedNet:
    """Train every member for `sched.steps` steps of SGD (momentum, cosine decay after linear
    warmup, weight decay on conv and head weights), each on batches drawn with replacement in
    proportion to its own weights. Returns the trained network in eval mode."""
    s = len(members)
    net = GroupedNet(s, classes, sched.width)
    _init_members(net, [m.seed for m in members])
    n_max = max(len(m.index) for m in members)
    k_max = max(len(lab) for m in members for lab in m.labels)
    weights = torch.zeros(s, n_max, dtype=torch.float64)
    rows = torch.zeros(s, n_max, dtype=torch.long)
    targets = torch.full((s, n_max, k_max), -1, dtype=torch.long)
    present = torch.zeros(s, classes, dtype=torch.bool)
    for i, m in enumerate(members):
        n = len(m.index)
        weights[i, :n] = torch.from_numpy(np.asarray(m.weights, np.float64))
        rows[i, :n] = torch.from_numpy(np.asarray(m.index, np.int64))
        targets[i, :n] = _pad(m.labels, k_max)
        present[i, sorted({c for lab in m.labels for c in lab})] = True
    if loss == "bce":
        # Start every sigmoid at the label prior (~1/C), not at 1/2: otherwise a short run
        # spends its first hundred steps pushing C-1 negatives down (Lin et al. 2017's prior
        # init), which would handicap the baseline the way an untuned learning rate did.
        with torch.no_grad():
            net.bias.copy_(-torch.log(present.sum(1, keepdim=True).float()).expand(s, classes))
    lrs = torch.tensor([m.lr for m in members], dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(sum(m.seed * 7919 for m in members)) % (1 << 62))
    params = list(net.parameters())
    decay = [p.dim() > 1 for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    net.train()
    for step in range(sched.steps):
        if step < sched.warmup:
            factor = (step + 1) / sched.warmup
        else:
            t = (step - sched.warmup) / max(1, sched.steps - sched.warmup)
            factor = 0.5 * (1 + math.cos(math.pi * t))
        draw = torch.multinomial(weights, sched.batch_size, replacement=True, generator=gen)
        x = stack_inputs(pool, rows.gather(1, draw))
        t_batch = targets[torch.arange(s)[:, None], draw]
        out = net(x)
        value = member_loss(loss, out, t_batch, present)
        net.zero_grad(set_to_none=False)
        value.backward()
        with torch.no_grad():
            step_lr = (lrs * factor)[:, None]
            for p, buf, wd in zip(params, bufs, decay, strict=True):
                g = p.grad
                if wd:
                    g = g.add(p, alpha=sched.weight_decay)
                buf.mul_(sched.momentum).add_(g)
                p.view(s, -1).sub_(buf.view(s, -1) * step_lr)
    net.eval()
    return net


@torch.no_grad()
def member_outputs(
    net: GroupedNet, pool: torch.Tensor, index: torch.Tensor, chunk: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [S, N, C], trunk features [S, N, D]) for per-member pool rows `index` [S, N]."""
    scores, feats = [], []
    for start in range(0, index.shape[1], chunk):
        x = stack_inputs(pool, index[:, start : start + chunk])
        f = net.embed(x)
        feats.append(f)
        scores.append(torch.einsum("sbd,scd->sbc", f, net.weight) + net.bias[:, None])
    return torch.cat(scores, 1), torch.cat(feats, 1)


def ridge_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    classes: int,
    l2: float = 1.0,
) -> torch.Tensor:
    """Top-1 accuracy [S] of a linear probe per member: ridge regression of one-hot targets on
    standardised frozen features ([S, N, D]), closed form, so probing ~600 trunks costs
    milliseconds. A least-squares linear classifier, not a logistic one: cheaper and free of
    iteration counts, and it ranks trunks the same way on a set this small."""
    mean = train_x.mean(1, keepdim=True)
    std = train_x.std(1, keepdim=True).clamp(min=1e-5)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    ones = torch.ones(*a.shape[:2], 1)
    a1, b1 = torch.cat([a, ones], 2), torch.cat([b, torch.ones(*b.shape[:2], 1)], 2)
    y = F.one_hot(train_y, classes).float()
    gram = a1.transpose(1, 2) @ a1 + l2 * torch.eye(a1.shape[2])
    w = torch.linalg.solve(gram, a1.transpose(1, 2) @ y.expand(a1.shape[0], -1, -1))
    pred = (b1 @ w).argmax(2)
    return (pred == test_y).float().mean(1)
