"""The ablation grid: loss x sampling law x label noise, over training and data seeds.

Cost-aware by design (benchmarks/ablations.py drives it): each data seed's images are drawn
once by `weakly.synth_hard`, decoded to a tensor and cached as .npz; label noise and sampling
weights are computed with the pipeline's own functions (`apply_label_noise`, `solve_law`
under `WeightConfig(scheme=law)`) from the *training* split's counts; the members of a loss are
trained in groups by `weakly.ablate_net` and scored on the clean balanced test split.
The learning rate is tuned per loss on the val split (natural law, no noise, data seed 0).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .ablate_net import MemberData, Schedule, member_outputs, ridge_probe, to_tensor, train_members
from .ablate_stats import grid_scores, group_of_classes
from .synth_hard import HardSynth

LAWS = ("natural", "sqrt", "uniform", "inv-sqrt")


@dataclass(frozen=True)
class Grid:
    pretrain: int = 200
    transfer: int = 40
    size: int = 16
    zipf: float = 1.0
    n_train: int = 5000
    n_val: int = 1000
    n_test: int = 2000
    probe_per_class: int = 20  # transfer images per held-out class, for each of train and test
    losses: tuple[str, ...] = ("softmax", "bce")
    laws: tuple[str, ...] = LAWS
    noise: tuple[float, ...] = (0.0, 0.25, 0.5)
    train_seeds: int = 8
    data_seeds: int = 3
    steps: int = 300
    batch_size: int = 64
    width: int = 16
    lr_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    sweep_seeds: int = 2
    balance_seeds: int = 2  # balanced-data runs per data seed for the difficulty check
    group: int = 24  # members trained at once

    def synth(self, data_seed: int) -> HardSynth:
        return HardSynth(self.pretrain, self.transfer, self.zipf, size=self.size, seed=data_seed)

    def schedule(self) -> Schedule:
        return Schedule(
            steps=self.steps,
            batch_size=self.batch_size,
            warmup=max(1, self.steps // 20),
            width=self.width,
        )


@dataclass
class DataSeed:
    """One data seed's images (rows of the shared pool) and clean labels."""

    seed: int
    rows: dict[str, np.ndarray]  # split -> pool rows
    labels: dict[str, list[list[int]]]  # train / val / test / uniform / uniform_test
    probe_y: dict[str, np.ndarray]  # probe_train / probe_test
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # clean train counts


def _cache_key(grid: Grid, seed: int) -> str:
    spec = {k: getattr(grid, k) for k in ("pretrain", "transfer", "size", "zipf", "n_train")}
    spec |= {"n_val": grid.n_val, "n_test": grid.n_test, "probe": grid.probe_per_class}
    spec |= {"seed": seed, "generator": 3}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def draw_data(grid: Grid, seed: int, cache: Path) -> dict:
    """Every split of one data seed, from the .npz cache when present."""
    path = cache / f"data-{seed}-{_cache_key(grid, seed)}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        out = {k: z[k] for k in z.files if not k.endswith("_labels")}
        for k in z.files:
            if k.endswith("_labels"):
                out[k] = json.loads(str(z[k]))
        return out
    s = grid.synth(seed)
    out: dict = {}
    splits = (("train", grid.n_train, False), ("val", grid.n_val, True))
    splits += (("test", grid.n_test, True), ("uniform", grid.n_train, True))
    splits += (("uniform_test", grid.n_test, True),)
    for stream, (name, n, balanced) in enumerate(splits):
        d = s.draw(n, stream, balanced=balanced, uniform=name.startswith("uniform"))
        out[name], out[f"{name}_labels"] = d.pixels, d.labels
    for stream, name in enumerate(("probe_train", "probe_test")):
        out[name], out[f"{name}_y"] = s.transfer_set(grid.probe_per_class, stream)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        **{k: (json.dumps(v) if k.endswith("_labels") else v) for k, v in out.items()},
    )
    tmp.rename(path)
    return out


def build_pool(grid: Grid, cache: Path) -> tuple[torch.Tensor, list[DataSeed]]:
    """One float tensor holding every data seed's images, and where each split lies in it."""
    chunks, seeds, at = [], [], 0
    for seed in range(grid.data_seeds):
        d = draw_data(grid, seed, cache)
        rows = {}
        names = ("train", "val", "test", "uniform", "uniform_test", "probe_train", "probe_test")
        for name in names:
            rows[name] = np.arange(at, at + len(d[name]))
            at += len(d[name])
            chunks.append(d[name])
        labels = {k: d[f"{k}_labels"] for k in ("train", "val", "test", "uniform", "uniform_test")}
        counts = np.bincount([c for lab in labels["train"] for c in lab], minlength=grid.pretrain)
        probe_y = {k: d[f"{k}_y"] for k in ("probe_train", "probe_test")}
        seeds.append(DataSeed(seed, rows, labels, probe_y, counts))
    return to_tensor(np.concatenate(chunks)), seeds


