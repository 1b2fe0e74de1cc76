"""Labelled images for the linear probe: an ImageFolder tree (`ROOT/<class>/<image>`) or the
shards of a `weakly` dataset whose sample json carries a class field.

Both become a list of `LabelledImage` whose bytes are read lazily, plus a fingerprint that
changes whenever the images could have (paths, sizes and mtimes; shard checksums) so cached
features are never reused for other pixels. Problems are collected, not raised, where the probe
can go on: empty class folders, samples without a class. Fewer than two usable classes is an
error: a probe over one class measures nothing.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from weakly_base.shard_format import DATASET_JSON
from weakly_base.tar_reader import TarError

from .shards import Dataset, iter_tar_records

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class LabelledImage:
    key: str  # a stable id: relative path, or the sample key
    label: int
    read: Callable[[], bytes]


@dataclass
class LabelledSet:
    items: list[LabelledImage]
    classes: list[str]
    fingerprint: str
    source: str
    notes: dict[str, list[str]] = field(default_factory=dict)  # what was left out, and why


def _read_file(path: Path) -> Callable[[], bytes]:
    return lambda: path.read_bytes()


def _check_classes(source: str, counts: dict[str, int]) -> None:
    usable = [c for c, n in counts.items() if n > 0]
    if len(usable) < 2:
        raise ValueError(
            f"{source}: {len(usable)} class(es) with images ({', '.join(usable) or 'none'}); "
            "a linear probe needs at least two"
        )


def image_folder(root: str | Path) -> LabelledSet:
    """`ROOT/<class>/<...>/<image>`: class names are the first-level folders, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder (expected ROOT/<class>/<image>)")
    notes: dict[str, list[str]] = {"empty_classes": [], "not_images": [], "outside_classes": []}
    per_class: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            files = sorted(p for p in entry.rglob("*") if p.is_file())
            images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            notes["not_images"] += [str(p.relative_to(root)) for p in files if p not in images]
            if images:
                per_class[entry.name] = images
            else:
                notes["empty_classes"].append(entry.name)
        elif entry.is_file():
            notes["outside_classes"].append(entry.name)
    _check_classes(
        str(root),
        {**{c: 0 for c in notes["empty_classes"]}, **{c: len(v) for c, v in per_class.items()}},
    )
    classes = sorted(per_class)
    items, h = [], hashlib.sha256(b"imagefolder-v1")
    for label, name in enumerate(classes):
        for path in per_class[name]:
            rel = str(path.relative_to(root))
            st = path.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            items.append(LabelledImage(rel, label, _read_file(path)))
    return LabelledSet(items, classes, h.hexdigest(), str(root), notes)


def field_value(meta: dict, name: str):
    """`meta[name]`, where a dotted name reaches into nested objects (ingest's
    `--extra-columns class` lands at `extra.class`)."""
    value = meta
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def shard_classes(url: str, split: str, class_field: str) -> LabelledSet:
    """Samples of one split whose json has `class_field` (a name or an integer id)."""
    dataset = Dataset(url, split)
    raw: list[tuple[str, str, bytes]] = []
    missing: list[str] = []
    unreadable: list[str] = []
    for shard, file in enumerate(dataset.shards.files):
        seen: set[str] = set()
        try:  # a missing or broken shard costs its own samples (from the break on), not the run
            with dataset.open_shard(file) as f:
                for key, jpg, meta in iter_tar_records(f):
                    seen.add(key)
                    value = field_value(meta, class_field)
                    if value is None or isinstance(value, (list, dict)):
                        missing.append(key)
                    else:
                        raw.append((key, str(value), jpg))
        except (OSError, TarError) as exc:
            lost = [r.key for r in dataset.index_rows(shard) if r.key not in seen]
            unreadable += lost
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(
                f"weakly probe: {url}/{file}: {reason}; its {len(lost)} unread samples are left out",
                file=sys.stderr,
            )
    counts: dict[str, int] = {}
    for _, name, _ in raw:
        counts[name] = counts.get(name, 0) + 1
    _check_classes(f"{url} split {split} field {class_field!r}", counts)
    classes = sorted(counts, key=lambda c: (len(c), c) if c.isdigit() else (1 << 30, c))
    index = {c: i for i, c in enumerate(classes)}
    h = hashlib.sha256(f"shards-v1\0{split}\0{class_field}".encode())
    for file, digest in zip(dataset.shards.files, dataset.shards.sha256 or (), strict=False):
        h.update(f"{file}\0{digest}\n".encode())
    for key in unreadable:  # a repaired shard must not reuse features cached without its samples
        h.update(f"unread\0{key}\n".encode())
    items = [LabelledImage(k, index[c], (lambda b=b: b)) for k, c, b in raw]
    notes = {f"no_{class_field}_field": missing, "in_unreadable_shards": unreadable}
    return LabelledSet(items, classes, h.hexdigest(), f"{url} ({split})", notes)


def load_labelled(source: str, split: str, class_field: str) -> LabelledSet:
    """A weakly dataset (has dataset.json) or an ImageFolder tree."""
    if (Path(source) / DATASET_JSON).is_file() or "://" in source:
        return shard_classes(source, split, class_field)
    return image_folder(source)


def describe_notes(notes: dict[str, list[str]]) -> list[str]:
    """One console line per kind of thing left out, with a few examples."""
    return [
        f"{what.replace('_', ' ')}: {len(items)} (e.g. {', '.join(items[:3])})"
        for what, items in notes.items()
        if items
    ]
