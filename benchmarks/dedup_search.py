"""Range search queries/s: weakly EvalIndex vs faiss IndexBinaryFlat, one thread each.

Random 64-bit eval hashes plus planted near-duplicate queries (1..radius+2 bits flipped).
faiss's range_search is strict (d < r), so it is called with r + 1; result sets are asserted
identical on the queries faiss runs. faiss scans every pair, so it runs on a subset of the
queries (--faiss-queries) and its rate is per query; weakly runs all queries.

    .venv/bin/python benchmarks/dedup_search.py                      # 1e5 and 1e6 eval, 2e5 queries
    .venv/bin/python benchmarks/dedup_search.py --queries 1000000    # the full 1e6 x 1e6 run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402

from pipeline.dedup import EvalIndex  # noqa: E402


def to_faiss(h: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(h.astype(">u8").view(np.uint8).reshape(-1, 8))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6])
    ap.add_argument("--radii", type=int, nargs="+", default=[8, 10])
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--faiss-queries", type=int, default=4000)
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    for size in map(int, args.sizes):
        db = rng.integers(0, 2**64, size, dtype=np.uint64, endpoint=False)
        n = len(db)
        index = EvalIndex(
            hashes=db,
            images=np.arange(n),
            variants=np.zeros(n, np.uint8),
            image_set=np.zeros(n, np.int32),
            image_ids=np.array([""] * 1),
            set_names=["bench"],
        )
        uniq = index.unique_hashes
        fx = faiss.IndexBinaryFlat(64)
        fx.add(to_faiss(uniq))
        for r in args.radii:
            q = rng.integers(0, 2**64, args.queries, dtype=np.uint64, endpoint=False)
            planted = args.queries // 10
            src = db[rng.integers(0, n, planted)]
            flips = rng.integers(0, 2, (planted, 64), dtype=np.uint64) & (
                rng.random((planted, 64)) < (r + 2) / 64
            ).astype(np.uint64)
            q[:planted] = src ^ (flips << np.arange(64, dtype=np.uint64)).sum(1, dtype=np.uint64)
            index.search_unique(q[:1000], r)  # build the multi-index outside the timing
            t = time.perf_counter()
            qi, ui, dist = index.search_unique(q, r)
            ours = args.queries / (time.perf_counter() - t)
            nf = min(args.faiss_queries, args.queries)
            t = time.perf_counter()
            lims, fd, fi = fx.range_search(to_faiss(q[:nf]), r + 1)
            theirs = nf / (time.perf_counter() - t)
            fq = np.repeat(np.arange(nf), np.diff(lims.astype(np.int64)))
            mine = set(zip(qi[qi < nf].tolist(), ui[qi < nf].tolist(), strict=True))
            assert mine == set(zip(fq.tolist(), fi.tolist(), strict=True)), "result sets differ"
            assert np.all(np.bitwise_count(q[qi] ^ uniq[ui]) == dist)
            print(
                f"eval {n:>9,d}  r={r:2d}  weakly {ours:9.0f} q/s ({args.queries:,} queries, "
                f"{len(qi):,} matches)  faiss Flat {theirs:8.0f} q/s ({nf:,} queries)  "
                f"ratio {ours / theirs:5.2f}x  identical results on the faiss queries"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
