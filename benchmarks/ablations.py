"""The papers' ablations at CPU scale: loss x sampling x label noise on the learnable synthetic
long-tailed set, scored on clean held-out images by head / torso / tail thirds.

    python benchmarks/ablations.py --out runs/abl --train-seeds 4   # BENCHMARKS.md (~30 min)
    python benchmarks/ablations.py --out /tmp/abl --quick           # a smoke-sized grid (~30 s)

Steps: `weakly synth --learnable` once; one `weakly ingest --holdout` per noise level (label
noise is applied at ingest, as in Mahajan et al., by replacing a fraction of labels with draws
from the label marginal); one training run per (noise, loss, sampling) through the ordinary
trainer; every run scored with `weakly eval`'s code on the val split of the noise-0 dataset.
Splits are by key hash, so every noise level holds out the same images and all runs are scored
on identical, clean labels. Writes results.json, table.md and ablations.png to --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline.ingest import IngestConfig, RunOptions, ingest
from pipeline.weights import WeightConfig
from train.config import TrainConfig
from train.evaluate import evaluate, label_counts
from train.loop import train
from train.shards import Dataset
from train.transfer import model_from_checkpoint
from weakly.synth_learnable import learnable_synth

GROUPS = ("head", "torso", "tail")


@dataclass(frozen=True)
class Grid:
    n: int = 4000
    classes: int = 24
    zipf: float = 1.2
    size: int = 64
    holdout: float = 0.2
    noise: tuple[float, ...] = (0.0, 0.25, 0.5)
    losses: tuple[str, ...] = ("softmax", "bce")
    samplings: tuple[str, ...] = ("weighted", "natural")
    model: str = "tiny"
    steps: int = 600
    batch_size: int = 64
    image_size: int = 32
    lr: float = 1.0
    warmup_steps: int = 20
    workers: int = 1
    seed: int = 0  # data: synth and label noise
    train_seeds: tuple[int, ...] = (0,)  # one run per seed and cell, to show the spread


QUICK = Grid(n=240, classes=6, noise=(0.0, 0.5), steps=12, batch_size=16, warmup_steps=2, workers=0)


def build_datasets(grid: Grid, work: Path, lexicon_dir: str | None) -> dict[float, Path]:
    """One ingested dataset per noise level (plus a clean one, the scoring reference)."""
    manifest = learnable_synth(
        grid.n,
        work / "synth",
        classes=grid.classes,
        zipf=grid.zipf,
        size=grid.size,
        seed=grid.seed,
        lexicon_dir=lexicon_dir,
    )
    out = {}
    for p in sorted({0.0, *grid.noise}):
        config = IngestConfig(
            vocab="in1k",
            weighting=WeightConfig("inv-sqrt"),
            holdout=grid.holdout,
            label_noise=p,
            seed=grid.seed,
            shard_size=200,
            chunk_rows=1000,
            lexicon_dir=lexicon_dir,
        )
        out[p] = work / f"ds-noise{p:g}"
        ingest([str(manifest)], out[p], config, RunOptions(progress=False))
    return out


def train_run(grid: Grid, data: Path, run: Path, loss: str, sampling: str, seed: int) -> Path:
    config = TrainConfig(
        data=str(data), model=grid.model, out=str(run), steps=grid.steps,
        batch_size=grid.batch_size, image_size=grid.image_size, device="cpu",
        workers=grid.workers, lr=grid.lr, warmup_steps=grid.warmup_steps, loss=loss,
        sampling=sampling, shuffle_buffer=500, seed=seed, eval=False,
        log_every=max(1, grid.steps // 4), ckpt_every=grid.steps,
    )  # fmt: skip
    train(config)
    return run / "checkpoints" / "last.pt"


def score(grid: Grid, ckpt: Path, clean: Dataset) -> dict:
    model, _ = model_from_checkpoint(ckpt)
    return evaluate(
        model, clean, torch.device("cpu"), grid.image_size, 128, 1, counts=label_counts(clean)
    )


def run_grid(grid: Grid, work: Path, lexicon_dir: str | None = None, log=print) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    datasets = build_datasets(grid, work, lexicon_dir)
    log(f"datasets ready in {time.perf_counter() - t0:.0f} s")
    clean = Dataset(str(datasets[0.0]), "val")
    rows = []
    cells = itertools.product(grid.noise, grid.losses, grid.samplings, grid.train_seeds)
    for p, loss, sampling, seed in cells:
        t = time.perf_counter()
        run = work / f"run-noise{p:g}-{loss}-{sampling}-seed{seed}"
        metrics = score(grid, train_run(grid, datasets[p], run, loss, sampling, seed), clean)
        row = {
            "noise": p,
            "loss": loss,
            "sampling": sampling,
            "seed": seed,
            "top1": metrics["top1"],
            "top5": metrics["top5"],
            "mAP": metrics["mAP"],
            "seconds": round(time.perf_counter() - t, 1),
        }
        for g in GROUPS:
            row[f"{g}_top1"] = metrics["groups"][g]["top1"]
            row[f"{g}_mAP"] = metrics["groups"][g]["mAP"]
            row[f"{g}_images"] = metrics["groups"][g]["images"]
        rows.append(row)
        log(format_row(row))
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _pm(r: dict, m: str) -> str:
    spread = r.get(f"{m}_range")
    if r["seeds"] < 2 or spread is None:
        return _pct(r[m])
    return f"{_pct(r[m])} ±{100 * spread / 2:.1f}"


def format_row(r: dict) -> str:
    return (
        f"noise {r['noise']:<4g} {r['loss']:<7} {r['sampling']:<8} top-1 {_pct(r['top1'])}  "
        + "  ".join(f"{g} {_pct(r[f'{g}_top1'])}" for g in GROUPS)
        + f"  mAP {_pct(r['mAP'])}  ({r['seconds']} s)"
    )


METRICS = ("top1", "top5", "mAP", *(f"{g}_{m}" for g in GROUPS for m in ("top1", "mAP")))


def mean_over_seeds(rows: list[dict]) -> list[dict]:
    """One row per (noise, loss, sampling): the mean of each metric, and its spread
    (max - min) over training seeds as `<metric>_range`."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["noise"], r["loss"], r["sampling"]), []).append(r)
    out = []
    for (p, loss, sampling), mine in cells.items():
        row = {"noise": p, "loss": loss, "sampling": sampling, "seeds": len(mine)}
        for m in METRICS:
            values = [r[m] for r in mine if r[m] is not None]
            row[m] = sum(values) / len(values) if values else None
            row[f"{m}_range"] = max(values) - min(values) if values else None
        out.append(row)
    return out


