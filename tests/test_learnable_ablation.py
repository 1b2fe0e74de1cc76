"""The learnable synthetic sets (tags visible in the pixels, Zipf tail) and the mini ablation
run end to end: hard synth -> label noise and sampling laws -> grouped training -> scores,
intervals, table and plot."""

from __future__ import annotations

import io
import json
import math
import random
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import torch
from bench_tools import load_benchmark
from PIL import Image

from train.evaluate import score_split
from train.metrics import frequency_groups, hashtag_metrics
from train.shards import Dataset
from train.transfer import model_from_checkpoint
from weakly.ablate_grid import law_weights, noisy
from weakly.ablate_net import GroupedNet, member_loss, ridge_probe
from weakly.ablate_stats import cluster_bootstrap, grid_scores, paired_differences
from weakly.cli import main as weakly
from weakly.fixtures import build_fixture
from weakly.synth_hard import HardSynth, class_looks
from weakly.synth_learnable import MAX_CLASSES, learnable_synth, render, signatures
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


def test_hard_synth_has_many_varied_classes_and_a_tail_as_hard_as_the_head():
    s = HardSynth(pretrain=200, transfer=40, size=16, seed=3)
    looks = class_looks(240, 3)
    assert len({(x.fg, x.bg, x.texture) for x in looks}) == 240
    d = s.draw(3000, 0)
    counts = np.bincount([c for lab in d.labels for c in lab], minlength=200)
    order = np.argsort(s.ranks())  # classes by popularity
    assert counts[order[:10]].sum() > 5 * counts[order[-50:]].sum()  # Zipf: a long tail
    assert 0.3 < np.mean([len(lab) > 1 for lab in d.labels]) < 0.5  # multi-label
    # Co-occurrence: a second label is one of the first's partners far above chance (3/199).
    partners = s.partners()
    pairs = [(lab[0], lab[1]) for lab in d.labels if len(lab) == 2]
    linked = np.mean([b in partners[a] or a in partners[b] for a, b in pairs])
    assert linked > 0.4, linked
    # Difficulty does not follow frequency: a class's look (hue pair, texture) is independent
    # of its rank, so head and tail thirds draw from the same looks.
    head, tail = order[:66], order[-66:]
    for attr in ("fg", "texture"):
        h = np.bincount([getattr(looks[c], attr) for c in head], minlength=10) / 66
        t = np.bincount([getattr(looks[c], attr) for c in tail], minlength=10) / 66
        assert np.abs(h - t).sum() < 0.7, (attr, h, t)
    # Intra-class variation: two single-label images of one class differ a lot.
    c = int(order[0])
    same = [i for i, lab in enumerate(d.labels) if lab == [c]][:2]
    diff = np.abs(d.pixels[same[0]].astype(int) - d.pixels[same[1]].astype(int)).mean()
    assert diff > 20, diff
    again = HardSynth(pretrain=200, transfer=40, size=16, seed=3).draw(50, 0)
    assert np.array_equal(again.pixels, d.pixels[:50]) and again.labels == d.labels[:50]
    xs, ys = s.transfer_set(3, 0)
    assert xs.shape == (120, 16, 16, 3) and sorted(set(ys.tolist())) == list(range(40))


def test_tail_top1_counts_only_tail_labels():
    """Image 0 carries a head and a tail label and the model's top-1 is the head label: a head
    hit, not a tail hit. Image 1's top-1 is its tail label: a tail hit."""
    counts = [30, 20, 10, 5, 2, 1]  # head {0, 1}, torso {2, 3}, tail {4, 5}
    groups = np.full(6, -1)
    for g, members in enumerate(frequency_groups(counts).values()):
        groups[members] = g
    scores = np.array([[9, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 9], [0, 9, 0, 0, 2, 0]], float)
    labels = [[0, 4], [5], [2]]
    m = grid_scores(scores, labels, groups)
    assert m["top1"] == 2 / 3 and m["head_top1"] == 1.0 and m["tail_top1"] == 0.5
    assert m["torso_top1"] == 0.0
    # AP: class 0 and 5 -> 1; class 4 -> 1/2 (image 2 outranks its one positive); class 2 ->
    # 1/3 (all three scores tied: one threshold). Classes without positives are left out.
    assert m["head_mAP"] == 1.0 and m["tail_mAP"] == 0.75 and math.isclose(m["torso_mAP"], 1 / 3)


def test_cluster_bootstrap_and_pairing():
    assert cluster_bootstrap({0: [0.5, 0.5], 1: [0.5]}) == (0.5, 0.5, 0.5)
    mean, lo, hi = cluster_bootstrap({0: [1, 2, 3], 1: [2, 3, 4], 2: [3, 4, 5]})
    assert mean == 3 and lo < 3 < hi and lo >= 1 and hi <= 5
    runs = [
        {"loss": loss, "data_seed": d, "train_seed": t, "mAP": base + d + t}
        for loss, base in (("softmax", 0.5), ("bce", 0.25))
        for d in range(2)
        for t in range(3)
    ]
    runs.append({"loss": "softmax", "data_seed": 5, "train_seed": 0, "mAP": 9.0})  # unpaired
    diff = paired_differences(runs, "mAP", {"loss": "softmax"}, {"loss": "bce"})
    assert diff == {0: [0.25] * 3, 1: [0.25] * 3}


