"""Batches from in-memory uint8 images: shuffling, augmentation and the [0, 1] scaling done per batch on tensors.

There is no per-sample Python: the sampler yields whole batches of indices, and the dataset turns one index
batch into one tensor batch with a few vectorised ops (:class:`TensorBatches`).

Reproducibility: the order of epoch ``e`` and every augmentation draw in it come from a generator seeded with
``(seed, e)`` alone (:class:`EpochBatchSampler`). So a run gives the same batches whatever ``num_workers`` is,
never touches the global torch RNG, and a resumed run sees exactly the batches the uninterrupted one would have
seen once it calls ``train_loader.sampler.set_epoch(epoch)`` (or restores ``sampler.state_dict()``).
"""
from __future__ import annotations

import numbers
import warnings
from typing import Iterator, NamedTuple, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .splits import DatasetSplits

#: a batch key: (sample indices int64 [B], seed of the batch's augmentation draws or None)
BatchKey = tuple[Tensor, Optional[int]]

_SEED_MIX = 0x9E3779B97F4A7C15          # golden-ratio constant: spreads (seed, epoch) over the 63-bit seed space


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch)`` alone."""
    return torch.Generator().manual_seed((seed * _SEED_MIX + epoch) % (2 ** 63))


def random_crop_flip(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """The standard CIFAR augmentation, for a whole batch at once.

    Each image is zero-padded by ``padding`` pixels on every side, cropped back to its size at a random offset,
    and flipped left-right with probability 1/2.

    Args:
        x: ``[B, C, H, W]``, any dtype (uint8 here, so the padding is black like torchvision's).
        padding: pixels of padding; 0 means flip only.
        generator: source of all random draws.
    Returns:
        ``[B, C, H, W]``, same dtype.
    """
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(h)).view(b, 1, h, 1)                     # [B, 1, H, 1]
    cols = dx[:, None] + torch.arange(w)                                         # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)       # a flipped crop reads its columns backwards
    x = padded.gather(2, rows.expand(b, c, h, w + 2 * padding))                  # [B, C, H, W + 2 * padding]
    return x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


class TensorBatches(Dataset):
    """Batch-level dataset over uint8 images: ``dataset[(indices, seed)]`` is one whole batch.

    Args:
        images: uint8 ``[N, C, H, W]``.
        labels: int64 ``[N]``.
        mean, std: per-channel statistics in [0, 1] units, or ``None`` for no normalisation (inputs in [0, 1],
            as Poisson encoding needs).
        crop_padding: ``None``: no augmentation; otherwise :func:`random_crop_flip` with this padding.

    ``dataset[(indices int64 [B], seed)]`` returns ``(x float32 [B, C, H, W], y int64 [B])``; ``seed`` seeds the
    augmentation draws of that batch (ignored without augmentation).
    """

    def __init__(self, images: Tensor, labels: Tensor, mean: Optional[tuple[float, ...]] = None,
                 std: Optional[tuple[float, ...]] = None, crop_padding: Optional[int] = None) -> None:
        self.images, self.labels, self.crop_padding = images, labels, crop_padding
        channels = images.shape[1]
        mean = (0.0,) * channels if mean is None else mean
        std = (1.0,) * channels if std is None else std
        # x_float = (x_uint8 / 255 - mean) / std = x_uint8 * scale + shift
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, key: BatchKey) -> tuple[Tensor, Tensor]:
        indices, seed = key
        x = self.images[indices]
        if self.crop_padding is not None:
            x = random_crop_flip(x, self.crop_padding, torch.Generator().manual_seed(seed))
        return torch.addcmul(self.shift, x.float(), self.scale), self.labels[indices]


class EpochBatchSampler(Sampler[BatchKey]):
    """Yields the batches of one epoch as ``(indices int64 [B], augmentation seed)``.

    The permutation (when ``shuffle``) and the per-batch seeds of epoch ``e`` are drawn from
    :func:`epoch_generator` ``(seed, e)``. Each ``iter()`` uses ``self.epoch`` and then advances it by one, so
    plain ``for epoch in ...: for x, y in loader`` sees a new order every epoch; ``set_epoch(e)`` fixes which
    epoch the next ``iter()`` produces (call it at the start of every epoch to make resuming exact).
    """

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool, seed: int = 0,
                 drop_last: bool = False) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):   # True ran as 1
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples, self.batch_size, self.shuffle = num_samples, batch_size, shuffle
        self.seed, self.drop_last, self.epoch = check_seed(seed), drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` produce epoch ``epoch``."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[BatchKey]:
        generator = epoch_generator(self.seed, self.epoch)
        self.epoch += 1
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        batch_seeds = torch.randint(0, 2 ** 62, (len(self),), generator=generator).tolist()
        for i, batch_seed in enumerate(batch_seeds):
            yield order[i * self.batch_size:(i + 1) * self.batch_size], batch_seed


def default_crop_padding(splits: DatasetSplits) -> int:
    """Padding for :func:`random_crop_flip`: 4 pixels per 32 (CIFAR's 4, Tiny ImageNet's 8)."""
    return max(1, min(splits.image_size) // 8)


class Loaders(NamedTuple):
    """What :func:`make_loaders` returns: ``train, val, test = make_loaders(...)``.

    ``val`` is ``None`` when ``val_fraction`` is 0. Select (epochs, checkpoints, hyper-parameters) on ``val``;
    evaluate ``test`` once, at the end.
    """

    train: DataLoader
    val: Optional[DataLoader]
    test: DataLoader


def check_seed(seed) -> int:
    """``seed`` as a Python int; a float or a string is refused (1.5 was cut to 1 for the split, then failed)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return int(seed)                                    # numpy ints: torch's manual_seed refuses them


def validation_split(labels: Tensor, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Carve a stratified, seeded validation set out of the training labels.

    Every class gives ``round(fraction * n_c)`` of its ``n_c`` samples (at least one when ``fraction > 0`` and the
    class has two or more, never all of them), chosen by a permutation drawn from ``seed``; so the split is the
    same on every machine and for every ``num_workers``, and the class balance of the validation set is that of
    the training set. A class of a single sample stays in train, with a warning (the validation split lacks it).

    Args:
        labels: int64 ``[N]``.
        fraction: in ``[0, 1)``.
        seed: fixes which samples are drawn.
    Returns:
        ``(train_indices, val_indices)``: int64, increasing, disjoint, together ``arange(N)``.
    """
    # numbers.Real admits numpy floats (np.float32(0.1) was refused as "not a number")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be a number in [0, 1), got {fraction!r}")
    seed = check_seed(seed)
    generator = torch.Generator().manual_seed(seed * _SEED_MIX % (2 ** 63) + 1)
    is_val = torch.zeros(labels.numel(), dtype=torch.bool)
    alone = []                                          # classes of one sample: they stay in train
    if fraction > 0:
        for c in torch.unique(labels).tolist():
            members = torch.nonzero(labels == c).flatten()
            n = members.numel()
            k = min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0
            is_val[members[torch.randperm(n, generator=generator)[:k]]] = True
            if n < 2:
                alone.append(c)
    if alone:   # validation accuracy then says nothing about them (and is None when every class is one sample)
        shown = ", ".join(map(str, alone[:5])) + (", ..." if len(alone) > 5 else "")
        warnings.warn(f"val_fraction={fraction}: classes {shown} have a single training sample, kept for training; "
                      f"the validation split has none of them", stacklevel=2)
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


#: the validation split's default share of the training data
DEFAULT_VAL_FRACTION = 0.1


def make_loaders(splits: DatasetSplits, batch_size: int = 128, *, val_fraction: float = DEFAULT_VAL_FRACTION,
                 test_batch_size: Optional[int] = None, augment: Optional[bool] = None, seed: int = 0,
                 num_workers: int = 0, drop_last: bool = False, pin_memory: bool = False) -> Loaders:
    """Train, validation and test loaders over ``splits``, yielding **raw intensities in [0, 1]**.

    Input normalisation is part of the model, not of the data: a zoo model built with ``mean=splits.mean,
    std=splits.std`` carries it (in its state, so every checkpoint does), and gets the same input whatever data
    sit beside the test images. A model built without them sees [0, 1] intensities, in training and evaluation.

    Args:
        splits: from :func:`~ltl_ext.data.load_dataset`.
        batch_size: train batch size.
        val_fraction: share of each class of the training split held out for validation
            (:func:`validation_split`, seeded by ``seed``); 0 gives ``val = None``.
        test_batch_size: validation/test batch size (default ``batch_size``).
        augment: random crop (padding :func:`default_crop_padding`) + horizontal flip on the train split.
            ``None`` (default): on for colour images (CIFAR style), off for grey ones (MNIST style).
        seed: fixes the validation split, and the shuffling and augmentation of every epoch
            (see :class:`EpochBatchSampler`).
        num_workers: worker processes; the batches are the same for any value.
        drop_last: drop the last, smaller train batch.
        pin_memory: passed to :class:`~torch.utils.data.DataLoader` (useful with CUDA and workers).

    Returns:
        :class:`Loaders` ``(train, val, test)``. Each yields ``(x float32 [B, C, H, W] in [0, 1], y int64 [B])``;
        the train loader shuffles (a new order each epoch), validation and test keep the file order with no
        augmentation. ``train.sampler`` is the :class:`EpochBatchSampler` (``set_epoch``, ``state_dict``).
    """
    if not isinstance(splits, DatasetSplits):
        raise TypeError(f"make_loaders takes a DatasetSplits (from load_dataset or DatasetSplits.from_arrays), got "
                        f"{type(splits).__name__}")
    seed = check_seed(seed)
    if augment is None:
        augment = splits.in_channels == 3
    train_idx, val_idx = validation_split(splits.y_train, val_fraction, seed)
    train_data = TensorBatches(splits.x_train[train_idx], splits.y_train[train_idx],
                               crop_padding=default_crop_padding(splits) if augment else None)
    if len(train_data) == 0:
        raise ValueError("make_loaders: no training sample left after the validation split")
    eval_batch = batch_size if test_batch_size is None else test_batch_size   # 0 must be refused, not replaced

    def loader(data: TensorBatches, shuffle: bool, size: int) -> DataLoader:
        sampler = EpochBatchSampler(len(data), size, shuffle=shuffle, seed=seed, drop_last=drop_last and shuffle)
        # batch_size=None: the sampler's keys go to the dataset as they are (no per-sample collation). An own
        # generator: DataLoader draws a base seed per iterator, which must not come from the global RNG.
        return DataLoader(data, batch_size=None, sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                          generator=torch.Generator().manual_seed(seed))

    train = loader(train_data, True, batch_size)
    if len(train) == 0:             # drop_last with fewer samples than one batch: every epoch would train on nothing
        raise ValueError(f"make_loaders: drop_last=True drops all {len(train_data)} training samples (batch_size "
                         f"{batch_size}); lower batch_size or pass drop_last=False")
    val = None
    if val_idx.numel():
        val = loader(TensorBatches(splits.x_train[val_idx], splits.y_train[val_idx]), False, eval_batch)
    return Loaders(train, val, loader(TensorBatches(splits.x_test, splits.y_test), False, eval_batch))
