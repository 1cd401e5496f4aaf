"""The in-memory data set every reader returns: :class:`DatasetSplits`, and the one error they raise.

Images are kept as uint8 ``[N, C, H, W]`` tensors (the raw pixel values, a few MB to a couple of GB), labels as
int64 ``[N]``. Conversion to [0, 1] floats happens per batch in :mod:`ltl_ext.data.loaders`; the normalisation
with ``mean``/``std`` is the model's (``ltl_ext.models.*(mean=..., std=...)``).
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor


class DataError(ValueError):
    """A data set could not be read: wrong path, missing file or wrong format.

    The message is one line that says what was expected and where, fit to show to a user as is.
    """


def images_to_nchw(x: np.ndarray, source: str) -> np.ndarray:
    """Bring an image array to ``[N, C, H, W]``.

    Accepts ``[N, H, W]`` (grey), ``[N, H, W, C]`` (channels last, numpy/PIL convention) or ``[N, C, H, W]``
    with ``C`` in {1, 3, 4}. Channels last wins when both readings are possible.
    """
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        if x.shape[3] in (1, 3, 4):
            return x.transpose(0, 3, 1, 2)
        if x.shape[1] in (1, 3, 4):
            return x
    raise DataError(f"{source}: expected images of shape [N, H, W], [N, H, W, C] or [N, C, H, W] with C in "
                    f"{{1, 3, 4}}, got {list(x.shape)}")


def images_to_uint8(x: np.ndarray, source: str) -> np.ndarray:
    """Pixel values as uint8: uint8 as is, integers in [0, 255] cast, floats in [0, 1] scaled by 255, booleans
    (binary images) as 0 / 255. Integers that are all 0 or 1 are refused: as 8-bit values they would be black."""
    if x.dtype == np.uint8:
        return x
    if x.size == 0:
        return x.astype(np.uint8)
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * np.uint8(255)
    lo, hi = x.min(), x.max()
    if np.issubdtype(x.dtype, np.integer) and lo >= 0 and hi == 1:
        # binary images stored as ints: cast, a pixel that is on would read 1/255 (float 0/1 ones read 1.0)
        raise DataError(f"{source}: integer pixel values that are all 0 or 1 would be near-black 8-bit values; "
                        f"binary images: pass them as bool (x.astype(bool)) or as floats in [0, 1]")
    if np.issubdtype(x.dtype, np.integer) and lo >= 0 and hi <= 255:
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return np.rint(x * 255.0).astype(np.uint8)
    raise DataError(f"{source}: expected pixel values as uint8, integers in [0, 255] or floats in [0, 1], got "
                    f"{x.dtype} in [{lo}, {hi}]")


def stratified_indices(labels: Tensor, n: int) -> Tensor:
    """Indices of ``n`` samples taken class by class in turn: the i-th sample of every class comes before the
    (i+1)-th of any class, so the subset is as balanced as the data allow. Deterministic; the result is sorted.

    Args:
        labels: int64 ``[N]``.
        n: how many to keep (``n >= N`` keeps all).
    Returns:
        int64 ``[min(n, N)]``, increasing.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):   # 0.5 failed deep in slicing, True kept 1
        raise TypeError(f"the number of samples to keep must be an int, got {n!r}")
    n = int(n)
    if n < 0:                                           # a negative slice bound would drop samples from the end
        raise ValueError(f"the number of samples to keep must be >= 0, got {n}")
    total = labels.numel()
    if n >= total:
        return torch.arange(total)
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    class_start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(total) - class_start[labels[order]]   # position of each sample within its class
    chosen = torch.argsort(rank * total + torch.arange(total))[:n]   # by rank, then by original position
    return chosen.sort().values


