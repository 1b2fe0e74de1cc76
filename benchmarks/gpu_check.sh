#!/usr/bin/env bash
# The trainer's GPU check (issue 16), one command, under 8 minutes on one GPU:
#
#   benchmarks/gpu_check.sh [results.json]
#
# Prints the batched GPU JPEG decode rate (torchvision decode_jpeg on a list of byte tensors,
# device='cuda', alone and with the crop-resize) against the CPU path's per-core rate; then
# ResNet-50 training img/s, bf16 autocast, channels_last, on synthetic on-device batches and on
# real shards through the trainer's loader (GPU decode, as the trainer defaults to on CUDA, and
# the CPU path with loader workers), their ratio (goal: real >= 0.95x synthetic), without and
# with torch.compile, and peak GPU memory. Nothing is downloaded: the shards are built on the
# fly from the photos bundled with scikit-learn / scikit-image (weakly/fixtures.py).
#
# Without CUDA (or with GPU_CHECK_SMOKE=1) it runs a CPU smoke mode instead: a tiny model, tiny
# images, a few steps, torch.compile with the 'eager' backend; its figures say nothing about
# speed, only that the script still works (tests/test_train_benchmarks.py runs it).
#
# Python: $PYTHON, else .venv/bin/python, else python3. Tunables for the GPU run: GPU_CHECK_BATCH
# (256), GPU_CHECK_STEPS (30), GPU_CHECK_SAMPLES (4000), GPU_CHECK_WORKERS (CPUs - 2, at most 14).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
JSON=(); if [ $# -ge 1 ]; then JSON=(--json "$1"); fi

if [ "${GPU_CHECK_SMOKE:-0}" != 1 ] && "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  cpus=$(nproc)
  workers="${GPU_CHECK_WORKERS:-$(( cpus > 16 ? 14 : (cpus > 2 ? cpus - 2 : 1) ))}"
  # timeout: the whole check stays under 8 minutes even if a compile or a loader stalls.
  exec timeout --signal=INT 470 "$PY" benchmarks/gpu_train.py --device cuda --model resnet50 \
    --batch-size "${GPU_CHECK_BATCH:-256}" --steps "${GPU_CHECK_STEPS:-30}" --warmup 5 \
    --samples "${GPU_CHECK_SAMPLES:-4000}" --workers "$workers" \
    --compile both --decode both "${JSON[@]}"
fi

echo "NO GPU FOUND (torch.cuda.is_available() is False, or GPU_CHECK_SMOKE=1): CPU smoke mode," \
  "tiny model and images, a few steps; these figures are not GPU measurements"
exec "$PY" benchmarks/gpu_train.py --device cpu --model tiny --batch-size 8 --steps 2 --warmup 1 \
  --samples 48 --image-size 32 --workers 0 --classes 6 --compile both --compile-backend eager \
  --decode both "${JSON[@]}"
