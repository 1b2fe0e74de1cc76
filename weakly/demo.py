"""`weakly demo`: the whole data path on an embedded default, run by `make demo`.

Bundled real photos -> `weakly synth` (a manifest with hashtag-style tags and planted
near-copies of a held-out eval set) -> eval index -> `weakly ingest` on a local Ray -> a small
model trained on the shards -> `report.md` with the tables and plots. It shows the dedup
catching the planted copies and raw hashtags merging into WordNet synsets. Rerunning reuses
what is there (synth output, committed ingest chunks, the trainer's checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from wordnet_tools import load_lexicon

DEMO_TAGS = [
    "#BrownBear", "#ursusarctos", "#grizzly", "#bears", "#Couch", "#sofa", "#sofas",
    "#car", "#automobile", "#Cars", "#plane", "#aeroplane", "#airplanes", "#geese",
    "#goose", "#puppy", "#dogs", "#instagood", "#love", "#2024", "#🐻", "#photooftheday",
    "#Cat", "#tabby", "#GoldenRetriever", "#golden_retriever", "#coffee", "#espresso",
]  # fmt: skip


# Bundled photos with hashtags as people write them: synonyms, plurals, #CamelCase, hyphens,
# underscores, tags outside the vocabulary, a junk-only row and an untagged row.
HANDWRITTEN: list[tuple[str, list[str]]] = [
    ("chelsea", ["#tabby", "#TabbyCat", "#tabbies", "#EgyptianCat", "#kitty", "#catsofinstagram"]),
    ("chelsea", ["#Tabby", "#instagood", "#cats"]),
    ("clock", ["#AnalogClock", "#analog-clock", "#wallclock", "#WallClocks", "#time"]),
    ("camera", ["#tripod", "#Tripods", "#ReflexCamera", "#photography"]),
    ("flower", ["#daisy", "#daisies", "#Daisy", "#flowers"]),
    ("china", ["#palace", "#Palaces", "#stupa", "#travel"]),
    ("astronaut", ["#SpaceShuttle", "#space_shuttle", "#astronaut", "#nasa"]),
    ("grass", ["#instagood", "#photooftheday", "#2024", "#🐻", "#love"]),
    ("gravel", []),
    ("coffee", ["#espresso", "#CoffeeMug", "#coffee"]),
    ("rocket", ["#SpaceShuttle", "#rocket"]),
]


def write_handwritten(folder: Path, seed: int = 0) -> tuple[Path, list[str]]:
    """A jsonl manifest of HANDWRITTEN rows; returns it and the photos left out because synth
    (same seed) reserves them for the eval set, where they would rightly be deduplicated."""
    import random

    from .synth import split_photos

    _, train_pool = split_photos(random.Random(seed))
    photos = dict(train_pool)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines, skipped = [], []
    for i, (name, tags) in enumerate(HANDWRITTEN):
        if name not in photos:
            skipped.append(name)
            continue
        img = photos[name].copy()
        img.thumbnail((800, 800))
        path = folder / "images" / f"hw{i:02d}.jpg"
        img.save(path, "JPEG", quality=90)
        row = {"key": f"hw{i:02d}", "path": str(path.resolve()), "tags": tags, "photo": name}
        lines.append(json.dumps(row, ensure_ascii=False))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest, sorted(set(skipped))


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


@dataclass(frozen=True)
class DemoSize:
    """How big a demo run is; `quick` is the reduced mode CI runs."""

    images: int = 400
    max_px: int = 1200
    planted_fraction: float = 0.05
    shard_size: int = 200
    steps: int = 300
    batch_size: int = 32
    image_size: int = 64
    log_every: int = 10
    workers: int | None = None  # loader processes; None: min(2, cores)


QUICK = DemoSize(
    images=150, max_px=400, planted_fraction=0.06, shard_size=40, steps=60, batch_size=16,
    image_size=32, log_every=15, workers=0,
)  # fmt: skip


# A quarter of the keys go to the `val` split, which the trainer scores at the end of training
# (and the report compares with the label prior): enough held-out images to tell learning from
# the prior even in the quick mode.
DEMO_HOLDOUT = 0.25


def train_demo_model(dataset: Path, run: Path, size: DemoSize, device: str = "auto") -> dict:
    """A small model on the demo shards through the trainer's Python API (GPU when present).
    `--resume auto`: a rerun continues, or finds the run finished, instead of starting over."""
    import torch

    from train.config import TrainConfig
    from train.loop import train

    workers = size.workers if size.workers is not None else min(2, os.cpu_count() or 1)
    config = TrainConfig(
        data=str(dataset), model="tiny", out=str(run), steps=size.steps,
        batch_size=size.batch_size, image_size=size.image_size, device=device, lr=0.5,
        warmup_steps=max(1, size.steps // 10), workers=workers, shuffle_buffer=200,
        log_every=size.log_every, ckpt_every=size.steps, resume="auto",
    )  # fmt: skip
    summary = train(config)
    used = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    return {**summary, "model": "tiny", "batch_size": size.batch_size, "device": used}


def run_demo(
    out: Path, size: DemoSize = DemoSize(), num_cpus: int | None = None, device: str = "auto"
) -> Path:
    """Synth -> eval index -> ingest -> train -> report.md; returns the report's path."""
    from pipeline.dedup import EvalIndex
    from pipeline.ingest import IngestConfig, RunOptions, ingest

    from . import demo_report
    from .synth import synth

    out = Path(out)
    print("== canonicalisation: raw hashtags -> WordNet synsets")
    lexicon_table = lexicon_demo()
    print(lexicon_table)
    data, eval_dir, index_path = out / "synth", out / "eval", out / "eval.idx"
    if not (data / "manifest.parquet").exists():
        print(f"\n== synth: {size.images} photos from bundled real images, planted eval copies")
        result = synth(
            size.images, data, eval_dir, max_px=size.max_px,
            planted_fraction=size.planted_fraction, content_tags=True,
        )  # fmt: skip
        print(f"{result.manifest}: {result.images} images, {result.planted} planted near-copies")
    if not index_path.exists():
        EvalIndex.build({"demo-eval": str(eval_dir)}).save(index_path)
    handwritten, held_out = write_handwritten(out / "handwritten")
    print("\n== ingest on a local Ray")
    config = IngestConfig(
        vocab="in1k", eval_index=str(index_path.resolve()), shard_size=size.shard_size,
        chunk_rows=32, holdout=DEMO_HOLDOUT,
    )  # fmt: skip
    manifests = [str(data / "manifest.parquet"), str(handwritten)]
    summary = ingest(manifests, out / "dataset", config, RunOptions(num_cpus=num_cpus))
    print(summary.table())

    print(f"\n== training a small model for {size.steps} steps")
    trained = train_demo_model(out / "dataset", out / "run", size, device)

    dataset = json.loads((out / "dataset" / "dataset.json").read_text())
    metrics = demo_report.read_metrics(out / "run")
    val_metrics = demo_report.read_val_metrics(out / "run")
    learned = demo_report.learned(out / "run", out / "dataset", size.image_size)
    demo_report.loss_plot(metrics, out / "loss.png", len(dataset["vocabulary"]["wnids"]))
    audit = demo_report.dedup_audit(data / "manifest.parquet", out / "dataset")
    lexicon = load_lexicon("in1k")
    merges = demo_report.synonym_merges(data / "manifest.parquet", lexicon)
    merges += demo_report.synonym_merges(handwritten, lexicon)
    outcomes = demo_report.row_outcomes(handwritten, out / "dataset", dataset)
    report = out / "report.md"
    report.write_text(
        demo_report.render_report(
            summary_table=summary.table(),
            lexicon_table=lexicon_table,
            audit=audit,
            merges=merges,
            outcomes=outcomes,
            held_out=held_out,
            metrics=metrics,
            train_summary=trained,
            dataset=dataset,
            val_metrics=val_metrics,
            learned=learned,
            paths={
                "ingest_plot": "dataset/index/report.png",
                "loss_plot": "loss.png",
                "run": "run",
                "dataset": "dataset",
            },
        )
    )
    print(f"\ndedup: {audit.caught} of {audit.planted} planted eval copies removed, "
          f"{len(audit.false_alarms)} false alarms")  # fmt: skip
    if learned is not None:
        print(f"held-out top-1 {100 * learned['top1']:.1f}% vs label prior "
              f"{100 * learned['prior_top1']:.1f}%")  # fmt: skip
    print(f"report: {report.resolve()}")
    return report


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the end-to-end demo on bundled data")
    parser.add_argument("--out", default="demo-out", help="where everything is written")
    parser.add_argument(
        "--quick", action="store_true", help="reduced mode: 150 images, 60 training steps (CI)"
    )
    parser.add_argument("--n", type=int, help="synthetic training images (default 400; quick 150)")
    parser.add_argument("--steps", type=int, help="training steps (default 300; quick 60)")
    parser.add_argument("--num-cpus", type=int, help="CPUs for the local Ray")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    size = QUICK if args.quick else DemoSize()
    if args.n is not None or args.steps is not None:
        size = replace(
            size,
            images=args.n if args.n is not None else size.images,
            steps=args.steps if args.steps is not None else size.steps,
        )
    if size.images < 1 or size.steps < 1:
        raise ValueError("--n and --steps must be at least 1")
    run_demo(Path(args.out), size, args.num_cpus, args.device)
    return 0
