"""Training throughput on real shards against synthetic in-memory batches, same device.

    python benchmarks/gpu_train.py                      # CUDA: resnet50 and vit_b_16, bf16
    python benchmarks/gpu_train.py --model resnet50 --compile both --decode both
    python benchmarks/gpu_train.py --model tiny --device cpu --batch-size 8 --steps 3 \
        --samples 64 --image-size 32 --workers 0        # CPU smoke check

`benchmarks/gpu_check.sh` is the one-command GPU check built on this script. Builds its own
shards (weakly/fixtures.py, 256-341 px photos) in a temporary folder, so it runs unchanged on
any machine with this repository installed. Per model (and per `--compile` setting) it reports
img/s with the real loader (GPU decode on CUDA by default, as the trainer does; `--decode both`
adds the CPU path with `--workers` processes) and with a batch that never leaves the device,
their ratio (goal >= 0.95), the data-wait fraction and peak GPU memory; once, the batched GPU
JPEG decode rate (alone, and with the crop-resize) against the CPU path's per-core rate.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time

import numpy as np
import torch

from train.data import LoaderConfig, TrainLoader, prepare_batch
from train.loss import get_loss
from train.models import build_model
from train.optim import param_groups
from train.shards import Dataset
from train.transforms import decode_crop_cpu, decode_crop_gpu, normalize
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


def _gpu_batches(args, ds: Dataset) -> list[dict]:
    cfg = LoaderConfig(batch_size=args.batch_size, workers=0, shuffle_buffer=64, decode="gpu")
    return list(itertools.islice(iter(TrainLoader(ds, cfg)), args.warmup + args.steps))


def bench_gpu_decode(args, device: torch.device, ds: Dataset) -> dict | None:
    """Batched nvjpeg decode (a list of byte tensors, one call), alone and with the crop-resize,
    img/s (None off CUDA)."""
    if device.type != "cuda":
        return None
    from torchvision.io import ImageReadMode, decode_jpeg

    batches = _gpu_batches(args, ds)
    out = {}
    for name, fn in (
        ("decode", lambda b: decode_jpeg(b["jpgs"], mode=ImageReadMode.RGB, device=device)),
        ("decode_crop", lambda b: decode_crop_gpu(b["jpgs"], b["params"], args.image_size, device)),
    ):
        for b in batches[: args.warmup]:
            fn(b)
        _sync(device)
        t = time.perf_counter()
        for b in batches[args.warmup :]:
            fn(b)
        _sync(device)
        out[name] = args.steps * args.batch_size / (time.perf_counter() - t)
    return out


def bench_cpu_decode(args, ds: Dataset) -> float:
    """The CPU path's transform (decode_crop_cpu) on one core, img/s, on the same bytes."""
    jpgs = [s.jpg for i in range(len(ds.shards.files)) for s in ds.read_shard(i)]
    jpgs = jpgs[: max(64, min(len(jpgs), 1000))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        for data in jpgs:
            decode_crop_cpu(data, rng, args.image_size)
        return len(jpgs) / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)


def _decodes(args, cuda: bool) -> list[str]:
    if args.decode == "both":
        return ["gpu", "cpu"] if cuda else ["cpu"]
    if args.decode == "auto":
        return ["gpu" if cuda else "cpu"]
    if args.decode == "gpu" and not cuda:
        raise SystemExit("--decode gpu needs CUDA")
    return [args.decode]


def bench_model(args, device: torch.device, ds: Dataset, name: str, compiled: bool) -> dict:
    cuda = device.type == "cuda"
    model = build_model(name, ds.num_classes).to(device)
    channels_last = cuda and name != "vit_b_16"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    net = torch.compile(model, backend=args.compile_backend) if compiled else model
    step = make_step(net, device, amp=cuda, channels_last=channels_last)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    step(*_first_batch(args, device, ds.num_classes))  # compiles here when compiled
    _sync(device)
    row: dict = {"first_step_s": time.perf_counter() - t}
    row["synthetic_img_s"] = bench_synthetic(step, args, device, ds.num_classes)
    for decode in _decodes(args, cuda):
        real, wait = bench_real(step, args, device, ds, decode)
        row[f"real_{decode}_decode_img_s"] = real
        row[f"ratio_{decode}_decode"] = real / row["synthetic_img_s"]
        row[f"data_wait_frac_{decode}_decode"] = wait
    first = _decodes(args, cuda)[0]
    row["real_img_s"], row["ratio"] = (
        row[f"real_{first}_decode_img_s"],
        row[f"ratio_{first}_decode"],
    )
    row["data_wait_frac"] = row[f"data_wait_frac_{first}_decode"]
    row["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return row


def _first_batch(args, device: torch.device, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    raw = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
    return normalize(raw), torch.randint(0, classes, (args.batch_size, 2), generator=g).to(device)


def _print_row(label: str, row: dict) -> None:
    reals = [
        f"real ({d} decode) {row[f'real_{d}_decode_img_s']:8.1f} img/s = "
        f"{row[f'ratio_{d}_decode']:.3f}x (data-wait {row[f'data_wait_frac_{d}_decode']:.0%})"
        for d in ("gpu", "cpu")
        if f"real_{d}_decode_img_s" in row
    ]
    mem = row["peak_gpu_mem_gib"]
    print(
        f"{label:>18}: synthetic {row['synthetic_img_s']:8.1f} img/s  {'  '.join(reals)}  "
        f"(goal >= 0.95x)  first step {row['first_step_s']:.1f} s"
        + (f"  peak GPU mem {mem:.1f} GiB" if mem is not None else "")
    )


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
    p.add_argument("--compile", choices=["off", "on", "both"], default="off")
    p.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend ('eager': smoke)"
    )
    p.add_argument(
        "--decode", choices=["auto", "cpu", "gpu", "both"], default="auto",
        help="loader decode for the real runs (auto: gpu on CUDA, as the trainer)",
    )  # fmt: skip
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device: {name}; torch {torch.__version__}; {os.cpu_count()} CPUs")
    results: dict = {"device": name, "decode": _decodes(args, cuda)[0], "models": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        build_fixture(
            tmp, samples=args.samples, classes=args.classes, min_side=256, max_side=341, seed=0
        )
        print(f"built {args.samples} samples in {time.perf_counter() - t:.1f} s")
        ds = Dataset(tmp)
        results["cpu_decode_img_s_per_core"] = bench_cpu_decode(args, ds)
        gpu = bench_gpu_decode(args, device, ds)
        results["gpu_decode_img_s"] = gpu["decode_crop"] if gpu else None
        results["gpu_decode_only_img_s"] = gpu["decode"] if gpu else None
        cpu_rate = results["cpu_decode_img_s_per_core"]
        line = f"CPU path (decode_crop_cpu, 1 core): {cpu_rate:.1f} img/s"
        if gpu:
            line += (
                f"; batched GPU decode_jpeg: {gpu['decode']:.1f} img/s, with crop-resize "
                f"{gpu['decode_crop']:.1f} img/s = {gpu['decode_crop'] / cpu_rate:.1f} CPU cores"
            )
        print(line)
        compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
        for model_name in args.model:
            for compiled in compiles:
                label = model_name + (" +compile" if compiled else "")
                row = bench_model(args, device, ds, model_name, compiled)
                results["models"][label.replace(" ", "")] = row
                _print_row(label, row)
                if cuda:
                    torch.cuda.empty_cache()
    results["total_s"] = time.perf_counter() - start
    print(f"total {results['total_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
