"""Unique-image coverage of each sampling law per training budget, on a simulated hashtag set
(issue 13): N images, 1-3 tags each drawn Zipf over 17k hashtags.

    python benchmarks/sampling_laws.py                 # 200k images (BENCHMARKS.md)
    python benchmarks/sampling_laws.py --images 20000  # smoke size, a few seconds

For a budget of B = b x N samples each law is solved with epoch size B (pipeline/weights.py)
and read two ways:
  epoch   the trainer's epoch: every image floor(r) or ceil(r) times (seeded rounding), so an
          image with r >= 1 is always seen and one with r < 1 with probability r;
  iid     B independent draws with probability proportional to the weight (the streaming
          sampler without epochs): an image is seen with probability 1 - (1 - p)^B.
Coverage is the expected share of distinct images seen. The baseline, run in the same process,
is the law before issue 13: f^-1/2 of the rarest tag, x100 below an absolute f < 10, read iid.
Also printed: the share of samples that go to the 100 most frequent tags' images (how much of
the head each law keeps), the largest replication, and for inv-sqrt per `--rare-mass` the share
of images marked rare and the share of the epoch they take.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.weights import WeightConfig, solve_law, tally_rows

LAWS = ("natural", "sqrt", "uniform", "inv-sqrt")


def simulate(images: int, tags: int, zipf: float, seed: int):
    """(parents, codes, counts): (image, tag) pairs sorted by image, tags unique per image."""
    rng = np.random.default_rng(seed)
    k = rng.integers(1, 4, size=images)
    rows = np.repeat(np.arange(images), k)
    ranks = np.arange(1, tags + 1, dtype=np.float64)
    p = ranks**-zipf
    codes = rng.choice(tags, size=len(rows), p=p / p.sum())
    pair = np.unique(rows.astype(np.int64) * tags + codes)
    parents, codes = pair // tags, pair % tags
    return parents, codes, np.bincount(codes, minlength=tags)


def old_law(parents, codes, counts, n: int) -> np.ndarray:
    """The law before issue 13: max over tags of f^-1/2, x100 when a tag has f < 10."""
    rows, starts = np.unique(parents, return_index=True)
    w = np.zeros(n)
    w[rows] = np.maximum.reduceat(counts[codes] ** -0.5, starts)
    rare = np.minimum.reduceat(counts[codes], starts) < 10
    w[rows] *= np.where(rare, 100.0, 1.0)
    return w


def coverage(weights: np.ndarray, budget: float) -> tuple[float, float]:
    """(epoch coverage, iid coverage) of weights for a budget of `budget` samples."""
    epoch_w = weights * budget / weights.sum()
    epoch = float(np.minimum(1.0, epoch_w).mean())
    p = weights / weights.sum()
    iid = float((-np.expm1(budget * np.log1p(-p))).mean())
    return epoch, iid


def head_share(weights, parents, codes, counts, top: int = 100) -> float:
    """Share of the sampled weight that goes to images carrying one of the `top` most
    frequent tags."""
    head = np.zeros(len(counts), bool)
    head[np.argsort(-counts, kind="stable")[:top]] = True
    carries = np.zeros(len(weights), bool)
    carries[parents[head[codes]]] = True
    return float(weights[carries].sum() / weights.sum())


def rare_share(weights, parents, codes, counts, law) -> tuple[float | None, float]:
    """(share of images with a rare tag, their share of the epoch) under an inv-sqrt law."""
    if law.scheme != "inv-sqrt":
        return None, 0.0
    rarest = np.zeros(len(weights), np.int64)
    rows, starts = np.unique(parents, return_index=True)
    rarest[rows] = np.minimum.reduceat(counts[codes], starts)
    rare = rarest <= law.rare_cutoff
    return float(rare.mean()), float(weights[rare].sum() / weights.sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200_000)
    ap.add_argument("--tags", type=int, default=17_000)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--budgets", default="1,1.4,2,4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rare-masses", default="0.001,0.01", help="inv-sqrt --rare-mass values")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    parents, codes, counts = simulate(args.images, args.tags, args.zipf, args.seed)
    n = args.images
    train = np.ones(n, bool)
    print(
        f"{n:,} images, {int((counts > 0).sum()):,} of {args.tags:,} tags used, "
        f"{len(codes) / n:.2f} tags/image, Zipf s={args.zipf}"
    )
    base = old_law(parents, codes, counts, n)
    rare_notes: dict = {}
    print("| law | budget | epoch coverage | iid coverage | iid vs old law | head-100 share "
          "| max r |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for b in (float(x) for x in args.budgets.split(",")):
        budget = b * n
        old_epoch, old_iid = coverage(base, budget)
        print(
            f"| old inv-sqrt (baseline) | {b:g}x | {old_epoch:.1%} | {old_iid:.1%} | 1.00x "
            f"| {head_share(base, parents, codes, counts):.1%} "
            f"| {base.max() * budget / base.sum():,.0f} |"
        )
        runs = [(law, None) for law in LAWS if law != "inv-sqrt"]
        runs += [("inv-sqrt", float(q)) for q in args.rare_masses.split(",")]
        for law_name, mass in runs:
            config = WeightConfig(law_name, rare_mass=mass or 0.0, epoch_size=f"{b:g}x")
            tally = tally_rows(parents, codes, counts, n, train, config)
            law = solve_law(config, counts, tally)
            w = law.weights(parents, codes, counts, n, train)
            epoch, iid = coverage(w, budget)
            name = law_name if mass is None else f"{law_name} Q={mass:g}"
            print(
                f"| {name} | {b:g}x | {epoch:.1%} | {iid:.1%} | {iid / old_iid:.2f}x "
                f"| {head_share(w, parents, codes, counts):.1%} | {w.max():,.1f} |"
            )
            rare_notes.setdefault(name, rare_share(w, parents, codes, counts, law))
    for name, (images_rare, epoch_rare) in rare_notes.items():
        if images_rare is not None:
            print(f"{name}: {images_rare:.2%} of images rare, taking {epoch_rare:.1%} of an epoch")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
