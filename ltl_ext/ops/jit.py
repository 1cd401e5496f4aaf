"""Loading ``ltl_ext._C``: the library built ahead of time, or else one compiled at first use against the torch
that runs (as DeepSpeed's op builder does).

``pip install -e .`` with pip's build isolation has no torch at build time, so setup.py builds no extension; the
first ``import ltl_ext`` then compiles the same sources with the same flags (``csrc/sources.txt`` and
``build_config.py``) through ``torch.utils.cpp_extension.load``, into a cache folder per flavour, Python and
torch::

    ~/.cache/ltl_ext/<flavour>-py<ver>-torch<ver>/      ($LTL_EXT_CACHE, else $XDG_CACHE_HOME/ltl_ext)

A file lock serialises concurrent builds (several processes importing at once build once); later imports load
the cached library in well under a second (ninja finds nothing to do).

Environment: ``LTL_EXT_JIT`` = ``auto`` (default: build at first use only when no ahead-of-time library file is
installed), ``1`` (always use the first-use build, even beside an ahead-of-time one), ``0`` (never: a missing
library stays missing). ``LTL_EXT_CUDA``, ``TORCH_CUDA_ARCH_LIST``, ``CUDA_HOME`` and ``MAX_JOBS`` as for setup.py;
``LTL_EXT_JIT_VERBOSE=1`` shows the compiler's commands.
"""
from __future__ import annotations

import fcntl
import glob
import importlib
import os
import shlex
import shutil
import sys
import sysconfig
import time
from types import ModuleType
from typing import List, Optional, Tuple

from .._version import __version__
from . import build_config as cfg

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: how the loaded library was built, for ``python -m ltl_ext info`` (set by :func:`load_library`)
HOW_BUILT = "not loaded"


class JitBuildError(ImportError):
    """The library could not be compiled at first use (the message names what is missing)."""


def mode() -> str:
    value = os.environ.get("LTL_EXT_JIT", "auto").strip().lower()
    if value not in ("auto", "0", "1"):
        raise ValueError(f"LTL_EXT_JIT must be auto, 0 or 1, got {value!r}")
    return value


def ahead_of_time_files() -> List[str]:
    """The ``ltl_ext/_C*.so`` files an ahead-of-time build (``--no-build-isolation``) installed."""
    return sorted(glob.glob(os.path.join(_PACKAGE_DIR, f"{cfg.MODULE_NAME}.*so")) +
                  glob.glob(os.path.join(_PACKAGE_DIR, f"{cfg.MODULE_NAME}.*pyd")))


def source_root() -> Optional[str]:
    """The folder that holds ``csrc/sources.txt``: ``ltl_ext/_native`` in a wheel, the checkout when editable."""
    for root in (os.path.join(_PACKAGE_DIR, "_native"), os.path.dirname(_PACKAGE_DIR)):
        if os.path.isfile(os.path.join(root, cfg.SOURCE_LIST)):
            return root
    return None


def cache_root() -> str:
    if os.environ.get("LTL_EXT_CACHE"):
        return os.environ["LTL_EXT_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ltl_ext")


def _ensure_ninja_on_path() -> None:
    """The `ninja` wheel puts its binary in the venv's bin/, which is not on PATH when the venv's python is run
    without activating it; torch looks for `ninja` on PATH."""
    try:
        import ninja  # type: ignore
    except ImportError:
        return
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def missing_tools(with_cuda: bool, nvcc: Optional[str]) -> List[str]:
    """What the build needs and this machine lacks, each with how to get it (empty when all is there)."""
    missing = []
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(shlex.split(cxx)[0] if cxx.strip() else "c++") is None:
        missing.append(f"a C++ compiler ({cxx!r} is not on PATH: apt-get install g++, or set CXX)")
    _ensure_ninja_on_path()
    if shutil.which("ninja") is None:
        missing.append("ninja (pip install ninja)")
    include = sysconfig.get_paths().get("include")
    if not include or not os.path.isfile(os.path.join(include, "Python.h")):
        missing.append(f"the Python headers (no Python.h in {include}: apt-get install python3-dev)")
    if with_cuda and nvcc is None:
        missing.append("nvcc (set CUDA_HOME to the CUDA toolkit, or LTL_EXT_CUDA=0 for the CPU flavour)")
    return missing


def _define_flag(name: str, value: Optional[str]) -> str:
    # torch writes the flags into build.ninja, whose commands run through the shell: quote string values
    return f"-D{name}" if value is None else shlex.quote(f"-D{name}={value}")


