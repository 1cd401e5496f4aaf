"""ltl_ext: Local Tandem Learning for spiking neural networks, with fused CPU/CUDA kernels.

    from ltl_ext import LocalTandemTrainer, convert, train_teacher
    from ltl_ext.functional import lif, tandem_loss, tandem_step     # fused ops (+ *_reference twins)
    from ltl_ext.nn import LIF, ClampReLU, SpikingModel               # drop-in spiking layers
    from ltl_ext import noise                                         # analog-chip non-idealities
"""
__version__ = "0.1.0"

from . import functional, nn, models, tandem  # noqa: F401
from .convert import convert  # noqa: F401
from .trainer import LocalTandemTrainer, train_teacher  # noqa: F401
from . import noise  # noqa: F401

__all__ = ["LocalTandemTrainer", "train_teacher", "convert", "functional", "nn", "models", "tandem", "noise",
           "__version__"]
