"""Floor 5b, the method: turning a teacher into a student and pairing the two.

- ``convert``: ANN -> spiking student (BN folded, activations -> LIF, teacher initialisation);
- ``tandem``: teacher/student pairing by name, target normalisation (one percentile), the local losses.
"""
from .convert import convert, fold_batchnorm  # noqa: F401
from . import tandem  # noqa: F401
