"""The training loop: plain functions in the style of torchvision's classification reference.

SGD with Nesterov momentum and weight decay on weights only (train/optim.py), linear warmup then
cosine decay or step halving, learning rate scaled linearly with the global batch (per 256
images, Goyal et al.; Mahajan et al.). A step whose loss or gradient is not finite stops the run
(exit code 2) or, with --skip-nonfinite, is skipped and counted. One process per device; DDP
when launched by torchrun (gloo on CPU, nccl on CUDA).

`train` runs the phases in order: build (train/run_state.py), restore, then per step fetch,
`train_step`, `log_step`, checkpoint (`save`) and `run_eval`; the log files are opened in an
ExitStack so that they are closed (and flushed) however the loop ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import torch

from .config import TrainConfig
from .data import prepare_batch
from .distributed import any_rank, barrier, mean_over_ranks, shutdown
from .evaluate import evaluate
from .loss import get_loss
from .metrics import format_metrics
from .optim import lr_factor
from .run_state import TrainRun, build_run, restore, save

__all__ = ["NonFiniteLoss", "TrainConfig", "lr_factor", "train"]


class NonFiniteLoss(ValueError):
    """The loss or gradient norm of a step was NaN or infinite (a clear stop, exit code 2)."""


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


def progress_line(row: dict, steps: int) -> str:
    """One console line per log step; the JSONL file keeps the full record."""
    line = (
        f"step {row['step']}/{steps}  loss {row['loss']:.4f}  lr {row['lr']:.4g}  "
        f"img/s {row['samples_per_s']:.1f}  data-wait {row['data_wait_frac']:.0%}"
    )
    if row.get("nonfinite_skipped"):
        line += f"  skipped {row['nonfinite_skipped']}"
    return line


@dataclass
class Logs:
    """The run's open log files (None where this rank writes none)."""

    metrics: IO[str] | None = None
    keys: IO[str] | None = None
    board: object | None = None  # a tensorboard SummaryWriter


