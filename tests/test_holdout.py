"""`weakly ingest --holdout`: a val split chosen by key hash, written as `val` shards beside
`train`, and the trainer evaluating on it every N steps and at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds

from pipeline.ingest import IngestConfig, RunOptions, ingest
from pipeline.ingest_cli import config_from_args
from pipeline.split import split_of, unit_hash
from weakly.cli import build_parser
from weakly.cli import main as weakly
from weakly.fixtures import build_fixture
from weakly.synth import synth
from weakly_base.index_tables import read_index

ROOT = Path(__file__).resolve().parents[1]

QUIET = RunOptions(progress=False)


def test_split_is_a_function_of_the_key_with_the_asked_fraction():
    keys = [f"row{i:05d}" for i in range(20_000)]
    val = {k for k in keys if split_of(k, 0.2) == "val"}
    assert abs(len(val) / len(keys) - 0.2) < 0.015  # binomial sd 0.003
    assert {k for k in reversed(keys) if split_of(k, 0.2) == "val"} == val  # order-free
    assert val <= {k for k in keys if split_of(k, 0.5) == "val"}  # nested as fraction grows
    assert all(split_of(k, 0.0) == "train" for k in keys[:100])
    assert 0.0 <= min(map(unit_hash, keys)) and max(map(unit_hash, keys)) < 1.0
    with pytest.raises(ValueError, match="--holdout 1.0"):
        IngestConfig(holdout=1.0)
    args = build_parser(["ingest"]).parse_args(
        ["ingest", "m.parquet", "--out", "o", "--holdout", "0.1"]
    )
    assert config_from_args(args).holdout == 0.1


@pytest.fixture(scope="module")
def held_out(ray_local, lexicon_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("holdout")
    synth(70, root / "syn", seed=3, min_px=64, max_px=200, lexicon_dir=str(lexicon_dir))
    manifest = [str(root / "syn" / "manifest.parquet")]
    config = IngestConfig(lexicon_dir=str(lexicon_dir), holdout=0.3, shard_size=15, chunk_rows=32)
    ingest(manifest, root / "ds", config, QUIET)
    return root, manifest, config


def test_ingest_writes_val_shards_by_key(held_out, lexicon_dir):
    root, manifest, config = held_out
    out = root / "ds"
    samples = read_index(out, "samples").to_pylist()
    shards = read_index(out, "shards").to_pylist()
    meta = json.loads((out / "dataset.json").read_text())
    by_split = {s: [r for r in samples if r["split"] == s] for s in ("train", "val")}
    assert by_split["val"] and by_split["train"]
    for row in samples:
        assert row["split"] == split_of(row["key"], 0.3)
        assert row["shard"].startswith(f"shards/{row['split']}-")
    for split, rows in by_split.items():
        mine = [s for s in shards if s["split"] == split]
        assert all(s["file"].startswith(f"shards/{split}-") for s in mine)
        assert meta["splits"][split]["samples"] == len(rows) == sum(s["n"] for s in mine)
        assert meta["splits"][split]["shards"] == len(mine)
        keys = []
        for shard in mine:
            for sample in wds.WebDataset(str(out / shard["file"]), shardshuffle=False):
                keys.append(json.loads(sample["json"])["key"])
        assert sorted(keys) == sorted(r["key"] for r in rows)
    assert meta["splits"]["val"]["holdout"] == 0.3
    assert meta["totals"]["written"] == len(samples)

    # The same keys are held out whatever else changes (here: label noise).
    noisy = root / "noisy"
    ingest(
        manifest,
        noisy,
        IngestConfig(**{**config.__dict__, "label_noise": 0.5}),
        QUIET,
    )
    noisy_val = read_index(noisy, "samples").to_pylist()
    assert {r["key"] for r in noisy_val if r["split"] == "val"} == {
        r["key"] for r in by_split["val"]
    }
    # ... and keep their labels as given: noise is a treatment of the train split only
    clean_labels = {r["key"]: r["labels"] for r in by_split["val"]}
    assert {r["key"]: r["labels"] for r in noisy_val if r["split"] == "val"} == clean_labels
    noise = json.loads((noisy / "dataset.json").read_text())["label_noise"]
    assert noise["nominal"] == 0.5 and 0.2 < noise["realised"] < 0.8 and noise["replaced"]

    # Weights: val samples weigh 1; train weights are each image's expected appearances per
    # epoch and sum to the epoch size (1x the planned train images), less the weights of rows
    # that pass 2 rejected.
    law = meta["law"]
    assert law["scheme"] == "inv-sqrt" and law["holdout"] == 0.3
    assert all(r["weight"] == 1.0 for r in by_split["val"])
    train_sum = sum(r["weight"] for r in by_split["train"])
    assert train_sum <= law["epoch_size"] * (1 + 1e-9) and law["epoch_size"] == law["images"]
    if len(by_split["train"]) == law["images"]:
        assert train_sum == pytest.approx(law["epoch_size"], rel=1e-9)


def test_trainer_evaluates_on_the_val_split(held_out, tmp_path, capsys):
    root, _, _ = held_out
    out = tmp_path / "run"
    argv = [
        "train", "--data", str(root / "ds"), "--model", "tiny", "--out", str(out),
        "--steps", "6", "--batch-size", "8", "--image-size", "32", "--device", "cpu",
        "--workers", "0", "--shuffle-buffer", "16", "--eval-every", "4",
    ]  # fmt: skip
    assert weakly(argv) == 0
    rows = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    val = json.loads((root / "ds" / "dataset.json").read_text())["splits"]["val"]["samples"]
    assert [r["step"] for r in rows] == [4, 6]
    assert all(r["images"] == val and r["split"] == "val" for r in rows)
    assert set(rows[-1]["groups"]) == {"head", "torso", "tail"}
    assert "top-1%" in capsys.readouterr().out

    # --no-eval turns it off; a --val-shards without that split is a clear error.
    assert weakly(argv[:-2] + ["--no-eval", "--out", str(tmp_path / "quiet")]) == 0
    assert not (tmp_path / "quiet" / "val.jsonl").exists()
    bad = argv + ["--out", str(tmp_path / "bad"), "--val-shards", str(root / "ds"),
                  "--val-split", "test"]  # fmt: skip
    assert weakly(bad) == 2
    assert "no shards for split 'test'" in capsys.readouterr().err


def test_ddp_run_evaluates_once_on_rank0_and_matches_weakly_eval(tmp_path):
    """Two torchrun ranks: rank 0 scores --val-shards while rank 1 waits at the barrier; the
    numbers equal a later `weakly eval` of the final checkpoint (same deterministic scoring)."""
    train_ds = build_fixture(tmp_path / "a", samples=60, classes=5, seed=1, max_side=48)
    val_ds = build_fixture(tmp_path / "b", samples=30, classes=5, seed=2, max_side=48)
    out = tmp_path / "ddp"
    cmd = [
        str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2",
        "-m", "train", "--data", str(train_ds), "--model", "tiny", "--out", str(out),
        "--steps", "4", "--batch-size", "6", "--image-size", "24", "--device", "cpu",
        "--workers", "0", "--shuffle-buffer", "16", "--val-shards", str(val_ds),
        "--val-split", "train", "--eval-every", "2",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(r["images"] == 30 for r in rows)
    report = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--shards",
            str(val_ds), "--split", "train", "--json", str(report)]  # fmt: skip
    assert weakly(argv) == 0
    standalone = json.loads(report.read_text())
    for name in ("top1", "top5", "mAP"):
        assert standalone[name] == pytest.approx(rows[-1][name])
