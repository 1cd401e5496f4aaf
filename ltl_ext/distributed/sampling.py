"""Each rank's share of the data: samplers that split every (global) batch over the ranks."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

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
    over a batch-level dataset, as :func:`ltl_ext.data.make_loaders` builds), read through :class:`BatchShare`.

    A batch is a tensor (or list) of sample indices, or a tuple whose first item is one (``ltl_ext.data``'s
    ``(indices, augmentation seed)``); rank r keeps rows ``r::N`` of it. With ``pad`` (training) a batch is first
    padded to a multiple of N by repeating its first rows, as :class:`DistributedSampler` pads the data set,
    so every rank gets an equal share and DDP's average is the global batch's mean. Without it (evaluation), a
    rank may get a smaller or empty share (empty shares are skipped). It yields ``(key, rows)``: the whole batch's
    key and the rows of the loaded batch that are this rank's; every rank loads the whole batch and keeps its rows,
    because a key's other items describe the whole batch (the augmentation seed draws each image's crop and flip
    in batch order: a share loaded under the same seed would get the first images' draws, the same on every rank,
    and not the ones one process gives those images). ``set_epoch``, ``state_dict`` and ``load_state_dict`` go to
    the wrapped sampler, which must give every rank the same batches (a sampler seeded by (seed, epoch) alone,
    like ``ltl_ext.data``'s, does).
    """

    def __init__(self, batches: Sampler, rank: int, world_size: int, *, pad: bool):
        self.batches, self.rank, self.world_size, self.pad = batches, rank, world_size, pad

    def _rows(self, key) -> Tensor:
        indices = key[0] if isinstance(key, tuple) and key and isinstance(key[0], (Tensor, list)) else key
        if not isinstance(indices, (Tensor, list)):
            raise DistributedError(f"cannot split a batch key of type {type(key).__name__} across ranks; "
                                   f"give each rank its own loader")
        return _share_rows(len(indices), self.rank, self.world_size, self.pad)

    def __iter__(self):
        for key in self.batches:
            rows = self._rows(key)
            if len(rows):
                yield key, rows

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


class SplitBatches:
    """This rank's part of every batch of an iterable of whole batches that is not a DataLoader: a list of
    ``(inputs, labels)`` batches, or :class:`ltl_ext.data.SequenceBatches` (time-major ``x [T, B, ...]``).

    Rank r keeps rows ``r::N`` of each batch (padded to a multiple of N by repeating its first rows with ``pad``,
    as :class:`ShardedBatches` does; without it an empty share is skipped). A batch's size is the first dimension
    of its last tensor (the labels); every tensor is split along its first dimension of that size, so a
    time-major input is split along dim 1 (where T equals the batch size, dim 0 is taken). Every rank must iterate
    the same batches (a list, or an order seeded alone, as ``SequenceBatches``' is).
    """

    def __init__(self, batches, rank: int, world_size: int, *, pad: bool):
        self.batches, self.rank, self.world_size, self.pad = batches, rank, world_size, pad

    def __iter__(self):
        for batch in self.batches:
            n = _batch_size(batch)
            rows = _share_rows(n, self.rank, self.world_size, self.pad)
            if len(rows):
                yield _split_rows(batch, rows, n)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)


def _share_rows(n: int, rank: int, world_size: int, pad: bool) -> Tensor:
    """Rows ``rank::world_size`` of a batch of n; with ``pad``, of the batch padded to a multiple of
    ``world_size`` by repeating its first rows (every rank then gets an equal share)."""
    rows = torch.arange(n)
    if pad and n and n % world_size:
        rows = rows[torch.arange(n + world_size - n % world_size) % n]
    return rows[rank::world_size]


def _tensors(batch) -> list:
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, (tuple, list)):
        return [t for b in batch for t in _tensors(b)]
    if isinstance(batch, dict):
        return [t for b in batch.values() for t in _tensors(b)]
    return []


def _batch_size(batch) -> int:
    tensors = [t for t in _tensors(batch) if t.dim() > 0]
    if not tensors:
        raise DistributedError(f"cannot split a batch of type {type(batch).__name__} across ranks (no tensor in "
                               f"it); pass a DataLoader over its samples instead")
    return tensors[-1].shape[0]          # the labels [B]


def _split_rows(batch, rows: Tensor, n: int):
    """``rows`` of every tensor of ``batch`` along its batch dimension (the first of size ``n``)."""
    if isinstance(batch, Tensor):
        if batch.dim() > 0 and batch.shape[0] == n:
            return batch[rows.to(batch.device)]
        if batch.dim() > 1 and batch.shape[1] == n:          # time-major [T, B, ...]
            return batch[:, rows.to(batch.device)]
        raise DistributedError(f"cannot split a batch across ranks: a tensor of shape {tuple(batch.shape)} has no "
                               f"dimension 0 or 1 of the batch size {n} (the labels' length); pass a DataLoader "
                               f"over its samples instead")
    if isinstance(batch, (tuple, list)):
        parts = [_split_rows(b, rows, n) for b in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else type(batch)(parts)   # a namedtuple
    if isinstance(batch, dict):
        return {k: _split_rows(v, rows, n) for k, v in batch.items()}
    raise DistributedError(f"cannot split a batch of type {type(batch).__name__} across ranks; pass a DataLoader "
                           f"over its samples instead")


class BatchShare(Dataset):
    """A batch-level dataset read through :class:`ShardedBatches`: ``share[(key, rows)]`` is ``dataset[key]`` (the
    whole batch) with only ``rows`` kept, of every tensor in it (a tensor, or tuples, lists, dicts of them)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        key, rows = item
        return _keep_rows(self.dataset[key], rows)


def _keep_rows(batch, rows: Tensor):
    if isinstance(batch, Tensor):
        return batch[rows.to(batch.device)]
    if isinstance(batch, (tuple, list)):
        return type(batch)(_keep_rows(b, rows) for b in batch)
    if isinstance(batch, dict):
        return {k: _keep_rows(v, rows) for k, v in batch.items()}
    raise DistributedError(f"cannot split a batch of type {type(batch).__name__} across ranks; give each rank its "
                           f"own loader")
