"""Trainer benchmarks: loader throughput against a bare Pillow decode floor and against a
canonical `webdataset` pipeline, and the index-based 1/k softmax loss against a dense-target
cross-entropy at 17k and 28k classes.

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


def bench_webdataset(urls: list[str], image_size: int, n: int) -> float:
    """The canonical recipe: WebDataset -> shuffle(1000) -> decode("pil") -> torchvision
    RandomResizedCrop + flip + ToTensor, one process, on the same shard files."""
    import webdataset as wds
    from torchvision import transforms as T

    aug = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()])
    pipe = (
        wds.WebDataset(urls, resampled=True, shardshuffle=False)
        .shuffle(1000)
        .decode("pil")
        .map(lambda s: (aug(s["jpg"]), s["json"]["labels"]))
    )
    it = iter(pipe)
    for _ in range(64):  # fill part of the buffer outside the timing, as for the loader
        next(it)
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - t)


def compare_webdataset(args) -> None:
    """Loader vs webdataset vs bare decode on shards of 256-341 px photos (ingest's size)."""
    with tempfile.TemporaryDirectory() as tmp:
        build_fixture(
            tmp, samples=args.samples, max_shard=64, min_side=256, max_side=341, classes=50, seed=0
        )
        ds = Dataset(tmp)
        jpgs = [s.jpg for i in range(len(ds.shards.files)) for s in ds.read_shard(i)]
        urls = [f"{tmp}/{f}" for f in ds.shards.files]
        rows: dict[str, list[float]] = {"floor": [], "loader": [], "webdataset": []}
        for _ in range(args.repeats):
            rows["floor"].append(bench_floor(jpgs))
            rows["loader"].append(bench_loader(ds, args.image_size, True, args.batches))
            rows["webdataset"].append(bench_webdataset(urls, args.image_size, args.batches * 32))
    best = {k: max(v) for k, v in rows.items()}
    print(
        f"JPEGs {len(jpgs)} (256-341 px a side), crop to {args.image_size} px, 1 thread, "
        f"one process, best of {args.repeats} (img/s per core)"
    )
    print(f"pillow full decode floor   {best['floor']:8.1f} img/s")
    print(
        f"loader, draft decode       {best['loader']:8.1f} img/s   "
        f"{best['loader'] / best['floor']:.2f}x floor (goal >= 0.85), "
        f"{best['loader'] / best['webdataset']:.2f}x webdataset (goal >= 1.5)"
    )
    print(
        f"webdataset + torchvision   {best['webdataset']:8.1f} img/s   "
        f"{best['webdataset'] / best['floor']:.2f}x floor"
    )


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
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--only-webdataset", action="store_true", help="just the 256 px webdataset comparison"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    compare_webdataset(args)
    if args.only_webdataset:
        return
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
