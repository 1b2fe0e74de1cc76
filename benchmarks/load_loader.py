"""The trainer's loader streaming a million samples: resident memory stays flat.

A fixture dataset of small real-format JPEGs (32-48 px, so decoding is cheap and the run
measures the loader's own bookkeeping: sampler state, shuffle buffer, shard reads) is streamed
by `TrainLoader` with 2 worker processes, weighted sampling and a 1000-sample shuffle buffer.
The RSS of this process plus its loader workers is sampled every `--every` samples; the first
sample after warm-up (`--warmup` samples) is the baseline, and the script prints the ratio of
the last and the largest reading to it. Flat memory means ratios near 1.

    python benchmarks/load_loader.py [--samples 1000000] [--warmup 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from proc_tools import descendants, rss_kib  # noqa: E402

from train.data import LoaderConfig, TrainLoader  # noqa: E402
from train.shards import Dataset  # noqa: E402
from weakly.fixtures import build_fixture  # noqa: E402


def tree_rss_kib() -> int:
    return rss_kib(os.getpid()) + sum(rss_kib(p) for p in descendants(os.getpid()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--warmup", type=int, default=50_000)
    ap.add_argument("--every", type=int, default=50_000)
    ap.add_argument("--dataset-samples", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_fixture(tmp, samples=args.dataset_samples, max_shard=200, classes=100,
                      min_side=32, max_side=48, seed=0)  # fmt: skip
        ds = Dataset(tmp)
        cfg = LoaderConfig(batch_size=256, image_size=32, workers=2, shuffle_buffer=1000)
        loader = TrainLoader(ds, cfg)
        seen, next_mark, base, readings = 0, args.warmup, None, []
        start = time.perf_counter()
        for batch in loader:
            seen += len(batch["keys"])
            if seen >= next_mark:
                rss = tree_rss_kib()
                base = base or rss
                readings.append((seen, rss))
                print(f"{seen:>10,} samples  RSS {rss / 1024:>7.1f} MiB  x{rss / base:.3f}")
                next_mark += args.every
            if seen >= args.samples:
                break
        seconds = time.perf_counter() - start
    last, peak = readings[-1][1], max(r for _, r in readings)
    print(
        f"{seen:,} samples in {seconds:.0f} s ({seen / seconds:,.0f}/s); RSS after warm-up "
        f"{base / 1024:.1f} MiB, last x{last / base:.3f}, max x{peak / base:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
