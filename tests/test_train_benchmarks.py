"""The trainer's benchmarks must keep running: `benchmarks/gpu_check.sh` in its CPU smoke mode
(which runs benchmarks/gpu_train.py, eager and torch.compile'd, CPU-decoded real batches), and
benchmarks/decode_speed.py at a tiny size, called in-process through its own `main(argv)`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from bench_tools import BENCHMARKS, load_benchmark

torch.set_num_threads(1)


def test_gpu_check_smoke_mode_runs_and_says_no_gpu(tmp_path):
    out = tmp_path / "r.json"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_SMOKE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("NO GPU FOUND"), proc.stdout[:500]
    assert "device: cpu" in proc.stdout and "CPU path (decode_crop_cpu, 1 core)" in proc.stdout
    result = json.loads(Path(out).read_text())
    assert set(result["models"]) == {"tiny", "tiny+compile"}
    for row in result["models"].values():
        assert row["synthetic_img_s"] > 0 and row["real_cpu_decode_img_s"] > 0
        assert 0 <= row["data_wait_frac"] <= 1 and row["peak_gpu_mem_gib"] is None
    assert result["gpu_decode_img_s"] is None and result["cpu_decode_img_s_per_core"] > 0


def test_decode_speed_benchmark_runs(capsys):
    argv = ["--samples", "40", "--repeats", "1", "--sides", "64-96", "--image-size", "32"]
    rows = load_benchmark("decode_speed").main(argv)
    out = capsys.readouterr().out
    assert "loader / webdataset" in out and "goal >= 0.8" in out
    assert "loader's own work per sample" in out
    (row,) = rows
    assert row["images"] == 40 and row["sides"] == [64, 96]
    assert row["ratios"]["loader_overhead_us"] > 0
    assert all(v > 0 for v in row["img_s"].values())
    assert row["img_s"]["floor"] == max(
        row["img_s"]["floor_pillow"], row["img_s"]["floor_torchvision"]
    )
