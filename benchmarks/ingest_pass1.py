"""Pass 1 (metadata only) throughput and memory: rows/s on one core and peak RSS.

Builds a parquet manifest of N rows (url + 1-5 hashtag-style tags drawn Zipf over WordNet
forms, 30% junk), then times, in this process: the floor (pyarrow read + `to_pylist`, the
least any Python pass over the rows costs), `pass1_file` (read + canonicalise + keys) and
`plan_labels` (duplicates, vocabulary, counts, weights, buckets).

    python benchmarks/ingest_pass1.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ingest import IngestConfig
from pipeline.label_plan import plan_labels
from pipeline.manifest import Columns
from pipeline.pass1 import pass1_file
from wordnet_tools import load_lexicon


def make_manifest(path: Path, rows: int, lexicon, seed: int = 0) -> None:
    rng = random.Random(seed)
    forms = sorted(set(lexicon._forms.column("lemma").to_pylist()))
    rng.shuffle(forms)
    words = ["#" + f.replace("_", "") for f in forms[:50_000]]
    junk = [f"#junk{i}" for i in range(20_000)]
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    picks = np.random.default_rng(seed).choice(len(words), rows * 3, p=p / p.sum())
    tags, k = [], 0
    for _ in range(rows):
        n = rng.randint(1, 5)
        row = [words[i] for i in picks[k : k + n]] if rng.random() > 0.3 else [rng.choice(junk)]
        k += n
        tags.append(row)
    urls = [f"https://example.invalid/img/{i}.jpg" for i in range(rows)]
    pq.write_table(pa.table({"url": urls, "tags": tags}), path)


def rss_mib() -> float:
    """Peak RSS since the last `reset_peak` (Linux VmHWM), else since the process started."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--vocab", default="top:8500")
    args = parser.parse_args()
    lexicon = load_lexicon("nouns")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.parquet"
        make_manifest(path, args.rows, lexicon)
        reset_peak()  # the manifest build above is not part of pass 1
        before = current_mib()
        # pass 1 first, so the peak RSS below is pass 1's and not the floor's Python rows
        start = time.perf_counter()
        rows = pass1_file(str(path), Columns(), lexicon)
        read_canon = time.perf_counter() - start
        start = time.perf_counter()
        plan = plan_labels(rows, IngestConfig(vocab=args.vocab), lexicon)
        planning = time.perf_counter() - start
        peak = rss_mib()
        live = int(plan.live.sum())
        del rows, plan
        start = time.perf_counter()
        pq.read_table(path).to_pylist()
        floor = time.perf_counter() - start
    n = args.rows
    print(f"{n:,} rows, {live:,} kept with labels in {args.vocab}")
    print(f"floor pyarrow read + to_pylist:      {n / floor:10,.0f} rows/s")
    print(
        f"pass1_file (read + canonicalise):    {n / read_canon:10,.0f} rows/s"
        f"  ratio to floor {floor / read_canon:.2f}"
    )
    print(f"plan_labels (dups, vocab, weights):  {n / planning:10,.0f} rows/s")
    total = read_canon + planning
    print(
        f"pass 1 total:                        {n / total:10,.0f} rows/s/core"
        f"  ratio to floor {floor / total:.2f}"
    )
    print(
        f"peak RSS during pass 1 {peak:,.0f} MiB, {before:,.0f} MiB before it (lexicon, "
        f"imports): {(peak - before) * 2**20 / n:,.0f} bytes/row above that"
    )


if __name__ == "__main__":
    main()
