"""`weakly demo`: the whole data path on an embedded default, run by `make demo`.

Bundled real photos -> `weakly synth` (a manifest with hashtag-style tags and planted
near-copies of a held-out eval set) -> eval index -> `weakly ingest` on a local Ray -> summary.
It also shows how raw hashtags merge into WordNet synsets. Rerunning reuses what is there.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from wordnet_tools import load_lexicon

DEMO_TAGS = [
    "#BrownBear", "#ursusarctos", "#grizzly", "#bears", "#Couch", "#sofa", "#sofas",
    "#car", "#automobile", "#Cars", "#plane", "#aeroplane", "#airplanes", "#geese",
    "#goose", "#puppy", "#dogs", "#instagood", "#love", "#2024", "#🐻", "#photooftheday",
    "#Cat", "#tabby", "#GoldenRetriever", "#golden_retriever", "#coffee", "#espresso",
]  # fmt: skip


def lexicon_demo(tags: list[str] = DEMO_TAGS) -> str:
    lines = []
    for vocab in ("nouns", "in1k"):
        lex = load_lexicon(vocab)
        merged: dict[str, list[str]] = defaultdict(list)
        dropped = []
        for tag, wnid in zip(tags, lex.canonical_many(tags), strict=True):
            (merged[wnid] if wnid else dropped).append(tag)
        lines.append(f"vocabulary {vocab}: {len(lex)} synsets")
        for wnid, group in sorted(merged.items()):
            lines.append(f"  {wnid} {lex.name(wnid):<20} <- {' '.join(group)}")
        lines.append(f"  dropped (no synset in vocabulary): {' '.join(dropped)}")
    return "\n".join(lines)


def run_demo(out: Path, n: int, num_cpus: int | None) -> str:
    from .dedup import EvalIndex
    from .ingest import IngestConfig, RunOptions, ingest
    from .synth import synth

    print("== canonicalisation: raw hashtags -> WordNet synsets")
    print(lexicon_demo())
    data, eval_dir, index_path = out / "synth", out / "eval", out / "eval.idx"
    if not (data / "manifest.parquet").exists():
        print(f"\n== synth: {n} photos from bundled real images, 20 eval images, planted copies")
        result = synth(n, data, eval_dir, max_px=1200, planted_fraction=0.05)
        print(f"{result.manifest}: {result.images} images, {result.planted} planted near-copies")
    if not index_path.exists():
        index = EvalIndex.build({"demo-eval": str(eval_dir)})
        index.save(index_path)
    print("\n== ingest on a local Ray")
    config = IngestConfig(
        vocab="in1k", eval_index=str(index_path.resolve()), shard_size=200, chunk_rows=32
    )
    summary = ingest(
        [str(data / "manifest.parquet")], out / "dataset", config, RunOptions(num_cpus=num_cpus)
    )
    print(summary.table())
    print(f"\nshards, index and report.png are in {out / 'dataset'}")
    return summary.table()


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the end-to-end demo on bundled data")
    parser.add_argument("--out", default="demo-out", help="where everything is written")
    parser.add_argument("--n", type=int, default=400, help="synthetic training images")
    parser.add_argument("--num-cpus", type=int, help="CPUs for the local Ray")
    parser.set_defaults(func=lambda args: run_demo(Path(args.out), args.n, args.num_cpus) and 0)
