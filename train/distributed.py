"""One process per device, as torchrun launches them: rank, device and the few collectives the
loop needs (gloo on CPU, nccl on CUDA). A single process is world size 1 and never touches
torch.distributed."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def gather(obj, info: DistInfo) -> list:
    """Every rank's `obj`, in rank order (on every rank)."""
    if info.world_size == 1:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool | torch.Tensor, info: DistInfo) -> bool:
    """Whether `flag` holds on some rank; every rank gets the same answer."""
    value = torch.as_tensor(flag, device=info.device).to(torch.int32).reshape(1)
    if info.world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a scalar over all ranks (a copy; `value` is left alone)."""
    value = value.detach().float().clone()
    if info.world_size > 1:
        dist.all_reduce(value)
        value /= info.world_size
    return value


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Wait for every rank, then leave the process group."""
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
