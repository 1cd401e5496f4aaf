"""CIFAR-10 and CIFAR-100, in the python (pickled) and the binary layout of their official archives.

=============================  ===========================================================================
folder                         files
=============================  ===========================================================================
``cifar-10-batches-py/``       ``data_batch_1`` ... ``data_batch_5``, ``test_batch``, ``batches.meta``
``cifar-10-batches-bin/``      ``data_batch_1.bin`` ... ``data_batch_5.bin``, ``test_batch.bin``,
                               ``batches.meta.txt``; records of 1 label byte + 3072 pixel bytes
``cifar-100-python/``          ``train``, ``test``, ``meta`` (fine labels are used)
``cifar-100-binary/``          ``train.bin``, ``test.bin``, ``fine_label_names.txt``; records of
                               1 coarse + 1 fine label byte + 3072 pixel bytes
=============================  ===========================================================================

Pixels are stored per image as 1024 red, 1024 green, 1024 blue bytes, row-major: ``[3, 32, 32]`` directly.

The python layout is a pickle. A pickle can run any code when loaded, so it is read with
:class:`RestrictedUnpickler`, which builds only dicts, lists, strings, numbers and numpy arrays, never with
plain :func:`pickle.load`. When both layouts are present the binary one is read.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .splits import DataError, DatasetSplits

CIFAR_SHAPE = (3, 32, 32)
_PIXELS = 3 * 32 * 32


def _numpy_reconstruct():
    """numpy's ``_reconstruct`` (``numpy._core.multiarray`` since numpy 2, ``numpy.core.multiarray`` before)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:                                      # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only what the CIFAR python files contain.

    Those files (pickled by Python 2 with numpy) reference exactly three globals, all to rebuild the pixel
    array: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``. Everything else in
    them is dicts, lists, strings and ints, which need no global. Any other global (``os.system``,
    ``builtins.eval``, ...) is refused with :class:`pickle.UnpicklingError` before it can be called.
    """

    def __init__(self, file, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        reconstruct = _numpy_reconstruct()
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,      # the real files (numpy 1 era)
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,     # the same files re-pickled by numpy 2
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}: the CIFAR files need "
                                         f"only numpy arrays") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: the CIFAR files have none")


def load_restricted_pickle(path: Path) -> dict:
    """Read one CIFAR python file with :class:`RestrictedUnpickler`; returns its dict with ``str`` keys.

    ``encoding="latin1"`` decodes the Python 2 strings of the real files (keys and the raw array bytes) as
    torchvision does; keys pickled as ``bytes`` are decoded too.
    """
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as err:
        raise DataError(f"{path}: not a CIFAR python batch file ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(batch: dict, label_key: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``data`` uint8 ``[N, 3072]`` -> images uint8 ``[N, 3, 32, 32]``; ``label_key`` -> labels ``[N]``."""
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        got = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected 'data' as a uint8 array [N, {_PIXELS}], got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: expected '{label_key}' as {data.shape[0]} integer labels")
    return data.reshape(-1, *CIFAR_SHAPE), labels


