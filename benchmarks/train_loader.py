"""Trainer benchmarks: loader throughput on large photos (400-1000 px) with and without the
drafted decode, against a bare Pillow decode floor, and the index-based 1/k softmax loss
against a dense-target cross-entropy at 17k and 28k classes. The per-core comparison with a
`webdataset` + torchvision pipeline is `benchmarks/decode_speed.py`.

    .venv/bin/python benchmarks/train_loader.py [--samples 300] [--image-size 224]

Both sides of each ratio are measured in this process, one after the other, on the same bytes.
"""

from __future__ import annotations

import argparse
import io
import itertools
import tempfile
import time

import torch
import torch.nn.functional as F
from PIL import Image

from train.data import LoaderConfig, TrainLoader
from train.loss import multilabel_softmax_loss
from train.shards import Dataset
from weakly.fixtures import build_fixture


def bench_loader(ds: Dataset, image_size: int, draft: bool, batches: int) -> float:
    cfg = LoaderConfig(
        batch_size=32, image_size=image_size, workers=0, shuffle_buffer=200, draft=draft
    )
    loader = iter(TrainLoader(ds, cfg))
    next(loader)  # fill the shuffle buffer outside the timing
    t = time.perf_counter()
    n = sum(len(b["keys"]) for b in itertools.islice(loader, batches))
    return n / (time.perf_counter() - t)


def bench_floor(jpgs: list[bytes], size: int | None = None) -> float:
    """Pillow alone on the same bytes: full decode, and optionally a plain resize to size."""
    t = time.perf_counter()
    for data in jpgs:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
            if size:
                rgb.resize((size, size), Image.BILINEAR)
    return len(jpgs) / (time.perf_counter() - t)


def bench_loss(classes: int, batch: int = 256, kmax: int = 3, reps: int = 10) -> dict:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, classes, generator=g, requires_grad=True)
    targets = torch.randint(0, classes, (batch, kmax), generator=g)
    targets[::2, 1:] = -1

    def ours():
        return multilabel_softmax_loss(logits, targets)

    def dense():
        t = torch.zeros(batch, classes + 1)
        t.scatter_(1, torch.where(targets >= 0, targets, classes), 1.0)
        t = t[:, :classes]
        return F.cross_entropy(logits, t / t.sum(1, keepdim=True))

    out = {}
    for name, fn in (("indices", ours), ("dense", dense)):
        fn().backward()
        t = time.perf_counter()
        for _ in range(reps):
            logits.grad = None
            fn().backward()
        out[name] = (time.perf_counter() - t) / reps * 1e3
    out["target_bytes_indices"] = targets.numel() * targets.element_size()
    out["target_bytes_dense"] = batch * classes * 4
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batches", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        build_fixture(
            tmp, samples=args.samples, max_shard=64, min_side=400, max_side=1000, classes=50, seed=0
        )
        ds = Dataset(tmp)
        jpgs = [s.jpg for i in range(len(ds.shards.files)) for s in ds.read_shard(i)]
        floor = bench_floor(jpgs)
        draft = bench_loader(ds, args.image_size, True, args.batches)
        full = bench_loader(ds, args.image_size, False, args.batches)
        floor = max(floor, bench_floor(jpgs))
        floor_resize = bench_floor(jpgs, args.image_size)
    print(
        f"JPEGs {len(jpgs)} (400-1000 px a side), crop to {args.image_size} px, 1 thread, 0 workers"
    )
    print(f"pillow full decode floor   {floor:8.1f} img/s")
    print(f"pillow decode + resize     {floor_resize:8.1f} img/s")
    print(f"loader, draft decode       {draft:8.1f} img/s   ratio {draft / floor:.2f}x floor")
    print(f"loader, full decode        {full:8.1f} img/s   ratio {full / floor:.2f}x floor")
    for classes in (17_000, 28_000):
        r = bench_loss(classes)
        print(
            f"loss fwd+bwd B=256 C={classes}: indices {r['indices']:.2f} ms, "
            f"dense target {r['dense']:.2f} ms ({r['dense'] / r['indices']:.2f}x); "
            f"target {r['target_bytes_indices']} B vs {r['target_bytes_dense'] / 2**20:.1f} MiB"
        )


if __name__ == "__main__":
    main()