def build() -> ModuleType:
    """Compile (or load from the cache) ``ltl_ext._C`` against the running torch; raise :class:`JitBuildError`."""
    home = cfg.default_cuda_home()
    if home:  # before torch.utils.cpp_extension computes CUDA_HOME at import (see build_config.default_cuda_home)
        os.environ.setdefault("CUDA_HOME", home)
    import torch
    from torch.utils import cpp_extension

    root = source_root()
    if root is None:
        raise JitBuildError(f"ltl_ext's C++ sources are not installed (no {cfg.SOURCE_LIST} in {_PACKAGE_DIR}/_native "
                            f"or beside the package): reinstall ltl_ext from its source tree")
    nvcc = os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc") if cpp_extension.CUDA_HOME else None
    nvcc = nvcc if nvcc and os.path.exists(nvcc) else None
    try:
        with_cuda, why = cfg.want_cuda(os.environ.get("LTL_EXT_CUDA", "auto"), torch.version.cuda, nvcc)
    except (ValueError, RuntimeError) as e:
        raise JitBuildError(str(e)) from None
    missing = missing_tools(with_cuda, nvcc)
    if missing:
        raise JitBuildError("ltl_ext cannot compile its native library at first use: missing " + "; ".join(missing)
                            + ". Or build it ahead of time: pip install --no-build-isolation -e . (needs the same "
                              "tools).")
    if with_cuda and not torch.cuda.is_available():  # no GPU to ask: name the archs
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", cfg.CUDA_ARCH_LIST)

    sources = cfg.read_sources(root)
    flavour = "cuda" if with_cuda else "cpu"
    files = [os.path.join(root, p) for p in sources["cpu"] + (sources["cuda"] if with_cuda else [])]
    macros = [_define_flag(n, v) for n, v in cfg.defines(__version__, torch.__version__,
                                                         torch.version.cuda if with_cuda else None)]
    cflags = cfg.CXX_FLAGS + [cfg.std_flag()] + macros
    if with_cuda:
        cflags += [f for d in cfg.nvidia_wheel_includes() for f in ("-idirafter", d)]
    includes = [os.path.join(root, d) for d in cfg.INCLUDE_DIRS]
    build_dir = os.path.join(cache_root(), cfg.build_tag(flavour, torch.__version__))
    os.makedirs(build_dir, exist_ok=True)

    with open(os.path.join(build_dir, "build.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"ltl_ext: waiting for another process that is compiling the native library in {build_dir}",
                  file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        fresh = not glob.glob(os.path.join(build_dir, f"{cfg.MODULE_NAME}*.so"))
        if fresh:
            print(f"ltl_ext: compiling the native library ({flavour.upper()} flavour: {why}) against torch "
                  f"{torch.__version__}, once, into {build_dir} (a few minutes; later imports reuse it) ...",
                  file=sys.stderr, flush=True)
        start = time.time()
        try:
            module = cpp_extension.load(
                name=cfg.MODULE_NAME, sources=files, extra_cflags=cflags,
                extra_cuda_cflags=cfg.NVCC_FLAGS + [cfg.std_flag()] + macros if with_cuda else None,
                extra_ldflags=list(cfg.LINK_FLAGS), extra_include_paths=includes, build_directory=build_dir,
                with_cuda=with_cuda, verbose=os.environ.get("LTL_EXT_JIT_VERBOSE") == "1")
        except (RuntimeError, OSError, ImportError) as e:  # a compile error: torch's message holds the compiler's
            raise JitBuildError(f"ltl_ext: compiling the native library in {build_dir} failed: {e}") from e
        if fresh:
            print(f"ltl_ext: native library compiled in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    global HOW_BUILT
    HOW_BUILT = f"at first use ({flavour.upper()} flavour, cached in {build_dir})"
    return module


def load_library() -> Tuple[Optional[ModuleType], Optional[BaseException]]:
    """``(module, None)`` or ``(None, why)``: the ahead-of-time ``ltl_ext._C``, else (see ``LTL_EXT_JIT``) the
    first-use build. The module is registered as ``ltl_ext._C`` either way."""
    global HOW_BUILT
    error: Optional[BaseException] = None
    jit = mode()
    if jit != "1":
        try:
            module = importlib.import_module(f"ltl_ext.{cfg.MODULE_NAME}")
            HOW_BUILT = f"ahead of time (setup.py: {os.path.basename(module.__file__)} in the package)"
            return module, None
        except ImportError as e:  # not built, or built against another torch ("undefined symbol")
            error = e
    if jit == "0" or (jit == "auto" and ahead_of_time_files()):  # a broken ahead-of-time build: say so, no rebuild
        HOW_BUILT = "not loaded"
        return None, error
    try:
        module = build()
    except JitBuildError as e:
        HOW_BUILT = "not loaded (the build at first use failed)"
        return None, e
    sys.modules[f"ltl_ext.{cfg.MODULE_NAME}"] = module
    return module, None
