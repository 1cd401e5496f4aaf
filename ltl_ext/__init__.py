"""ltl_ext: Local Tandem Learning for spiking neural networks, with fused CPU/CUDA kernels.

    from ltl_ext import LocalTandemTrainer, convert, train_teacher
    from ltl_ext.functional import lif, tandem_loss, tandem_step     # fused ops (+ *_reference twins)
    from ltl_ext.nn import LIF, ClampReLU, SpikingModel               # drop-in spiking layers
    from ltl_ext import noise                                         # analog-chip non-idealities
"""
from ._version import __version__  # noqa: F401

from . import functional, nn  # noqa: F401
from .nn import zoo as models  # noqa: F401
from .ltl import convert, tandem  # noqa: F401
from .train import (BPTTTrainer, CheckpointError, LocalTandemTrainer, evaluate_ann,  # noqa: F401
                    evaluate_spiking, load_teacher, save_teacher, train_teacher)
from .hw import noise  # noqa: F401
from .interop import export_nir, import_nir  # noqa: F401   (nir itself is imported when called)

__all__ = ["LocalTandemTrainer", "BPTTTrainer", "train_teacher", "evaluate_spiking", "evaluate_ann",
           "save_teacher", "load_teacher", "CheckpointError", "convert", "functional", "nn", "models", "tandem",
           "noise", "export_nir", "import_nir", "__version__"]
