"""The learnable synthetic set (tags visible in the pixels, Zipf tail) and the mini ablation
run end to end: synth -> ingest with noise and holdout -> train -> eval -> table and plot."""

from __future__ import annotations

import io
import json
import random
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import torch
from bench_tools import load_benchmark
from PIL import Image

from train.evaluate import score_split
from train.metrics import hashtag_metrics
from train.shards import Dataset
from train.transfer import model_from_checkpoint
from weakly.cli import main as weakly
from weakly.fixtures import build_fixture
from weakly.synth_learnable import MAX_CLASSES, learnable_synth, render, signatures
from weakly_base.index_tables import read_index
from wordnet_tools import load_lexicon

torch.set_num_threads(1)


def test_signatures_are_unique_and_tags_canonicalise_to_the_truth(lexicon_dir, tmp_path):
    sigs = signatures([(f"n{i:08d}", f"l{i}") for i in range(MAX_CLASSES)])
    assert len({(s.colour, s.texture) for s in sigs}) == MAX_CLASSES
    manifest = learnable_synth(
        400, tmp_path / "syn", classes=8, seed=1, lexicon_dir=str(lexicon_dir)
    )
    rows = pq.read_table(manifest).to_pylist()
    lex = load_lexicon("in1k", lexicon_dir=lexicon_dir)
    for row in rows:
        found = {w for w in lex.canonical_many(row["tags"]) if w is not None}
        assert found == set(row["true_wnids"]), row
        with Image.open(row["path"]) as img:
            assert img.size == (64, 64) and img.format == "JPEG"
    meta = json.loads((tmp_path / "syn" / "synth.json").read_text())
    counts = [s["images"] for s in meta["synsets"]]
    assert counts[0] > 5 * counts[-1] and sum(counts) >= 400  # Zipf: a long tail
    again = learnable_synth(
        400, tmp_path / "again", classes=8, seed=1, lexicon_dir=str(lexicon_dir)
    )
    assert (tmp_path / "again" / "images" / "l0000123.jpg").read_bytes() == (
        tmp_path / "syn" / "images" / "l0000123.jpg"
    ).read_bytes() and pq.read_table(again)["tags"] == pq.read_table(manifest)["tags"]


def _signature_jpeg(rng: np.random.Generator, labels: list[int]) -> bytes:
    sigs = signatures([(f"n{i:08d}", f"l{i}") for i in range(8)])
    pixels = render([sigs[j] for j in labels], random.Random(int(rng.integers(1 << 30))), 48)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_a_tiny_model_learns_the_signatures_on_cpu(tmp_path):
    data = build_fixture(tmp_path / "ds", samples=320, classes=8, seed=2, image=_signature_jpeg)
    argv = ["train", "--data", str(data), "--model", "tiny", "--out", str(tmp_path / "run"),
            "--steps", "120", "--batch-size", "32", "--image-size", "32", "--device", "cpu",
            "--workers", "0", "--lr", "1.0", "--warmup-steps", "10", "--shuffle-buffer", "128",
            "--log-every", "40"]  # fmt: skip
    assert weakly(argv) == 0
    model, _ = model_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    ds = Dataset(str(data))
    scored = score_split(model, ds, torch.device("cpu"), 32)
    m = hashtag_metrics(scored.scores, scored.labels, ds.meta["vocabulary"]["counts"])
    majority = Counter(c for lab in scored.labels for c in lab).most_common(1)[0][1]
    assert m["top1"] > 0.8 and m["top1"] > majority / len(scored.labels) + 0.3, m


def test_mini_ablation_end_to_end(ray_local, lexicon_dir, tmp_path, capsys):
    """benchmarks/ablations.py's own `main(argv)`, in-process on the session's local Ray."""
    out = tmp_path / "abl"
    argv = ["--quick", "--out", str(out), "--lexicon-dir", str(lexicon_dir)]
    assert load_benchmark("ablations").main(argv) == 0
    assert "wrote" in capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    cells = {(r["noise"], r["loss"], r["sampling"]) for r in result["runs"]}
    assert cells == {
        (p, loss, s)
        for p in (0.0, 0.5)
        for loss in ("softmax", "bce")
        for s in ("weighted", "natural")
    }
    for r in result["runs"]:
        assert all(0.0 <= r[k] <= 1.0 for k in ("top1", "top5", "head_top1", "tail_top1"))
        assert r["head_images"] + r["torso_images"] + r["tail_images"] > 0
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + 8 and table[0].startswith("| noise | loss | sampling | top-1")
    assert (out / "ablations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Noise really replaced labels in training, and every run was scored on the same keys.
    work = out / "work"
    clean = read_index(work / "ds-noise0", "samples").to_pylist()
    noisy = read_index(work / "ds-noise0.5", "samples").to_pylist()
    by_key = {r["key"]: r["labels"] for r in clean}
    changed = sum(by_key[r["key"]] != r["labels"] for r in noisy) / len(noisy)
    assert 0.15 < changed < 0.7, changed
    val = {r["key"] for r in clean if r["split"] == "val"}
    assert val == {r["key"] for r in noisy if r["split"] == "val"} and len(val) > 20
