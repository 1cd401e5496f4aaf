"""Data files that ship with the package (no code): ``fashion_mnist_subset.npz``, the embedded default data set,
with its ``LICENSE`` (MIT, Zalando SE) and ``NOTICE`` (provenance). Read it with
``ltl_ext.data.load_dataset("embedded")``; remake it with ``scripts/make_embedded_subset.py``."""
