"""`weakly ingest` and `weakly synth`: thin argparse layers over `pipeline.ingest` and
`pipeline.synth`. Every ingest option can also come from `--config FILE` (YAML or JSON, keys
named like the long options with `_` or `-`); flags given on the command line win."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from .fetch import FetchConfig
from .images import RESIZE_MODES, ImageConfig
from .ingest import IngestConfig, RunOptions, ingest
from .manifest import Columns
from .synth import synth
from .synth_learnable import learnable_synth
from .weights import REDUCERS, SCHEMES, WeightConfig


def _add_ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "manifests",
        nargs="*",
        help="manifest files or folders (parquet/jsonl/csv/tsv[.gz], fsspec URLs)",
    )
    p.add_argument("--out", help="output dataset folder")
    p.add_argument("--config", help="YAML/JSON file with any of these options")
    p.add_argument("--vocab", default="in1k", help="in1k | nouns | top:K (default in1k)")
    p.add_argument("--weighting", default="inv-sqrt", choices=SCHEMES)
    p.add_argument("--weight-reduce", default="max", choices=REDUCERS)
    p.add_argument("--rare-threshold", type=int, default=10, help="f(s) below this is rare")
    p.add_argument("--rare-upsample", type=float, default=100.0)
    p.add_argument("--label-noise", type=float, default=0.0, help="replace this fraction of labels")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="fraction of samples (chosen by key hash) written as `val` shards",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-index", help="eval index file from 'weakly eval-index build'")
    p.add_argument("--radius", type=int, help="dedup Hamming radius (default: the index's)")
    p.add_argument("--image-size", type=int, default=256, help="shorter side after resizing")
    p.add_argument("--resize-mode", default="shorter", choices=RESIZE_MODES)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--min-side", type=int, default=32)
    p.add_argument("--max-pixels", type=int, default=100_000_000)
    p.add_argument("--max-aspect", type=float, default=6.0)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--chunk-rows", type=int, default=256)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP socket operation")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--max-bytes", type=int, default=32 << 20)
    p.add_argument("--fetch-threads", type=int, default=16)
    p.add_argument(
        "--path-root", help="manifest paths are relative to this folder and may not leave it"
    )
    p.add_argument("--key-column", default="key")
    p.add_argument("--url-column", default="url")
    p.add_argument("--path-column", default="path")
    p.add_argument("--image-column", default="image")
    p.add_argument("--tags-column", default="tags")
    p.add_argument(
        "--extra-columns", default="", help="comma-separated columns copied into the sample json"
    )
    p.add_argument("--lexicon-dir", help="compiled lexicon folder (for workers without WordNet)")
    p.add_argument(
        "--address", help="Ray cluster address (auto, ray://host:port); default: local Ray"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    p.add_argument("--overwrite", action="store_true", help="delete OUT and start over")
    p.add_argument("--no-progress", action="store_true")


def _apply_config_file(parser: argparse.ArgumentParser, argv: list[str] | None) -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return
    path = Path(known.config)
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        parser.error(f"--config {path}: no such file")
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        parser.error(f"--config {path}: not valid YAML/JSON ({exc})")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a mapping of option names to values")
    dests = {a.dest for a in parser._actions}
    clean = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(clean) - dests)
    if unknown:
        parser.error(f"--config {path}: unknown options {', '.join(unknown)}")
    parser.set_defaults(**clean)


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    columns = Columns(
        key=args.key_column,
        url=args.url_column,
        path=args.path_column,
        image=args.image_column,
        tags=args.tags_column,
        extra=tuple(c for c in args.extra_columns.split(",") if c),
    )
    return IngestConfig(
        vocab=args.vocab,
        weighting=WeightConfig(
            args.weighting, args.weight_reduce, args.rare_threshold, args.rare_upsample
        ),
        image=ImageConfig(
            image_size=args.image_size,
            resize_mode=args.resize_mode,
            quality=args.quality,
            min_side=args.min_side,
            max_pixels=args.max_pixels,
            max_aspect=args.max_aspect,
        ),
        fetch=FetchConfig(
            timeout=args.timeout,
            retries=args.retries,
            max_bytes=args.max_bytes,
            threads=args.fetch_threads,
            path_root=args.path_root,
        ),
        columns=columns,
        shard_size=args.shard_size,
        chunk_rows=args.chunk_rows,
        label_noise=args.label_noise,
        holdout=args.holdout,
        seed=args.seed,
        eval_index=str(Path(args.eval_index).resolve()) if args.eval_index else None,
        radius=args.radius,
        lexicon_dir=args.lexicon_dir,
    )


def _run_ingest(args: argparse.Namespace) -> int:
    if not args.manifests or not args.out:
        raise ValueError(
            "ingest needs MANIFEST... and --out DIR (on the command line or in --config)"
        )
    from wordnet_tools.vocab import parse_vocab_spec

    parse_vocab_spec(args.vocab)
    config = config_from_args(args)
    options = RunOptions(
        address=args.address,
        num_cpus=args.num_cpus,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    summary = ingest(list(args.manifests), args.out, config, options)
    print(summary.table())
    return 0


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


def add_commands(subparsers: argparse._SubParsersAction, argv: list[str] | None = None) -> None:
    ingest_parser = subparsers.add_parser(
        "ingest", help="manifests -> weighted WebDataset shards (Ray)"
    )
    _add_ingest_arguments(ingest_parser)
    if argv and argv[0] == "ingest":
        _apply_config_file(ingest_parser, argv[1:])
    ingest_parser.set_defaults(func=_run_ingest)

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
        help="images show their tags' visual signatures, Zipf long tail (pipeline/synth_learnable.py)",
    )
    s.add_argument("--classes", type=int, default=24, help="--learnable: synsets (2..32)")
    s.add_argument("--zipf", type=float, default=1.2, help="--learnable: popularity exponent")
    s.add_argument("--second-tag", type=float, default=0.3, help="--learnable: P(a 2nd tag)")
    s.add_argument("--size", type=int, default=64, help="--learnable: image side in pixels")
    s.set_defaults(func=_run_synth)
