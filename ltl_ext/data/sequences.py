"""Time-major data: inputs that already are sequences (event-camera frames, audio features, pre-encoded spikes).

A student trained on them uses ``encoding="none"`` (``LocalTandemTrainer(..., encoding="none")``): each batch is
``x [T, B, ...]`` (time first, the layout the student folds to ``[T*B, ...]``) and its ANN teacher sees the
time-average ``x.mean(0)`` (``ltl_ext.nn.encoding.time_average``). Train that teacher on the same reduction:
``train_teacher(teacher, time_averaged(train))``.

The ``.npz`` layout (read with ``allow_pickle=False``)::

    x_train  [N, T, *sample]   float (currents, in any unit) or {0, 1} / uint8 (spikes, event counts)
    y_train  [N]               integer labels 0 .. classes-1
    x_test   [M, T, *sample]
    y_test   [M]
    class_names  [classes]     optional strings

Files store sample-major (``[N, T, ...]``: one row per recording, as they are written); the loaders hand out
time-major batches ``[T, B, ...]``.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .loaders import check_seed, validation_split
from .splits import DataError

__all__ = ["SequenceSplits", "load_sequences", "save_sequences", "SequenceBatches", "SequenceLoaders",
           "sequence_loaders", "time_averaged"]

_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class SequenceSplits:
    """Train and test sequences in memory: ``x_*`` float32 ``[N, T, *sample]``, ``y_*`` int64 ``[N]``."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    class_names: Optional[List[str]] = None

    def __post_init__(self):
        for x, y, part in ((self.x_train, self.y_train, "train"), (self.x_test, self.y_test, "test")):
            if x.dim() < 3:
                raise DataError(f"x_{part} must be [N, T, *sample] (at least 3 dims), got {tuple(x.shape)}")
            if y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise DataError(f"y_{part} must be [N] with N = {x.shape[0]}, got {tuple(y.shape)}")
            # a label -1 (an "unlabelled" marker) or one past class_names made num_classes silently wrong
            if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
                raise DataError(f"y_{part} must hold integer labels 0 .. classes-1, got {y.dtype}")
            if y.numel() and int(y.min()) < 0:
                raise DataError(f"y_{part} must hold labels >= 0, got {int(y.min())}")
            if self.class_names is not None and y.numel() and int(y.max()) >= len(self.class_names):
                raise DataError(f"y_{part} has the label {int(y.max())} but class_names names "
                                f"{len(self.class_names)} classes")
        if self.x_train.shape[0] == 0:
            raise DataError("the train split is empty: x_train must hold at least one sequence [N >= 1, T, ...]")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"train and test sequences differ in shape: {tuple(self.x_train.shape[1:])} vs "
                            f"{tuple(self.x_test.shape[1:])}")

    @property
    def time_steps(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        return tuple(self.x_train.shape[2:])

    @property
    def num_classes(self) -> int:
        if self.class_names is not None:                 # named classes count even when no label uses them
            return len(self.class_names)
        return int(torch.cat([self.y_train, self.y_test]).max()) + 1     # the test split may be empty


def save_sequences(path, x_train, y_train, x_test, y_test, class_names: Optional[List[str]] = None) -> Path:
    """Write the ``.npz`` layout above (``x_*`` ``[N, T, *sample]``); returns the file written (``path``, with
    ``.npz`` appended when it lacks it, as numpy does)."""
    path = Path(path)
    if not path.name.endswith(".npz"):      # numpy appends it: return the name of the file that exists
        path = path.with_name(path.name + ".npz")
    arrays = {k: np.asarray(v) for k, v in zip(_KEYS, (x_train, y_train, x_test, y_test))}
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names, dtype=str)
    SequenceSplits(*(torch.from_numpy(np.ascontiguousarray(arrays[k])) for k in _KEYS))   # checks the layout
    np.savez_compressed(path, **arrays)
    return path


def load_sequences(path) -> SequenceSplits:
    """Read the ``.npz`` layout above; a wrong file is a :class:`DataError` with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sequences: {path} is not a file (expected a .npz with {', '.join(_KEYS)})")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing the arrays {', '.join(missing)} (has: {', '.join(npz.files)})")
            x_train, y_train, x_test, y_test = (npz[k] for k in _KEYS)
            names = npz["class_names"].tolist() if "class_names" in npz.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    for k, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype.kind not in "biuf":                  # strings failed deep in numpy's float conversion
            raise DataError(f"{path}: {k} must hold numbers (float currents, spikes or counts), got {x.dtype}")
    for k, y in (("y_train", y_train), ("y_test", y_test)):
        if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
            raise DataError(f"{path}: {k} must hold integer labels >= 0, got {y.dtype}")

    def floats(x):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return SequenceSplits(floats(x_train), torch.from_numpy(y_train.astype(np.int64)), floats(x_test),
                          torch.from_numpy(y_test.astype(np.int64)), names)


class SequenceBatches:
    """Batches ``(x float32 [T, B, *sample], y int64 [B])`` over sequences ``x [N, T, *sample]``.

    ``shuffle``: a new order each pass, drawn from ``seed`` and the pass number (reproducible, no global RNG).
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool = False, seed: int = 0):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, check_seed(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        n = len(self.y)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
                 if self.shuffle else torch.arange(n))
        self.epoch += 1
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield self.x[idx].transpose(0, 1).contiguous(), self.y[idx]


class SequenceLoaders(NamedTuple):
    """What :func:`sequence_loaders` returns when given ``val_fraction``: ``train, val, test = ...``."""

    train: SequenceBatches
    val: Optional[SequenceBatches]
    test: SequenceBatches


def sequence_loaders(splits: SequenceSplits, batch_size: int = 64, *, seed: int = 0,
                     val_fraction: Optional[float] = None
                     ) -> Union[Tuple[SequenceBatches, SequenceBatches], SequenceLoaders]:
    """``(train, test)``: the train batches reshuffled every pass, the test batches in file order.

    With ``val_fraction`` (a number in [0, 1)): :class:`SequenceLoaders` ``(train, val, test)``, ``val`` held out
    of each class of the train split as :func:`~ltl_ext.data.make_loaders` does (:func:`validation_split`, seeded
    by ``seed``; ``None`` for 0), in file order. Select on ``val``; evaluate ``test`` once, at the end.
    """
    test = SequenceBatches(splits.x_test, splits.y_test, batch_size)
    if val_fraction is None:                            # the two-way split of old calls: train, test = ...
        return SequenceBatches(splits.x_train, splits.y_train, batch_size, shuffle=True, seed=seed), test
    train_idx, val_idx = validation_split(splits.y_train, val_fraction, seed)
    val = SequenceBatches(splits.x_train[val_idx], splits.y_train[val_idx], batch_size) if val_idx.numel() else None
    return SequenceLoaders(SequenceBatches(splits.x_train[train_idx], splits.y_train[train_idx], batch_size,
                                           shuffle=True, seed=seed), val, test)


def time_averaged(loader):
    """``(x.mean(0), y)`` for each time-major batch of ``loader``: what the teacher of such a student sees."""
    class _Mean:
        def __len__(self):
            return len(loader)

        def __iter__(self):
            for x, y in loader:
                yield x.mean(0), y
    return _Mean()