def test_grouped_members_share_nothing_and_bce_ignores_absent_classes():
    torch.manual_seed(0)
    net = GroupedNet(3, 5, width=4)
    x = torch.randn(8, 9, 16, 16)
    targets = torch.tensor([[[1, -1]] * 8] * 3)
    present = torch.tensor([[True, True, False, True, True]] * 3)
    out = net(x)
    assert out.shape == (3, 8, 5)
    member_loss("softmax", out[:1], targets[:1], present[:1]).backward()
    head_grad = net.weight.grad
    assert head_grad[0].abs().sum() > 0 and head_grad[1:].abs().sum() == 0
    conv = net.features[0].weight.grad.view(3, -1)
    assert conv[0].abs().sum() > 0 and conv[1:].abs().sum() == 0
    # BCE over the classes present: moving an absent class's logit changes nothing.
    logits = torch.randn(3, 8, 5)
    moved = logits.clone()
    moved[:, :, 2] += 7
    for name in ("bce", "softmax"):
        a, b = (
            member_loss(name, logits, targets, present),
            member_loss(name, moved, targets, present),
        )
        assert torch.isclose(a, b), name
    # A linear probe separates features that carry the class, not ones that do not.
    y = torch.arange(40) % 4
    good = torch.nn.functional.one_hot(y, 4).float()[None] + 0.1 * torch.randn(1, 40, 4)
    bad = torch.randn(1, 40, 4)
    acc = ridge_probe(
        torch.cat([good, bad])[:, :20], y[:20], torch.cat([good, bad])[:, 20:], y[20:], 4
    )
    assert acc[0] == 1.0 and acc[1] < 0.7


def test_noise_and_laws_come_from_the_pipeline():
    labels = [[0]] * 40 + [[1]] * 8 + [[2], [0, 2]]
    nat = law_weights(labels, 3, "natural")
    assert np.all(nat == nat[0]) and nat[0] > 0
    for law in ("sqrt", "inv-sqrt"):
        w = law_weights(labels, 3, law)
        assert w[0] < w[40] < w[48] and w[49] == w[48], (law, w)  # rarer tag, larger weight
    changed = noisy(labels, 0.5, seed=1)
    assert noisy(labels, 0.5, seed=1) == changed and noisy(labels, 0.0, seed=1) == labels
    frac = np.mean([a != b for a, b in zip(changed, labels, strict=True)])
    assert 0.15 < frac < 0.7, frac


def test_mini_ablation_end_to_end(tmp_path, capsys):
    """benchmarks/ablations.py's own `main(argv)` on the CI-sized grid, over the laws that
    pipeline/weights.py has (the full grid adds `uniform`)."""
    out = tmp_path / "abl"
    argv = ["--quick", "--out", str(out), "--laws", "natural,sqrt,inv-sqrt"]
    bench = load_benchmark("ablations")
    assert bench.main(argv) == 0
    assert "wrote" in capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    g = result["grid"]
    assert g["pretrain"] >= 200
    cells = Counter((r["noise"], r["loss"], r["law"]) for r in result["runs"])
    assert set(cells) == {
        (p, loss, law)
        for p in (0.0, 0.5)
        for loss in ("softmax", "bce")
        for law in ("natural", "sqrt", "inv-sqrt")
    }
    assert set(cells.values()) == {g["train_seeds"] * g["data_seeds"]}
    assert set(result["lr"]) == {"softmax", "bce"} and set(result["lr"].values()) <= set(
        g["lr_grid"]
    )
    assert {r["lr"] for r in result["sweep"]} == set(g["lr_grid"])
    for r in result["runs"] + result["balanced"]:
        assert r["lr"] == result["lr"][r["loss"]]
        for k in ("top1", "mAP", "head_mAP", "tail_mAP", "transfer_top1"):
            assert 0.0 <= r[k] <= 1.0, (k, r)
    assert len(result["balanced"]) == g["balance_seeds"] * g["data_seeds"]
    table = (out / "table.md").read_text()
    assert "learning rate chosen on val mAP" in table and "difficulty check" in table
    rows = [x for x in table.splitlines() if x.startswith("| 0")]
    assert len(rows) == len(cells)
    assert table.count("| softmax beats BCE |") == 2 * 3 * 2  # noise x law x metric
    assert (out / "ablations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "table.md").unlink()
    assert bench.main(["--out", str(out), "--replot"]) == 0  # the table from results.json alone
    assert (out / "table.md").read_text() == table
    bad = ["--quick", "--out", str(tmp_path / "bad"), "--laws", "natural,bogus"]
    assert bench.main(bad) == 2 and "--laws bogus" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before any data is drawn
