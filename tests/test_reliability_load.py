"""Memory per task does not grow with the job: a chunk task receives only its rows, and a
bucket's shard writer holds one shard at a time (benchmarks/load_*.py measure the full scale)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pyarrow as pa

from pipeline.pass2 import chunk_of

ROOT = Path(__file__).resolve().parents[1]


def test_chunk_tasks_carry_only_their_rows():
    n = 200_000
    table = pa.table(
        {"key": [f"k{i}" for i in range(n)], "image": pa.array([b"x" * 20] * n, pa.binary())}
    )
    whole = len(pickle.dumps(table))
    chunk = chunk_of(table, 5000, 256)
    assert chunk.num_rows == 256 and chunk["key"][0].as_py() == "k5000"
    assert len(pickle.dumps(chunk)) < whole / 100  # a slice would pickle all 200k rows
    assert chunk_of(table, n - 10, 256).num_rows == 10


def test_write_bucket_holds_one_shard_not_the_bucket(tmp_path):
    """40 parts x 20 rows x 20 kB = 16 MB in one bucket; shards of 10. Arrow's peak allocation
    and Python's peak stay at a few shards' worth, in a fresh process so nothing else counts."""
    script = textwrap.dedent(
        f"""
        import json, os, sys, tracemalloc
        from pathlib import Path
        import numpy as np, pyarrow as pa
        sys.path.insert(0, {str(ROOT)!r})
        from pipeline.buckets import write_bucket
        from pipeline.pass2 import BUCKET_COLUMNS, atomic_parquet, bucket_part
        root = Path({str(tmp_path)!r})
        rng = np.random.default_rng(0)
        parts = []
        for p in range(40):
            keys = [f"p{{p:02d}}r{{r:02d}}" for r in range(20)]
            table = pa.table({{
                "key": keys, "weight": [1.0] * 20,
                "meta": [json.dumps({{"key": k, "labels": [0], "weight": 1.0}}) for k in keys],
                "jpeg": [rng.bytes(20_000) for _ in keys],
            }})
            part = root / f"part-{{p:06d}}.parquet"
            atomic_parquet(table.select(BUCKET_COLUMNS), bucket_part(part, 3))
            parts.append(str(part))
        pool = pa.default_memory_pool()
        base = pool.max_memory()
        tracemalloc.start()
        stats = write_bucket(3, parts, str(root / "shards"), 10)
        py_peak = tracemalloc.get_traced_memory()[1]
        print(json.dumps({{"arrow": pool.max_memory(), "python": py_peak, "n": [s.stats["n"] for s in stats]}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == [10] * 80
    assert result["arrow"] < 4 << 20, result  # the whole bucket is 16 MB
    assert result["python"] < 4 << 20, result
    keys = []
    for tar in sorted((tmp_path / "shards").glob("*.tar")):
        stats = json.loads(tar.with_name(tar.name[:-4] + ".stats.json").read_text())
        assert stats["n"] == 10
        with tarfile.open(tar) as t:
            names = [m.name[:-4] for m in t.getmembers() if m.name.endswith(".jpg")]
        assert names == sorted(names)
        keys += names
    assert sorted(keys) == [f"p{p:02d}r{r:02d}" for p in range(40) for r in range(20)]
