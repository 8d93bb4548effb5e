"""Resumable, distributed-aware sampling and per-sample seeding for exact resume.

The order of an epoch is a pure function of (seed, epoch): a random permutation drawn from a
dedicated ``torch.Generator``; under DDP each rank takes every ``world_size``-th index of it
(padded like ``DistributedSampler``). ``start_batch`` skips batches already trained on, so a run
resumed mid-epoch continues with exactly the next batch.

Augmentation randomness is made a pure function of (seed, epoch, index) by
:class:`SeededDataset`, which reseeds Python, NumPy, torch and any albumentations pipeline
before loading each sample; the result then no longer depends on which worker loads it or on
what was loaded before, which is what lets a resumed run see identical samples.
"""

from __future__ import annotations

import math
import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["ResumableSampler", "SeededDataset", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample draw; distinct for distinct (seed, epoch, index)."""
    sequence = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index & 0xFFFFFFFF])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


class ResumableSampler(Sampler[int]):
    """Yields (epoch-seeded) indices for this rank, starting after ``start_batch`` batches."""

    def __init__(
        self,
        length: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ):
        if length < 0:
            raise ValueError(f"length: expected >= 0, got {length}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected in [0, {num_replicas}), got {rank}")
        self.length = length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0
        # Every rank gets the same number of indices (padding by repetition, as DistributedSampler).
        self.per_rank = math.ceil(length / num_replicas) if length else 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def batches_per_epoch(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def _rank_indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.num_replicas
        if order and len(order) < total:
            order = (order * math.ceil(total / len(order)))[:total]
        indices = order[self.rank : total : self.num_replicas]
        if self.drop_last:
            indices = indices[: self.batches_per_epoch() * self.batch_size]
        return indices

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_indices()[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return max(len(self._rank_indices()) - self.start_batch * self.batch_size, 0)


def _reseed_augmenters(obj, seed: int, depth: int = 0, seen: set | None = None) -> None:
    """Call ``set_random_seed`` on albumentations pipelines reachable from ``obj``'s attributes."""
    seen = set() if seen is None else seen
    if depth > 3 or id(obj) in seen:
        return
    seen.add(id(obj))
    for value in list(vars(obj).values()) if hasattr(obj, "__dict__") else []:
        if callable(getattr(value, "set_random_seed", None)) and type(value).__module__.startswith("albumentations"):
            value.set_random_seed(seed)
        elif hasattr(value, "__dict__") and type(value).__module__.startswith("kpfast"):
            _reseed_augmenters(value, seed, depth + 1, seen)


class SeededDataset(Dataset):
    """Wraps a dataset so each (epoch, index) draw uses its own deterministic seed."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        # kpfast.data datasets derive each sample's augmentation from (seed, epoch, index)
        # themselves; tell them the epoch too.
        if callable(getattr(self.dataset, "set_epoch", None)):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        # Expose the wrapped dataset's attributes (dataset_info, coco, ...).
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        seed = sample_seed(self.seed, self.epoch, int(index))
        # In the main process (workers=0) the global generators belong to the training loop
        # (dropout, ...): put them back afterwards so sample loading does not perturb them.
        in_main = torch.utils.data.get_worker_info() is None
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if in_main else None
        try:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            if callable(getattr(self.dataset, "set_random_seed", None)):
                self.dataset.set_random_seed(seed)
            elif not callable(getattr(self.dataset, "set_epoch", None)):
                _reseed_augmenters(self.dataset, seed)
            return self.dataset[index]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])
