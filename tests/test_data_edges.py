"""ltl_ext.data, edges found by a new-user pass: own arrays, own folders, own settings.

Each test fails without the fix it names: most guard an answer that used to be wrong without an error.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ltl_ext.data import (DataError, DatasetSplits, EpochBatchSampler, load_dataset, make_loaders,
                          validation_split)
from ltl_ext.data.sequences import SequenceSplits, load_sequences, save_sequences, sequence_loaders
from test_data import one_thread  # noqa: F401 (its autouse fixture: these tensors are tiny, one thread is faster)

def tiny(n: int = 12, classes: int = 3, seed: int = 0) -> DatasetSplits:
    x = np.random.default_rng(seed).integers(0, 256, size=(n, 1, 4, 4), dtype=np.uint8)
    y = np.arange(n) % classes
    return DatasetSplits.from_arrays("tiny", x, y, x[:classes], y[:classes])


def write_png(path, array: np.ndarray) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# --- arrays -> DatasetSplits ----------------------------------------------------------------------------------

def test_binary_images_as_integers_are_refused_and_bools_read_as_on_off():
    """Binary images stored as ints {0, 1} were cast to uint8 as they are: a pixel that is on read 1/255 (near
    black), while the same images as floats read 1.0. Now refused with what to do; bools read 0 / 255."""
    on_off = (np.arange(6 * 16).reshape(6, 4, 4) % 2)
    y = np.arange(6) % 2
    with pytest.raises(DataError, match=r"all 0 or 1 .* pass them as bool"):
        DatasetSplits.from_arrays("bin", on_off, y, on_off, y)
    as_bool = DatasetSplits.from_arrays("bin", on_off.astype(bool), y, on_off.astype(bool), y)
    as_float = DatasetSplits.from_arrays("bin", on_off.astype(np.float32), y, on_off.astype(np.float32), y)
    assert torch.equal(as_bool.x_train, as_float.x_train) and int(as_bool.x_train.max()) == 255


def test_images_of_different_sizes_are_a_data_error():
    """A list of images of two sizes failed inside numpy ("inhomogeneous shape")."""
    x = [np.zeros((4, 4), np.uint8), np.zeros((5, 5), np.uint8)]
    with pytest.raises(DataError, match="train images differ in shape"):
        DatasetSplits.from_arrays("ragged", x, [0, 1], x[:1], [0])


def test_named_classes_without_training_images_warn():
    """A class name found only in the test labels, or named in class_names but absent from train, got a readout
    unit nothing trains, without a word (integer labels counted from 1 already warned)."""
    x = np.zeros((4, 1, 4, 4), np.uint8)
    with pytest.warns(UserWarning, match="classes 'zebra' have no training image"):
        s = DatasetSplits.from_arrays("s", x, np.array(["cat", "dog"] * 2), x, np.array(["cat", "zebra"] * 2))
    assert s.class_names == ("cat", "dog", "zebra")
    with pytest.warns(UserWarning, match="classes 'emu' have no training image"):
        DatasetSplits.from_arrays("n", x, np.arange(4) % 2, x, np.arange(4) % 2, class_names=["cat", "dog", "emu"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DatasetSplits.from_arrays("ok", x, np.arange(4) % 2, x, np.arange(4) % 2, class_names=["cat", "dog"])


def test_limit_must_be_an_int():
    """limit=0.5 failed deep in slicing; limit=True kept one sample per split."""
    for bad in (0.5, True):
        with pytest.raises(TypeError, match="number of samples to keep must be an int"):
            load_dataset("embedded", limit=bad)
    assert tiny().subset(train=np.int64(6)).x_train.shape[0] == 6


# --- make_loaders ---------------------------------------------------------------------------------------------

def test_batch_size_must_be_an_int():
    """batch_size=True ran with batches of one; 2.0 failed deep in a slice."""
    for bad in (True, 2.0):
        with pytest.raises(TypeError, match="batch_size must be an int"):
            make_loaders(tiny(), batch_size=bad)
        with pytest.raises(TypeError, match="batch_size must be an int"):
            EpochBatchSampler(10, bad, shuffle=False)


def test_test_batch_size_zero_is_refused():
    """test_batch_size=0 was replaced by batch_size in silence (``0 or batch_size``); -1 was refused."""
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        make_loaders(tiny(), batch_size=4, test_batch_size=0)


def test_seed_must_be_an_int_and_numpy_ints_work():
    """seed=1.5 drew the split from seed 1 and then failed in torch's manual_seed; np.int64 seeds (from a numpy
    config) failed there with "an integer is required"."""
    with pytest.raises(TypeError, match="seed must be an int, got 1.5"):
        make_loaders(tiny(), batch_size=4, seed=1.5)
    with pytest.raises(TypeError, match="seed must be an int"):
        validation_split(torch.arange(6) % 2, 0.5, seed="1")
    a = [y.tolist() for _, y in make_loaders(tiny(), batch_size=4, seed=np.int64(3)).train]
    b = [y.tolist() for _, y in make_loaders(tiny(), batch_size=4, seed=3).train]
    assert a == b


def test_numpy_float_val_fraction_is_a_number():
    """val_fraction=np.float32(0.25) was refused as "must be a number"."""
    labels = torch.arange(12) % 3
    got = validation_split(labels, np.float32(0.25), seed=0)[1]
    assert torch.equal(got, validation_split(labels, 0.25, seed=0)[1])


def test_make_loaders_names_what_it_takes():
    """A tuple (x, y) failed with AttributeError: 'tuple' object has no attribute 'in_channels'."""
    with pytest.raises(TypeError, match="make_loaders takes a DatasetSplits"):
        make_loaders((torch.zeros(4, 1, 4, 4, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)))


def test_a_class_of_one_sample_warns_it_has_no_validation_image():
    """A class with a single training sample stays in train, so validation says nothing about it; with every
    class a single sample (a small limit) val came back None although val_fraction > 0. Both silent."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2])
    with pytest.warns(UserWarning, match="classes 2 have a single training sample"):
        train, val = validation_split(labels, 0.25)
    assert 8 in train.tolist() and sorted(labels[val].tolist()) == [0, 1]
    with pytest.warns(UserWarning, match="single training sample"):
        assert make_loaders(tiny(3), batch_size=2, val_fraction=0.1).val is None


