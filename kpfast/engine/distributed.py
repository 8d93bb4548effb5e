"""Thin helpers around torch.distributed for torchrun-launched DDP (NCCL on GPU, gloo on CPU).

Launch: ``torchrun --nproc_per_node N -m kpfast.train ...``; multi-node runs add torchrun's
rendezvous flags (``--nnodes``, ``--node_rank``, ``--rdzv_backend c10d``,
``--rdzv_endpoint HOST:PORT``). Without torchrun (no WORLD_SIZE in the environment) everything
degrades to a single process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_gather_objects",
    "any_across_ranks",
    "broadcast_object",
]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def init_distributed(device: torch.device | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if is_distributed():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device is not None and device.type == "cuda"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def cleanup_distributed() -> None:
    """Leave the process group together with the other ranks, then destroy it.

    Without the barrier a non-main rank destroys its gloo group and exits while rank 0 still
    writes plots and checkpoints; one 2-process CPU run aborted that way ("terminate called
    without an active exception" from gloo's threads on the exiting rank). Every caller reaches
    this on all ranks (normal end, agreed interruption, agreed divergence)."""
    if is_distributed():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` as a list ordered by rank (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _reduce_device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_across_ranks(*flags: bool) -> list[bool]:
    """For each flag: True when it is True on at least one rank (one all_reduce for all)."""
    if not is_distributed():
        return [bool(f) for f in flags]
    tensor = torch.tensor([1.0 if f else 0.0 for f in flags], device=_reduce_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v > 0.5) for v in tensor.tolist()]


def broadcast_object(obj, src: int = 0):
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
