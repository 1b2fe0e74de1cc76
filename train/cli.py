"""Arguments of the trainer, shared by `python -m train`, `torchrun -m train` and `weakly train`.

A `--config` file (YAML, JSON or TOML, keys named like the flags) supplies values; a flag given on
the command line wins over the file. `--data`, `--model` and `--out` may come from either.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data", help="dataset folder or fsspec URL (docs/FORMAT.md)")
    p.add_argument("--split", default="train")
    p.add_argument("--model", help="tiny, resnet18, resnet50, resnext101_32x8d, ...")
    p.add_argument("--out", help="run folder: metrics.jsonl and checkpoints")
    p.add_argument("--config", help="YAML, JSON or TOML file of flag values (flags win)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--samples", type=int, help="samples seen in total, over all ranks")
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--resume", default="none", help="none, auto (latest valid) or a file")
    p.add_argument("--lr", type=float, default=0.1, help="per 256 images; scaled linearly")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--schedule", choices=["cosine", "step"], default="cosine")
    p.add_argument(
        "--halve-every", type=int, default=0, help="step schedule: steps per halving (0: 1/4 run)"
    )
    p.add_argument("--grad-clip", type=float, default=0.0, help="max gradient L2 norm (0: off)")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of weights, e.g. 0.9999")
    p.add_argument(
        "--skip-nonfinite", action="store_true", help="skip NaN/inf steps instead of stopping"
    )
    p.add_argument("--loss", choices=["softmax", "bce"], default="softmax")
    p.add_argument("--sampling", choices=["weighted", "natural"], default="weighted")
    p.add_argument("--shuffle-buffer", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="loader processes per rank (default: min(4, cores))",
    )
    p.add_argument("--decode", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--no-draft", dest="draft", action="store_false", help="full-scale decode")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (CUDA)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--keep-last", type=int, default=3, help="numbered checkpoints kept (0: all)")
    p.add_argument(
        "--stop-after-steps",
        type=int,
        help="checkpoint and exit 0 after this many steps of this invocation (preemption)",
    )
    p.add_argument("--verify-shards", action="store_true", help="check every shard's sha256")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN/tensorboard")
    p.add_argument(
        "--val-shards",
        help="dataset holding the validation split (default: --data, when it has a 'val' split)",
    )
    p.add_argument("--val-split", default="val", help="split evaluated (default val)")
    p.add_argument("--eval-every", type=int, default=0, help="steps between evals (0: end only)")
    p.add_argument("--eval-min-images", type=int, default=1, help="mAP over labels with >= M")
    p.add_argument("--eval-max-samples", type=int, help="evaluate on at most this many samples")
    p.add_argument("--no-eval", dest="eval", action="store_false", help="never evaluate")
    p.add_argument("--init", help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument(
        "--reset-head", action="store_true", help="with --init: new head for this vocabulary"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record-keys", action="store_true", help="write keys-rank{r}.jsonl")
    return p


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(
        argparse.ArgumentParser(
            prog="python -m train", description="Pretrain on weakly shards (one GPU or DDP)."
        )
    )


def _toml(text: str, path: Path) -> dict:
    """TOML through the standard library (Python 3.11+); no extra dependency for 3.10."""
    try:
        import tomllib
    except ImportError as exc:
        raise ValueError(f"{path}: TOML configs need Python 3.11 or newer") from exc
    return tomllib.loads(text)  # TOMLDecodeError is a ValueError: one-line error


_MINIMUM = {
    "steps": 1,
    "samples": 1,
    "batch_size": 1,
    "workers": 0,
    "log_every": 1,
    "ckpt_every": 1,
    "keep_last": 0,
    "stop_after_steps": 1,
    "image_size": 8,
    "eval_every": 0,
    "eval_min_images": 1,
    "eval_max_samples": 1,
}


def _defaults() -> dict:
    return vars(build_parser().parse_args([]))


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fold in `--config` and check that the run is fully specified."""
    if args.config:
        path = Path(args.config)
        text = path.read_text()
        try:
            if path.suffix == ".json":
                cfg = json.loads(text)
            elif path.suffix == ".toml":
                cfg = _toml(text, path)
            else:
                cfg = yaml.safe_load(text)  # plain data only: a `!!python/...` tag is an error
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"{path}: not a valid config file ({first})") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"{path}: expected a mapping of flag names to values")
        defaults = _defaults()
        for raw, value in cfg.items():
            key = str(raw).replace("-", "_")
            if key not in defaults or key == "config":
                raise ValueError(f"{path}: unknown setting {raw!r}")
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    for name in ("data", "model", "out"):
        if not getattr(args, name):
            raise ValueError(f"--{name} is required (on the command line or in --config)")
    if args.steps is None and args.samples is None:
        raise ValueError("give --steps or --samples")
    if args.steps is not None and args.samples is not None:
        raise ValueError("give --steps or --samples, not both")
    if args.reset_head and not args.init:
        raise ValueError("--reset-head needs --init CKPT")
    for name, low in _MINIMUM.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, not {value}")
    return args


def run(args: argparse.Namespace) -> int:
    from .loop import train

    train(resolve(args))
    return 0


def add_command(subparsers) -> None:
    """Register `weakly train` with the same arguments as `python -m train`."""
    p = subparsers.add_parser("train", help="pretrain a model on weakly shards")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, yaml.YAMLError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
