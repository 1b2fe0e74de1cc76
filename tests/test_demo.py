"""`weakly demo --quick`: the whole system in reduced mode (synth, eval index, ingest on a local
Ray, training, report), with the report's claims re-derived from the run's own files."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from weakly.cli import main
from weakly.photos import PHOTO_TAGS
from weakly_base.index_tables import read_index
from wordnet_tools import load_lexicon

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    assert main(["demo", "--quick", "--out", str(out), "--num-cpus", "2", "--device", "cpu"]) == 0
    return out


def test_quick_demo_writes_report_plots_and_model(demo_out):
    report = (demo_out / "report.md").read_text()
    for heading in ("## Ingest summary", "## Eval-set dedup", "## Canonicalisation", "## Training"):
        assert heading in report
    for plot in ("loss.png", "dataset/index/report.png"):
        assert f"]({plot})" in report
        with Image.open(demo_out / plot) as img:
            assert img.format == "PNG" and min(img.size) > 100
    metrics = [json.loads(x) for x in (demo_out / "run/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [15, 30, 45, 60]
    assert all(math.isfinite(m["loss"]) for m in metrics)
    assert (demo_out / "run/checkpoints/last.pt").exists()
    dataset = json.loads((demo_out / "dataset/dataset.json").read_text())
    assert f"{dataset['splits']['train']['samples']:,} samples" in report
    # The held-out split is scored at the end of training and its numbers are the report's.
    val = [json.loads(x) for x in (demo_out / "run/val.jsonl").read_text().splitlines()][-1]
    assert val["split"] == "val" and val["step"] == 60
    assert val["images"] == dataset["splits"]["val"]["samples"] > 0
    assert f"| all | {val['images']} | {val['map_labels']} |" in report


def test_the_model_learns_more_than_the_label_prior(demo_out):
    """Tags name what the photos show, so held-out top-1 beats always answering the most
    frequent training label; recomputed here from the index and the trainer's own val.jsonl."""
    samples = read_index(demo_out / "dataset", "samples").to_pylist()
    train = Counter(c for r in samples if r["split"] == "train" for c in r["labels"])
    majority = train.most_common(1)[0][0]
    val_labels = [r["labels"] for r in samples if r["split"] == "val"]
    prior = sum(majority in lab for lab in val_labels) / len(val_labels)
    val = [json.loads(x) for x in (demo_out / "run/val.jsonl").read_text().splitlines()][-1]
    assert len(val_labels) == val["images"] >= 15
    assert val["top1"] > prior + 0.15, (val["top1"], prior)
    report = (demo_out / "report.md").read_text()
    said = re.search(
        r"Held-out top-1: ([\d.]+)% on (\d+) images, against a label prior of ([\d.]+)%", report
    )
    assert said and int(said[2]) == val["images"]
    assert abs(float(said[3]) - 100 * prior) < 0.06 and float(said[1]) > float(said[3])
    # Every synth row's tags name its photo's subject (or are junk / one wrong tag).
    manifest = pq.read_table(demo_out / "synth/manifest.parquet").to_pylist()
    lexicon = load_lexicon("in1k")
    subjects = {lexicon.canonical(t) for tags in PHOTO_TAGS.values() for t in tags}
    tagged = [r for r in manifest if not r["planted_from"] and r["tags"]]
    on_subject = [r for r in tagged if set(lexicon.canonical_many(r["tags"])) & subjects]
    assert len(on_subject) > 0.4 * len(tagged)


def test_report_dedup_numbers_match_the_run(demo_out):
    """Recount from the synth manifest and ingest's rejects what the report says."""
    manifest = pq.read_table(demo_out / "synth/manifest.parquet").to_pylist()
    planted = {r["key"] for r in manifest if r["planted_from"]}
    rejects = read_index(demo_out / "dataset", "rejects").to_pylist()
    removed = {r["key"] for r in rejects if r["reason"] == "eval_near_copy"}
    assert planted and removed
    report = (demo_out / "report.md").read_text()
    said = re.search(r"planted (\d+) near-copies .* removed (\d+) of them", report)
    assert said and (int(said[1]), int(said[2])) == (len(planted), len(planted & removed))
    assert "(false alarms): 0." in report and removed <= planted  # nothing else removed


def test_report_merges_are_real_lexicon_merges(demo_out):
    report = (demo_out / "report.md").read_text()
    section = report.split("## Canonicalisation")[1].split("Hand-written")[0]
    rows = re.findall(r"^\| (n\d{8}) \| [^|]+ \| \d+ \| (.+) \|$", section, re.M)
    assert rows
    lexicon = load_lexicon("in1k")
    for wnid, forms in rows:
        tags = re.findall(r"`([^`]+)`", forms)
        assert len(tags) >= 2 and all(lexicon.canonical(t) == wnid for t in tags)


def test_bad_demo_flags_are_one_line_errors(tmp_path, capsys):
    assert main(["demo", "--quick", "--n", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--n and --steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_handwritten_rows_are_canonicalised_or_rejected_with_a_reason(demo_out):
    """The hand-written hashtags reach the dataset as merged synsets; junk and untagged rows
    are rejected with their reason, read back from the index, never silently dropped."""
    rows = re.findall(
        r"^\| (\w+) \| ([^|]+) \| ([^|]+) \|$", (demo_out / "report.md").read_text(), re.M
    )
    outcome = {tags.strip(): result.strip() for _, tags, result in rows}
    assert outcome["#Tabby #instagood #cats"] == "tabby"
    assert outcome["#daisy #daisies #Daisy #flowers"] == "daisy"
    assert outcome["#instagood #photooftheday #2024 #🐻 #love"] == "rejected: out_of_vocabulary"
    assert outcome["(no tags)"] == "rejected: no_tags"
    rejects = read_index(demo_out / "dataset", "rejects").to_pylist()
    assert {r["reason"] for r in rejects if r["key"].startswith("hw")} == {
        "out_of_vocabulary",
        "no_tags",
    }