def table(rows: list[dict]) -> str:
    """Markdown: top-1 hit rate (%) overall and by third, and mAP (%), on clean val images;
    means over training seeds, with the max-min spread of top-1 and tail top-1."""
    rows = mean_over_seeds(rows)
    head = (
        "| noise | loss | sampling | top-1 | head top-1 | torso top-1 | tail top-1 | top-5 "
        "| mAP | tail mAP | seeds |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['noise']:g} | {r['loss']} | {r['sampling']} | {_pm(r, 'top1')} | "
            f"{_pct(r['head_top1'])} | {_pct(r['torso_top1'])} | {_pm(r, 'tail_top1')} | "
            f"{_pct(r['top5'])} | {_pct(r['mAP'])} | {_pct(r['tail_mAP'])} | {r['seeds']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars: head/torso/tail top-1 for every run, one panel per noise level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = mean_over_seeds(rows)
    noises = sorted({r["noise"] for r in rows})
    fig, axes = plt.subplots(1, len(noises), figsize=(5 * len(noises), 4), sharey=True)
    axes = [axes] if len(noises) == 1 else list(axes)
    for ax, p in zip(axes, noises, strict=True):
        mine = [r for r in rows if r["noise"] == p]
        for j, g in enumerate(GROUPS):
            values = [100 * (r[f"{g}_top1"] or 0) for r in mine]
            ax.bar([i + 0.27 * (j - 1) for i in range(len(mine))], values, 0.27, label=g)
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels([f"{r['loss']}\n{r['sampling']}" for r in mine], fontsize=8)
        ax.set_title(f"label noise {p:g}")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("top-1 hit rate on clean val (%)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(rows: list[dict], grid: Grid, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"grid": asdict(grid), "runs": rows}, indent=1))
    (out / "table.md").write_text(table(rows) + "\n")
    plot(rows, out / "ablations.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="results folder (work files under OUT/work)")
    ap.add_argument("--quick", action="store_true", help="smoke-sized grid")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--n", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--train-seeds", type=int, default=1, help="training runs per cell")
    ap.add_argument("--num-cpus", type=int, default=2, help="Ray CPUs for ingest")
    ap.add_argument("--lexicon-dir", help="compiled lexicon folder (default: the cache)")
    args = ap.parse_args(argv)
    grid = QUICK if args.quick else Grid()
    overrides = {k: v for k in ("steps", "n", "seed") if (v := getattr(args, k)) is not None}
    overrides["train_seeds"] = tuple(range(args.train_seeds))
    grid = Grid(**{**asdict(grid), **overrides})
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    # One intra-op thread: the model is tiny, and on a shared 2-core machine two threads
    # contending with other processes ran a step ~10x slower than one (measured).
    torch.set_num_threads(1)
    out = Path(args.out)
    rows = run_grid(grid, out / "work", args.lexicon_dir, log=lambda s: print(s, flush=True))
    write_outputs(rows, grid, out)
    print(table(rows))
    print(f"wrote {out}/results.json, table.md, ablations.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
