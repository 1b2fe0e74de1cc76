"""Scoring a model on a split of a `weakly` dataset: every sample once, in index order, with a
deterministic resize + centre crop, so two evaluations of the same weights agree exactly.

Used by the trainer (every `--eval-every` steps and at the end, on rank 0) and by `weakly eval`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .metrics import hashtag_metrics
from .shards import Dataset
from .transforms import DECODE_ERRORS, decode_center, normalize


@dataclass
class Scored:
    """Model scores for a split: logits [N, C], each image's labels and key, corrupt skipped."""

    scores: np.ndarray
    labels: list[tuple[int, ...]]
    keys: list[str]
    corrupt: int


def iter_batches(
    dataset: Dataset, image_size: int, batch_size: int, max_samples: int | None = None
) -> Iterator[tuple[np.ndarray, list[tuple[int, ...]], list[str], int]]:
    """(images NHWC uint8, labels, keys, corrupt so far) over every shard in index order."""
    images, labels, keys, corrupt, seen = [], [], [], 0, 0
    for shard in range(len(dataset.shards.files)):
        if max_samples is not None and seen >= max_samples:
            break
        for sample in dataset.read_shard(shard):
            if max_samples is not None and seen >= max_samples:
                break
            seen += 1
            try:
                images.append(decode_center(sample.jpg, image_size))
            except DECODE_ERRORS:
                corrupt += 1
                continue
            labels.append(sample.labels)
            keys.append(sample.key)
            if len(images) == batch_size:
                yield np.stack(images), labels, keys, corrupt
                images, labels, keys = [], [], []
    if images:
        yield np.stack(images), labels, keys, corrupt
    elif corrupt:
        yield np.zeros((0, image_size, image_size, 3), np.uint8), [], [], corrupt


@torch.no_grad()
def score_split(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device,
    image_size: int,
    batch_size: int = 64,
    max_samples: int | None = None,
) -> Scored:
    """Logits of every decodable sample; the model is left in the mode it came in."""
    was_training = model.training
    model.eval()
    chunks, labels, keys, corrupt = [], [], [], 0
    try:
        for images, lab, k, bad in iter_batches(dataset, image_size, batch_size, max_samples):
            corrupt = bad
            if not len(lab):
                continue
            x = normalize(torch.from_numpy(images).to(device).permute(0, 3, 1, 2))
            chunks.append(model(x).float().cpu().numpy())
            labels += lab
            keys += k
    finally:
        model.train(was_training)
    classes = dataset.num_classes
    scores = np.concatenate(chunks) if chunks else np.zeros((0, classes), np.float32)
    return Scored(scores, labels, keys, corrupt)


def label_counts(dataset: Dataset) -> list[int]:
    """Images per label in the dataset's vocabulary (dataset.json), for head/torso/tail."""
    counts = dataset.meta["vocabulary"].get("counts")
    if not isinstance(counts, list) or len(counts) != dataset.num_classes:
        raise ValueError(f"{dataset.url}/dataset.json: vocabulary has no per-label counts")
    if not all(type(c) is int and c >= 0 for c in counts):
        raise ValueError(f"{dataset.url}/dataset.json: vocabulary counts are not all integers >= 0")
    return counts


def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device,
    image_size: int,
    batch_size: int = 64,
    min_images: int = 1,
    counts: list[int] | None = None,
    max_samples: int | None = None,
) -> dict:
    """Hashtag metrics of `model` on `dataset`'s split (train/metrics.py)."""
    scored = score_split(model, dataset, device, image_size, batch_size, max_samples)
    if not scored.labels:
        raise ValueError(
            f"{dataset.url}: split {dataset.split!r} has no decodable sample to evaluate"
            f" ({scored.corrupt} corrupt)"
        )
    out = hashtag_metrics(
        scored.scores, scored.labels, counts or label_counts(dataset), min_images=min_images
    )
    out["corrupt_skipped"] = scored.corrupt
    out["split"] = dataset.split
    return out


def check_vocabulary(wnids: list[str], dataset: Dataset, what: str) -> None:
    if list(wnids) != list(dataset.wnids):
        diff = next(
            (i for i, (a, b) in enumerate(zip(wnids, dataset.wnids, strict=False)) if a != b),
            min(len(wnids), len(dataset.wnids)),
        )
        raise ValueError(
            f"{what}: vocabulary of {len(wnids)} labels differs from {dataset.url}'s "
            f"{len(dataset.wnids)} (first difference at class {diff}); scores would be read "
            "against the wrong classes"
        )
