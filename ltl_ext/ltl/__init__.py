"""Floor 5b, the method: turning a teacher into a student and pairing the two.

- ``convert``: ANN -> spiking student (BN folded, activations -> LIF, teacher initialisation), the steps in order;
- ``activations``: a teacher's functional activations (``F.relu``, ``x.clamp(0, m)``, ...) as modules;
- ``swap``: module swapping on the student's copy (reused activations split, dropout removed, activations -> LIF);
- ``folding``: BatchNorm folded into the conv/linear before it;
- ``balancing``: ``init="teacher"``, the weights rescaled so that the user's neuron fires at the target rates;
- ``tandem``: teacher/student pairing by name, target normalisation (one percentile), the local losses.
"""
from .convert import convert, fold_batchnorm  # noqa: F401
from . import tandem  # noqa: F401