def noisy(labels: list[list[int]], p: float, seed: int) -> list[list[int]]:
    """`labels` with the pipeline's label noise (pipeline/label_noise.apply_label_noise), the
    replacements drawn from the training labels' marginal."""
    if p <= 0:
        return labels
    from pipeline.label_noise import apply_label_noise

    names = [[f"c{c:04d}" for c in lab] for lab in labels]
    marginal = Counter(w for lab in names for w in lab)
    keys = [f"k{i:07d}" for i in range(len(labels))]
    out, _ = apply_label_noise(names, keys, marginal, p, seed)
    return [sorted(int(w[1:]) for w in lab) for lab in out]


def law_weights(labels: list[list[int]], classes: int, law: str) -> np.ndarray:
    """Per-image sampling weights of `law` (its default epoch size) from these training labels'
    counts, solved and applied by pipeline/weights.py exactly as ingest does."""
    from pipeline.weights import WeightConfig, solve_law, tally_rows

    rows = np.array([i for i, lab in enumerate(labels) for _ in lab], np.int64)
    codes = np.array([c for lab in labels for c in lab], np.int64)
    order = np.lexsort((codes, rows))
    rows, codes = rows[order], codes[order]
    counts = np.bincount(codes, minlength=classes)
    n = len(labels)
    train = np.ones(n, bool)
    config = WeightConfig(scheme=law)
    solved = solve_law(config, counts, tally_rows(rows, codes, counts, n, train, config))
    return solved.weights(rows, codes, counts, n, train)


def init_seed(data_seed: int, train_seed: int) -> int:
    """Same init for the same (data, training) seed in every cell: differences are paired."""
    return 1_000 * train_seed + data_seed + 1


@dataclass
class Member:
    spec: dict  # loss, law, noise, data_seed, train_seed, lr (and kind)
    data: MemberData


def score_group(
    net, pool: torch.Tensor, members: list[Member], seeds: list[DataSeed], grid: Grid, split: str
) -> list[dict]:
    """Scores of every member on its data seed's clean `split`, plus its transfer probe."""
    idx = torch.stack([torch.from_numpy(seeds[m.spec["data_seed"]].rows[split]) for m in members])
    scores, _ = member_outputs(net, pool, idx)
    p_tr = torch.stack(
        [torch.from_numpy(seeds[m.spec["data_seed"]].rows["probe_train"]) for m in members]
    )
    p_te = torch.stack(
        [torch.from_numpy(seeds[m.spec["data_seed"]].rows["probe_test"]) for m in members]
    )
    _, f_tr = member_outputs(net, pool, p_tr)
    _, f_te = member_outputs(net, pool, p_te)
    ds0 = seeds[members[0].spec["data_seed"]]
    y_tr = torch.from_numpy(ds0.probe_y["probe_train"]).long()
    y_te = torch.from_numpy(ds0.probe_y["probe_test"]).long()
    transfer = ridge_probe(f_tr, y_tr, f_te, y_te, grid.transfer).tolist()
    out = []
    for i, m in enumerate(members):
        ds = seeds[m.spec["data_seed"]]
        counts = m.spec.get("group_counts", ds.counts)
        row = {k: v for k, v in m.spec.items() if k != "group_counts"}
        row |= grid_scores(scores[i].numpy(), ds.labels[split], group_of_classes(counts))
        row["transfer_top1"] = transfer[i]
        out.append(row)
    return out


def run_members(
    grid: Grid, pool: torch.Tensor, seeds: list[DataSeed], members: list[Member], split: str, log
) -> list[dict]:
    """Train and score `members` in groups of `grid.group` that share a loss."""
    rows = []
    by_loss: dict[str, list[Member]] = {}
    for m in members:
        by_loss.setdefault(m.spec["loss"], []).append(m)
    for loss, mine in by_loss.items():
        for start in range(0, len(mine), grid.group):
            group = mine[start : start + grid.group]
            t = time.perf_counter()
            net = train_members(pool, [m.data for m in group], loss, grid.pretrain, grid.schedule())
            rows += score_group(net, pool, group, seeds, grid, split)
            seconds = time.perf_counter() - t
            log(
                f"  {loss}: {len(group)} runs in {seconds:.0f} s ({seconds / len(group):.2f} s/run)"
            )
    return rows


