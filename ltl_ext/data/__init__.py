"""Data sets for training and evaluating: read from local files only, never downloaded.

::

    from ltl_ext.data import load_dataset, make_loaders
    splits = load_dataset("embedded")                       # or "cifar10", data_dir="~/data", ...
    train, val, test = make_loaders(splits, batch_size=128, seed=0)   # val: 10 % of each class of train
    for x, y in train: ...                                  # x float32 [B, C, H, W] in [0, 1], y int64 [B]

Loaders yield raw intensities: the input normalisation belongs to the model (``models.cnn_small(...,
mean=splits.mean, std=splits.std)``), so it travels in every checkpoint.

Modules, one per concern:

- :mod:`.splits`: :class:`DatasetSplits` (uint8 images ``[N, C, H, W]`` in memory) and :class:`DataError`;
- readers, one per file format: :mod:`.idx` (MNIST / Fashion-MNIST / KMNIST), :mod:`.cifar` (python pickles
  through a restricted unpickler, and binary), :mod:`.folder` (class-per-folder image trees, PIL),
  :mod:`.arrays` (``.npz``, MNIST-5k csv);
- :mod:`.catalog`: :func:`load_dataset`, name -> reader;
- :mod:`.loaders`: :func:`make_loaders`, the seeded stratified validation split, batch-wise shuffling and
  augmentation, reproducible from a seed.
"""
from .catalog import DATASETS, EMBEDDED_FILE, FASHION_MNIST_CLASSES, load_dataset
from .cifar import RestrictedUnpickler
from .loaders import (DEFAULT_VAL_FRACTION, EpochBatchSampler, Loaders, TensorBatches, make_loaders,
                      random_crop_flip, validation_split)
from .splits import DataError, DatasetSplits

__all__ = [
    "DATASETS", "DEFAULT_VAL_FRACTION", "EMBEDDED_FILE", "FASHION_MNIST_CLASSES", "DataError", "DatasetSplits",
    "EpochBatchSampler", "Loaders", "RestrictedUnpickler", "TensorBatches", "load_dataset", "make_loaders",
    "random_crop_flip", "validation_split",
]
