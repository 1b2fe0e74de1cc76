"""A small but real `weakly` dataset, written through the format's own primitives.

The trainer is tested against datasets written here rather than by the ingest job, so its tests
need neither Ray nor WordNet; both writers use weakly_base/shard_format.py, so the two cannot
drift apart. Images are real photographs (scikit-learn's and
scikit-image's bundled samples) cropped and resized so that no two samples are alike.

Fixtures are written in the current format version by default and in version 1 on request, so
the trainer is tested on both index layouts it must read.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from weakly_base import index_tables as tables
from weakly_base import shard_format as fmt

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


def _sample(
    rng: np.random.Generator,
    i: int,
    labels: list[int],
    weight: float,
    wnids: list[str],
    names: list[str],
    corrupt: bool,
    image=None,
    min_side: int = 40,
    max_side: int = 96,
) -> tuple[bytes, dict]:
    """One sample's JPEG bytes and sample json (docs/FORMAT.md), or undecodable bytes."""
    if corrupt:
        jpg, width, height = b"\xff\xd8\xff\xe0" + rng.bytes(200), 0, 0
    else:
        jpg = image(rng, labels) if image is not None else make_jpeg(rng, min_side, max_side)
        width, height = Image.open(io.BytesIO(jpg)).size
    meta = {
        "key": f"k{i:07d}",
        "labels": labels,
        "wnids": [wnids[j] for j in labels],
        "k": len(labels),
        "weight": weight,
        "phash": f"{int(rng.integers(0, 2**63)):016x}",
        "tags": [f"#{names[j]}" for j in labels],
        "width": width,
        "height": height,
        "source": f"fixture://{i}",
    }
    return jpg, meta


RARE_THRESHOLD, RARE_UPSAMPLE = 5, 4.0  # the fixture's own inv-sqrt law with rare upsampling


def _draw_labels(rng: np.random.Generator, samples: int, classes: int) -> list[list[int]]:
    """1-3 labels per image with Zipf-like popularity, so that weights really differ."""
    popularity = 1.0 / np.arange(1, classes + 1) ** 1.1
    popularity /= popularity.sum()
    return [
        sorted(set(rng.choice(classes, size=int(rng.integers(1, 4)), p=popularity).tolist()))
        for _ in range(samples)
    ]


def _weights(labels: list[list[int]], counts: np.ndarray) -> list[float]:
    weights = []
    for lab in labels:
        w = max(counts[j] ** -0.5 for j in lab)
        if min(counts[j] for j in lab) < RARE_THRESHOLD:
            w *= RARE_UPSAMPLE
        weights.append(float(w))
    return weights


def _write_shard(root: Path, split: str, bucket: int, n: int, records) -> tuple[dict, list]:
    """One shard, its stats marker, and its rows of the shards and samples tables."""
    name = fmt.shard_name(split, bucket, n)
    tar = fmt.shard_tar(records)
    data, keys = tar.data, tar.keys
    (root / fmt.SHARD_DIR / name).write_bytes(data)
    weights = [r.meta["weight"] for r in records]
    stats = fmt.shard_stats(name, data, len(keys), split, bucket, weights)
    (root / fmt.SHARD_DIR / fmt.stats_name(name)).write_text(json.dumps(stats))
    rel = f"{fmt.SHARD_DIR}/{name}"
    samples = [
        {"key": r.key, "split": split, "shard": rel, "labels": r.meta["labels"],
         "weight": r.meta["weight"], "phash": int(r.meta["phash"], 16), "offset": offset,
         "size": size}
        for r, offset, size in zip(
            sorted(records, key=lambda r: r.key), tar.offsets, tar.sizes, strict=True
        )
    ]  # fmt: skip
    return {**stats, "file": rel}, samples


