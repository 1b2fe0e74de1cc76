"""A small but real `weakly` dataset, written by the letter of docs/FORMAT.md.

The ingest job that writes shards is built elsewhere; the trainer is built and tested against the
format document instead, through this writer. Images are real photographs (scikit-learn's and
scikit-image's bundled samples) cropped and resized so that no two samples are alike.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

_POOL: list[np.ndarray] = []


def _photos() -> list[np.ndarray]:
    """Bundled sample photographs; no network is ever touched."""
    if _POOL:
        return _POOL
    try:
        from sklearn.datasets import load_sample_images

        _POOL.extend(load_sample_images().images)
    except ImportError:
        pass
    try:
        import skimage.data as skd

        for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
            _POOL.append(np.asarray(getattr(skd, name)()))
    except ImportError:
        pass
    if not _POOL:
        raise RuntimeError("fixtures need scikit-learn or scikit-image for sample photographs")
    return _POOL


def make_jpeg(rng: np.random.Generator, min_side: int = 40, max_side: int = 96) -> bytes:
    """A random crop of a real photo, resized and JPEG-encoded."""
    photos = _photos()
    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    ch = int(rng.integers(h // 3, h + 1))
    cw = int(rng.integers(w // 3, w + 1))
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    out_w = int(rng.integers(min_side, max_side + 1))
    out_h = int(rng.integers(min_side, max_side + 1))
    img = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((out_w, out_h))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(70, 95)))
    return buf.getvalue()


PALETTE = (
    (220, 30, 30),
    (30, 200, 40),
    (40, 60, 230),
    (235, 215, 30),
    (200, 40, 210),
    (30, 210, 220),
)


def colour_stripes_jpeg(rng: np.random.Generator, labels: list[int], side: int = 48) -> bytes:
    """A learnable image: one vertical stripe per label in that label's palette colour, plus
    noise. The label is visible in the pixels, so a model that learns must lower its loss."""
    img = np.zeros((side, side, 3), dtype=np.float32)
    edges = np.linspace(0, side, len(labels) + 1).astype(int)
    for j, label in enumerate(labels):
        img[:, edges[j] : edges[j + 1]] = PALETTE[label % len(PALETTE)]
    img += rng.normal(0, 20, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_fixture(
    root: str | os.PathLike,
    *,
    samples: int = 200,
    classes: int = 12,
    max_shard: int = 23,
    seed: int = 0,
    corrupt: int = 0,
    split: str = "train",
    min_side: int = 40,
    max_side: int = 96,
    image: Callable[[np.random.Generator, list[int]], bytes] | None = None,
    extra_meta: Callable[[list[int]], dict] | None = None,
) -> Path:
    """Write a complete dataset folder; returns its path.

    Weights follow the default inv-sqrt scheme with rare-tag upsampling, samples are bucketed by
    weight on a log scale and each bucket is cut into shards of at most `max_shard` samples, so
    shard sizes and weight sums are deliberately uneven. `corrupt` samples carry bytes that are
    not a decodable JPEG (their index rows are still written: the reader must cope). `image`,
    when given, draws each sample's JPEG from its labels (e.g. `colour_stripes_jpeg`);
    `extra_meta` adds fields to each sample json (e.g. a class for the linear probe).
    """
    root = Path(root)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    (root / "index").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wnids = [f"n{9000000 + 37 * i:08d}" for i in range(classes)]
    names = [f"class{i}" for i in range(classes)]
    # Zipf-like label popularity so that weights really differ.
    popularity = 1.0 / np.arange(1, classes + 1) ** 1.1
    popularity /= popularity.sum()
    labels: list[list[int]] = []
    for _ in range(samples):
        k = int(rng.integers(1, 4))
        labels.append(sorted(set(rng.choice(classes, size=k, p=popularity).tolist())))
    counts = np.zeros(classes, dtype=np.int64)
    for lab in labels:
        counts[lab] += 1
    rare_threshold, upsample = 5, 4.0
    weights = []
    for lab in labels:
        w = max(counts[j] ** -0.5 for j in lab)
        if min(counts[j] for j in lab) < rare_threshold:
            w *= upsample
        weights.append(float(w))
    corrupt_idx = (
        set(rng.choice(samples, size=corrupt, replace=False).tolist()) if corrupt else set()
    )

    buckets: dict[int, list[int]] = {}
    for i, w in enumerate(weights):
        buckets.setdefault(int(np.clip(math.floor(-2 * math.log2(w)), 0, 99)), []).append(i)

    shard_rows, sample_rows = [], []
    for bucket in sorted(buckets):
        members = buckets[bucket]
        for n_shard, start in enumerate(range(0, len(members), max_shard)):
            chunk = members[start : start + max_shard]
            rel = f"shards/{split}-{bucket:02d}-{n_shard:06d}.tar"
            keys = sorted(f"k{i:07d}" for i in chunk)
            tmp = root / (rel + ".tmp")
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for key in keys:
                    i = int(key[1:])
                    if i in corrupt_idx:
                        jpg = b"\xff\xd8\xff\xe0" + rng.bytes(200)
                        width = height = 0
                    else:
                        jpg = (
                            image(rng, labels[i])
                            if image is not None
                            else make_jpeg(rng, min_side=min_side, max_side=max_side)
                        )
                        width, height = Image.open(io.BytesIO(jpg)).size
                    meta = {
                        "key": key,
                        "labels": labels[i],
                        "wnids": [wnids[j] for j in labels[i]],
                        "k": len(labels[i]),
                        "weight": weights[i],
                        "phash": f"{int(rng.integers(0, 2**63)):016x}",
                        "tags": [f"#{names[j]}" for j in labels[i]],
                        "width": width,
                        "height": height,
                        "source": f"fixture://{i}",
                    }
                    if extra_meta is not None:
                        meta.update(extra_meta(labels[i]))
                    _add_member(tar, f"{key}.jpg", jpg)
                    _add_member(tar, f"{key}.json", json.dumps(meta).encode())
                    sample_rows.append(
                        (key, split, rel, labels[i], weights[i], int(meta["phash"], 16))
                    )
            data = tmp.read_bytes()
            os.replace(tmp, root / rel)
            w_chunk = [weights[int(k[1:])] for k in keys]
            row = {
                "file": rel,
                "split": split,
                "bucket": bucket,
                "n": len(keys),
                "weight_sum": float(sum(w_chunk)),
                "weight_max": float(max(w_chunk)),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            (root / rel.replace(".tar", ".stats.json")).write_text(json.dumps(row))
            shard_rows.append(row)

    shard_schema = pa.schema(
        [
            ("file", pa.string()),
            ("split", pa.string()),
            ("bucket", pa.int32()),
            ("n", pa.int64()),
            ("weight_sum", pa.float64()),
            ("weight_max", pa.float64()),
            ("bytes", pa.int64()),
            ("sha256", pa.string()),
        ]
    )
    pq.write_table(
        pa.Table.from_pylist(shard_rows, schema=shard_schema), root / "index/shards.parquet"
    )
    cols = list(zip(*sample_rows, strict=True))
    sample_table = pa.table(
        {
            "key": pa.array(cols[0], pa.string()),
            "split": pa.array(cols[1], pa.string()),
            "shard": pa.array(cols[2], pa.string()),
            "labels": pa.array(cols[3], pa.list_(pa.int32())),
            "weight": pa.array(cols[4], pa.float64()),
            "phash": pa.array(cols[5], pa.uint64()),
        }
    )
    pq.write_table(sample_table, root / "index/samples.parquet")
    pq.write_table(
        pa.table(
            {
                "source": pa.array([], pa.string()),
                "row": pa.array([], pa.int64()),
                "key": pa.array([], pa.string()),
                "reason": pa.array([], pa.string()),
                "detail": pa.array([], pa.string()),
            }
        ),
        root / "index/rejects.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "key": pa.array([], pa.string()),
                "eval_set": pa.array([], pa.string()),
                "eval_id": pa.array([], pa.string()),
                "distance": pa.array([], pa.int32()),
            }
        ),
        root / "index/eval_matches.parquet",
    )
    (root / "config.json").write_text(json.dumps({"fixture": True, "seed": seed}))
    dataset = {
        "format": "weakly-shards",
        "format_version": 1,
        "hash_version": "weakly-phash-v1",
        "vocabulary": {
            "name": "fixture",
            "wnids": wnids,
            "names": names,
            "counts": counts.tolist(),
        },
        "weighting": {
            "scheme": "inv-sqrt",
            "reduce": "max",
            "rare_threshold": rare_threshold,
            "rare_upsample": upsample,
        },
        "splits": {
            split: {
                "samples": samples,
                "shards": len(shard_rows),
                "weight_sum": float(sum(weights)),
                "mean_shard_size": samples / len(shard_rows),
            }
        },
        "totals": {"input_rows": samples, "written": samples, "rejected": 0},
        "eval_dedup": {"index": None, "radius": 10, "removed": 0},
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return root
