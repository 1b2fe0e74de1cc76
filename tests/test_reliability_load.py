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

from pipeline.parquet_io import put_parquet, read_row_group
from weakly_base.storage import Store

ROOT = Path(__file__).resolve().parents[1]


def test_chunk_tasks_read_only_their_rows(tmp_path):
    """A pass-2 task is sent (store, file, chunk) and reads one row group of the labelled part:
    its arguments and its reads do not grow with the file."""
    n = 200_000
    table = pa.table(
        {"key": [f"k{i}" for i in range(n)], "image": pa.array([b"x" * 200] * n, pa.binary())}
    )
    store = Store.at(tmp_path / "ds")
    put_parquet(store, "part.parquet", table, row_group_size=256)
    assert len(pickle.dumps((store, 0, 20))) < 1000
    pool = pa.default_memory_pool()
    before = pool.bytes_allocated()
    chunk = read_row_group(store, "part.parquet", 20)
    assert chunk.num_rows == 256 and chunk["key"][0].as_py() == "k5120"
    assert pool.bytes_allocated() - before < (n * 200) / 100  # not the 40 MB file


def test_write_bucket_holds_one_shard_not_the_bucket(tmp_path):
    """40 parts x 20 rows x 20 kB = 16 MB in one bucket; shards of 10. Arrow's peak allocation
    and Python's peak stay at a few shards' worth, in a fresh process so nothing else counts."""
    script = textwrap.dedent(
        f"""
        import json, os, sys, tracemalloc
        from pathlib import Path
        import numpy as np, pyarrow as pa
        sys.path.insert(0, {str(ROOT)!r})
        from pipeline.buckets import BUCKET_SCHEMA, write_bucket
        from pipeline.parquet_io import put_parquet
        from pipeline.work_layout import bucket_part
        from weakly_base.storage import Store
        store = Store.at({str(tmp_path)!r})
        rng = np.random.default_rng(0)
        for p in range(40):
            keys = [f"p{{p:02d}}r{{r:02d}}" for r in range(20)]
            table = pa.table({{
                "key": keys, "weight": [1.0] * 20,
                "meta": [json.dumps({{"key": k, "labels": [0], "weight": 1.0}}) for k in keys],
                "jpeg": [rng.bytes(20_000) for _ in keys],
                "labels": [[0]] * 20, "phash": pa.array([p] * 20, pa.uint64()),
            }}, schema=BUCKET_SCHEMA)
            put_parquet(store, bucket_part(3, 0, p), table)
        pool = pa.default_memory_pool()
        base = pool.max_memory()
        tracemalloc.start()
        totals = write_bucket(store, 3, 10)
        py_peak = tracemalloc.get_traced_memory()[1]
        print(json.dumps({{"arrow": pool.max_memory(), "python": py_peak, "totals": totals}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["totals"]["train"]["samples"] == 800
    assert result["totals"]["train"]["shards"] == 80
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