def _dataset_json(wnids, names, counts, split, samples, shards, weights, version) -> dict:
    return {
        **fmt.dataset_header(version),
        "hash_version": "weakly-phash-v1",
        "vocabulary": {"name": "fixture", "wnids": wnids, "names": names, "counts": counts},
        "weighting": {
            "scheme": "inv-sqrt",
            "reduce": "max",
            "rare_threshold": RARE_THRESHOLD,
            "rare_upsample": RARE_UPSAMPLE,
        },
        "splits": {
            split: {
                "samples": samples,
                "shards": shards,
                "weight_sum": float(sum(weights)),
                "mean_shard_size": samples / shards,
            }
        },
        "totals": {"input_rows": samples, "written": samples, "rejected": 0},
        "eval_dedup": {"index": None, "radius": 10, "removed": 0},
    }


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
    format_version: int = fmt.FORMAT_VERSION,
    sample_ranges: bool = True,
) -> Path:
    """Write a complete dataset folder; returns its path.

    Weights follow an inv-sqrt law with rare-tag upsampling, samples are bucketed by weight
    (the format's buckets) and each bucket is cut into shards of at most `max_shard` samples,
    so shard sizes and weight sums are deliberately uneven. `corrupt` samples carry bytes that
    are not a decodable JPEG (their index rows are still written: the reader must cope).
    `image`, when given, draws each sample's JPEG from its labels (e.g. `colour_stripes_jpeg`);
    `extra_meta` adds fields to each sample json (e.g. a class for the linear probe).
    `format_version` 1 writes the version-1 index (one file per table) instead of parts; the
    same arguments give the same shards and rows either way. `sample_ranges=False` writes the
    samples index without its `offset` and `size` columns, as datasets written before them.
    """
    root = Path(root)
    (root / fmt.SHARD_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wnids = [f"n{9000000 + 37 * i:08d}" for i in range(classes)]
    names = [f"class{i}" for i in range(classes)]
    labels = _draw_labels(rng, samples, classes)
    counts = np.zeros(classes, dtype=np.int64)
    for lab in labels:
        counts[lab] += 1
    weights = _weights(labels, counts)
    corrupt_idx = (
        set(rng.choice(samples, size=corrupt, replace=False).tolist()) if corrupt else set()
    )
    buckets: dict[int, list[int]] = {}
    for i, w in enumerate(weights):
        buckets.setdefault(fmt.weight_bucket(w, max(weights)), []).append(i)

    shard_rows, sample_rows = [], []
    for bucket in sorted(buckets):
        members = buckets[bucket]
        for n_shard, start in enumerate(range(0, len(members), max_shard)):
            records = []
            for i in members[start : start + max_shard]:
                jpg, meta = _sample(
                    rng, i, labels[i], weights[i], wnids, names, i in corrupt_idx,
                    image, min_side, max_side,
                )  # fmt: skip
                if extra_meta is not None:
                    meta.update(extra_meta(labels[i]))
                records.append(fmt.ShardRecord(meta["key"], jpg, meta))
            shard_row, rows = _write_shard(root, split, bucket, n_shard, records)
            shard_rows.append(shard_row)
            sample_rows += rows

    for name, rows in (
        (tables.SHARDS, shard_rows),
        (tables.SAMPLES, sample_rows),
        (tables.REJECTS, []),
        (tables.EVAL_MATCHES, []),
    ):
        table = pa.Table.from_pylist(rows, schema=tables.SCHEMAS[name])
        write_index_table(root, name, table, format_version)
        if name == tables.SAMPLES and not sample_ranges:
            drop_index_columns(root, name, fmt.SAMPLES_RANGE_COLUMNS)
    (root / fmt.CONFIG_JSON).write_text(json.dumps({"fixture": True, "seed": seed}))
    dataset = _dataset_json(
        wnids, names, counts.tolist(), split, samples, len(shard_rows), weights, format_version
    )
    (root / fmt.DATASET_JSON).write_text(json.dumps(dataset, indent=1))
    return root


def _v2_parts(name: str, table: pa.Table) -> dict[str, pa.Table]:
    """A table cut into version-2 parts: samples one part per shard (sorted by key), shards one
    per weight bucket (sorted by file), the others one part (none when empty)."""
    if name == tables.SAMPLES:
        by, part_of, order = "shard", tables.samples_part, "key"
    elif name == tables.SHARDS:
        by, part_of, order = "bucket", tables.shards_part, "file"
    else:
        return {f"{tables.index_dir(name)}/fixture.parquet": table} if table.num_rows else {}
    return {
        part_of(value): table.filter(pc.equal(table[by], value)).sort_by(order)
        for value in sorted(set(table[by].to_pylist()))
    }


def drop_index_columns(root: str | os.PathLike, name: str, columns) -> None:
    """Rewrite every part (or the version-1 file) of one index table without `columns`: a
    dataset as written before those columns existed."""
    root = Path(root)
    folder, v1 = root / tables.index_dir(name), root / tables.v1_index_file(name)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    for path in [*files, *([v1] if v1.exists() else [])]:
        table = pq.read_table(path)
        pq.write_table(table.drop_columns([c for c in columns if c in table.column_names]), path)


def write_index_table(
    root: str | os.PathLike, name: str, table: pa.Table, format_version: int | None = None
) -> None:
    """Write (or replace) one index table of a local dataset in `format_version`'s layout; None
    means the version its dataset.json declares. Tests also use it to damage an index."""
    root = Path(root)
    if format_version is None:
        format_version = json.loads((root / fmt.DATASET_JSON).read_text())["format_version"]
    table = table.cast(tables.SCHEMAS[name])
    folder, v1 = root / tables.index_dir(name), root / tables.v1_index_file(name)
    v1.unlink(missing_ok=True)
    for old in folder.glob("*.parquet") if folder.is_dir() else ():
        old.unlink()
    if format_version == 1:
        v1.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, v1)
        return
    for rel, part in _v2_parts(name, table).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, root / rel)
