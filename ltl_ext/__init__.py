"""ltl_ext: Local Tandem Learning for spiking neural networks, with fused CPU/CUDA kernels."""
__version__ = "0.1.0"

from . import functional  # noqa: F401
