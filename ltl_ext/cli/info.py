"""``info``: versions, devices, which kernels run (CPU path, CUDA, threads), the data sets found."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Tuple

from .common import _table


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="versions, devices, which kernels run, data sets found")
    p.add_argument("--all", action="store_true", help="also every raw field of the build information")
    p.set_defaults(func=run)
    return p


def kernels(info: dict) -> List[Tuple[str, str]]:
    """What actually runs, from :func:`ltl_ext.ops.build_info`: the CPU path, CUDA, and the threads a kernel uses.

    Each line is derived from what the loaded library reports at run time (not from what was asked for at build
    time): the CPU path from the CPU it runs on, CUDA from the kernels compiled in *and* a visible device, threads
    from a parallel loop actually run (``parallel_threads_used``).
    """
    if not info.get("compiled"):
        why = str(info.get("error", "not built")).split(". ")[0]
        return [("CPU kernels", f"NONE: {why}; the fused ops raise, only ltl_ext.functional.*_reference run"),
                ("CUDA kernels", "NONE (the compiled library is not loaded)"),
                ("threads", "n/a")]
    path = info.get("cpu_vector_path")
    cpu = f"fused C++, {'AVX2' if path == 'avx2' else 'generic (no AVX2 on this CPU)'} path"
    if info.get("cuda_kernels") and info.get("cuda_available"):
        cuda = f"fused CUDA kernels on {info.get('cuda_device')} (built against CUDA {info.get('cuda_built_against')})"
    elif info.get("cuda_kernels"):
        cuda = "built in, but no CUDA device is visible: nothing runs on CUDA"
    elif info.get("cuda_available"):
        cuda = "NOT built in (CPU-only build): CUDA tensors are refused; rebuild with nvcc to use the GPU"
    else:
        cuda = "not built in, no CUDA device"
    used = info.get("parallel_threads_used")
    if info.get("openmp"):
        threads = f"{used} (OpenMP {info.get('openmp_version')}, torch threads {info.get('torch_threads')})"
    else:
        threads = f"{used} (built without OpenMP: at::parallel_for's native pool)"
    rows = [("CPU kernels", cpu), ("CUDA kernels", cuda), ("threads per kernel", threads)]
    if info.get("warning"):
        rows.append(("WARNING", info["warning"]))
    return rows


def run(args) -> int:
    import platform
    import torch
    from .._version import __version__
    from ..ops import build_info, jit
    info = build_info()
    rows = [("ltl_ext", __version__), ("python", platform.python_version()), ("torch", torch.__version__),
            ("CUDA devices", f"{torch.cuda.device_count()}: {torch.cuda.get_device_name(0)}"
             if torch.cuda.is_available() else "none visible")]
    rows += kernels(info)
    rows.append(("native library built", jit.HOW_BUILT))
    if getattr(args, "all", False):
        rows += [(f"build: {k}", str(v)) for k, v in info.items()]
    fm = Path("/usr/share/datasets/fashion-mnist")
    rows.append(("Fashion-MNIST (full)", str(fm) if fm.is_dir() else "not installed "
                 "(apt-get install dataset-fashion-mnist)"))
    print(_table(rows))
    return 0
