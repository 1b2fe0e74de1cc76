"""`weakly eval`: hashtag metrics of a checkpoint on a split of a `weakly` dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .evaluate import check_vocabulary, evaluate
from .metrics import format_metrics
from .shards import Dataset
from .transfer import checkpoint_image_size, model_from_checkpoint


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def default_split(url: str) -> str:
    """`val` when ingest held one out, else `train` (said aloud: train metrics flatter)."""
    meta = Dataset(url, "train").meta
    val = meta.get("splits", {}).get("val") or {}
    if val.get("samples"):
        return "val"
    print(f"weakly eval: note: {url} has no val split; scoring the train split", file=sys.stderr)
    return "train"


def run_eval(args: argparse.Namespace) -> int:
    model, ckpt = model_from_checkpoint(args.checkpoint, args.model, args.ema)
    split = args.split or default_split(args.shards)
    dataset = Dataset(args.shards, split)
    check_vocabulary(list(ckpt["wnids"]), dataset, f"--checkpoint {args.checkpoint}")
    device = pick_device(args.device)
    image_size = checkpoint_image_size(ckpt, args.checkpoint, args.image_size)
    metrics = evaluate(
        model.to(device),
        dataset,
        device,
        image_size,
        args.batch_size,
        args.min_images,
        max_samples=args.max_samples,
    )
    metrics["checkpoint"] = str(args.checkpoint)
    metrics["step"] = int(ckpt.get("step", 0))
    print(f"{args.shards} split {split}: {metrics['corrupt_skipped']} corrupt images skipped")
    print(format_metrics(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1) + "\n")
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("eval", help="hashtag top-1/top-5 and mAP of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a training checkpoint (.pt)")
    p.add_argument("--shards", required=True, help="weakly dataset folder or fsspec URL")
    p.add_argument("--split", help="split to score (default: val if present, else train)")
    p.add_argument("--model", help="refuse a checkpoint of any other architecture")
    p.add_argument("--min-images", type=int, default=1, help="mAP over labels with >= M images")
    p.add_argument("--image-size", type=int, help="default: the training run's")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-samples", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--ema", action="store_true", help="score the EMA weights")
    p.add_argument("--json", help="also write the metrics here")
    p.set_defaults(func=run_eval)
