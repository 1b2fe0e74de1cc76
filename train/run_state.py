"""What a training run holds, and the phases that set it up and save it.

`build_run` makes the model, optimizer, schedule and loader from a `TrainConfig` (checking the
inputs first), `restore` continues a run from its checkpoint or starts from `--init` weights,
and `save` writes a checkpoint that `restore` resumes exactly. The step loop itself is in
train/loop.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import check_checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import LoaderConfig, TrainLoader, make_plan
from .distributed import DistInfo, gather, init_distributed
from .epoch_plan import steps_for_epochs
from .evaluate import check_vocabulary
from .models import build_model
from .optim import EMA, lr_factor, param_groups
from .shards import Dataset, check_shard_files
from .transfer import init_from_checkpoint


@dataclass
class TrainRun:
    """One rank's share of a run: what it trains, with what, and how far it has got."""

    config: TrainConfig
    info: DistInfo
    out: Path
    dataset: Dataset
    val: Dataset | None
    model: torch.nn.Module  # the plain model: what checkpoints and EMA see
    net: torch.nn.Module  # what is called: the model under DDP and torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    loader: TrainLoader
    steps: int  # the run's total
    step: int = 0
    skipped: int = 0  # non-finite steps skipped, over the whole run
    gpu_failed: int = 0  # images that failed GPU decode, in this invocation

    @property
    def cuda(self) -> bool:
        return self.info.device.type == "cuda"

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]


def total_steps(config: TrainConfig, world_size: int, dataset: Dataset) -> int:
    """The run's optimizer steps: `--steps`; `--samples` over the global batch, rounded up;
    or `--epochs` E: the first E epochs' exact sample counts (train/epoch_plan.py) over the
    global batch, rounded down, so that no step runs into epoch E + 1."""
    global_batch = config.batch_size * world_size
    if config.steps is not None:
        return int(config.steps)
    if config.samples is not None:
        return math.ceil(int(config.samples) / global_batch)
    plan = make_plan(dataset, config.seed, config.sampling, config.shuffle_buffer)
    steps = steps_for_epochs(plan, int(config.epochs), global_batch)
    if steps < 1:
        raise ValueError(
            f"--epochs {config.epochs} is {plan.expected_epoch_size * config.epochs:.0f} samples "
            f"of split {config.split!r} (the index weights' sum per epoch), less than one global "
            f"batch of {global_batch}; train more epochs or use a smaller --batch-size"
        )
    return steps


def check_inputs(config: TrainConfig, dataset: Dataset, world_size: int) -> None:
    """Refuse, before any work, runs that cannot be what the user meant."""
    check_shard_files(dataset, verify=bool(config.verify_shards))
    global_batch = config.batch_size * world_size
    if global_batch > dataset.num_samples:
        raise ValueError(
            f"global batch {global_batch} (--batch-size {config.batch_size} x {world_size} ranks)"
            f" is larger than the {dataset.num_samples} samples of split {config.split!r}"
        )


def val_dataset(config: TrainConfig, dataset: Dataset) -> Dataset | None:
    """The split to evaluate on: `--val-shards` if given (it must exist), else `--data`'s
    `--val-split` when ingest wrote one (`--holdout`), else none."""
    if not config.eval:
        return None
    url = config.val_shards or config.data
    if not config.val_shards:
        split_meta = dataset.meta.get("splits", {}).get(config.val_split)
        if not split_meta or not split_meta.get("samples"):
            return None
    val = Dataset(url, config.val_split)
    check_vocabulary(dataset.wnids, val, f"--val-shards {url}")
    return val


def decode_mode(config: TrainConfig, info: DistInfo) -> str:
    cuda = info.device.type == "cuda"
    decode = config.decode if config.decode != "auto" else ("gpu" if cuda else "cpu")
    if decode == "gpu" and not cuda:
        raise ValueError("--decode gpu needs --device cuda")
    return decode


