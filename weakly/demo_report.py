"""The demo's `report.md`: what the run shows, as tables computed from its own output files.

Every number comes from files a user can open (the synth manifest, the ingest index, the
trainer's metrics.jsonl), so the report is an audit of the run rather than a claim about it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from weakly_base.index_tables import REJECTS, SAMPLES, read_index


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


@dataclass
class DedupAudit:
    """Planted eval near-copies (known from synth) against what ingest removed."""

    by_transform: dict[str, tuple[int, int]]  # transform -> (planted, caught)
    planted: int
    caught: int
    false_alarms: list[str]  # keys removed as eval copies that were not planted


def dedup_audit(manifest: Path, dataset_dir: Path) -> DedupAudit:
    """Planted copies from the synth manifest against the dataset's rejects index."""
    rows = pq.read_table(manifest, columns=["key", "planted_from"]).to_pylist()
    planted = {r["key"]: r["planted_from"].split(":")[1] for r in rows if r["planted_from"]}
    table = read_index(dataset_dir, REJECTS, columns=["key", "reason"]).to_pylist()
    removed = {r["key"] for r in table if r["reason"] == "eval_near_copy"}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key, how in planted.items():
        counts[how][0] += 1
        counts[how][1] += key in removed
    return DedupAudit(
        by_transform={how: (p, c) for how, (p, c) in sorted(counts.items())},
        planted=len(planted),
        caught=len(removed & set(planted)),
        false_alarms=sorted(removed - set(planted)),
    )


def _tags(manifest: Path) -> list[list[str]]:
    if manifest.suffix == ".jsonl":
        rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
        return [r["tags"] for r in rows]
    return pq.read_table(manifest, columns=["tags"])["tags"].to_pylist()


def row_outcomes(manifest: Path, dataset_dir: Path, dataset: dict) -> list[tuple[str, str, str]]:
    """For each row of a jsonl manifest: (photo, raw tags, what ingest made of it), read back
    from the dataset's index: the synset names it was labelled with, or why it was rejected."""
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    names = dataset["vocabulary"]["names"]
    samples = read_index(dataset_dir, SAMPLES, columns=["key", "labels"])
    labels = dict(zip(samples["key"].to_pylist(), samples["labels"].to_pylist(), strict=True))
    rejects = read_index(dataset_dir, REJECTS).to_pylist()
    why = {r["key"]: f"rejected: {r['reason']}" for r in rejects if r["key"]}
    out = []
    for row in rows:
        key = row["key"]
        if key in labels:
            outcome = ", ".join(names[i] for i in labels[key])
        else:
            outcome = why.get(key, "missing")
        out.append((row.get("photo", key), " ".join(row["tags"]) or "(no tags)", outcome))
    return out


