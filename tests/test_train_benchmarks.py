"""benchmarks/gpu_train.py must keep running: a CPU smoke run with the tiny model, called
in-process through the script's own `main(argv)` (what `python benchmarks/gpu_train.py` runs)."""

from __future__ import annotations

import json

import torch
from bench_tools import load_benchmark

torch.set_num_threads(1)


def test_gpu_train_benchmark_runs_on_cpu(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = [
        "--model", "tiny", "--device", "cpu",
        "--batch-size", "8", "--steps", "2", "--warmup", "1", "--samples", "48",
        "--image-size", "32", "--workers", "0", "--classes", "6", "--json", str(out),
    ]  # fmt: skip
    returned = load_benchmark("gpu_train").main(argv)
    assert capsys.readouterr().out.startswith("device: cpu")
    result = json.loads(out.read_text())
    row = result["models"]["tiny"]
    assert row["synthetic_img_s"] > 0 and row["real_img_s"] > 0
    assert 0 <= row["data_wait_frac"] <= 1 and result["gpu_decode_img_s"] is None
    assert returned == result