def member(ds: DataSeed, spec: dict, labels: list[list[int]], weights, rows=None) -> Member:
    index = ds.rows["train"] if rows is None else rows
    seed = init_seed(spec["data_seed"], spec["train_seed"])
    return Member(spec, MemberData(index, labels, weights, spec["lr"], seed))


def sweep_lr(grid: Grid, pool, seeds: list[DataSeed], log) -> tuple[dict, list[dict]]:
    """Per loss, the lr of `grid.lr_grid` with the best mean val mAP (natural law, no noise,
    data seed 0, `sweep_seeds` training seeds); ties go to the smaller lr."""
    ds = seeds[0]
    ones = np.ones(len(ds.labels["train"]))
    members = [
        member(ds, {"kind": "sweep", "loss": loss, "law": "natural", "noise": 0.0,
                    "data_seed": 0, "train_seed": t, "lr": lr}, ds.labels["train"], ones)
        for loss in grid.losses for lr in grid.lr_grid for t in range(grid.sweep_seeds)
    ]  # fmt: skip
    rows = run_members(grid, pool, seeds, members, "val", log)
    chosen = {}
    for loss in grid.losses:
        means = {
            lr: float(np.mean([r["mAP"] for r in rows if r["loss"] == loss and r["lr"] == lr]))
            for lr in grid.lr_grid
        }
        chosen[loss] = max(sorted(means), key=lambda lr: means[lr])
        log(f"lr sweep {loss}: " + ", ".join(f"{lr:g} -> mAP {means[lr]:.3f}" for lr in means))
        if len(grid.lr_grid) > 1 and chosen[loss] in (min(grid.lr_grid), max(grid.lr_grid)):
            log(f"warning: {loss}'s best lr {chosen[loss]:g} is at the edge of the grid: widen it")
    return chosen, rows


def grid_members(grid: Grid, seeds: list[DataSeed], lrs: dict[str, float]) -> list[Member]:
    out = []
    for ds in seeds:
        for p in grid.noise:
            labels = noisy(ds.labels["train"], p, ds.seed)
            for law in grid.laws:
                weights = law_weights(labels, grid.pretrain, law)
                for loss in grid.losses:
                    for t in range(grid.train_seeds):
                        spec = {"kind": "grid", "loss": loss, "law": law, "noise": p,
                                "data_seed": ds.seed, "train_seed": t, "lr": lrs[loss]}  # fmt: skip
                        out.append(member(ds, spec, labels, weights))
    return out


def balance_members(grid: Grid, seeds: list[DataSeed], lrs: dict[str, float]) -> list[Member]:
    """Softmax trained and tested on images whose labels are all uniform over classes, scored
    with head/tail groups from the Zipf counts: if difficulty is independent of frequency,
    head and tail scores come out alike."""
    out = []
    for ds in seeds:
        labels = ds.labels["uniform"]
        for t in range(grid.balance_seeds):
            spec = {"kind": "balanced", "loss": "softmax", "law": "balanced-data", "noise": 0.0,
                    "data_seed": ds.seed, "train_seed": t, "lr": lrs["softmax"],
                    "group_counts": ds.counts}  # fmt: skip
            out.append(member(ds, spec, labels, np.ones(len(labels)), ds.rows["uniform"]))
    return out


def run_grid(grid: Grid, work: Path, log=print) -> dict:
    """Everything: data, lr sweep, the grid, the balance check. Returns results.json's dict."""
    t0 = time.perf_counter()
    pool, seeds = build_pool(grid, work / "cache")
    log(
        f"data: {grid.data_seeds} seeds, pool {tuple(pool.shape)}, {time.perf_counter() - t0:.0f} s"
    )
    lrs, sweep = sweep_lr(grid, pool, seeds, log)
    runs = run_members(grid, pool, seeds, grid_members(grid, seeds, lrs), "test", log)
    check = balance_members(grid, seeds, lrs)
    balanced = run_members(grid, pool, seeds, check, "uniform_test", log)
    return {
        "grid": asdict(grid),
        "lr": lrs,
        "sweep": sweep,
        "runs": runs,
        "balanced": balanced,
        "seconds": round(time.perf_counter() - t0, 1),
        "counts": {ds.seed: ds.counts.tolist() for ds in seeds},
    }