def synonym_merges(manifest: Path, lexicon, top: int = 12) -> list[tuple[str, str, int, list[str]]]:
    """Synsets that several distinct raw hashtags of the manifest were merged into:
    (wnid, name, rows carrying it, the raw forms), most raw forms first."""
    forms: dict[str, Counter] = defaultdict(Counter)
    rows_with: Counter = Counter()
    for tags in _tags(manifest):
        seen = set()
        for tag, wnid in zip(tags, lexicon.canonical_many(tags), strict=True):
            if wnid:
                forms[wnid][tag] += 1
                seen.add(wnid)
        rows_with.update(seen)
    merged = [(w, f) for w, f in forms.items() if len(f) > 1]
    merged.sort(key=lambda wf: (-len(wf[1]), -rows_with[wf[0]], wf[0]))
    return [
        (w, lexicon.name(w), rows_with[w], [t for t, _ in f.most_common()]) for w, f in merged[:top]
    ]


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def loss_plot(metrics: list[dict], path: Path, num_classes: int) -> Path:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics], marker=".")
    ax.axhline(math.log(num_classes), color="grey", linestyle="--", label=f"log({num_classes})")
    ax.set_xlabel("step")
    ax.set_ylabel("1/k multi-label softmax loss")
    ax.set_title("Training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _ingest_section(summary_table: str, dataset: dict) -> list[str]:
    splits = dataset["splits"]["train"]
    return [
        "## Ingest summary",
        "",
        "```",
        summary_table,
        "```",
        "",
        f"{splits['samples']:,} samples in {splits['shards']} shards "
        f"(mean {splits['mean_shard_size']:.1f} per shard), vocabulary "
        f"`{dataset['vocabulary']['name']}` ({len(dataset['vocabulary']['wnids']):,} synsets).",
        "",
    ]


def _dedup_section(audit: DedupAudit) -> list[str]:
    return [
        "## Eval-set dedup: planted copies caught",
        "",
        f"synth planted {audit.planted} near-copies of eval images among the training rows; "
        f"ingest removed {audit.caught} of them "
        f"({audit.caught / audit.planted:.0%})."
        if audit.planted
        else "No copies were planted.",
        f"Rows removed that were not planted (false alarms): {len(audit.false_alarms)}"
        + (f" ({', '.join(audit.false_alarms[:10])})" if audit.false_alarms else "")
        + ".",
        "",
        markdown_table(
            ["planted as", "planted", "caught"],
            [[how, p, c] for how, (p, c) in audit.by_transform.items()],
        ),
        "",
    ]


def _canonicalisation_section(
    merges: list[tuple[str, str, int, list[str]]],
    outcomes: list[tuple[str, str, str]],
    held_out: list[str],
    lexicon_table: str,
) -> list[str]:
    return [
        "## Canonicalisation: hashtags merged into WordNet synsets",
        "",
        "Synsets of this manifest that several distinct raw hashtags were merged into:",
        "",
        markdown_table(
            ["synset", "name", "rows", "raw hashtags merged"],
            [[w, n, r, " ".join(f"`{t}`" for t in forms[:8])] for w, n, r, forms in merges],
        ),
        "",
        "Hand-written rows of bundled photos, as ingested (labels read back from the",
        "`index/samples` table, reasons from `index/rejects`):",
        "",
        markdown_table(["photo", "raw hashtags", "labels after ingest (in1k)"], outcomes),
        "",
        f"Left out of the hand-written rows because synth keeps them for the eval set: "
        f"{', '.join(held_out) or 'none'}.",
        "",
        "The same kind of hashtags and where each vocabulary sends them:",
        "",
        "```",
        lexicon_table,
        "```",
        "",
    ]


def _training_section(metrics: list[dict], train_summary: dict, paths: dict[str, str]) -> list[str]:
    first, last = (metrics[0], metrics[-1]) if metrics else ({}, {})
    row = [
        train_summary["model"],
        train_summary["device"],
        train_summary["step"],
        train_summary["batch_size"],
        f"{first.get('loss', float('nan')):.3f}",
        f"{last.get('loss', float('nan')):.3f}",
        f"{last.get('samples_per_s', float('nan')):.0f}",
    ]
    return [
        "## Training",
        "",
        markdown_table(
            ["model", "device", "steps", "batch", "first loss", "last loss", "img/s (last log)"],
            [row],
        ),
        "",
        f"![training loss]({paths['loss_plot']})",
        "",
        "The demo's synth tags every photo with what it shows (`weakly/photos.py` PHOTO_TAGS, in the",
        "ways people write hashtags, plus a wrong tag on one row in ten), so the model can learn",
        "the pixels, not only the label distribution: the held-out section compares it with the",
        f"label prior. Checkpoints and `metrics.jsonl` are in `{paths['run']}`; the dataset is in",
        f"`{paths['dataset']}`.",
        "",
    ]


def render_report(
    *,
    summary_table: str,
    lexicon_table: str,
    audit: DedupAudit,
    merges: list[tuple[str, str, int, list[str]]],
    outcomes: list[tuple[str, str, str]],
    held_out: list[str],
    metrics: list[dict],
    train_summary: dict,
    dataset: dict,
    paths: dict[str, str],
    val_metrics: dict | None = None,
    learned: dict | None = None,
) -> str:
    """The whole report.md; `paths` are relative to the report (plots, dataset, run)."""
    lines = [
        "# weakly demo report",
        "",
        "Bundled real photos (scikit-image, scikit-learn) -> `weakly synth` manifest with",
        "hashtag-style tags and planted near-copies of a held-out eval set -> eval index ->",
        "`weakly ingest` on a local Ray -> a small model trained on the shards.",
        "",
        *_ingest_section(summary_table, dataset),
        *_dedup_section(audit),
        *_canonicalisation_section(merges, outcomes, held_out, lexicon_table),
        "## Tag distribution and weights",
        "",
        f"![tag frequency before/after reweighting, weight histogram]({paths['ingest_plot']})",
        "",
        *_training_section(metrics, train_summary, paths),
    ]
    lines += held_out_section(val_metrics)
    lines += learned_section(learned)
    return "\n".join(lines)


def read_val_metrics(run: Path) -> dict | None:
    """The trainer's last evaluation of the held-out split (`val.jsonl`), if it ran one."""
    path = Path(run) / "val.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[-1] if rows else None


def held_out_section(val: dict | None) -> list[str]:
    """Hashtag metrics on the `--holdout` split, overall and by label-frequency third."""
    if val is None:
        return ["## Held-out evaluation", "", "No held-out split was evaluated.", ""]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    rows = [["all", val["images"], val["map_labels"], pct(val["top1"]), pct(val["top5"]),
             pct(val["mAP"])]]  # fmt: skip
    for name, g in val.get("groups", {}).items():
        rows.append([name, g["images"], g["map_labels"], pct(g["top1"]), pct(g["top5"]),
                     pct(g["mAP"])])  # fmt: skip
    return [
        "## Held-out evaluation",
        "",
        f"The trainer scored the `{val.get('split', 'val')}` split (ingest `--holdout`, chosen by",
        f"key hash) at step {val.get('step', '?')}: top-1/top-5 count a prediction as a hit when",
        "it is any of the image's labels; mAP is over labels with held-out images; head, torso",
        "and tail are thirds of the vocabulary by training frequency (`weakly eval` prints the",
        "same table for any checkpoint).",
        "",
        markdown_table(["labels", "images", "mAP labels", "top-1 %", "top-5 %", "mAP %"], rows),
        "",
    ]


def learned(run: Path, dataset_dir: Path, image_size: int) -> dict | None:
    """What the model learned: held-out top-1 against the label prior, overall and per class.

    The prior is the best a model that ignores the pixels can do on top-1: always predict the
    most frequent training label. Per class: held-out images carrying the class, how often the
    model's top prediction is that class (recall@1), and the class's share of training images
    (the hit rate of guessing labels at their training frequency)."""
    import torch

    from train.evaluate import score_split
    from train.shards import Dataset
    from train.transfer import model_from_checkpoint

    ckpt = Path(run) / "checkpoints" / "last.pt"
    val = Dataset(str(dataset_dir), "val")
    if not ckpt.exists() or not val.num_samples:
        return None
    model, _ = model_from_checkpoint(ckpt)
    scored = score_split(model, val, torch.device("cpu"), image_size)
    samples = read_index(dataset_dir, SAMPLES, columns=["labels", "split"]).to_pylist()
    train_counts = Counter(c for r in samples if r["split"] == "train" for c in r["labels"])
    n_train = sum(r["split"] == "train" for r in samples)
    names = val.meta["vocabulary"]["names"]
    top = scored.scores.argmax(1).tolist() if len(scored.labels) else []
    majority = train_counts.most_common(1)[0][0] if train_counts else -1
    per_class = []
    for c in sorted({c for lab in scored.labels for c in lab}, key=lambda c: -train_counts[c]):
        mine = [t for t, lab in zip(top, scored.labels, strict=True) if c in lab]
        per_class.append({"name": names[c], "images": len(mine),
                          "recall1": sum(t == c for t in mine) / len(mine),
                          "train_share": train_counts.get(c, 0) / max(1, n_train)})  # fmt: skip
    hits = [t in lab for t, lab in zip(top, scored.labels, strict=True)]
    return {
        "images": len(hits),
        "top1": sum(hits) / max(1, len(hits)),
        "prior_top1": sum(majority in lab for lab in scored.labels) / max(1, len(hits)),
        "prior_label": names[majority] if majority >= 0 else None,
        "per_class": per_class,
    }


def learned_section(result: dict | None) -> list[str]:
    if result is None:
        return []
    rows = [[c["name"], c["images"], f"{100 * c['recall1']:.0f}", f"{100 * c['train_share']:.0f}"]
            for c in result["per_class"]]  # fmt: skip
    lift = 100 * (result["top1"] - result["prior_top1"])
    return [
        "## What the model learned",
        "",
        f"Held-out top-1: {100 * result['top1']:.1f}% on {result['images']} images, against a "
        f"label prior of {100 * result['prior_top1']:.1f}% (always answering the most frequent "
        f"training label, {result['prior_label']}): {lift:+.1f} points from the pixels.",
        "",
        markdown_table(
            ["class", "held-out images", "top-1 = class %", "share of training %"], rows
        ),
        "",
        "A class whose held-out recall is well above its training share is one the model",
        "recognises; one near 0 with a small share is one it has not learned at this size.",
        "The held-out images are other random crops, scales, flips and colour shifts of the",
        "same few bundled photos, so this shows that tags and pixels are learned together",
        "end to end, not that the model generalises to new photos.",
        "",
    ]
