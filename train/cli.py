"""Arguments of the trainer, shared by `python -m train`, `torchrun -m train` and `weakly train`.

A `--config` file (YAML, JSON or TOML, keys named like the flags) supplies values; a flag given on
the command line wins over the file. `--data`, `--model` and `--out` may come from either.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from weakly_base.config import parse_with_config

from .config import CHOICES, DEFAULTS, TrainConfig


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data", help="dataset folder or fsspec URL (docs/FORMAT.md)")
    p.add_argument("--split")
    p.add_argument("--model", help="tiny, resnet18, resnet50, resnext101_32x8d, ...")
    p.add_argument("--out", help="run folder: metrics.jsonl and checkpoints")
    p.add_argument("--config", help="YAML, JSON or TOML file of flag values (flags win)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--samples", type=int, help="samples seen in total, over all ranks")
    length.add_argument(
        "--epochs",
        type=int,
        help="whole epochs: each image floor(w) or ceil(w) times per epoch (w its index weight)",
    )
    p.add_argument("--batch-size", type=int, help="per rank")
    p.add_argument("--device", choices=CHOICES["device"])
    p.add_argument("--resume", help="none, auto (latest valid) or a file")
    p.add_argument("--lr", type=float, help="per 256 images; scaled linearly")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--schedule", choices=CHOICES["schedule"])
    p.add_argument("--halve-every", type=int, help="step schedule: steps per halving (0: 1/4 run)")
    p.add_argument("--grad-clip", type=float, help="max gradient L2 norm (0: off)")
    p.add_argument("--ema", type=float, help="EMA decay of weights, e.g. 0.9999")
    p.add_argument(
        "--skip-nonfinite", action="store_true", help="skip NaN/inf steps instead of stopping"
    )
    p.add_argument("--loss", choices=CHOICES["loss"])
    p.add_argument("--sampling", choices=CHOICES["sampling"])
    p.add_argument("--shuffle-buffer", type=int, help="samples per loader stream shuffle buffer")
    p.add_argument(
        "--open-shards", type=int, help="shard visits each loader stream interleaves at once"
    )
    p.add_argument("--image-size", type=int)
    p.add_argument("--workers", type=int, help="loader processes per rank (default: min(4, cores))")
    p.add_argument("--decode", choices=CHOICES["decode"])
    p.add_argument(
        "--no-draft",
        dest="draft",
        action="store_false",
        help="CPU decode: JPEGs always at full scale (default: at 1/2-1/8 DCT scale while the "
        "crop keeps 2x the image size)",
    )
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (CUDA)")
    p.add_argument("--log-every", type=int)
    p.add_argument("--ckpt-every", type=int)
    p.add_argument("--keep-last", type=int, help="numbered checkpoints kept (0: all)")
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
    p.add_argument("--val-split", help="split evaluated (default val)")
    p.add_argument("--eval-every", type=int, help="steps between evals (0: end only)")
    p.add_argument("--eval-min-images", type=int, help="mAP over labels with >= M")
    p.add_argument("--eval-max-samples", type=int, help="evaluate on at most this many samples")
    p.add_argument("--no-eval", dest="eval", action="store_false", help="never evaluate")
    p.add_argument("--init", help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument(
        "--reset-head", action="store_true", help="with --init: new head for this vocabulary"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--record-keys", action="store_true", help="write keys-rank{r}.jsonl")
    # Every default comes from TrainConfig, whose fields are exactly these destinations.
    p.set_defaults(**{f.name: getattr(DEFAULTS, f.name) for f in fields(TrainConfig)})
    return p


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(
        argparse.ArgumentParser(
            prog="python -m train", description="Pretrain on weakly shards (one GPU or DDP)."
        )
    )


def run(args: argparse.Namespace) -> int:
    """Train with the parsed arguments (`--config` already folded in by the caller)."""
    from .loop import train

    train(TrainConfig.from_namespace(args).validated())
    return 0


def add_command(subparsers) -> None:
    """Register `weakly train` with the same arguments as `python -m train`."""
    p = subparsers.add_parser("train", help="pretrain a model on weakly shards")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    """`python -m train` and `torchrun -m train`: flags beat `--config`, which beats the
    defaults (weakly_base/config.py); a bad value or input is one line and exit code 2."""
    try:
        return run(parse_with_config(build_parser(), argv))
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
