"""`weakly probe`: transfer by linear probe, the papers' cheapest measure of a trunk.

Frozen features of the checkpoint's trunk (head removed) for a labelled set, cached on disk by
(checkpoint, weights used, image size, source fingerprint): probing again with another L2 grid
or split costs no forward passes. A multinomial logistic regression (train/logreg.py) is fitted
on the train part and scored top-1/top-5 on the test part. Unreadable images are skipped and
counted, never fatal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import sha256_file
from .eval_cli import pick_device
from .logreg import DEFAULT_GRID, fit, select_l2, top_k_accuracy
from .probe_data import LabelledSet, describe_notes, load_labelled
from .transfer import checkpoint_image_size, model_from_checkpoint, strip_head
from .transforms import DECODE_ERRORS, decode_center, normalize


@dataclass
class Features:
    x: np.ndarray  # [N, D] float32
    y: np.ndarray  # [N] int64
    keys: list[str]
    unreadable: list[str]


@torch.no_grad()
def extract(
    trunk: torch.nn.Module,
    data: LabelledSet,
    device: torch.device,
    image_size: int,
    batch_size: int = 64,
) -> Features:
    """Trunk features of every readable image, in `data.items` order."""
    trunk.eval()
    feats, ys, keys, unreadable, batch, batch_meta = [], [], [], [], [], []

    def flush() -> None:
        if batch:
            x = normalize(torch.from_numpy(np.stack(batch)).to(device).permute(0, 3, 1, 2))
            feats.append(trunk(x).float().flatten(1).cpu().numpy())
            for key, label in batch_meta:
                keys.append(key)
                ys.append(label)
            batch.clear()
            batch_meta.clear()

    for item in data.items:
        try:
            batch.append(decode_center(item.read(), image_size))
        except (*DECODE_ERRORS, OSError):
            unreadable.append(item.key)
            continue
        batch_meta.append((item.key, item.label))
        if len(batch) == batch_size:
            flush()
    flush()
    dim = feats[0].shape[1] if feats else 0
    x = np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)
    return Features(x, np.asarray(ys, dtype=np.int64), keys, unreadable)


def cache_key(ckpt_digest: str, ema: bool, image_size: int, fingerprint: str) -> str:
    text = f"probe-features-v1\0{ckpt_digest}\0{ema}\0{image_size}\0{fingerprint}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_features(
    cache_dir: Path | None, key: str, compute, data: LabelledSet
) -> tuple[Features, bool]:
    """Features from `cache_dir/<key>.pt` when there, else computed and stored (atomically)."""
    path = cache_dir / f"{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved["classes"] == data.classes:
            return Features(
                saved["x"].numpy(), saved["y"].numpy(), saved["keys"], saved["unreadable"]
            ), True
    feats = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        torch.save(
            {
                "x": torch.from_numpy(feats.x),
                "y": torch.from_numpy(feats.y),
                "keys": feats.keys,
                "unreadable": feats.unreadable,
                "classes": data.classes,
            },
            tmp,
        )
        tmp.replace(path)
    return feats, False


def holdout_mask(keys: list[str], fraction: float, seed: int) -> np.ndarray:
    """True for test keys: a hash of (seed, key), so the split survives reordering."""
    out = []
    for key in keys:
        digest = hashlib.sha1(f"probe-split:{seed}:{key}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "big") / 2.0**64 < fraction)
    return np.asarray(out, dtype=bool)


def run_probe(args: argparse.Namespace) -> dict:
    if not 0.0 < args.test_fraction < 1.0:
        raise ValueError(f"--test-fraction {args.test_fraction}: use 0 < F < 1")
    device = pick_device(args.device)
    model, ckpt = model_from_checkpoint(args.checkpoint, args.model, args.ema)
    trunk, _ = strip_head(model)
    trunk = trunk.to(device)
    image_size = checkpoint_image_size(ckpt, args.checkpoint, args.image_size)
    digest = sha256_file(Path(args.checkpoint))
    cache_dir = None if args.no_cache else Path(args.cache or Path(args.out) / "features")

    def features_of(source: str, split: str) -> tuple[LabelledSet, Features, bool]:
        data = load_labelled(source, split, args.class_field)
        key = cache_key(digest, args.ema, image_size, data.fingerprint)
        feats, hit = cached_features(
            cache_dir, key, lambda: extract(trunk, data, device, image_size, args.batch_size), data
        )
        return data, feats, hit

    train_set, train_f, hit_train = features_of(args.train, args.train_split)
    notes = {f"train {k}": v for k, v in train_set.notes.items()}
    notes["train unreadable"] = train_f.unreadable
    if args.test:
        test_set, test_f, hit_test = features_of(args.test, args.test_split)
        if test_set.classes != train_set.classes:
            raise ValueError(
                f"--test {args.test}: classes {test_set.classes[:5]}... differ from --train's "
                f"{train_set.classes[:5]}...; both sets need the same class names"
            )
        notes.update({f"test {k}": v for k, v in test_set.notes.items()})
        notes["test unreadable"] = test_f.unreadable
        xtr, ytr, xte, yte = train_f.x, train_f.y, test_f.x, test_f.y
    else:
        hit_test = hit_train
        test = holdout_mask(train_f.keys, args.test_fraction, args.seed)
        xtr, ytr, xte, yte = train_f.x[~test], train_f.y[~test], train_f.x[test], train_f.y[test]
    if len(yte) == 0 or len(np.unique(ytr)) < 2:
        raise ValueError(
            f"probe needs test images and >= 2 classes in training ({len(ytr)} train images, "
            f"{len(np.unique(ytr))} classes, {len(yte)} test images)"
        )
    classes = len(train_set.classes)
    grid = [float(v) for v in args.l2_grid.split(",")] if args.l2_grid else list(DEFAULT_GRID)
    l2, grid_scores = select_l2(xtr, ytr, classes, grid, seed=args.seed)
    head = fit(xtr, ytr, classes, l2)
    logits = head.logits(xte)
    result = {
        "checkpoint": str(args.checkpoint),
        "classes": classes,
        "train_images": int(len(ytr)),
        "test_images": int(len(yte)),
        "feature_dim": int(xtr.shape[1]),
        "l2": l2,
        "l2_val_top1": {str(k): v for k, v in grid_scores.items()},
        "top1": top_k_accuracy(logits, yte, 1),
        "top5": top_k_accuracy(logits, yte, 5),
        "train_top1": top_k_accuracy(head.logits(xtr), ytr, 1),
        "skipped": {k: len(v) for k, v in notes.items() if v},
        "features_cached": bool(hit_train and hit_test),
    }
    for line in describe_notes(notes):
        print(f"weakly probe: skipped {line}", file=sys.stderr)
    return result


def main(args: argparse.Namespace) -> int:
    result = run_probe(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "probe.json").write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"linear probe: top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  "
        f"({result['train_images']} train / {result['test_images']} test images, "
        f"{result['classes']} classes, l2 {result['l2']:g})"
    )
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("probe", help="linear-probe transfer of a checkpoint's trunk")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--train", required=True, help="ImageFolder root or weakly dataset")
    p.add_argument("--test", help="same kinds; default: hold out --test-fraction of --train")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--train-split", default="train", help="split of a shard --train")
    p.add_argument("--test-split", default="val", help="split of a shard --test")
    p.add_argument("--class-field", default="class", help="sample json field of shard sets")
    p.add_argument("--out", required=True, help="folder for probe.json (and the feature cache)")
    p.add_argument("--cache", help="feature cache folder (default OUT/features)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--l2-grid", help="comma-separated L2 strengths (default 1e-5..1e-1)")
    p.add_argument("--model", help="refuse a checkpoint of any other architecture")
    p.add_argument("--image-size", type=int, help="default: the training run's")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--ema", action="store_true", help="probe the EMA weights")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=main)
