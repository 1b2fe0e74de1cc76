"""benchmarks/batch_mixing.py must keep running: a small in-process run (`main(argv)`), whose
exact parts are checked (epoch counts, no sample read and thrown away); its ratios are
benchmarks, not asserted."""

from __future__ import annotations

import re

import torch
from bench_tools import load_benchmark

torch.set_num_threads(1)


def test_batch_mixing_benchmark_runs_and_its_exact_parts_hold(capsys):
    argv = [
        "--samples", "300", "--classes", "30", "--shard-size", "40", "--batch", "16",
        "--batches", "5", "--read-batches", "3", "--read-samples", "120", "--epochs", "2",
        "--world", "2", "--workers", "2", "--open-shards", "4", "--buffer", "8",
    ]  # fmt: skip
    load_benchmark("batch_mixing").main(argv)
    out = capsys.readouterr().out
    assert re.search(r"shards per batch .* independent draws .*x \(goal >= 0.8\)", out)
    ok, total = map(int, re.search(r"epoch exactness: (\d+)/(\d+)", out).groups())
    assert ok == total == 2 * 300
    assert "wasted 0.0% of samples read" in out
