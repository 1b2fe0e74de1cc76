"""`weakly export` loads into torchvision; `weakly train --init CKPT --reset-head` fine-tunes."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from weakly.cli import main as weakly
from weakly.fixtures import build_fixture

torch.set_num_threads(1)

SMALL = ["--batch-size", "4", "--image-size", "32", "--device", "cpu", "--workers", "0",
         "--shuffle-buffer", "8"]  # fmt: skip


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = build_fixture(root / "ds", samples=24, classes=6, seed=2, max_side=48)
    argv = ["train", "--data", str(data), "--model", "resnet18", "--out", str(root / "run"),
            "--steps", "2", *SMALL]  # fmt: skip
    assert weakly(argv) == 0
    return root, root / "run" / "checkpoints" / "last.pt"


def test_export_loads_into_torchvision_with_only_the_head_missing(resnet_run, capsys):
    root, ckpt = resnet_run
    out = root / "trunk.pt"
    assert weakly(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["head_keys_dropped"] == ["fc.bias", "fc.weight"]
    assert info["torchvision_builder"] == "torchvision.models.resnet18"
    trunk = torch.load(out, weights_only=True)
    model = torchvision.models.resnet18()
    result = model.load_state_dict(trunk, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    trained = torch.load(ckpt, weights_only=True)["model"]
    assert torch.equal(model.conv1.weight, trained["conv1.weight"])
    assert torch.equal(model.layer4[1].bn2.running_var, trained["layer4.1.bn2.running_var"])


def test_finetune_from_checkpoint_with_a_new_head(resnet_run, tmp_path, capsys):
    root, ckpt = resnet_run
    other = build_fixture(tmp_path / "other", samples=24, classes=4, seed=9, max_side=48)
    base = ["train", "--data", str(other), "--model", "resnet18", "--steps", "1", *SMALL,
            "--init", str(ckpt)]  # fmt: skip

    assert weakly(base + ["--out", str(tmp_path / "a")]) == 2
    assert "vocabulary of 6 labels differs from the dataset's 4" in capsys.readouterr().err
    tiny = [a if a != "resnet18" else "tiny" for a in base]
    assert weakly(tiny + ["--out", str(tmp_path / "b"), "--reset-head"]) == 2
    assert "a resnet18 checkpoint, but --model is tiny" in capsys.readouterr().err

    # lr 0: the trunk must come out exactly as the pretrained one went in.
    run = tmp_path / "ft"
    assert weakly(base + ["--out", str(run), "--reset-head", "--lr", "0"]) == 0
    tuned = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    source = torch.load(ckpt, weights_only=True)["model"]
    assert tuned["fc.weight"].shape == (4, 512)
    assert torch.equal(tuned["conv1.weight"], source["conv1.weight"])
    assert torch.equal(tuned["layer3.0.conv2.weight"], source["layer3.0.conv2.weight"])