# --- image folders --------------------------------------------------------------------------------------------

def test_folder_16_bit_grey_in_a_colour_set_is_scaled_not_clipped(tmp_path):
    """One RGB image made the whole set RGB; its 16-bit grey images then went through convert("RGB"), which
    clips at 255: mid grey (32768) read as white."""
    for split in ("train", "test"):
        write_png(tmp_path / split / "grey16" / "0.png", np.full((4, 4), 32768, np.uint16))
        write_png(tmp_path / split / "rgb" / "0.png", np.full((4, 4, 3), 128, np.uint8))
    s = load_dataset("folder", tmp_path)
    assert s.in_channels == 3
    assert s.x_train[s.y_train == 0].unique().tolist() == [128]        # 32768 / 257 = 127.5 -> 128


def test_folder_skips_images_in_hidden_sub_folders(tmp_path):
    """train/cat/.ipynb_checkpoints/*.png (copies) counted as more training images of that class."""
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            write_png(tmp_path / split / c / "0.png", np.full((4, 4), 7, np.uint8))
    write_png(tmp_path / "train" / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", np.full((4, 4), 7, np.uint8))
    assert load_dataset("folder", tmp_path).y_train.tolist() == [0, 1]


# --- sequences ------------------------------------------------------------------------------------------------

def seq_splits(n: int = 12, classes: int = 3) -> SequenceSplits:
    x = torch.arange(n * 2 * 3, dtype=torch.float32).view(n, 2, 3)
    y = torch.arange(n) % classes
    return SequenceSplits(x, y, x[:classes], y[:classes])


def test_sequence_loaders_carve_a_validation_split_like_make_loaders():
    """sequence_loaders gave train and test only: selection ran on test. With val_fraction: (train, val, test),
    val = validation_split(y_train, val_fraction, seed); the old two-way call is unchanged."""
    splits = seq_splits()
    train, test = sequence_loaders(splits, batch_size=4, seed=1)                     # the old call
    assert sum(len(y) for _, y in train) == 12
    loaders = sequence_loaders(splits, batch_size=4, seed=1, val_fraction=0.25)
    train_idx, val_idx = validation_split(splits.y_train, 0.25, seed=1)
    seen_val = torch.cat([x[0, :, 0] for x, _ in loaders.val]) / 6                   # x[n, 0, 0] = 6 n
    assert torch.equal(seen_val.long(), val_idx)
    seen_train = torch.cat([x[0, :, 0] for x, _ in loaders.train]) / 6
    assert sorted(seen_train.long().tolist()) == train_idx.tolist()
    assert len(loaders.test.y) == 3
    assert sequence_loaders(splits, batch_size=4, val_fraction=0.0).val is None
    with pytest.raises(ValueError, match="val_fraction must be a number in"):
        sequence_loaders(splits, batch_size=4, val_fraction=1.0)


def test_sequence_seed_must_be_an_int():
    """seed=1.5 failed in torch's manual_seed at the first pass, far from the call."""
    with pytest.raises(TypeError, match="seed must be an int"):
        sequence_loaders(seq_splits(), batch_size=4, seed=1.5)


def test_sequence_labels_are_checked_against_class_names():
    """Labels -1 or past class_names were accepted: num_classes came from the largest label, not the names."""
    x = torch.zeros(3, 2, 4)
    with pytest.raises(DataError, match="y_train must hold labels >= 0, got -1"):
        SequenceSplits(x, torch.tensor([0, -1, 1]), x, torch.tensor([0, 1, 1]))
    with pytest.raises(DataError, match="has the label 2 but class_names names 2 classes"):
        SequenceSplits(x, torch.tensor([0, 1, 2]), x, torch.tensor([0, 1, 1]), class_names=["a", "b"])
    with pytest.raises(DataError, match="integer labels"):
        SequenceSplits(x, torch.tensor([0.0, 1.0, 1.0]), x, torch.tensor([0, 1, 1]))
    assert SequenceSplits(x, torch.tensor([0, 1, 1]), x, torch.tensor([0, 1, 1]), ["a", "b", "c"]).num_classes == 3


def test_load_sequences_names_non_numeric_inputs(tmp_path):
    """String arrays failed in numpy's float conversion (a ValueError that names no array)."""
    path = tmp_path / "s.npz"
    np.savez(path, x_train=np.array([["a", "b"]] * 2), y_train=np.array([0, 1]), x_test=np.array([["a", "b"]]),
             y_test=np.array([0]))
    with pytest.raises(DataError, match="x_train must hold numbers"):
        load_sequences(path)
    good = save_sequences(tmp_path / "g.npz", np.zeros((2, 3, 4), np.uint8), [0, 1], np.zeros((1, 3, 4)), [1])
    assert load_sequences(good).x_train.dtype == torch.float32


def test_drop_last_that_drops_every_training_sample_is_refused():
    """drop_last=True with fewer training samples than one batch (a small limit) gave a train loader of zero
    batches: every epoch trained on nothing, without a word."""
    with pytest.raises(ValueError, match="drop_last=True drops all 9 training samples"):
        make_loaders(tiny(12), batch_size=32, val_fraction=0.1, drop_last=True)
    assert len(make_loaders(tiny(12), batch_size=4, drop_last=True).train) == 2       # 9 // 4
