"""Training throughput on real shards against synthetic in-memory batches, same device.

    python benchmarks/gpu_train.py                      # CUDA: resnet50 and vit_b_16, bf16
    python benchmarks/gpu_train.py --model tiny --device cpu --batch-size 8 --steps 3 \
        --samples 64 --image-size 32 --workers 0        # CPU smoke check

Builds its own shards (weakly/fixtures.py, 256-341 px photos) in a temporary folder, so it runs
unchanged on any machine with this repository installed. Per model it reports img/s with the
real loader (GPU decode on CUDA) and with a batch that never leaves the device, their ratio
(goal >= 0.95), the data-wait fraction, the batched GPU-decode rate and peak GPU memory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time

import torch

from train.data import LoaderConfig, TrainLoader, prepare_batch
from train.loss import get_loss
from train.models import build_model
from train.optim import param_groups
from train.shards import Dataset
from train.transforms import decode_crop_gpu, normalize
from weakly.fixtures import build_fixture


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: torch.nn.Module, device: torch.device, amp: bool, channels_last: bool):
    """One SGD step as the trainer takes it (Nesterov, grouped decay, bf16 autocast)."""
    optimizer = torch.optim.SGD(param_groups(model, 1e-4), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = get_loss("softmax")

    def step(images: torch.Tensor, targets: torch.Tensor) -> None:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images)
        loss = loss_fn(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_synthetic(step, args, device: torch.device, classes: int) -> float:
    """img/s with one uint8 batch that lives on the device: the loader-free ceiling."""
    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    raw = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
    targets = torch.randint(0, classes, (args.batch_size, 2), generator=g).to(device)
    for _ in range(args.warmup):
        step(normalize(raw), targets)
    _sync(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step(normalize(raw), targets)
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - t)


def bench_real(step, args, device: torch.device, ds: Dataset, decode: str) -> tuple[float, float]:
    """(img/s, data-wait fraction) with the trainer's loader on the real shards."""
    cfg = LoaderConfig(
        batch_size=args.batch_size,
        image_size=args.image_size,
        workers=args.workers,
        shuffle_buffer=min(1000, args.samples),
        decode=decode,
    )
    batches = iter(TrainLoader(ds, cfg, pin_memory=device.type == "cuda"))
    for batch in itertools.islice(batches, args.warmup):
        step(*prepare_batch(batch, device, args.image_size)[:2])
    _sync(device)
    wait, n = 0.0, 0
    t = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        images, targets, _ = prepare_batch(next(batches), device, args.image_size)
        wait += time.perf_counter() - t0
        step(images, targets)
        n += len(targets)
    _sync(device)
    elapsed = time.perf_counter() - t
    return n / elapsed, wait / elapsed


def bench_gpu_decode(args, device: torch.device, ds: Dataset) -> float | None:
    """Batched nvjpeg decode + crop alone, img/s (None off CUDA)."""
    if device.type != "cuda":
        return None
    cfg = LoaderConfig(batch_size=args.batch_size, workers=0, shuffle_buffer=64, decode="gpu")
    batches = list(itertools.islice(iter(TrainLoader(ds, cfg)), args.warmup + args.steps))
    for b in batches[: args.warmup]:
        decode_crop_gpu(b["jpgs"], b["params"], args.image_size, device)
    _sync(device)
    t = time.perf_counter()
    for b in batches[args.warmup :]:
        decode_crop_gpu(b["jpgs"], b["params"], args.image_size, device)
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", default=["resnet50", "vit_b_16"])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--samples", type=int, default=3000, help="fixture size")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    decode = "gpu" if cuda else "cpu"
    results: dict = {"device": name, "decode": decode, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        build_fixture(
            tmp, samples=args.samples, classes=args.classes, min_side=256, max_side=341, seed=0
        )
        print(f"built {args.samples} samples in {time.perf_counter() - t:.1f} s")
        ds = Dataset(tmp)
        results["gpu_decode_img_s"] = bench_gpu_decode(args, device, ds)
        for model_name in args.model:
            model = build_model(model_name, ds.num_classes).to(device)
            channels_last = cuda and model_name != "vit_b_16"
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            model.train()
            step = make_step(model, device, amp=cuda, channels_last=channels_last)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            synthetic = bench_synthetic(step, args, device, ds.num_classes)
            real, wait = bench_real(step, args, device, ds, decode)
            row = {
                "synthetic_img_s": synthetic,
                "real_img_s": real,
                "ratio": real / synthetic,
                "data_wait_frac": wait,
                "peak_gpu_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30
                if cuda
                else None,
            }
            results["models"][model_name] = row
            print(
                f"{model_name:>10}: synthetic {synthetic:8.1f} img/s  real {real:8.1f} img/s  "
                f"ratio {real / synthetic:.3f} (goal >= 0.95)  data-wait {wait:.1%}"
                + (f"  peak mem {row['peak_gpu_mem_gib']:.1f} GiB" if cuda else "")
            )
            del model, step
            if cuda:
                torch.cuda.empty_cache()
    if results["gpu_decode_img_s"] is not None:
        print(f"batched GPU decode + crop: {results['gpu_decode_img_s']:.1f} img/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
