"""Each rank's share of the data: samplers that split every (global) batch over the ranks."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler

from .launch import DistributedError


class ShardSampler(Sampler[int]):
    """Evaluation shard: rank r gets indices r, r + N, r + 2N, ... with no padding, so that summed counts are exact.

    (:class:`DistributedSampler` pads with repeated samples so that training shares are equal; evaluation must not
    count a sample twice. No collective runs per batch in evaluation, so unequal shares are fine there.)
    """

    def __init__(self, dataset_len: int, rank: int, world_size: int):
        self.indices = range(rank, dataset_len, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ShardedBatches(Sampler):
    """This rank's part of every batch of a sampler that yields whole batches (``DataLoader(batch_size=None)``
    over a batch-level dataset, as :func:`ltl_ext.data.make_loaders` builds).

    A batch is a tensor (or list) of sample indices, or a tuple whose first item is one (``ltl_ext.data``'s
    ``(indices, augmentation seed)``); rank r keeps ``indices[r::N]``. With ``pad`` (training) a batch is first
    padded to a multiple of N by repeating its first indices, as :class:`DistributedSampler` pads the data set,
    so every rank gets an equal share and DDP's average is the global batch's mean. Without it (evaluation), a
    rank may get a smaller or empty share (empty shares are skipped). ``set_epoch``, ``state_dict`` and
    ``load_state_dict`` go to the wrapped sampler, which must give every rank the same batches (a sampler seeded
    by (seed, epoch) alone, like ``ltl_ext.data``'s, does).
    """

    def __init__(self, batches: Sampler, rank: int, world_size: int, *, pad: bool):
        self.batches, self.rank, self.world_size, self.pad = batches, rank, world_size, pad

    def _share(self, key):
        if isinstance(key, tuple) and key and isinstance(key[0], (Tensor, list)):
            part = self._share(key[0])
            return None if part is None else (part,) + tuple(key[1:])
        if not isinstance(key, (Tensor, list)):
            raise DistributedError(f"cannot split a batch key of type {type(key).__name__} across ranks; "
                                   f"give each rank its own loader")
        n = len(key)
        if self.pad and n and n % self.world_size:
            wrap = [i % n for i in range(n + self.world_size - n % self.world_size)]
            key = key[torch.tensor(wrap)] if isinstance(key, Tensor) else [key[i] for i in wrap]
        part = key[self.rank::self.world_size]
        return part if len(part) else None

    def __iter__(self):
        for key in self.batches:
            part = self._share(key)
            if part is not None:
                yield part

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.batches.state_dict() if hasattr(self.batches, "state_dict") else {}

    def load_state_dict(self, state: dict) -> None:
        if hasattr(self.batches, "load_state_dict"):
            self.batches.load_state_dict(state)


# ---------------------------------------------------------------------------------------------------------------
# The student replica
# ---------------------------------------------------------------------------------------------------------------
