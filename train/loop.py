"""The training loop: plain functions in the style of torchvision's classification reference.

SGD with Nesterov momentum and weight decay on weights only (train/optim.py), linear warmup then
cosine decay or step halving, learning rate scaled linearly with the global batch (per 256
images, Goyal et al.; Mahajan et al.). A step whose loss or gradient is not finite stops the run
(exit code 2) or, with --skip-nonfinite, is skipped and counted. One process per device; DDP
when launched by torchrun (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .data import LoaderConfig, TrainLoader, prepare_batch
from .evaluate import check_vocabulary, evaluate
from .loss import get_loss
from .metrics import format_metrics
from .models import build_model
from .optim import EMA, lr_factor, param_groups
from .shards import Dataset, check_shard_files
from .transfer import init_from_checkpoint

__all__ = ["lr_factor", "train"]


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


class NonFiniteLoss(ValueError):
    """The loss or gradient norm of a step was NaN or infinite (a clear stop, exit code 2)."""


def _nonfinite(loss: torch.Tensor, grad_norm: torch.Tensor, info: DistInfo) -> bool:
    """Whether this step must not be applied, agreed by every rank.

    The gradient norm is checked besides the loss because after DDP's all-reduce one rank's NaN
    is every rank's; the flag is all-reduced so that ranks never disagree on skipping. One host
    sync per step is the price; it is small next to a forward and backward pass.
    """
    bad = (~torch.isfinite(loss.detach())) | (~torch.isfinite(grad_norm))
    flag = bad.to(torch.int32).reshape(1)
    if info.world_size > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _grad_norm(params: list[torch.nn.Parameter], clip: float) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm(grads)


def _tensorboard(out: Path, wanted: bool):
    """A SummaryWriter when asked for and installed; tensorboard is not a dependency."""
    if not wanted:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print(
            "train: warning: --tensorboard ignored: tensorboard is not installed", file=sys.stderr
        )
        return None
    return SummaryWriter(str(out / "tensorboard"))


def progress_line(row: dict, steps: int) -> str:
    """One console line per log step; the JSONL file keeps the full record."""
    line = (
        f"step {row['step']}/{steps}  loss {row['loss']:.4f}  lr {row['lr']:.4g}  "
        f"img/s {row['samples_per_s']:.1f}  data-wait {row['data_wait_frac']:.0%}"
    )
    if row.get("nonfinite_skipped"):
        line += f"  skipped {row['nonfinite_skipped']}"
    return line


def check_inputs(args: argparse.Namespace, dataset: Dataset, world_size: int) -> None:
    """Refuse, before any work, runs that cannot be what the user meant."""
    check_shard_files(dataset, verify=bool(args.verify_shards))
    global_batch = args.batch_size * world_size
    if global_batch > dataset.num_samples:
        raise ValueError(
            f"global batch {global_batch} (--batch-size {args.batch_size} x {world_size} ranks)"
            f" is larger than the {dataset.num_samples} samples of split {args.split!r}"
        )


def val_dataset(args: argparse.Namespace, dataset: Dataset) -> Dataset | None:
    """The split to evaluate on: `--val-shards` if given (it must exist), else `--data`'s
    `--val-split` when ingest wrote one (`--holdout`), else none."""
    if not getattr(args, "eval", True):
        return None
    url = args.val_shards or args.data
    if not args.val_shards:
        split_meta = dataset.meta.get("splits", {}).get(args.val_split)
        if not split_meta or not split_meta.get("samples"):
            return None
    val = Dataset(url, args.val_split)
    check_vocabulary(dataset.wnids, val, f"--val-shards {url}")
    return val


def train(args: argparse.Namespace) -> dict:
    """Run (or continue) a training run; returns a summary of how it ended."""
    info = init_distributed(args.device)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    dataset = Dataset(args.data, args.split)
    check_inputs(args, dataset, info.world_size)
    val = val_dataset(args, dataset)
    model = build_model(args.model, dataset.num_classes).to(info.device)
    out.mkdir(parents=True, exist_ok=True)
    steps = total_steps(args, info.world_size)
    cuda = info.device.type == "cuda"
    decode = args.decode if args.decode != "auto" else ("gpu" if cuda else "cpu")
    if decode == "gpu" and not cuda:
        raise ValueError("--decode gpu needs --device cuda")
    if info.is_main:
        config = {**_plain_args(args), "world_size": info.world_size, "total_steps": steps}
        (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")

    if args.sync_bn and info.world_size > 1:
        if not cuda:
            raise ValueError("--sync-bn needs CUDA: SyncBatchNorm has no CPU implementation")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[info.local_rank] if cuda else None)
    if args.compile:
        net = torch.compile(net)
    peak_lr = args.lr * args.batch_size * info.world_size / 256
    optimizer = torch.optim.SGD(
        param_groups(model, args.weight_decay),
        lr=peak_lr,
        momentum=args.momentum,
        nesterov=True,
    )
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def schedule(step: int) -> float:
        return lr_factor(step, args.warmup_steps, steps, args.schedule, args.halve_every)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ema = EMA(model, args.ema) if args.ema else None
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

    step, skipped = 0, 0
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
        if ema is not None and "ema" in ckpt:
            ema.load_state_dict(ckpt["ema"])
        elif ema is not None:
            ema = EMA(model, args.ema)  # --ema added on resume: start from the weights
        step = int(ckpt["step"])
        skipped = int(ckpt.get("nonfinite_skipped", 0))
    elif getattr(args, "init", None):
        init_from_checkpoint(model, args.model, dataset.wnids, args.init, args.reset_head)

    def save(step: int) -> None:
        loader_states = _gather(loader.state_dict(), info)
        if not info.is_main:
            return
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "loader": loader_states,
            "args": _plain_args(args),
            "wnids": list(dataset.wnids),
            "nonfinite_skipped": skipped,
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        save_checkpoint(out, step, state, keep_last=args.keep_last)

    def run_eval(step: int) -> None:
        """Rank 0 scores the val split; the others wait (metrics need all scores at once)."""
        if val is None:
            return
        if info.is_main:
            try:
                row = evaluate(
                    model,
                    val,
                    info.device,
                    args.image_size,
                    args.batch_size,
                    args.eval_min_images,
                    max_samples=args.eval_max_samples,
                )
            except ValueError as exc:  # e.g. every val image corrupt: say so, keep training
                print(f"train: warning: evaluation at step {step} skipped: {exc}", file=sys.stderr)
            else:
                row = {"step": step, **row}
                with open(out / "val.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"val step {step}/{steps} ({val.url} {val.split})", flush=True)
                print(format_metrics(row), flush=True)
        if info.world_size > 1:
            dist.barrier()

    loss_fn = get_loss(args.loss)
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=bool(args.amp))
    metrics = open(out / "metrics.jsonl", "a") if info.is_main else None
    board = _tensorboard(out, args.tensorboard) if info.is_main else None
    keys_log = open(out / f"keys-rank{info.rank}.jsonl", "a") if args.record_keys else None
    batches = iter(loader)
    gpu_failed, wait, t_mark, n_mark = 0, 0.0, time.perf_counter(), 0
    this_run, stopped = 0, False
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
        grad_norm = _grad_norm(params, args.grad_clip)
        if _nonfinite(loss, grad_norm, info):
            if not args.skip_nonfinite:
                raise NonFiniteLoss(
                    f"loss {float(loss.detach()):.4g}, gradient norm {float(grad_norm):.4g} at step "
                    f"{step + 1} (lr {scheduler.get_last_lr()[0]:.4g}); lower --lr, set "
                    "--grad-clip, or pass --skip-nonfinite to skip such steps"
                )
            skipped += 1
            optimizer.zero_grad(set_to_none=True)
        else:
            optimizer.step()
            if ema is not None:
                ema.update(model)
        scheduler.step()
        step += 1
        this_run += 1
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
            row = {
                "step": step,
                "loss": float(value),
                "lr": scheduler.get_last_lr()[0],
                "samples_per_s": n_mark * info.world_size / max(elapsed, 1e-9),
                "data_wait_frac": wait / max(elapsed, 1e-9),
                "samples_seen": step * args.batch_size * info.world_size,
                "corrupt_skipped": loader.corrupt + gpu_failed,
                "nonfinite_skipped": skipped,
            }
            if metrics is not None:
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                print(progress_line(row, steps), flush=True)
            if board is not None:
                for name in ("loss", "lr", "samples_per_s", "data_wait_frac"):
                    board.add_scalar(f"train/{name}", row[name], step)
            wait, t_mark, n_mark = 0.0, time.perf_counter(), 0
        stopped = args.stop_after_steps is not None and this_run >= args.stop_after_steps
        if step % args.ckpt_every == 0 or step == steps or stopped:
            save(step)
        if step == steps or (args.eval_every and step % args.eval_every == 0):
            run_eval(step)
        if stopped and step < steps:
            break
    for f in (metrics, keys_log, board):
        if f is not None:
            f.close()
    summary = {
        "rank": info.rank,
        "world_size": info.world_size,
        "step": step,
        "finished": step >= steps,
        "param_sha256": param_digest(model),
        "corrupt_skipped": loader.corrupt + gpu_failed,
        "nonfinite_skipped": skipped,
    }
    (out / f"done-rank{info.rank}.json").write_text(json.dumps(summary) + "\n")
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary
