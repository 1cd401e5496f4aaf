"""Data sets for training and evaluating: read from local files only, never downloaded.

::

    from ltl_ext.data import load_dataset, make_loaders
    splits = load_dataset("embedded")                       # or "cifar10", data_dir="~/data", ...
    train_loader, test_loader = make_loaders(splits, batch_size=128, seed=0)
    for x, y in train_loader: ...                           # x float32 [B, C, H, W], y int64 [B]

Modules, one per concern:

- :mod:`.splits`: :class:`DatasetSplits` (uint8 images ``[N, C, H, W]`` in memory) and :class:`DataError`;
- readers, one per file format: :mod:`.idx` (MNIST / Fashion-MNIST / KMNIST), :mod:`.cifar` (python pickles
  through a restricted unpickler, and binary), :mod:`.folder` (class-per-folder image trees, PIL),
  :mod:`.arrays` (``.npz``, MNIST-5k csv);
- :mod:`.catalog`: :func:`load_dataset`, name -> reader;
- :mod:`.loaders`: :func:`make_loaders`, batch-wise shuffling, augmentation and normalisation, reproducible
  from a seed.
"""
from .catalog import DATASETS, EMBEDDED_FILE, FASHION_MNIST_CLASSES, load_dataset
from .cifar import RestrictedUnpickler
from .loaders import EpochBatchSampler, TensorBatches, make_loaders, random_crop_flip
from .splits import DataError, DatasetSplits

__all__ = [
    "DATASETS", "EMBEDDED_FILE", "FASHION_MNIST_CLASSES", "DataError", "DatasetSplits", "EpochBatchSampler",
    "RestrictedUnpickler", "TensorBatches", "load_dataset", "make_loaders", "random_crop_flip",
]
