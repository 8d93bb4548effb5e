"""The process a run executes in: its device, its place among torchrun's processes (rank, world
size, the process group and the few collectives between ranks), CPU threads, seeds and stop
signals.

One job, because each answer depends on the others: the device of a rank comes from
``LOCAL_RANK``, the process group's backend from the device (NCCL on GPU, gloo on CPU), the
CPU threads from the processes sharing the machine (``LOCAL_WORLD_SIZE``).

Launch: ``torchrun --nproc_per_node N -m kpfast.train ...``; multi-node runs add torchrun's
rendezvous flags (``--nnodes``, ``--node_rank``, ``--rdzv_backend c10d``,
``--rdzv_endpoint HOST:PORT``). Without torchrun (no WORLD_SIZE in the environment) everything
degrades to a single process: the collectives return this process's own values.
"""

from __future__ import annotations

import datetime
import os
import random
import signal
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "StopSignal",
    "all_gather_objects",
    "any_across_ranks",
    "available_cores",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "configure_cpu_threads",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "seed_everything",
    "select_device",
    "unwrap_model",
]


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: 'cuda' requested but CUDA is not available (got {name!r})")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_cpu_threads(config, device: torch.device) -> int | None:
    """Set torch's intra-op threads for CPU training (see TrainConfig.cpu_threads)."""
    if device.type != "cpu":
        return None
    threads = config.train.cpu_threads
    if threads is None:
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = max(1, available_cores() // local_procs - config.data.num_workers)
    torch.set_num_threads(threads)
    return threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and/or torch.compile."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the training loop checks between steps.

    A second SIGINT aborts at once (KeyboardInterrupt). ``received`` is the signal number, or
    None; :meth:`request` sets it from code (tests, callbacks).
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.received = int(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# --------------------------------------------------------------------------- ranks (torchrun)


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
