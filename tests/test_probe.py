"""`weakly probe`: logistic regression recovers separable problems; ImageFolder and shard
sources; bad input is skipped and counted or refused with a clear message."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from train.logreg import fit, select_l2, top_k_accuracy
from weakly.cli import main as weakly
from weakly.fixtures import build_fixture, colour_stripes_jpeg

torch.set_num_threads(1)

COLOURS = {"red": (200, 30, 30), "green": (30, 190, 40), "blue": (40, 50, 210)}


def test_logistic_regression_recovers_separable_blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (5, 16)) * 3
    y = rng.integers(0, 5, 600)
    x = (centres[y] + rng.normal(0, 1, (600, 16))).astype(np.float32)
    xtr, ytr, xte, yte = x[:400], y[:400], x[400:], y[400:]
    l2, scores = select_l2(xtr, ytr, 5)
    assert set(scores) == {1e-5, 1e-4, 1e-3, 1e-2, 1e-1} and scores[l2] == max(scores.values())
    model = fit(xtr, ytr, 5, l2)
    assert top_k_accuracy(model.logits(xte), yte, 1) >= 0.95
    assert top_k_accuracy(model.logits(xte), yte, 5) == 1.0
    # A huge penalty really regularises: the weights shrink towards zero.
    assert model.weight.norm() > 10 * fit(xtr, ytr, 5, 1e3).weight.norm()


def _jpeg(colour, rng) -> bytes:
    img = np.full((40, 40, 3), colour, dtype=np.float32) + rng.normal(0, 25, (40, 40, 3))
    x, y = rng.integers(0, 30, 2)
    img[y : y + 10, x : x + 10] = rng.integers(0, 256, 3)  # a distractor patch
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    data = build_fixture(root / "ds", samples=48, classes=5, seed=3, image=colour_stripes_jpeg)
    argv = ["train", "--data", str(data), "--model", "tiny", "--out", str(root / "run"),
            "--steps", "2", "--batch-size", "8", "--image-size", "24", "--device", "cpu",
            "--workers", "0", "--shuffle-buffer", "16"]  # fmt: skip
    assert weakly(argv) == 0
    return root / "run" / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder") / "imgs"
    rng = np.random.default_rng(1)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(50):
            (root / name / f"{i:03d}.jpg").write_bytes(_jpeg(colour, rng))
    (root / "empty").mkdir()
    (root / "red" / "broken.jpg").write_bytes(_jpeg((0, 0, 0), rng)[:300])
    (root / "blue" / "notes.jpg").write_bytes(b"not a picture\n")
    (root / "green" / "README.txt").write_text("hello")
    return root


def test_probe_imagefolder_separable_and_cached(tiny_ckpt, folder, tmp_path, capsys):
    out = tmp_path / "probe"
    argv = ["probe", "--checkpoint", str(tiny_ckpt), "--train", str(folder), "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    assert weakly(argv) == 0
    result = json.loads((out / "probe.json").read_text())
    err = capsys.readouterr().err
    assert result["classes"] == 3 and result["train_images"] + result["test_images"] == 150
    assert result["top1"] >= 0.95 and result["test_images"] >= 20
    assert result["skipped"] == {
        "train empty_classes": 1,
        "train not_images": 1,
        "train unreadable": 2,
    }
    assert "empty classes: 1 (e.g. empty)" in err and "red/broken.jpg" in err
    assert not result["features_cached"]

    assert weakly(argv + ["--l2-grid", "0.01"]) == 0  # another grid: no new forward pass
    again = json.loads((out / "probe.json").read_text())
    assert again["features_cached"] and again["l2"] == 0.01 and again["top1"] >= 0.95


def test_probe_refuses_one_class_and_other_arch(tiny_ckpt, tmp_path, capsys):
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        (one / "only" / f"{i}.jpg").write_bytes(_jpeg((9, 9, 9), rng))
    (one / "void").mkdir()
    base = ["probe", "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "o"),
            "--device", "cpu"]  # fmt: skip
    assert weakly(base + ["--train", str(one)]) == 2
    assert "1 class(es) with images (only); a linear probe needs at least two" in (
        capsys.readouterr().err
    )
    assert weakly(base + ["--train", str(one), "--model", "resnet50"]) == 2
    assert "a tiny checkpoint, not resnet50" in capsys.readouterr().err


def test_probe_on_shards_with_a_class_field(tiny_ckpt, tmp_path, capsys):
    def klass(labels):  # the first label's stripe colour decides the class
        return {"extra": {"class": f"c{labels[0] % 3}"}} if labels[0] != 4 else {}

    data = build_fixture(
        tmp_path / "ds", samples=120, classes=5, seed=8, image=colour_stripes_jpeg,
        extra_meta=klass,
    )  # fmt: skip
    argv = ["probe", "--checkpoint", str(tiny_ckpt), "--train", str(data), "--out",
            str(tmp_path / "p"), "--class-field", "extra.class", "--device", "cpu"]  # fmt: skip
    assert weakly(argv) == 0
    result = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert result["classes"] == 3
    skipped = result["skipped"].get("train no_extra.class_field", 0)
    assert skipped > 0 and result["train_images"] + result["test_images"] + skipped == 120
    assert result["top1"] > 0.5  # chance is ~1/3


def test_probe_goes_on_past_a_cut_shard_and_counts_its_samples(tiny_ckpt, tmp_path, capsys):
    def klass(labels):
        return {"extra": {"class": f"c{labels[0] % 3}"}}

    data = build_fixture(
        tmp_path / "ds", samples=120, classes=5, seed=8, image=colour_stripes_jpeg,
        extra_meta=klass, max_shard=30,
    )  # fmt: skip
    tars = sorted((data / "shards").glob("*.tar"))
    assert len(tars) >= 3
    cut = tars[1]
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])  # a cut object, mid-member
    argv = ["probe", "--checkpoint", str(tiny_ckpt), "--train", str(data), "--out",
            str(tmp_path / "p"), "--class-field", "extra.class", "--device", "cpu"]  # fmt: skip
    assert weakly(argv) == 0
    err = capsys.readouterr().err
    assert cut.name in err and "unread samples are left out" in err
    result = json.loads((tmp_path / "p" / "probe.json").read_text())
    lost = result["skipped"].get("train in_unreadable_shards", 0)
    assert 0 < lost < 30
    assert result["train_images"] + result["test_images"] + lost == 120
