"""Hashtag metrics against values worked out by hand, and `weakly eval` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from train.evaluate import score_split
from train.metrics import (
    average_precision,
    frequency_groups,
    hashtag_metrics,
    top_k_hits,
)
from train.shards import Dataset
from train.transfer import model_from_checkpoint
from weakly.cli import main as weakly
from weakly.fixtures import build_fixture, colour_stripes_jpeg

torch.set_num_threads(1)

# Four images, four classes. Worked by hand:
#   top-1: img0 -> 0 (hit), img1 -> 1 (miss), img2 -> 2 (hit), img3 -> 1 (miss): 0.5
#   top-2: {0,2} hit, {1,2} hit, {2,3} hit, {1,3} miss: 0.75
#   AP class 0 (positives img0, img3): ranking img0 .9 P, img1 .2, img3 .15 P, img2 .1
#     -> (1/1 + 2/3) / 2 = 0.8333; class 2 (img1, img2) ranked 1st, 2nd -> 1; class 3 (img2) -> 1
SCORES = np.array(
    [
        [0.9, 0.1, 0.3, 0.2],
        [0.2, 0.8, 0.7, 0.1],
        [0.1, 0.2, 0.6, 0.5],
        [0.15, 0.4, 0.1, 0.2],
    ]
)
LABELS = [[0], [2], [2, 3], [0]]
COUNTS = [10, 0, 5, 1]  # training frequency: head {0}, torso {2}, tail {3}; class 1 unseen


def test_top_k_hit_rates_by_hand():
    assert top_k_hits(SCORES, LABELS, 1).tolist() == [True, False, True, False]
    assert top_k_hits(SCORES, LABELS, 2).tolist() == [True, True, True, False]
    tied = np.array([[0.5, 0.5, 0.1]])  # ties go to the lower class index
    assert top_k_hits(tied, [[1]], 1).tolist() == [False]
    assert top_k_hits(tied, [[0]], 1).tolist() == [True]


def test_average_precision_by_hand_and_against_sklearn():
    assert average_precision(SCORES[:, 0], np.array([1, 0, 0, 1])) == pytest.approx(5 / 6)
    # Tied scores are one threshold: at 0.5 precision 1/2 reaches recall 1.
    assert average_precision(np.array([0.5, 0.5, 0.2]), np.array([0, 1, 0])) == 0.5
    assert np.isnan(average_precision(np.array([0.1, 0.2]), np.array([0, 0])))
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        scores = rng.integers(0, 6, n) / 5.0  # many ties
        positive = rng.random(n) < 0.4
        positive[0] = True
        want = average_precision_score(positive, scores)
        assert average_precision(scores, positive) == pytest.approx(want)


def test_frequency_groups_are_thirds_of_seen_labels():
    groups = frequency_groups([5, 0, 9, 9, 1, 3, 2, 7])
    assert [g.tolist() for g in groups.values()] == [[2, 3, 7], [0, 5], [6, 4]]


def test_hashtag_metrics_by_hand():
    m = hashtag_metrics(SCORES, LABELS, COUNTS, min_images=1)
    assert m["images"] == 4 and m["top1"] == 0.5 and m["top5"] == 1.0
    assert m["map_labels"] == 3 and m["mAP"] == pytest.approx((5 / 6 + 1 + 1) / 3)
    head, torso, tail = (m["groups"][g] for g in ("head", "torso", "tail"))
    # Images go to the group of their rarest label: img2 {2, 3} is a tail image.
    assert (head["images"], torso["images"], tail["images"]) == (2, 1, 1)
    assert (head["top1"], torso["top1"], tail["top1"]) == (0.5, 0.0, 1.0)
    assert head["mAP"] == pytest.approx(5 / 6) and torso["mAP"] == 1.0 and tail["mAP"] == 1.0
    m2 = hashtag_metrics(SCORES, LABELS, COUNTS, min_images=2)  # class 3 has one image
    assert m2["map_labels"] == 2 and m2["mAP"] == pytest.approx((5 / 6 + 1) / 2)
    assert m2["groups"]["tail"]["mAP"] is None and m2["groups"]["tail"]["map_labels"] == 0
    with pytest.raises(ValueError, match="3 label counts for 4 classes"):
        hashtag_metrics(SCORES, LABELS, COUNTS[:3])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    data = build_fixture(
        root / "ds", samples=96, classes=6, seed=5, corrupt=3, image=colour_stripes_jpeg
    )
    argv = [
        "train", "--data", str(data), "--model", "tiny", "--out", str(root / "run"),
        "--steps", "4", "--batch-size", "16", "--image-size", "16", "--device", "cpu",
        "--workers", "0", "--shuffle-buffer", "32",
    ]  # fmt: skip
    assert weakly(argv) == 0
    return root, data, root / "run" / "checkpoints" / "last.pt"


def test_weakly_eval_end_to_end(trained, tmp_path, capsys):
    root, data, ckpt = trained
    report = tmp_path / "m.json"
    argv = ["eval", "--checkpoint", str(ckpt), "--shards", str(data), "--json", str(report)]
    assert weakly(argv + ["--min-images", "2"]) == 0
    out = capsys.readouterr()
    assert "no val split; scoring the train split" in out.err and "tail" in out.out
    got = json.loads(report.read_text())
    assert got["images"] == 93 and got["corrupt_skipped"] == 3 and got["step"] == 4

    # The same numbers as scoring by hand through the library.
    model, _ = model_from_checkpoint(ckpt)
    dataset = Dataset(str(data), "train")
    scored = score_split(model, dataset, torch.device("cpu"), 16, batch_size=7)
    counts = dataset.meta["vocabulary"]["counts"]
    want = hashtag_metrics(scored.scores, scored.labels, counts, min_images=2)
    for name in ("top1", "top5", "mAP", "map_labels"):
        assert got[name] == pytest.approx(want[name])
    for group, values in want["groups"].items():
        assert got["groups"][group] == pytest.approx(values)


def test_weakly_eval_refuses_other_vocab_or_arch(trained, tmp_path, capsys):
    _, _, ckpt = trained
    other = build_fixture(tmp_path / "other", samples=30, classes=5, seed=1)
    assert weakly(["eval", "--checkpoint", str(ckpt), "--shards", str(other)]) == 2
    assert "vocabulary of 6 labels differs" in capsys.readouterr().err
    argv = ["eval", "--checkpoint", str(ckpt), "--shards", str(other), "--model", "resnet18"]
    assert weakly(argv) == 2
    assert "a tiny checkpoint, not resnet18" in capsys.readouterr().err
    torn = tmp_path / "torn.pt"
    torn.write_bytes(ckpt.read_bytes()[:1000])
    assert weakly(["eval", "--checkpoint", str(torn), "--shards", str(other)]) == 2
    assert "not a readable torch checkpoint" in capsys.readouterr().err
