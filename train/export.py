"""`weakly export`: the trunk of a checkpoint as a plain torchvision-style state_dict.

Downstream users load pretrained trunks with `torchvision.models.<arch>()` and
`load_state_dict(sd, strict=False)`, then train their own head. Dropping our head (sized to the
pretraining vocabulary) makes the only missing keys the head's, which is exactly the signal that
the trunk loaded whole; keeping it would fail on a shape mismatch against torchvision's
1000-way head. The file holds tensors only, so `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torchvision

from .transfer import checkpoint_arch, head_prefix, model_from_checkpoint


def export_trunk(checkpoint: str | Path, out: str | Path, use_ema: bool = False) -> dict:
    """Write the trunk state_dict to `out`; returns what was written (for the console)."""
    model, ckpt = model_from_checkpoint(checkpoint, use_ema=use_ema)
    arch = checkpoint_arch(ckpt, checkpoint)
    prefix = head_prefix(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trunk = {k: v for k, v in state.items() if not k.startswith(prefix)}
    dropped = sorted(set(state) - set(trunk))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(trunk, tmp)
    tmp.replace(out)
    builder = arch if hasattr(torchvision.models, arch) else None
    return {
        "out": str(out),
        "arch": arch,
        "torchvision_builder": f"torchvision.models.{builder}" if builder else None,
        "tensors": len(trunk),
        "head_keys_dropped": dropped,
        "vocabulary_size": len(ckpt["wnids"]),
        "step": int(ckpt.get("step", 0)),
        "ema": use_ema,
    }


def run_export(args: argparse.Namespace) -> int:
    info = export_trunk(args.checkpoint, args.out, args.ema)
    print(json.dumps(info, indent=1))
    if info["torchvision_builder"] is None:
        print(f"note: {info['arch']} has no torchvision builder; load it into weakly's model")
    return 0


def add_command(subparsers) -> None:
    p = subparsers.add_parser("export", help="checkpoint trunk -> torchvision state_dict")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output .pt file")
    p.add_argument("--ema", action="store_true", help="export the EMA weights")
    p.set_defaults(func=run_export)
