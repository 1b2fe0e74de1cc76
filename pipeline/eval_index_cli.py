"""`weakly eval-index build|query|stats`: a thin command line over `pipeline.dedup.EvalIndex`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .dedup import DEFAULT_RADIUS, VARIANTS, EvalIndex
from .eval_sources import is_image_name
from .phash import DEFAULT_MAX_PIXELS, phash_many, to_hex


def _parse_eval(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--eval takes NAME=PATH, got {spec!r}")
    return name, path


def _build(args: argparse.Namespace) -> int:
    index = EvalIndex.build(args.eval, radius=args.radius, max_pixels=args.max_pixels)
    index.save(args.out)
    st = index.stats()
    for name, s in st["eval_sets"].items():
        print(f"{name}: {s['images']} images, {s['failures']} failed")
    for f in index.failures:
        print(f"failed: {f.eval_set} {f.item}: {f.reason}", file=sys.stderr)
    print(
        f"wrote {args.out}: {st['images']} images, {st['unique_hashes']} unique variant hashes, "
        f"radius {st['radius']}, {st['hash_version']}"
    )
    return 0


def _query_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f.name)))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"query image not found: {p}")
    return files


def _query(args: argparse.Namespace) -> int:
    index = EvalIndex.load(args.index)
    files = _query_files(args.images)
    batch = phash_many([f.read_bytes() for f in files], max_pixels=args.max_pixels)
    for i, reason in batch.errors:
        print(f"skipped {files[i]}: {reason}", file=sys.stderr)
    rows = batch.ok.nonzero()[0]
    matches = index.search(batch.hashes[rows], args.radius)
    print("query\tphash\teval_set\teval_id\tdistance\tvariant")
    for q, s, i, d, v in zip(
        matches.query_rows,
        matches.set_index,
        matches.image_index,
        matches.distances,
        matches.variants,
        strict=True,
    ):
        row = rows[q]
        print(
            f"{files[row]}\t{to_hex(batch.hashes[row])}\t{index.set_names[s]}\t"
            f"{index.image_ids[i]}\t{d}\t{VARIANTS[v]}"
        )
    matched = len(set(matches.query_rows.tolist()))
    print(f"{matched} of {len(rows)} hashed images match an eval image", file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace) -> int:
    index = EvalIndex.load(args.index)
    st = index.stats()
    st["failed_items"] = [
        {"eval_set": f.eval_set, "item": f.item, "reason": f.reason} for f in index.failures
    ]
    print(json.dumps(st, indent=2))
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-index", help="build and query the eval-set near-duplicate index"
    )
    sub = parser.add_subparsers(dest="eval_index_command", required=True)

    build = sub.add_parser("build", help="hash eval sets (folders, tars, parquet) into an index")
    build.add_argument(
        "--eval",
        metavar="NAME=PATH",
        type=_parse_eval,
        action="append",
        required=True,
        help="an eval set: a folder of images, a tar, or a parquet with image bytes or paths",
    )
    build.add_argument("--out", required=True, help="index file to write (.idx/.npz)")
    build.add_argument("--radius", type=int, default=DEFAULT_RADIUS, help="stored default")
    build.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    build.set_defaults(func=_build)

    query = sub.add_parser("query", help="print eval near-copies of images")
    query.add_argument("--index", required=True)
    query.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS")
    query.add_argument("--radius", type=int, default=None, help="default: the index's radius")
    query.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    query.set_defaults(func=_query)

    stats = sub.add_parser("stats", help="print an index's sizes and failed eval items (json)")
    stats.add_argument("--index", required=True)
    stats.set_defaults(func=_stats)
