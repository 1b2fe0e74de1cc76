"""The training loop: plain functions in the style of torchvision's classification reference.

SGD with Nesterov momentum, linear warmup then cosine decay, learning rate scaled linearly with
the global batch (per 256 images, Goyal et al.; Mahajan et al.). One process per device; DDP
when launched by torchrun (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .data import LoaderConfig, TrainLoader, prepare_batch
from .loss import get_loss
from .models import build_model
from .shards import Dataset


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Read torchrun's environment; one process per device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for but no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the peak LR for the update at `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def total_steps(args: argparse.Namespace, world_size: int) -> int:
    if args.steps is not None:
        return int(args.steps)
    return math.ceil(int(args.samples) / (args.batch_size * world_size))


def param_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter, to compare ranks and runs.

    Buffers are left out on purpose: BatchNorm running statistics are per rank under DDP
    (synchronised from rank 0 at each forward), and the checkpoint keeps rank 0's.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _plain_args(args: argparse.Namespace) -> dict:
    return {
        k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
        for k, v in vars(args).items()
        if k != "func"
    }


def _gather(obj, info: DistInfo) -> list:
    if info.world_size == 1:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def train(args: argparse.Namespace) -> dict:
    """Run (or continue) a training run; returns a summary of how it ended."""
    info = init_distributed(args.device)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = Dataset(args.data, args.split)
    steps = total_steps(args, info.world_size)
    cuda = info.device.type == "cuda"
    decode = args.decode if args.decode != "auto" else ("gpu" if cuda else "cpu")
    if decode == "gpu" and not cuda:
        raise ValueError("--decode gpu needs --device cuda")

    model = build_model(args.model, dataset.num_classes).to(info.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[info.local_rank] if cuda else None)
    peak_lr = args.lr * args.batch_size * info.world_size / 256
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=peak_lr,
        momentum=args.momentum,
        nesterov=True,
        weight_decay=args.weight_decay,
    )
    warmup = args.warmup_steps

    def schedule(step: int) -> float:
        return lr_factor(step, warmup, steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loader = TrainLoader(
        dataset,
        LoaderConfig(
            batch_size=args.batch_size,
            image_size=args.image_size,
            seed=args.seed,
            sampling=args.sampling,
            shuffle_buffer=args.shuffle_buffer,
            workers=args.workers,
            rank=info.rank,
            world_size=info.world_size,
            decode=decode,
            draft=args.draft,
        ),
        pin_memory=cuda,
    )

    step = 0
    resume = None if args.resume in (None, "", "none") else args.resume
    ckpt_path = latest_checkpoint(out) if resume == "auto" else resume
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["wnids"] != dataset.wnids:
            raise ValueError(f"{ckpt_path}: vocabulary differs from {args.data}")
        if len(ckpt["loader"]) != info.world_size:
            raise ValueError(
                f"{ckpt_path}: saved with {len(ckpt['loader'])} ranks; resume with the same"
                f" world size ({info.world_size} now) to continue the same sample order"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        loader.load_state_dict(ckpt["loader"][info.rank])
        step = int(ckpt["step"])

    loss_fn = get_loss(args.loss)
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=bool(args.amp))
    metrics = open(out / "metrics.jsonl", "a") if info.is_main else None
    keys_log = open(out / f"keys-rank{info.rank}.jsonl", "a") if args.record_keys else None
    batches = iter(loader)
    gpu_failed, seen, wait, t_mark, n_mark = 0, 0, 0.0, time.perf_counter(), 0
    net.train()
    while step < steps:
        t0 = time.perf_counter()
        batch = next(batches)
        images, targets, failed = prepare_batch(
            batch, info.device, args.image_size, args.channels_last
        )
        wait += time.perf_counter() - t0
        gpu_failed += failed
        with autocast:
            logits = net(images)
        loss = loss_fn(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        seen += len(targets)
        n_mark += len(targets)
        if keys_log is not None:
            keys_log.write(json.dumps({"step": step, "keys": batch["keys"]}) + "\n")
        if step % args.log_every == 0 or step == steps:
            value = loss.detach().float()
            if info.world_size > 1:
                dist.all_reduce(value)
                value /= info.world_size
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t_mark
            if metrics is not None:
                row = {
                    "step": step,
                    "loss": float(value),
                    "lr": scheduler.get_last_lr()[0],
                    "samples_per_s": n_mark * info.world_size / max(elapsed, 1e-9),
                    "data_wait_frac": wait / max(elapsed, 1e-9),
                    "samples_seen": step * args.batch_size * info.world_size,
                    "corrupt_skipped": loader.corrupt + gpu_failed,
                }
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
            wait, t_mark, n_mark = 0.0, time.perf_counter(), 0
        if step % args.ckpt_every == 0 or step == steps:
            loader_states = _gather(loader.state_dict(), info)
            if info.is_main:
                save_checkpoint(
                    out,
                    step,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "step": step,
                        "loader": loader_states,
                        "args": _plain_args(args),
                        "wnids": list(dataset.wnids),
                    },
                )
    for f in (metrics, keys_log):
        if f is not None:
            f.close()
    summary = {
        "rank": info.rank,
        "world_size": info.world_size,
        "step": step,
        "param_sha256": param_digest(model),
        "corrupt_skipped": loader.corrupt + gpu_failed,
    }
    (out / f"done-rank{info.rank}.json").write_text(json.dumps(summary) + "\n")
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary
