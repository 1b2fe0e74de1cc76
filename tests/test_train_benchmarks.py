"""benchmarks/gpu_train.py must keep running: a CPU smoke run with the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_train_benchmark_runs_on_cpu(tmp_path):
    out = tmp_path / "r.json"
    cmd = [
        sys.executable, "benchmarks/gpu_train.py", "--model", "tiny", "--device", "cpu",
        "--batch-size", "8", "--steps", "2", "--warmup", "1", "--samples", "48",
        "--image-size", "32", "--workers", "0", "--classes", "6", "--json", str(out),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("device: cpu")
    result = json.loads(out.read_text())
    row = result["models"]["tiny"]
    assert row["synthetic_img_s"] > 0 and row["real_img_s"] > 0
    assert 0 <= row["data_wait_frac"] <= 1 and result["gpu_decode_img_s"] is None
