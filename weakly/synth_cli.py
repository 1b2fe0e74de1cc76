"""`weakly synth`: a synthetic manifest of real photos with hashtag-style tags (demo and test
data, not part of the data pipeline)."""

from __future__ import annotations

import argparse

from .synth import synth
from .synth_learnable import learnable_synth


def _run_synth(args: argparse.Namespace) -> int:
    if args.learnable:
        if args.eval_out:
            raise ValueError("--eval-out plants photo near-copies; it does not go with --learnable")
        manifest = learnable_synth(
            args.n,
            args.out,
            classes=args.classes,
            zipf=args.zipf,
            second_tag=args.second_tag,
            size=args.size,
            seed=args.seed,
            vocab=args.vocab,
        )
        print(f"{manifest}: {args.n} learnable images over {args.classes} synsets")
        return 0
    result = synth(
        args.n,
        args.out,
        args.eval_out,
        seed=args.seed,
        vocab=args.vocab,
        min_px=args.min_px,
        max_px=args.max_px,
        eval_images=args.eval_images,
        planted_fraction=args.planted_fraction,
    )
    print(f"{result.manifest}: {result.images} images, {result.planted} planted near-copies")
    if args.eval_out:
        print(f"{args.eval_out}: {result.eval_images} eval images")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser("synth", help="synthetic manifest of real-looking photos with tags")
    s.add_argument("--n", type=int, required=True, help="number of training images")
    s.add_argument("--out", required=True)
    s.add_argument("--eval-out", help="also write an eval set here and plant near-copies of it")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--vocab", default="in1k")
    s.add_argument("--min-px", type=int, default=300)
    s.add_argument("--max-px", type=int, default=2000)
    s.add_argument("--eval-images", type=int, default=20)
    s.add_argument("--planted-fraction", type=float, default=0.05)
    s.add_argument(
        "--learnable",
        action="store_true",
        help="images show their tags' visual signatures, Zipf long tail (weakly/synth_learnable.py)",
    )
    s.add_argument("--classes", type=int, default=24, help="--learnable: synsets (2..32)")
    s.add_argument("--zipf", type=float, default=1.2, help="--learnable: popularity exponent")
    s.add_argument("--second-tag", type=float, default=0.3, help="--learnable: P(a 2nd tag)")
    s.add_argument("--size", type=int, default=64, help="--learnable: image side in pixels")
    s.set_defaults(func=_run_synth)
