"""A trained model out of a checkpoint, with or without its head: for eval, probe, export and
fine-tuning (`--init CKPT --reset-head`).

A checkpoint records its architecture (`args.model`) and vocabulary (`wnids`); every consumer
checks both against what it is about to do, so a resnet18 checkpoint is never silently half
loaded into a resnet50 and logits are never read against another vocabulary's class order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from .checkpoint import sha256_file
from .config import MAXIMUM, MINIMUM
from .models import build_model


def head_prefix(model: nn.Module) -> str:
    """State-dict prefix of the final classifier (torchvision's naming)."""
    return "heads.head." if hasattr(model, "heads") else "fc."


def read_checkpoint(path: str | Path) -> dict:
    """A training checkpoint; its `.sha256` marker is checked when present.

    Copies of a checkpoint often travel without the marker, so a missing marker is a warning
    and a mismatching one an error (a torn or altered file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file")
    marker = path.with_name(path.name + ".sha256")
    if marker.is_file():
        want = (marker.read_text().split() or [""])[0]
        if want != sha256_file(path):
            raise ValueError(f"{path}: sha256 differs from {marker.name}; the file is torn")
    else:
        print(f"weakly: warning: {path}: no {marker.name} beside it; not verified", file=sys.stderr)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors have many types
        raise ValueError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "wnids" not in ckpt:
        raise ValueError(f"{path}: not a weakly training checkpoint (no 'model'/'wnids')")
    if not isinstance(ckpt["wnids"], list) or not isinstance(ckpt.get("args", {}), dict):
        raise ValueError(f"{path}: not a weakly training checkpoint ('wnids'/'args' malformed)")
    return ckpt


def checkpoint_image_size(ckpt: dict, path: str | Path, given: int | None = None) -> int:
    """The image size to score at: `given` (a flag), else the training run's, else 224.

    A checkpoint is read from disk: a recorded size outside what `--image-size` accepts (a
    200000-pixel side would ask for 120 GB per image) is refused in one line."""
    value = given if given is not None else (ckpt.get("args") or {}).get("image_size") or 224
    low, high = MINIMUM["image_size"], MAXIMUM["image_size"]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        where = "--image-size" if given is not None else f"{path}: the run's image_size"
        raise ValueError(
            f"{where} {str(value)[:40]!r} is not a size from {low} to {high}; pass --image-size"
        )
    return value


def checkpoint_arch(ckpt: dict, path: str | Path = "checkpoint") -> str:
    arch = (ckpt.get("args") or {}).get("model")
    if not arch:
        raise ValueError(f"{path}: the checkpoint does not record its model architecture")
    return str(arch)


def load_weights(model: nn.Module, state: dict, arch: str, source: str, skip_head: bool) -> None:
    """Load `state` into `model`; with `skip_head`, the head is left as initialised.

    Any other missing or unexpected key means another architecture: a one-line error naming
    the first few keys instead of a half-loaded model.
    """
    prefix = head_prefix(model)
    if skip_head:
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (skip_head and k.startswith(prefix))]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(
            f"{source}: its weights do not fit a {arch} ({len(missing)} missing keys, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}); "
            "is it a checkpoint of another architecture?"
        )


def model_from_checkpoint(
    path: str | Path, expect_arch: str | None = None, use_ema: bool = False
) -> tuple[nn.Module, dict]:
    """(model with the checkpoint's weights, the checkpoint)."""
    ckpt = read_checkpoint(path)
    arch = checkpoint_arch(ckpt, path)
    if expect_arch and expect_arch != arch:
        raise ValueError(f"{path}: a {arch} checkpoint, not {expect_arch}")
    model = build_model(arch, len(ckpt["wnids"]))
    state = ckpt["model"]
    if use_ema:
        if "ema" not in ckpt:
            raise ValueError(f"{path}: --ema asked for but the run kept no EMA weights")
        state = ckpt["ema"]
    try:
        load_weights(model, state, arch, str(path), skip_head=False)
    except RuntimeError as exc:  # shape mismatch inside a matching key
        raise ValueError(f"{path}: weights do not fit a {arch}: {str(exc)[:300]}") from exc
    return model, ckpt


def strip_head(model: nn.Module) -> tuple[nn.Module, int]:
    """The trunk (head replaced by identity) and its feature width."""
    if hasattr(model, "heads"):
        dim = model.heads.head.in_features
        model.heads.head = nn.Identity()
    else:
        dim = model.fc.in_features
        model.fc = nn.Identity()
    return model, dim


def init_from_checkpoint(
    model: nn.Module, arch: str, wnids: list[str], path: str | Path, reset_head: bool
) -> None:
    """Start a run from another run's weights (fine-tuning); optimizer state is not taken."""
    ckpt = read_checkpoint(path)
    have = checkpoint_arch(ckpt, path)
    if have != arch:
        raise ValueError(f"--init {path}: a {have} checkpoint, but --model is {arch}")
    if not reset_head and list(ckpt["wnids"]) != list(wnids):
        raise ValueError(
            f"--init {path}: vocabulary of {len(ckpt['wnids'])} labels differs from the "
            f"dataset's {len(wnids)}; pass --reset-head to train a new head"
        )
    try:
        load_weights(model, ckpt["model"], arch, f"--init {path}", skip_head=reset_head)
    except RuntimeError as exc:
        raise ValueError(f"--init {path}: weights do not fit a {arch}: {str(exc)[:300]}") from exc
