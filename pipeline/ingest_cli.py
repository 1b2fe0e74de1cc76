"""`weakly ingest`: a thin argparse layer over `pipeline.ingest`. Every option can also come
from `--config FILE` (YAML, JSON or TOML, keys named like the long options with `_` or `-`);
flags given on the command line win (weakly_base/config.py)."""

from __future__ import annotations

import argparse
import json

from weakly_base.storage import normalise_url

from .fetch import FetchConfig
from .images import RESIZE_MODES, ImageConfig
from .ingest import IngestConfig, RunOptions, ingest, plan
from .manifest import Columns
from .net_policy import parse_networks
from .output_lease import DEFAULT_LEASE_SECONDS
from .phases import process_age
from .weights import REDUCERS, SCHEMES, WeightConfig


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"anon\": false}'")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: use a number >= 1")
    return value


def _networks(text: str) -> tuple[str, ...]:
    try:
        return parse_networks(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: use a number > 0")
    return value


def _add_ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "manifests",
        nargs="*",
        help="manifest files or folders (parquet/jsonl/csv/tsv[.gz], fsspec URLs)",
    )
    p.add_argument(
        "--out", help="output dataset: a folder or any fsspec URL (s3://bucket/ds, gs://, az://)"
    )
    p.add_argument("--config", help="YAML/JSON file with any of these options")
    p.add_argument("--vocab", default="in1k", help="in1k | in21k | nouns | top:K (default in1k)")
    p.add_argument(
        "--weighting",
        default="inv-sqrt",
        choices=SCHEMES,
        help="sampling law; a sample's weight is its expected appearances per epoch, train "
        "weights sum to --epoch-size E; f(h) = train images with synset h, N = train images. "
        "natural: r = E/N. "
        "sqrt (Mahajan et al. 2018): r(h) = max(1, sqrt(t/f(h))), r(I) = max_h r(h), t solved "
        "so that sum_I r(I) = E (every image at least once; the head keeps its natural "
        "frequency). "
        "uniform (Mahajan's third arm, phi(x) = x): r(h) = max(1, t/f(h)). "
        "inv-sqrt (SWAG, default): w = s * max_h f(h)^-1/2, times --rare-upsample when the "
        "image has a rare tag, s scaling the sum to E",
    )
    p.add_argument(
        "--epoch-size",
        metavar="N|Mx",
        help="samples per epoch: N, or Mx for M times the train images (default: 1x for "
        "natural and inv-sqrt, 2x for sqrt and uniform, which need at least 1x)",
    )
    p.add_argument(
        "--weight-reduce",
        default="max",
        choices=REDUCERS,
        help="inv-sqrt: combine an image's tags by max (its rarest tag, default) or mean of "
        "f^-1/2; sqrt and uniform take max (Mahajan et al.)",
    )
    p.add_argument(
        "--rare-mass",
        type=float,
        default=0.001,
        metavar="Q",
        help="inv-sqrt: a tag is rare when it is among the least frequent tags that together "
        "carry at most Q of all (image, tag) pairs; the same fraction on 1e3 or 1e9 images "
        "(default 0.001; 0: none)",
    )
    p.add_argument(
        "--rare-upsample",
        type=float,
        default=100.0,
        help="inv-sqrt: weight factor for an image with a rare tag (default 100, SWAG)",
    )
    p.add_argument("--rare-threshold", help=argparse.SUPPRESS)  # removed: an error says why
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        help="replace this fraction of train labels by draws from the label marginal, never "
        "the image's own labels; the realised fraction is reported",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="fraction of samples (chosen by key hash) written as `val` shards",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--eval-index", help="eval index from 'weakly eval-index build' (a file or fsspec URL)"
    )
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
    p.add_argument("--fetch-threads", type=int, default=16, help="fetch threads per pass-2 task")
    p.add_argument(
        "--per-host",
        type=_positive_int,
        metavar="N",
        help="at most N requests in flight to one host per task (default: no cap beyond "
        "--fetch-threads); a 429/503 Retry-After is honoured within the row's deadline",
    )
    p.add_argument(
        "--path-root", help="manifest paths are relative to this folder and may not leave it"
    )
    p.add_argument(
        "--deny-networks",
        type=_networks,
        metavar="CIDRS",
        help="do not connect to these networks (comma-separated CIDR), nor to the link-local "
        "and cloud metadata ones denied by default (169.254.0.0/16, fe80::/10, "
        "fd00:ec2::254/128); checked on the resolved address of every connection, redirect hop "
        "and http(s) `path`; such rows are rejected `blocked_address`. E.g. "
        "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
    )
    p.add_argument(
        "--allow-networks",
        type=_networks,
        metavar="CIDRS",
        help="connect to these networks even where denied (by default or --deny-networks): "
        "an allowed network beats a denied one",
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
        "--sense-overrides",
        metavar="FILE",
        help="CSV of hashtag,synset[,reason] rows that beat the visual sense choice and the "
        "shipped overrides (synset: a wnid or a WordNet name like crane.n.05)",
    )
    p.add_argument(
        "--address", help="Ray cluster address (auto, ray://host:port); default: local Ray"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete OUT and start over (refused while another run writes OUT)",
    )
    p.add_argument(
        "--key-partitions",
        type=_positive_int,
        metavar="N",
        help="reduce tasks for the duplicate-key search (default: one per 16 MiB of manifests); "
        "each holds its share of the keys in memory, ~250 bytes a key; the output is the same",
    )
    p.add_argument(
        "--lease-seconds",
        type=_positive_float,
        default=DEFAULT_LEASE_SECONDS,
        metavar="S",
        help="object-store OUT: the writer lease, renewed every S/3 s, lets another run take "
        "over S s after its holder stopped renewing (a holder on the same machine: as soon as "
        "its process is gone); a local OUT is locked with flock",
    )
    p.add_argument(
        "--plan-only",
        action="store_true",
        help="stop after pass 1: write plan.json (vocabulary, counts, weighting, rejects) and "
        "index/report.png to OUT, fetch no image; a later run without the flag reuses the plan",
    )
    p.add_argument(
        "--storage-options",
        type=_json_object,
        default={},
        metavar="JSON",
        help="fsspec options for --out, --eval-index and manifests, e.g. "
        '\'{"anon": false, "client_kwargs": {"region_name": "eu-west-1"}}\' (endpoint and '
        "credentials also come the standard way: AWS_ENDPOINT_URL, AWS_PROFILE, ...)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--profile",
        action="store_true",
        help="after the summary, print where the wall time went: start-up before the job, "
        "Ray start, lexicon load, each pass-1 round, pass 2, shards, index (wall and driver "
        "CPU seconds per phase)",
    )