def _read_names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_binary(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR binary file: records of ``label_bytes`` label bytes + 3072 pixel bytes; the last label byte is
    the one used (the fine label for CIFAR-100). Returns images uint8 ``[N, 3, 32, 32]`` and labels ``[N]``."""
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + _PIXELS
    if raw.size == 0 or raw.size % record:
        raise DataError(f"{path}: expected records of {record} bytes ({label_bytes} label + {_PIXELS} pixel "
                        f"bytes), got a file of {raw.size} bytes")
    rows = raw.reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, *CIFAR_SHAPE), rows[:, label_bytes - 1].astype(np.int64)


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _require(folder: Path, names: list[str], what: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{what}: expected {', '.join(names)} in {folder}; missing: {', '.join(missing)}")


# --- CIFAR-10 -------------------------------------------------------------------------------------------------

_C10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _load_cifar10_python(folder: Path) -> DatasetSplits:
    _require(folder, _C10_TRAIN + ["test_batch"], "cifar10 (python)")
    train = _concat([_batch_arrays(load_restricted_pickle(folder / n), "labels", folder / n) for n in _C10_TRAIN])
    test = _batch_arrays(load_restricted_pickle(folder / "test_batch"), "labels", folder / "test_batch")
    names = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        names = load_restricted_pickle(folder / "batches.meta").get("label_names", names)
    return DatasetSplits.from_arrays("cifar10", *train, *test, names, str(folder))


def _load_cifar10_binary(folder: Path) -> DatasetSplits:
    _require(folder, [n + ".bin" for n in _C10_TRAIN + ["test_batch"]], "cifar10 (binary)")
    train = _concat([_read_binary(folder / (n + ".bin"), 1) for n in _C10_TRAIN])
    test = _read_binary(folder / "test_batch.bin", 1)
    meta = folder / "batches.meta.txt"
    names = _read_names(meta) if meta.is_file() else CIFAR10_CLASSES
    return DatasetSplits.from_arrays("cifar10", *train, *test, names, str(folder))


# --- CIFAR-100 ------------------------------------------------------------------------------------------------

_C100_DEFAULT_NAMES = tuple(str(i) for i in range(100))        # when the meta file is missing

def _load_cifar100_python(folder: Path) -> DatasetSplits:
    _require(folder, ["train", "test"], "cifar100 (python)")
    train = _batch_arrays(load_restricted_pickle(folder / "train"), "fine_labels", folder / "train")
    test = _batch_arrays(load_restricted_pickle(folder / "test"), "fine_labels", folder / "test")
    names = _C100_DEFAULT_NAMES
    if (folder / "meta").is_file():
        names = load_restricted_pickle(folder / "meta").get("fine_label_names", names)
    return DatasetSplits.from_arrays("cifar100", *train, *test, names, str(folder))


def _load_cifar100_binary(folder: Path) -> DatasetSplits:
    _require(folder, ["train.bin", "test.bin"], "cifar100 (binary)")
    meta = folder / "fine_label_names.txt"
    names = _read_names(meta) if meta.is_file() else _C100_DEFAULT_NAMES
    return DatasetSplits.from_arrays("cifar100", *_read_binary(folder / "train.bin", 2),
                                     *_read_binary(folder / "test.bin", 2), names, str(folder))


#: name -> ((folder name, reader), ...) in order of preference
_LAYOUTS = {
    "cifar10": (("cifar-10-batches-bin", _load_cifar10_binary), ("cifar-10-batches-py", _load_cifar10_python)),
    "cifar100": (("cifar-100-binary", _load_cifar100_binary), ("cifar-100-python", _load_cifar100_python)),
}
#: a file that tells each layout apart when ``data_dir`` is the layout folder itself
_MARKERS = {"cifar-10-batches-bin": "data_batch_1.bin", "cifar-10-batches-py": "data_batch_1",
            "cifar-100-binary": "train.bin", "cifar-100-python": "train"}


def load_cifar(name: str, data_dir: Path) -> DatasetSplits:
    """Read CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``) from ``data_dir``, which is either the
    folder that holds ``cifar-10-batches-py/`` etc. or that folder itself.

    Returns images uint8 ``[N, 3, 32, 32]``: 50000 train, 10000 test for the real data.
    """
    layouts = _LAYOUTS[name]
    for folder_name, reader in layouts:
        if (data_dir / folder_name).is_dir():
            return reader(data_dir / folder_name)
    for folder_name, reader in layouts:
        if (data_dir / _MARKERS[folder_name]).is_file():
            return reader(data_dir)
    expected = " or ".join(f"{folder}/" for folder, _ in layouts)
    raise DataError(f"{name}: expected {expected} (the official archive, unpacked) in {data_dir}, or "
                    f"{data_dir} to be that folder")