def channel_stats(x: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images ``[N, C, H, W]``, in [0, 1] units.

    Exact integer sums over chunks, so memory stays small for large sets (CIFAR, Tiny ImageNet).
    """
    channels = x.shape[1]
    total = torch.zeros(channels, dtype=torch.int64)
    total_sq = torch.zeros(channels, dtype=torch.int64)
    for start in range(0, x.shape[0], chunk):
        block = x[start:start + chunk].to(torch.int64)
        total += block.sum(dim=(0, 2, 3))
        total_sq += (block * block).sum(dim=(0, 2, 3))
    count = max(x.numel() // channels, 1)
    mean = total.double() / count
    var = (total_sq.double() / count - mean * mean).clamp_min(0.0)
    std = var.sqrt().clamp_min(1e-3 * 255)                           # a constant channel must not divide by 0
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def _labels_from_names(labels: list, class_names: Optional[list], where: str) -> tuple[list, list]:
    """String labels (``"cat"``, ``"dog"``) -> their position in ``class_names`` (default: the sorted names of
    both splits), so a user's labels need no mapping to 0..K-1 by hand."""
    if not all(y.dtype.kind in "US" for y in labels):
        raise DataError(f"{where}: labels must be all class-name strings or all integers, got "
                        f"{' and '.join(str(y.dtype) for y in labels)}")
    labels = [np.char.decode(y) if y.dtype.kind == "S" else y for y in labels]
    names = class_names if class_names is not None else sorted(set().union(*(y.tolist() for y in labels)))
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set().union(*(y.tolist() for y in labels)) - set(index))
    if unknown:
        raise DataError(f"{where}: labels {unknown[:5]} are not in class_names {names[:10]}")
    out = []
    for y in labels:
        values, inverse = np.unique(y, return_inverse=True)
        out.append(np.array([index[v] for v in values.tolist()], dtype=np.int64)[inverse.reshape(-1)])
    return out, names


