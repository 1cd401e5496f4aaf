#!/usr/bin/env python3
"""Make the Fashion-MNIST subset that ships in the package: ltl_ext/datasets/fashion_mnist_subset.npz.

Run once, offline, from the repository root:

    apt-get install dataset-fashion-mnist          # puts the 4 IDX .gz files in /usr/share/datasets/fashion-mnist
    .venv/bin/python scripts/make_embedded_subset.py

The decompressed files are checked against the md5 sums of the official release (the Debian .gz wrappers
differ from the official ones; their content does not). From every class it draws ``--train-per-class`` images
of the official training set and ``--test-per-class`` of the official test set, uniformly at random with a fixed
seed, and keeps them in their original order. The output is a .npz (zip, deflate level 9, fixed timestamps, so
the same input gives the same bytes) with

    x_train uint8 [N_train, 28, 28]   y_train uint8 [N_train]   train_index uint16 [N_train]  (row in the source)
    x_test  uint8 [N_test, 28, 28]    y_test  uint8 [N_test]    test_index  uint16 [N_test]
    class_names <U11 [10]

and must stay under ``--max-bytes`` (2 MiB) so the package stays small.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from ltl_ext.data.catalog import EMBEDDED_FILE, FASHION_MNIST_CLASSES  # noqa: E402
from ltl_ext.data.idx import parse_idx  # noqa: E402

#: file -> md5 of its decompressed content (official Fashion-MNIST release)
MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}


def read_verified(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    digest = hashlib.md5(raw).hexdigest()
    if digest != MD5[path.name]:
        sys.exit(f"{path}: md5 of the decompressed file is {digest}, expected {MD5[path.name]}")
    return parse_idx(raw, str(path))


def stratified_sample(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` random indices of every class, all sorted (original order kept)."""
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(chosen))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but deflate level 9 and fixed timestamps: reproducible bytes."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buffer.getvalue(), compresslevel=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=EMBEDDED_FILE)
    parser.add_argument("--train-per-class", type=int, default=370)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-bytes", type=int, default=2 * 1024 * 1024)
    args = parser.parse_args()

    missing = [name for name in MD5 if not (args.source / name).is_file()]
    if missing:
        sys.exit(f"{args.source}: missing {', '.join(missing)} (apt-get install dataset-fashion-mnist)")
    x_train, y_train = (read_verified(args.source / f"train-{kind}-idx{d}-ubyte.gz") for kind, d in
                        (("images", 3), ("labels", 1)))
    x_test, y_test = (read_verified(args.source / f"t10k-{kind}-idx{d}-ubyte.gz") for kind, d in
                      (("images", 3), ("labels", 1)))

    rng = np.random.default_rng(args.seed)
    train_index = stratified_sample(y_train, args.train_per_class, rng)
    test_index = stratified_sample(y_test, args.test_per_class, rng)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.out, {
        "x_train": x_train[train_index], "y_train": y_train[train_index].astype(np.uint8),
        "x_test": x_test[test_index], "y_test": y_test[test_index].astype(np.uint8),
        "class_names": np.array(FASHION_MNIST_CLASSES),
        "train_index": train_index.astype(np.uint16), "test_index": test_index.astype(np.uint16),
    })
    size = args.out.stat().st_size
    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"{args.out}: {len(train_index)} train + {len(test_index)} test images, {size} bytes "
          f"({size / 2**20:.2f} MiB), sha256 {sha}")
    if size > args.max_bytes:
        args.out.unlink()
        sys.exit(f"too large: {size} > {args.max_bytes} bytes; lower --train-per-class")


if __name__ == "__main__":
    main()
