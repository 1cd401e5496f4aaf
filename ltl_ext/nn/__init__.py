"""Floor 5a, the layers: drop-in spiking layers and the model zoo.

- ``layers``: :class:`LIF` (the spiking neuron, time folded into the batch), :class:`ClampReLU` (the teacher's
  clipped activation), :class:`SpikingModel` (runs a model over T steps, or the next n steps at a time);
- ``encoding``: how a batch becomes the ``[T*B, ...]`` input current (direct, Poisson, time-major sequences);
- ``tandem_run``: :class:`TandemRun`, one forward in tandem mode (targets in, local losses out, optionally
  back-propagated layer by layer); ``packing``: :class:`SpikeStore`, saved spikes kept as 1 byte (bool);
- ``zoo``: the teachers' architectures (``vgg11``, ``vgg16``, ``cnn_small``, ``mlp``, ``resnet``), also
  reachable as ``ltl_ext.models``.
"""
from .layers import ANN_ACTIVATIONS, LIF, ClampReLU, SpikingModel, encode, lifs  # noqa: F401
from .packing import SpikeStore  # noqa: F401
from .tandem_run import TandemRun  # noqa: F401
from . import zoo  # noqa: F401

__all__ = ["LIF", "ClampReLU", "SpikingModel", "TandemRun", "SpikeStore", "encode", "lifs", "ANN_ACTIVATIONS",
           "zoo"]
