"""IDX files (the MNIST, Fashion-MNIST and KMNIST layout), plain or gzipped.

A data folder holds four files, each optionally ending in ``.gz``::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

(``train-images.idx3-ubyte``, with a dot, is accepted too; so is a ``raw/`` sub-folder, torchvision's layout.)
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .splits import DataError, DatasetSplits

#: split -> (images stem, labels stem)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: IDX type code -> numpy dtype (the format stores big-endian values)
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """Decode the bytes of one (decompressed) IDX file into an array of the shape its header gives.

    Header: two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian int32 sizes.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{source}: not an IDX file (expected the magic bytes 00 00 <type> <ndim>, got "
                        f"{raw[:4].hex(' ') or 'an empty file'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: IDX header truncated ({len(raw)} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{source}: IDX header says shape {list(shape)} ({expected} bytes) but the file has "
                        f"{len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_file(path: Path) -> np.ndarray:
    """Read one IDX file, gzipped or not (told by its first bytes, not its name)."""
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: corrupt gzip file ({err})") from None
    return parse_idx(raw, str(path))


def find_idx_file(data_dir: Path, stem: str) -> Optional[Path]:
    """The file for ``stem`` in ``data_dir`` (or ``data_dir/raw``): ``stem``, ``stem.gz`` or the dotted spelling
    ``train-images.idx3-ubyte[.gz]``; ``None`` when there is none."""
    dotted = stem.replace("-idx", ".idx")
    for folder in (data_dir, data_dir / "raw"):
        for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def has_idx_files(data_dir: Path) -> bool:
    """Whether all four IDX files are there."""
    return all(find_idx_file(data_dir, stem) for pair in IDX_FILES.values() for stem in pair)


def read_idx_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split: uint8 images ``[N, H, W]`` and labels ``[N]``."""
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = find_idx_file(data_dir, images_stem), find_idx_file(data_dir, labels_stem)
    images = read_idx_file(images_path)
    labels = read_idx_file(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_path}: expected {images.shape[0]} labels [N], got {list(labels.shape)}")
    return images, labels


def load_idx_dir(data_dir: Path, name: str, class_names: Optional[Sequence[str]] = None) -> DatasetSplits:
    """Read an IDX data folder (see the module docstring) into :class:`DatasetSplits`.

    Returns images uint8 ``[N, 1, H, W]``. Raises :class:`DataError` naming the missing files.
    """
    missing = [stem + "[.gz]" for pair in IDX_FILES.values() for stem in pair if find_idx_file(data_dir, stem) is None]
    if missing:
        raise DataError(f"{name}: expected the IDX files train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                        f"t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in {data_dir}; missing: "
                        f"{', '.join(missing)}")
    x_train, y_train = read_idx_split(data_dir, "train")
    x_test, y_test = read_idx_split(data_dir, "test")
    return DatasetSplits.from_arrays(name, x_train, y_train, x_test, y_test, class_names, str(data_dir))