def wrap_model(
    config: TrainConfig, info: DistInfo, model: torch.nn.Module
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(model, net): SyncBatchNorm and channels-last applied to the model; DDP and
    torch.compile around it for the net that is called."""
    cuda = info.device.type == "cuda"
    if config.sync_bn and info.world_size > 1:
        if not cuda:
            raise ValueError("--sync-bn needs CUDA: SyncBatchNorm has no CPU implementation")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if info.world_size > 1:
        net = DistributedDataParallel(model, device_ids=[info.local_rank] if cuda else None)
    if config.compile:
        net = torch.compile(net)
    return model, net


def build_optimizer(
    config: TrainConfig, info: DistInfo, model: torch.nn.Module, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD with Nesterov momentum, its learning rate scaled linearly with the global batch,
    and the warmup + cosine/step schedule over `steps`."""
    peak_lr = config.lr * config.batch_size * info.world_size / 256
    optimizer = torch.optim.SGD(
        param_groups(model, config.weight_decay),
        lr=peak_lr,
        momentum=config.momentum,
        nesterov=True,
    )

    def schedule(step: int) -> float:
        return lr_factor(step, config.warmup_steps, steps, config.schedule, config.halve_every)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def build_loader(config: TrainConfig, info: DistInfo, dataset: Dataset, decode: str):
    return TrainLoader(
        dataset,
        LoaderConfig(
            batch_size=config.batch_size,
            image_size=config.image_size,
            seed=config.seed,
            sampling=config.sampling,
            shuffle_buffer=config.shuffle_buffer,
            open_shards=config.open_shards,
            workers=config.workers,
            rank=info.rank,
            world_size=info.world_size,
            decode=decode,
            draft=config.draft,
        ),
        pin_memory=info.device.type == "cuda",
    )


def build_run(config: TrainConfig) -> TrainRun:
    """Everything a run needs, in the order that fixes the random initial weights: seed,
    data checks, model, then optimizer, schedule, EMA and loader. Rank 0 writes config.json."""
    info = init_distributed(config.device)
    torch.manual_seed(config.seed)
    out = Path(config.out)
    dataset = Dataset(config.data, config.split)
    check_inputs(config, dataset, info.world_size)
    val = val_dataset(config, dataset)
    model = build_model(config.model, dataset.num_classes).to(info.device)
    out.mkdir(parents=True, exist_ok=True)
    steps = total_steps(config, info.world_size, dataset)
    decode = decode_mode(config, info)
    if info.is_main:
        written = {**config.to_dict(), "world_size": info.world_size, "total_steps": steps}
        (out / "config.json").write_text(json.dumps(written, indent=1) + "\n")
    model, net = wrap_model(config, info, model)
    optimizer, scheduler = build_optimizer(config, info, model, steps)
    return TrainRun(
        config=config,
        info=info,
        out=out,
        dataset=dataset,
        val=val,
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=scheduler,
        ema=EMA(model, config.ema) if config.ema else None,
        loader=build_loader(config, info, dataset, decode),
        steps=steps,
    )


def restore(run: TrainRun) -> None:
    """Continue from `--resume` (a file, or `auto`: the latest valid checkpoint in the run
    folder) with the same weights, optimizer, schedule and sample order; else start from
    `--init` weights if given."""
    config, info = run.config, run.info
    resume = None if config.resume in (None, "", "none") else config.resume
    ckpt_path = latest_checkpoint(run.out) if resume == "auto" else resume
    if ckpt_path is None:
        if config.init:
            init_from_checkpoint(
                run.model, config.model, run.dataset.wnids, config.init, config.reset_head
            )
        return
    ckpt = load_checkpoint(ckpt_path)
    check_checkpoint(ckpt, ckpt_path)
    if ckpt["wnids"] != run.dataset.wnids:
        raise ValueError(f"{ckpt_path}: vocabulary differs from {config.data}")
    if len(ckpt["loader"]) != info.world_size:
        raise ValueError(
            f"{ckpt_path}: saved with {len(ckpt['loader'])} ranks; resume with the same"
            f" world size ({info.world_size} now) to continue the same sample order"
        )
    _load_part(ckpt_path, "model weights", run.model.load_state_dict, ckpt["model"])
    _load_part(ckpt_path, "optimizer state", run.optimizer.load_state_dict, ckpt["optimizer"])
    _load_part(ckpt_path, "schedule state", run.scheduler.load_state_dict, ckpt["scheduler"])
    _load_part(ckpt_path, "loader state", run.loader.load_state_dict, ckpt["loader"][info.rank])
    if run.ema is not None and "ema" in ckpt:
        _load_part(ckpt_path, "EMA weights", run.ema.load_state_dict, ckpt["ema"])
    elif run.ema is not None:
        run.ema = EMA(run.model, config.ema)  # --ema added on resume: start from the weights
    run.step = int(ckpt["step"])
    run.skipped = int(ckpt.get("nonfinite_skipped", 0))


def _load_part(path, what: str, load, state) -> None:
    """`load(state)`, with whatever it raises on a state that does not fit turned into one
    line naming the checkpoint and the part (torch's messages run over many lines)."""
    try:
        load(state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: {what} cannot be restored ({first})") from None


def save(run: TrainRun) -> None:
    """Checkpoint at the current step: every rank's loader position, rank 0 writes."""
    loader_states = gather(run.loader.state_dict(), run.info)
    if not run.info.is_main:
        return
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "step": run.step,
        "loader": loader_states,
        "args": run.config.to_dict(),
        "wnids": list(run.dataset.wnids),
        "nonfinite_skipped": run.skipped,
    }
    if run.ema is not None:
        state["ema"] = run.ema.state_dict()
    save_checkpoint(run.out, run.step, state, keep_last=run.config.keep_last)
