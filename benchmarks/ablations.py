"""The papers' ablations at CPU scale: loss x sampling law x label noise, on a hard synthetic
long-tailed set (weakly/synth_hard.py: 200 pretraining classes, each a distribution of looks,
difficulty independent of frequency), with the learning rate tuned per loss on val, 8 training
seeds x 3 data seeds per cell, 95% cluster-bootstrap intervals, tail-only tail metrics and a
linear-probe transfer score on 40 classes held out of pretraining.

    python benchmarks/ablations.py --out runs/abl                 # the full grid (BENCHMARKS.md)
    python benchmarks/ablations.py --out /tmp/abl --quick         # the CI-sized grid
    python benchmarks/ablations.py --out runs/abl --laws natural,sqrt,inv-sqrt --train-seeds 2

Writes results.json (every run), table.md (cells and findings) and ablations.png to --out;
decoded images are cached under --out/work/cache, so a rerun skips generation. Runs are
paired: the same (data seed, training seed) starts from the same weights in every cell, and
findings are intervals of paired differences. See weakly/ablate_grid.py for the procedure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from weakly.ablate_grid import LAWS, Grid, run_grid
from weakly.ablate_stats import cell_values, cluster_bootstrap, paired_differences, verdict

QUICK = Grid(
    pretrain=200, transfer=10, n_train=600, n_val=200, n_test=300, probe_per_class=8,
    noise=(0.0, 0.5), train_seeds=2, data_seeds=2, steps=30, batch_size=32, width=8,
    lr_grid=(0.3, 1.0), sweep_seeds=1, balance_seeds=1, group=48,
)  # fmt: skip

CELL_METRICS = ("top1", "mAP", "head_mAP", "tail_mAP", "tail_top1", "transfer_top1")


def _ci(t: tuple[float, float, float]) -> str:
    mean, lo, hi = t
    return f"{100 * mean:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def cell_table(result: dict) -> str:
    """One row per (noise, loss, law): mean and 95% interval of each metric, in %."""
    runs = result["runs"]
    g = result["grid"]
    head = "| noise | loss | law | " + " | ".join(CELL_METRICS) + " | runs |"
    lines = [head, "|" + "---|" * (len(CELL_METRICS) + 4)]
    for p in g["noise"]:
        for loss in g["losses"]:
            for law in g["laws"]:
                match = {"noise": p, "loss": loss, "law": law}
                n = sum(all(r[k] == v for k, v in match.items()) for r in runs)
                cells = [_ci(cluster_bootstrap(cell_values(runs, m, match))) for m in CELL_METRICS]
                lines.append(f"| {p:g} | {loss} | {law} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines)


def findings(result: dict) -> list[dict]:
    """Paired differences with intervals, one per (question, cell)."""
    runs, g = result["runs"], result["grid"]
    out = []

    def add(question: str, metric: str, a: dict, b: dict, where: dict) -> None:
        diff = paired_differences(runs, metric, {**where, **a}, {**where, **b})
        if not diff:
            return
        mean, lo, hi = cluster_bootstrap(diff)
        out.append({"question": question, "metric": metric, "where": where, "a": a, "b": b,
                    "mean": mean, "lo": lo, "hi": hi, "verdict": verdict(lo, hi),
                    "pairs": sum(len(v) for v in diff.values())})  # fmt: skip

    for p in g["noise"]:
        for law in g["laws"]:
            for metric in ("mAP", "tail_mAP"):
                add("softmax beats BCE", metric, {"loss": "softmax"}, {"loss": "bce"},
                    {"noise": p, "law": law})  # fmt: skip
    for loss in g["losses"]:
        for p in g["noise"]:
            for law in g["laws"]:
                if law == "natural":
                    continue
                for metric in ("tail_mAP", "tail_top1", "head_mAP"):
                    add(f"{law} beats natural", metric, {"law": law}, {"law": "natural"},
                        {"noise": p, "loss": loss})  # fmt: skip
    for loss in g["losses"]:
        for law in g["laws"]:
            for p in g["noise"]:
                if p > 0:
                    add("noise costs accuracy (clean minus noisy)", "mAP", {"noise": 0.0},
                        {"noise": p}, {"loss": loss, "law": law})  # fmt: skip
    for p in g["noise"]:
        for law in g["laws"]:
            add("softmax trunk transfers better", "transfer_top1", {"loss": "softmax"},
                {"loss": "bce"}, {"noise": p, "law": law})  # fmt: skip
    return out


def findings_table(rows: list[dict]) -> str:
    lines = ["| question | metric | where | a vs b | a - b (points) [95% CI] | reproduces | pairs |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip

    def text(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items())

    for f in rows:
        lines.append(
            f"| {f['question']} | {f['metric']} | {text(f['where'])} | {text(f['a'])} vs "
            f"{text(f['b'])} | {_ci((f['mean'], f['lo'], f['hi']))} | {f['verdict']} "
            f"| {f['pairs']} |"
        )
    return "\n".join(lines)


def balance_line(result: dict) -> str:
    """The difficulty check: balanced-data training, head vs tail thirds of the Zipf ranks."""
    bal = result["balanced"]
    parts = []
    for m in ("head_mAP", "tail_mAP", "head_top1", "tail_top1"):
        parts.append(f"{m} {_ci(cluster_bootstrap(cell_values(bal, m, {})))}")
    diff = {}
    for r in bal:
        diff.setdefault(r["data_seed"], []).append(r["tail_mAP"] - r["head_mAP"])
    parts.append(f"tail - head mAP {_ci(cluster_bootstrap(diff))}")
    return (
        "difficulty check (softmax, same steps, trained and tested on uniform labels; groups "
        "by the Zipf ranks): " + "; ".join(parts)
    )


def report(result: dict) -> str:
    lr = ", ".join(f"{k} {v:g}" for k, v in result["lr"].items())
    return "\n\n".join(
        [
            f"learning rate chosen on val mAP: {lr} (grid "
            + ", ".join(f"{x:g}" for x in result["grid"]["lr_grid"])
            + ")",
            balance_line(result),
            cell_table(result),
            findings_table(findings(result)),
        ]
    )


def plot(result: dict, path: Path) -> None:
    """Tail mAP with 95% intervals per law, softmax and BCE side by side, a panel per noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g, runs = result["grid"], result["runs"]
    fig, axes = plt.subplots(1, len(g["noise"]), figsize=(4.5 * len(g["noise"]), 4), sharey=True)
    axes = [axes] if len(g["noise"]) == 1 else list(axes)
    for ax, p in zip(axes, g["noise"], strict=True):
        for j, loss in enumerate(g["losses"]):
            for metric, shift, hatch in (("tail_mAP", 0, ""), ("mAP", 0.4, "//")):
                xs, ys, err = [], [], [[], []]
                for i, law in enumerate(g["laws"]):
                    m, lo, hi = cluster_bootstrap(
                        cell_values(runs, metric, {"noise": p, "loss": loss, "law": law})
                    )
                    xs.append(i + 0.2 * j + shift / 2 - 0.2)
                    ys.append(100 * m)
                    err[0].append(100 * (m - lo))
                    err[1].append(100 * (hi - m))
                ax.bar(xs, ys, 0.18, yerr=err, hatch=hatch, color=f"C{j}",
                       label=f"{loss} {metric}", capsize=2)  # fmt: skip
        ax.set_xticks(range(len(g["laws"])))
        ax.set_xticklabels(g["laws"], fontsize=8)
        ax.set_title(f"label noise {p:g}")
    axes[0].set_ylabel("test mAP (%), 95% cluster-bootstrap CI")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "table.md").write_text(report(result) + "\n")
    plot(result, out / "ablations.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="results folder (cache under OUT/work)")
    ap.add_argument("--quick", action="store_true", help="the CI-sized grid")
    ap.add_argument(
        "--replot", action="store_true", help="rewrite table.md and the plot from OUT/results.json"
    )
    ap.add_argument("--laws", help=f"comma-separated sampling laws (default {','.join(LAWS)})")
    ap.add_argument("--noise", help="comma-separated label-noise fractions (default 0,0.25,0.5)")
    ap.add_argument("--train-seeds", type=int)
    ap.add_argument("--data-seeds", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (2 on a quiet 2-core machine; 1 when it is shared: two "
        "threads contending with other processes ran a step ~10x slower)",
    )
    args = ap.parse_args(argv)
    if args.replot:
        result = json.loads((Path(args.out) / "results.json").read_text())
        write_outputs(result, Path(args.out))
        print(report(result))
        return 0
    grid = QUICK if args.quick else Grid()
    changes: dict = {}
    if args.laws:
        changes["laws"] = tuple(args.laws.split(","))
    if args.noise:
        changes["noise"] = tuple(float(x) for x in args.noise.split(","))
    for name in ("train_seeds", "data_seeds", "steps"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    grid = replace(grid, **changes)
    from pipeline.weights import WeightConfig

    for law in grid.laws:  # fail before generating data, not 2 minutes in
        try:
            WeightConfig(scheme=law)
        except ValueError as exc:
            print(f"ablations: --laws {law}: {exc}", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.perf_counter()
    result = run_grid(grid, out / "work", log=lambda s: print(s, flush=True))
    write_outputs(result, out)
    print(report(result))
    print(f"wrote {out}/results.json, table.md, ablations.png in {time.perf_counter() - t0:.0f} s "
          f"({asdict(grid)['steps']} steps)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