def config_from_args(args: argparse.Namespace) -> IngestConfig:
    if getattr(args, "rare_threshold", None) is not None:
        raise ValueError(
            "--rare-threshold was removed (an absolute count means different things on 1e3 and "
            "1e9 images): use --rare-mass Q, the rarest tags holding a fraction Q of all tag "
            "occurrences (default 0.001)"
        )
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
            scheme=args.weighting,
            reduce=args.weight_reduce,
            rare_mass=args.rare_mass,
            rare_upsample=args.rare_upsample,
            epoch_size=args.epoch_size,
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
            per_host=args.per_host,
            path_root=args.path_root,
            allow_networks=args.allow_networks or (),
            deny_networks=args.deny_networks or (),
        ),
        columns=columns,
        shard_size=args.shard_size,
        chunk_rows=args.chunk_rows,
        label_noise=args.label_noise,
        holdout=args.holdout,
        seed=args.seed,
        eval_index=normalise_url(args.eval_index) if args.eval_index else None,
        radius=args.radius,
        lexicon_dir=args.lexicon_dir,
        sense_overrides=args.sense_overrides,
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
        storage_options=args.storage_options,
        lease_seconds=args.lease_seconds,
        key_partitions=args.key_partitions,
    )
    if args.plan_only:
        print(plan(list(args.manifests), args.out, config, options).table())
        return 0
    before = process_age()  # interpreter, imports, argument parsing
    summary = ingest(list(args.manifests), args.out, config, options)
    print(summary.table())
    if args.profile:
        if before is not None:
            print(f"{'start-up before the job':<28}{before:>10.3f}")
        print(summary.profile())
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    ingest_parser = subparsers.add_parser(
        "ingest", help="manifests -> weighted WebDataset shards (Ray)"
    )
    _add_ingest_arguments(ingest_parser)
    ingest_parser.set_defaults(func=_run_ingest)