@dataclass(frozen=True, eq=False, repr=False)
class DatasetSplits:
    """A train and a test split held in memory.

    Attributes:
        name: the data set's name (``"embedded"``, ``"cifar10"``, ...).
        x_train: uint8 ``[N_train, C, H, W]``.
        y_train: int64 ``[N_train]``, values in ``[0, num_classes)``.
        x_test: uint8 ``[N_test, C, H, W]``.
        y_test: int64 ``[N_test]``.
        class_names: one name per class, index = label.
        source: where it was read from (a path), for logs.
        mean, std: per-channel statistics of ``x_train`` in [0, 1] units (``C`` floats each), computed on
            construction; pass them to a zoo model (``mean=``, ``std=``), which then carries its normalisation.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    class_names: tuple[str, ...]
    source: str = ""
    mean: tuple[float, ...] = dataclasses.field(init=False)
    std: tuple[float, ...] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        where = f"{self.name} ({self.source})" if self.source else self.name
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(f"{where}: {split} images must be uint8 [N, C, H, W], got {x.dtype} "
                                f"{list(x.shape)}")
            if y.dtype != torch.int64 or y.dim() != 1 or y.numel() != x.shape[0]:
                raise DataError(f"{where}: {split} labels must be int64 [{x.shape[0]}], got {y.dtype} "
                                f"{list(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.class_names)):
                raise DataError(f"{where}: {split} labels must lie in [0, {len(self.class_names)}), got "
                                f"[{int(y.min())}, {int(y.max())}]")
        if self.x_train.shape[0] == 0:
            raise DataError(f"{where}: the train split is empty")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"{where}: train images {list(self.x_train.shape[1:])} and test images "
                            f"{list(self.x_test.shape[1:])} differ in shape")
        mean, std = channel_stats(self.x_train)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def from_arrays(cls, name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                    y_test: np.ndarray, class_names: Optional[Sequence[str]] = None,
                    source: str = "") -> "DatasetSplits":
        """Build from numpy arrays: images in any layout :func:`images_to_nchw` accepts, pixel values as
        :func:`images_to_uint8` accepts, labels ``[N]`` as integers (whole-valued floats too) or as class-name
        strings. ``class_names=None`` names integer classes ``"0"``, ``"1"``, ... up to the largest label, and
        string classes by their sorted names (label = position in ``class_names``)."""
        where = source or name
        xs = []
        for split, x in (("train", x_train), ("test", x_test)):
            try:
                x = np.asarray(x)
            except ValueError:              # a list of images of different sizes: numpy's "inhomogeneous shape"
                raise DataError(f"{where}: {split} images differ in shape; resize them to one size first") from None
            x = images_to_uint8(images_to_nchw(x, where), where)
            xs.append(torch.from_numpy(np.ascontiguousarray(x)))
        labels = []
        for split, y in (("train", y_train), ("test", y_test)):
            y = np.asarray(y)
            if sum(size > 1 for size in y.shape) > 1:   # one-hot rows [N, K] would flatten into N * K labels
                raise DataError(f"{where}: {split} labels must be one class per image ([N]), got shape "
                                f"{list(y.shape)}; for one-hot rows pass y.argmax(1)")
            labels.append(y.reshape(-1))
        if class_names is not None:
            if isinstance(class_names, (str, bytes)):   # one string would become one class per character
                raise DataError(f"{where}: class_names must be a sequence of names, got the one string "
                                f"{class_names[:40]!r}")
            class_names = [c.decode() if isinstance(c, bytes) else str(c) for c in class_names]
            repeated = sorted({c for c in class_names if class_names.count(c) > 1})
            if repeated:                # a string label would map to the last of its copies, leaving a class empty
                raise DataError(f"{where}: class_names must be distinct, got {repeated[:5]} more than once")
        if any(y.dtype.kind in "US" for y in labels):
            labels, class_names = _labels_from_names(labels, class_names, where)
        ys = []
        for y in labels:
            if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.rint(y)).all():
                y = y.astype(np.int64)                  # labels saved as floats (1.0, 2.0, ...)
            if y.dtype.kind not in "iub":
                raise DataError(f"{where}: labels must be integers in [0, classes) or class-name strings, got "
                                f"{y.dtype}")
            ys.append(torch.from_numpy(y.astype(np.int64)))
        named = class_names is not None
        if not named:
            top = max((int(y.max()) for y in ys if y.numel()), default=-1)
            class_names = [str(i) for i in range(top + 1)]
        # a class with no training image (labels counted from 1, a name found only in the test labels, a class
        # of class_names absent from x_train) gets a readout unit that nothing trains
        empty = sorted(set(range(len(class_names))) - set(ys[0].unique().tolist()))
        if empty and not named:
            shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
            warnings.warn(f"{where}: classes {shown} of 0 .. {len(class_names) - 1} have no training image (labels "
                          f"are class indices counted from 0); each still gets a readout unit that is never "
                          f"trained. Labels counted from 1: subtract 1; else pass class_names", stacklevel=2)
        elif empty:
            shown = ", ".join(repr(str(class_names[i])) for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
            warnings.warn(f"{where}: classes {shown} have no training image; each still gets a readout unit that "
                          f"is never trained (its test images cannot be classified right)", stacklevel=2)
        return cls(name, xs[0], ys[0], xs[1], ys[1], tuple(str(c) for c in class_names), source)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    def subset(self, train: Optional[int] = None, test: Optional[int] = None) -> "DatasetSplits":
        """A smaller copy for quick runs: at most ``train`` / ``test`` samples per split (``None``: all), taken
        class by class in turn (:func:`stratified_indices`), so every class stays represented."""
        x_train, y_train, x_test, y_test = self.x_train, self.y_train, self.x_test, self.y_test
        if train is not None:
            keep = stratified_indices(y_train, train)
            x_train, y_train = x_train[keep], y_train[keep]
        if test is not None:
            keep = stratified_indices(y_test, test)
            x_test, y_test = x_test[keep], y_test[keep]
        return DatasetSplits(self.name, x_train, y_train, x_test, y_test, self.class_names, self.source)

    def __repr__(self) -> str:
        return f"DatasetSplits({self.describe()})"

    def describe(self) -> str:
        """One line for logs, e.g. ``cifar10: 50000 train / 10000 test, 3x32x32, 10 classes``."""
        c, (h, w) = self.in_channels, self.image_size
        return (f"{self.name}: {self.x_train.shape[0]} train / {self.x_test.shape[0]} test, {c}x{h}x{w}, "
                f"{self.num_classes} classes" + (f" ({self.source})" if self.source else ""))
