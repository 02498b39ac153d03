"""Training batches from a Dataset (VOC): worker processes that cannot change the numbers.

Every item is drawn from its own seed, (run seed, epoch, dataset index), by :class:`SeededItems`, and the
order of the items in an epoch comes from (seed, epoch) alone (:class:`EpochBatches`), so the batches are the
same with 0 or 8 workers, with 1 or N processes (each rank takes its micro-batches of every global batch:
:func:`scribbleseg.distributed.shard_slices`), and after a resume. A method's per-item work (URSS's
pseudo-boundaries, CDSP's distance maps: ``method.prepare_item(item) -> dict``) runs here, in the workers, on the
transformed (cropped, flipped) item, instead of on the main process every step.

The DataLoader is PyTorch's: ``num_workers``, ``pin_memory`` (CUDA), ``persistent_workers`` and a
``batch_sampler`` whose epoch is set before each epoch (the sampler lives in the main process, so persistent
workers see it).
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scribbleseg.data.voc import collate
from scribbleseg.distributed import shard_slices


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one item's random augmentation: a hash of (seed, epoch, index), 63 bits."""
    return zlib.crc32(f"{seed}/{epoch}/{index}".encode()) * 2_654_435_761 % (2**63 - 1)


class SeededItems(Dataset):
    """``dataset`` indexed by (epoch, index) keys: each item's augmentation draws from torch's RNG seeded with
    :func:`item_seed` (the caller's RNG state is restored afterwards), then ``prepare(item)`` adds its fields."""

    def __init__(self, dataset: Dataset, seed: int, prepare=None):
        self.dataset, self.seed, self.prepare = dataset, seed, prepare

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, index))
            item = self.dataset[index]
        if self.prepare is not None:
            item = {**item, **self.prepare(item)}
        return item


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of the ``n`` items in ``epoch`` (also the in-memory splits' order)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class EpochBatches(Sampler):
    """Batch sampler: per global step, this rank's micro-batches of (epoch, index) keys.

    Args:
        n: dataset size. batch_size: the global batch. steps: steps per epoch (full batches; one short batch when
        n < batch_size). seed: as the run's. shards, world, rank: see :func:`shard_slices`.
    """

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, shards: int = 1, world: int = 1, rank: int = 0):
        self.n, self.batch_size, self.steps, self.seed = n, batch_size, steps, seed
        self.shards, self.world, self.rank = shards, world, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * self.shards // self.world

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch)
        for s in range(self.steps):
            glob = order[s * self.batch_size:(s + 1) * self.batch_size]
            for part in shard_slices(len(glob), self.shards, self.world, self.rank):
                yield [(self.epoch, int(i)) for i in glob[part]]


def make_loader(dataset: Dataset, sampler: EpochBatches, prepare=None, workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """PyTorch's DataLoader over :class:`SeededItems` with ``sampler``; workers persist across epochs."""
    return DataLoader(SeededItems(dataset, sampler.seed, prepare), batch_sampler=sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=pin_memory, persistent_workers=workers > 0)


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """Tensors of ``batch`` on ``device`` (non-blocking: pinned host memory overlaps the copy with compute)."""
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last and "image" in out:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out
