"""The compiled library ``ltl_ext._C`` (floor 3 -> 4): loading it, build information, device checks.

Importing ``ltl_ext._C`` registers every ``torch.ops.ltl_ext.*`` op (CPU, and CUDA when built with it). The op
wrappers (``lif.py``, ``tandem.py`` beside it) register fake kernels and autograd formulas on top and call
:func:`check_device` first, so a missing library or a CUDA tensor on a CPU-only build raises a clear error
instead of a dispatcher message. ``build_info()`` is what ``python -m ltl_ext info`` prints.
"""
from __future__ import annotations

import os

import torch

from . import jit

# loads the library (registers torch.ops.ltl_ext.*): the one built ahead of time by setup.py, else, when the
# install had no torch (pip's build isolation), one compiled now against the running torch (see jit.py)
_C, _IMPORT_ERROR = jit.load_library()

_REBUILD = ("build it against the torch you run with:  pip install --no-build-isolation -e .  "
            "(or `make build`) in the ltl_ext checkout")


def _load_info() -> dict:
    if _C is None:
        return {}
    try:
        return dict(_C.build_info())
    except Exception:  # pragma: no cover - a very old _C
        return {}


_INFO = _load_info()
#: computed once at import: a pybind call inside a torch.compile'd graph would break it
HAS_C: bool = _C is not None
HAS_CUDA_KERNELS: bool = bool(_INFO.get("cuda_kernels", False))


class ExtensionNotBuiltError(RuntimeError):
    """ltl_ext._C is missing or cannot be loaded."""


def missing_message() -> str:
    why = f"{type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}" if _IMPORT_ERROR is not None else "not found"
    hint = ""
    if _IMPORT_ERROR is not None and "undefined symbol" in str(_IMPORT_ERROR):
        hint = f" It was probably built against another torch than the one running ({torch.__version__})."
    return (f"ltl_ext's compiled kernels (ltl_ext._C) could not be loaded ({why}).{hint} To {_REBUILD}. "
            "The pure-PyTorch references (ltl_ext.functional.*_reference) work without it.")


def require_compiled() -> None:
    if not HAS_C:
        raise ExtensionNotBuiltError(missing_message())


def check_device(x: torch.Tensor, op: str = "lif") -> None:
    """Raise a clear error if ``x``'s device has no ltl_ext kernel in this build."""
    require_compiled()
    kind = x.device.type
    if kind == "cuda" and not HAS_CUDA_KERNELS:
        raise RuntimeError(
            f"ltl_ext.{op}: x is on {x.device}, but this ltl_ext build has no CUDA kernels (built against torch "
            f"{_INFO.get('torch_built_against', '?')}, CPU only). Rebuild with a CUDA build of torch and nvcc "
            "available (LTL_EXT_CUDA=1 pip install --no-build-isolation -e .), or move the tensors to the CPU.")
    if kind not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"ltl_ext.{op}: no kernel for device {x.device} (only cpu and cuda)")


def build_info() -> dict:
    """What was compiled and what runs now: for ``python -m ltl_ext info`` and bug reports."""
    from .._version import __version__
    info = {"ltl_ext_version": __version__, "compiled": HAS_C}
    if not HAS_C:
        info["error"] = missing_message()
    info.update({k: v for k, v in _INFO.items() if k != "version"})
    info["torch_running"] = torch.__version__
    if HAS_C and info.get("torch_built_against") not in (None, torch.__version__):
        info["warning"] = (f"built against torch {info['torch_built_against']} but running {torch.__version__}; "
                           f"rebuild: {_REBUILD}")
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        info["cuda_device"] = torch.cuda.get_device_name()
    info["torch_threads"] = torch.get_num_threads()
    info["omp_num_threads_env"] = os.environ.get("OMP_NUM_THREADS")
    if HAS_C:
        info["parallel_threads_used"] = int(_C.parallel_threads_used(1 << 12))
    return info
