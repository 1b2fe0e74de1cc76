"""The 1/k softmax loss against a dense float64 reference, BCE, models by name, LR schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from train.loop import lr_factor
from train.loss import bce_loss, dense_targets, get_loss, multilabel_softmax_loss
from train.models import build_model, head


def _batch(seed: int, b: int = 7, c: int = 53, kmax: int = 4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    targets = torch.full((b, kmax), -1, dtype=torch.long)
    for i in range(b):
        k = 1 + i % kmax
        targets[i, :k] = torch.randperm(c, generator=g)[:k].sort().values
    return logits, targets


def _dense_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    t = dense_targets(targets, logits.shape[1], torch.float64)
    t = t / t.sum(dim=1, keepdim=True)
    return -(t * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_softmax_loss_and_gradient_match_dense_reference(seed):
    logits, targets = _batch(seed)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = multilabel_softmax_loss(a, targets)
    ref = _dense_reference(b, targets)
    # float64 end to end: agreement to rounding error, not to a loose tolerance.
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12)
    (ga,) = torch.autograd.grad(ours, a)
    (gb,) = torch.autograd.grad(ref, b)
    assert torch.allclose(ga, gb, rtol=0, atol=1e-14)


def test_softmax_loss_of_single_label_is_cross_entropy():
    logits, _ = _batch(3, kmax=1)
    labels = torch.arange(logits.shape[0]) % logits.shape[1]
    ours = multilabel_softmax_loss(logits, labels[:, None])
    assert torch.allclose(ours, F.cross_entropy(logits, labels), atol=1e-12)


def test_softmax_loss_float32_logits_computes_in_float32_or_better():
    logits, targets = _batch(4)
    ours = multilabel_softmax_loss(logits.float(), targets)
    assert abs(float(ours) - float(_dense_reference(logits, targets))) < 1e-5


def test_bce_matches_dense_reference():
    logits, targets = _batch(5)
    dense = dense_targets(targets, logits.shape[1], torch.float64)
    ref = F.binary_cross_entropy_with_logits(logits, dense, reduction="sum") / logits.shape[0]
    assert torch.allclose(bce_loss(logits, targets), ref, atol=1e-10)
    assert get_loss("bce") is bce_loss
    with pytest.raises(ValueError):
        get_loss("focal")


@pytest.mark.parametrize(
    "name,features",
    [
        ("resnet50", 2048),
        ("resnext101_32x8d", 2048),
        ("resnext101_32x16d", 2048),
        ("regnet_y_16gf", 3024),
        ("vit_b_16", 768),
    ],
)
def test_big_models_build_with_vocabulary_head(name, features):
    if name == "regnet_y_16gf":
        # torchvision derives RegNet widths with tensor ops that the meta device cannot run.
        model = build_model(name, 17_001)
    else:
        with torch.device("meta"):
            model = build_model(name, 17_001)
    fc = head(model)
    assert (fc.in_features, fc.out_features) == (features, 17_001)
    assert tuple(fc.weight.shape) == (17_001, features)
    if name.startswith("resnext101_32x"):
        conv = model.layer1[0].conv2
        width = int(name.rsplit("x", 1)[1][:-1])
        assert conv.groups == 32 and conv.out_channels == 32 * width


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
def test_small_models_run_on_cpu(name):
    torch.manual_seed(0)
    model = build_model(name, 11).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 11)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("alexnet9000", 3)


def test_lr_warmup_then_cosine():
    total, warm = 100, 10
    f = [lr_factor(s, warm, total) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10], strict=False))
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[-1] < 0.01
