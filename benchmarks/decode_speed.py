"""CPU decode speed per core: the trainer's loader against a webdataset + torchvision pipeline
and against the bare decode, side by side in one process on the same shards.

    python benchmarks/decode_speed.py [--samples 300] [--image-size 224] [--repeats 3]
        [--sides 256-341 400-1000] [--json out.json]

Per range of image sides, a fixture dataset of real photos (weakly/fixtures.py) is written to a
temporary folder and every measure below runs on its bytes, one after the other, alternating,
best of `--repeats`, with one torch thread and no loader workers, timed in process CPU time (so
img/s is per core, and other jobs on the machine move it less):

- bare decode (the floor): the same JPEG bytes, already in memory, decoded at full size to
  RGB and nothing else: Pillow (`Image.open(...).load()`) and torchvision's libjpeg-turbo
  (`decode_jpeg`); the floor is the faster of the two.
- weakly transform: `train.transforms.decode_crop_cpu` over the in-memory bytes (header,
  random-resized-crop box, drafted decode, crop, antialiased resize, flip): the decode alone.
- weakly loader: `TrainLoader` (tar reading, weighted sampler, shuffle buffer, the transform,
  batching into one uint8 NHWC tensor), as training runs it with `--workers 0`.
- loader overhead: the same `TrainLoader` with `decode_crop_cpu` replaced by a stub that
  leaves the batch slot as it is (tar reading, sampler, shuffle buffer, per-sample draws,
  checks, batching: everything but the transform), printed as microseconds per sample beside
  the loader's time less the transform's.
- webdataset: `wds.WebDataset(urls).shuffle(1000).decode("pil")` then torchvision
  `RandomResizedCrop + RandomHorizontalFlip + ToTensor` on the same shard files.
- eval view: `train.transforms.decode_center` against Pillow decode + torchvision
  `Resize(size) + CenterCrop(size)`.

Goals (issue 16): loader >= 1.5x webdataset and >= 0.8x the floor.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from unittest import mock

import numpy as np
import torch
from PIL import Image

from train.data import LoaderConfig, TrainLoader
from train.shards import Dataset
from train.transforms import decode_center, decode_crop_cpu
from weakly.fixtures import build_fixture

warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision")


def rate(fn: Callable[[], int]) -> float:
    """Images per CPU-second of this process for one call of `fn` (which returns how many
    images it produced). Everything runs in this one single-threaded process, so on a quiet
    machine this is the wall-clock rate; on a shared one it is far less moved by other load."""
    t = time.process_time()
    n = fn()
    return n / (time.process_time() - t)


def floor_pillow(jpgs: list[bytes]) -> int:
    for data in jpgs:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    return len(jpgs)


def floor_torchvision(jpgs: list[bytes]) -> int:
    from torchvision.io import ImageReadMode, decode_jpeg

    for data in jpgs:
        decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    return len(jpgs)


def weakly_transform(jpgs: list[bytes], size: int) -> int:
    rng = np.random.default_rng(0)
    for data in jpgs:
        decode_crop_cpu(data, rng, size)
    return len(jpgs)


def weakly_loader(ds: Dataset, size: int, n: int, batch: int = 32) -> Callable[[], int]:
    """A started loader (shuffle buffer filled outside the timing) and its timed part."""
    cfg = LoaderConfig(batch_size=batch, image_size=size, workers=0, shuffle_buffer=200)
    it = iter(TrainLoader(ds, cfg))
    next(it)
    return lambda: sum(len(b["keys"]) for b in itertools.islice(it, max(1, n // batch)))


def _no_decode(jpg, rng, size, draft=True, out=None):
    """Stands in for the transform: no decode, the slot left as it is."""
    return out if out is not None else np.zeros((size, size, 3), np.uint8)


def loader_without_decode(ds: Dataset, size: int, n: int) -> Callable[[], int]:
    """The loader with the transform taken out: what is left is its own work per sample."""
    import train.data

    with mock.patch.object(train.data, "decode_crop_cpu", _no_decode):
        run = weakly_loader(ds, size, 4 * n)  # cheap per sample: more of them

    def timed() -> int:
        with mock.patch.object(train.data, "decode_crop_cpu", _no_decode):
            return run()

    return timed


def webdataset_pipeline(urls: list[str], size: int, n: int) -> Callable[[], int]:
    """The canonical recipe, started (part of its buffer filled) outside the timing."""
    import webdataset as wds
    from torchvision import transforms as T

    aug = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor()])
    pipe = (
        wds.WebDataset(urls, resampled=True, shardshuffle=False)
        .shuffle(1000)
        .decode("pil")
        .map(lambda s: (aug(s["jpg"]), s["json"]["labels"]))
    )
    it = iter(pipe)
    for _ in range(64):
        next(it)

    def run() -> int:
        for _ in range(n):
            next(it)
        return n

    return run


def weakly_eval(jpgs: list[bytes], size: int) -> int:
    for data in jpgs:
        decode_center(data, size)
    return len(jpgs)


def torchvision_eval(jpgs: list[bytes], size: int) -> int:
    from torchvision import transforms as T

    view = T.Compose([T.Resize(size), T.CenterCrop(size), T.PILToTensor()])
    for data in jpgs:
        with Image.open(io.BytesIO(data)) as img:
            view(img.convert("RGB"))
    return len(jpgs)


def measure(sides: tuple[int, int], args) -> dict:
    size = args.image_size
    with tempfile.TemporaryDirectory() as tmp:
        build_fixture(
            tmp, samples=args.samples, max_shard=64, min_side=sides[0], max_side=sides[1],
            classes=50, seed=0,
        )  # fmt: skip
        ds = Dataset(tmp)
        jpgs = [s.jpg for i in range(len(ds.shards.files)) for s in ds.read_shard(i)]
        urls = [f"{tmp}/{f}" for f in ds.shards.files]
        n = len(jpgs)
        loader = weakly_loader(ds, size, n)
        wds_run = webdataset_pipeline(urls, size, n)
        runs = {
            "floor_pillow": lambda: floor_pillow(jpgs),
            "floor_torchvision": lambda: floor_torchvision(jpgs),
            "transform": lambda: weakly_transform(jpgs, size),
            "loader": loader,
            "loader_no_decode": loader_without_decode(ds, size, n),
            "webdataset": wds_run,
            "eval_weakly": lambda: weakly_eval(jpgs, size),
            "eval_torchvision": lambda: torchvision_eval(jpgs, size),
        }
        best = dict.fromkeys(runs, 0.0)
        for _ in range(args.repeats):
            for name, fn in runs.items():
                best[name] = max(best[name], rate(fn))
    best["floor"] = max(best["floor_pillow"], best["floor_torchvision"])
    return {"sides": list(sides), "images": n, "image_size": size, "img_s": best}


def report(row: dict) -> None:
    r = row["img_s"]
    lo, hi = row["sides"]
    print(
        f"{row['images']} JPEGs of real photos, {lo}-{hi} px a side -> {row['image_size']} px; "
        f"one process, 1 thread, 0 workers (img/s per core), best of the repeats"
    )
    lines = [
        ("bare decode, Pillow load()", "floor_pillow", ""),
        ("bare decode, torchvision decode_jpeg", "floor_torchvision", ""),
        ("weakly transform (decode_crop_cpu)", "transform", ""),
        ("weakly loader (tar+sampler+transform)", "loader", "goal >= 0.8x floor"),
        ("webdataset + torchvision RRC+flip", "webdataset", ""),
        ("eval view: weakly decode_center", "eval_weakly", ""),
        ("eval view: Pillow + Resize+CenterCrop", "eval_torchvision", ""),
    ]
    for label, key, goal in lines:
        print(f"  {label:40s} {r[key]:8.1f} img/s  {r[key] / r['floor']:5.2f}x floor  {goal}")
    overhead = 1e6 / r["loader_no_decode"]
    gap = 1e6 / r["loader"] - 1e6 / r["transform"]
    print(
        f"  loader's own work per sample: {overhead:6.1f} us with the transform stubbed out; "
        f"{gap:6.1f} us loader less transform"
    )
    loader_vs_wds = r["loader"] / r["webdataset"]
    loader_vs_floor = r["loader"] / r["floor"]
    print(
        f"  loader / webdataset {loader_vs_wds:.2f}x (goal >= 1.5: "
        f"{'met' if loader_vs_wds >= 1.5 else 'not met'}); loader / floor {loader_vs_floor:.2f}x "
        f"(goal >= 0.8: {'met' if loader_vs_floor >= 0.8 else 'not met'}); eval view "
        f"{r['eval_weakly'] / r['eval_torchvision']:.2f}x torchvision's"
    )
    row["ratios"] = {
        "loader_vs_webdataset": loader_vs_wds,
        "loader_vs_floor": loader_vs_floor,
        "transform_vs_floor": r["transform"] / r["floor"],
        "loader_overhead_us": overhead,
        "loader_minus_transform_us": gap,
        "eval_vs_torchvision": r["eval_weakly"] / r["eval_torchvision"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--sides", nargs="+", default=["256-341", "400-1000"],
        help="ranges of image sides, one fixture each (256-341: what ingest writes)",
    )  # fmt: skip
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for spec in args.sides:
        lo, hi = (int(v) for v in spec.split("-"))
        row = measure((lo, hi), args)
        report(row)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
