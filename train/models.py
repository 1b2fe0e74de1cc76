"""Models by name, with a head sized to the vocabulary; never any pretrained weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import Bottleneck, ResNet


class TinyNet(nn.Module):
    """Three strided conv blocks: enough to learn something on CPU in tests."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def resnext101_32x16d(num_classes: int) -> ResNet:
    """Mahajan et al.'s 32x16d; torchvision has no builder for it."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, groups=32, width_per_group=16)


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "tiny": TinyNet,
    "resnet18": lambda n: tvm.resnet18(weights=None, num_classes=n),
    "resnet50": lambda n: tvm.resnet50(weights=None, num_classes=n),
    "resnext101_32x8d": lambda n: tvm.resnext101_32x8d(weights=None, num_classes=n),
    "resnext101_32x16d": resnext101_32x16d,
    "regnet_y_16gf": lambda n: tvm.regnet_y_16gf(weights=None, num_classes=n),
    "vit_b_16": lambda n: tvm.vit_b_16(weights=None, num_classes=n),
}


def build_model(name: str, num_classes: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](num_classes)


def head(model: nn.Module) -> nn.Linear:
    """The final classifier layer (for checks and for linear probes)."""
    if hasattr(model, "heads"):
        return model.heads.head
    return model.fc