def _tensorboard(run: TrainRun):
    """A SummaryWriter when asked for and installed; tensorboard is not a dependency."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print(
            "train: warning: --tensorboard ignored: tensorboard is not installed", file=sys.stderr
        )
        return None
    return SummaryWriter(str(run.out / "tensorboard"))


def open_logs(run: TrainRun, stack: contextlib.ExitStack) -> Logs:
    """metrics.jsonl and tensorboard on rank 0, keys-rank{r}.jsonl with --record-keys; each
    closed by `stack`."""
    logs = Logs()
    if run.info.is_main:
        logs.metrics = stack.enter_context(open(run.out / "metrics.jsonl", "a"))
        if run.config.tensorboard:
            logs.board = _tensorboard(run)
            if logs.board is not None:
                stack.callback(logs.board.close)
    if run.config.record_keys:
        path = run.out / f"keys-rank{run.info.rank}.jsonl"
        logs.keys = stack.enter_context(open(path, "a"))
    return logs


@dataclass
class Meter:
    """Time and images since the last log row."""

    wait: float = 0.0  # seconds spent waiting for batches
    images: int = 0
    since: float = field(default_factory=time.perf_counter)

    def reset(self) -> None:
        self.wait, self.images, self.since = 0.0, 0, time.perf_counter()


def fetch(run: TrainRun, batches: Iterator[dict], meter: Meter):
    """The next batch on the device: (batch, images, targets); the wait is metered."""
    t0 = time.perf_counter()
    batch = next(batches)
    config = run.config
    images, targets, failed = prepare_batch(
        batch, run.info.device, config.image_size, config.channels_last
    )
    meter.wait += time.perf_counter() - t0
    run.gpu_failed += failed
    return batch, images, targets


def _grad_norm(params: list[torch.nn.Parameter], clip: float) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm(grads)


def train_step(
    run: TrainRun, images: torch.Tensor, targets: torch.Tensor, loss_fn: Callable, autocast
) -> torch.Tensor:
    """Forward, backward and (unless non-finite) an optimizer step; returns the loss.

    The gradient norm is checked besides the loss because after DDP's all-reduce one rank's NaN
    is every rank's; the verdict is agreed by every rank so that they never disagree on
    skipping. One host sync per step is the price; it is small next to a forward and backward.
    """
    config, optimizer = run.config, run.optimizer
    with autocast:
        logits = run.net(images)
    loss = loss_fn(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = _grad_norm(run.params, config.grad_clip)
    bad = (~torch.isfinite(loss.detach())) | (~torch.isfinite(grad_norm))
    if any_rank(bad, run.info):
        if not config.skip_nonfinite:
            raise NonFiniteLoss(
                f"loss {float(loss.detach()):.4g}, gradient norm {float(grad_norm):.4g} at step "
                f"{run.step + 1} (lr {run.scheduler.get_last_lr()[0]:.4g}); lower --lr, set "
                "--grad-clip, or pass --skip-nonfinite to skip such steps"
            )
        run.skipped += 1
        optimizer.zero_grad(set_to_none=True)
    else:
        optimizer.step()
        if run.ema is not None:
            run.ema.update(run.model)
    run.scheduler.step()
    run.step += 1
    return loss


def log_step(run: TrainRun, loss: torch.Tensor, meter: Meter, logs: Logs) -> None:
    """One row: loss averaged over ranks, throughput and data wait since the last row."""
    info = run.info
    value = mean_over_ranks(loss, info)
    if run.cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - meter.since
    row = {
        "step": run.step,
        "loss": float(value),
        "lr": run.scheduler.get_last_lr()[0],
        "samples_per_s": meter.images * info.world_size / max(elapsed, 1e-9),
        "data_wait_frac": meter.wait / max(elapsed, 1e-9),
        "samples_seen": run.step * run.config.batch_size * info.world_size,
        "corrupt_skipped": run.loader.corrupt + run.gpu_failed,
        "samples_skipped": run.loader.skipped,
        "nonfinite_skipped": run.skipped,
    }
    if logs.metrics is not None:
        logs.metrics.write(json.dumps(row) + "\n")
        logs.metrics.flush()
        print(progress_line(row, run.steps), flush=True)
    if logs.board is not None:
        for name in ("loss", "lr", "samples_per_s", "data_wait_frac"):
            logs.board.add_scalar(f"train/{name}", row[name], run.step)
    meter.reset()


def run_eval(run: TrainRun) -> None:
    """Rank 0 scores the val split; the others wait (metrics need all scores at once)."""
    if run.val is None:
        return
    config, step = run.config, run.step
    if run.info.is_main:
        try:
            row = evaluate(
                run.model,
                run.val,
                run.info.device,
                config.image_size,
                config.batch_size,
                config.eval_min_images,
                max_samples=config.eval_max_samples,
            )
        except ValueError as exc:  # e.g. every val image corrupt: say so, keep training
            print(f"train: warning: evaluation at step {step} skipped: {exc}", file=sys.stderr)
        else:
            row = {"step": step, **row}
            with open(run.out / "val.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"val step {step}/{run.steps} ({run.val.url} {run.val.split})", flush=True)
            print(format_metrics(row), flush=True)
    barrier(run.info)


def run_steps(run: TrainRun, logs: Logs) -> None:
    """Step until the run's total, or until --stop-after-steps steps of this invocation
    (after a checkpoint), logging, checkpointing and evaluating on their schedules."""
    config = run.config
    loss_fn = get_loss(config.loss)
    autocast = torch.autocast(run.info.device.type, dtype=torch.bfloat16, enabled=bool(config.amp))
    batches = iter(run.loader)
    meter, this_run = Meter(), 0
    run.net.train()
    while run.step < run.steps:
        batch, images, targets = fetch(run, batches, meter)
        loss = train_step(run, images, targets, loss_fn, autocast)
        this_run += 1
        meter.images += len(targets)
        step = run.step
        if logs.keys is not None:
            logs.keys.write(json.dumps({"step": step, "keys": batch["keys"]}) + "\n")
        if step % config.log_every == 0 or step == run.steps:
            log_step(run, loss, meter, logs)
        stopped = config.stop_after_steps is not None and this_run >= config.stop_after_steps
        if step % config.ckpt_every == 0 or step == run.steps or stopped:
            save(run)
        if step == run.steps or (config.eval_every and step % config.eval_every == 0):
            run_eval(run)
        if stopped and step < run.steps:
            break


def train(config: TrainConfig) -> dict:
    """Run (or continue) a training run; returns a summary of how it ended."""
    run = build_run(config.validated())
    restore(run)
    with contextlib.ExitStack() as stack:
        run_steps(run, open_logs(run, stack))
    info = run.info
    summary = {
        "rank": info.rank,
        "world_size": info.world_size,
        "step": run.step,
        "finished": run.step >= run.steps,
        "param_sha256": param_digest(run.model),
        "corrupt_skipped": run.loader.corrupt + run.gpu_failed,
        "samples_skipped": run.loader.skipped,
        "nonfinite_skipped": run.skipped,
    }
    (run.out / f"done-rank{info.rank}.json").write_text(json.dumps(summary) + "\n")
    shutdown(info)
    return summary
