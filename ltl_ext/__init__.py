"""ltl_ext: Local Tandem Learning for spiking neural networks, with fused CPU/CUDA kernels.

    from ltl_ext import LocalTandemTrainer, convert, train_teacher
    from ltl_ext.functional import lif, tandem_loss, tandem_step     # fused ops (+ *_reference twins)
    from ltl_ext.nn import LIF, ClampReLU, SpikingModel               # drop-in spiking layers
    from ltl_ext import noise                                         # analog-chip non-idealities
"""
__version__ = "0.1.0"

from . import functional, nn, models, tandem  # noqa: F401
from .convert import convert  # noqa: F401
from .trainer import (BPTTTrainer, LocalTandemTrainer, evaluate_ann, evaluate_spiking,  # noqa: F401
                      load_teacher, save_teacher, train_teacher)
from .checkpoint import CheckpointError  # noqa: F401
from . import noise  # noqa: F401

__all__ = ["LocalTandemTrainer", "BPTTTrainer", "train_teacher", "evaluate_spiking", "evaluate_ann",
           "save_teacher", "load_teacher", "CheckpointError", "convert", "functional", "nn", "models", "tandem",
           "noise", "__version__"]
