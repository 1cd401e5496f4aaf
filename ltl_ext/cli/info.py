"""``info``: versions, devices, the compiled kernels, the data sets found."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import _table


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="versions, devices, the compiled kernels, data sets found")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import platform
    import torch
    from .._version import __version__
    rows = [("ltl_ext", __version__), ("python", platform.python_version()), ("torch", torch.__version__),
            ("CPU threads", str(torch.get_num_threads())),
            ("CUDA", f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"
             if torch.cuda.is_available() else "not available")]
    try:
        from ..ops import build_info
        info = build_info()
        rows += [(f"build: {k}", str(v)) for k, v in info.items()]
    except ImportError:
        rows.append(("compiled kernels", "not built (pure-PyTorch reference in use)"))
    except Exception as e:  # noqa: BLE001 - info must always print
        rows.append(("compiled kernels", f"failed to load: {str(e).splitlines()[0][:120]}"))
    fm = Path("/usr/share/datasets/fashion-mnist")
    rows.append(("Fashion-MNIST (full)", str(fm) if fm.is_dir() else "not installed "
                 "(apt-get install dataset-fashion-mnist)"))
    print(_table(rows))
    return 0
