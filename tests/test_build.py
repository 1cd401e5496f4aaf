"""The build itself: OpenMP really parallelises, build info is complete, failures explain themselves."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import ltl_ext
from ltl_ext.ops import build_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_build_info():
    info = build_info()
    for key in ("ltl_ext_version", "compiled", "torch_built_against", "torch_running", "cpu_kernels", "cuda_kernels",
                "openmp", "omp_max_threads", "aten_threads", "cpu_vector_path", "parallel_threads_used"):
        assert key in info, key
    assert info["compiled"] and info["cpu_kernels"]
    assert info["ltl_ext_version"] == ltl_ext.__version__
    assert info["torch_built_against"] == torch.__version__, "rebuild: built against another torch"
    from ltl_ext.ops import HAS_CUDA_KERNELS
    assert info["cuda_kernels"] == HAS_CUDA_KERNELS          # what info says is what the dispatcher uses
    if torch.version.cuda is None:                           # a CPU torch cannot have produced CUDA kernels
        assert not info["cuda_kernels"]


def test_openmp_really_uses_two_threads():
    """Without -fopenmp at compile and link, at::parallel_for silently runs on one thread."""
    from ltl_ext import _C
    info = build_info()
    assert info["openmp"], "ltl_ext._C was compiled without OpenMP"
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: nothing to parallelise over")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert _C.parallel_threads_used(1 << 16) == 2
        torch.set_num_threads(1)
        assert _C.parallel_threads_used(1 << 16) == 1                # and it follows torch's setting
    finally:
        torch.set_num_threads(old)
    assert info["parallel_threads_used"] >= 1


def _run_py(code: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120, **kw)


def test_clear_error_when_library_missing():
    """Without ltl_ext._C the package imports, the references work, and the fused op names the fix."""
    code = """
import sys
sys.modules["ltl_ext._C"] = None          # as if it were never built
import torch
from ltl_ext.functional import lif, lif_reference
from ltl_ext.ops import build_info, ExtensionNotBuiltError
x = torch.randn(4, 3)
assert lif_reference(x, beta=0.9).shape == x.shape
assert build_info()["compiled"] is False
try:
    lif(x, beta=0.9)
except ExtensionNotBuiltError as e:
    print("MSG:", e)
else:
    raise SystemExit("no error")
"""
    r = _run_py(code)
    assert r.returncode == 0, r.stderr
    assert "pip install --no-build-isolation -e ." in r.stdout and "ltl_ext._C" in r.stdout


def test_setup_without_torch_names_the_commands():
    """setup.py run by a Python without torch (pip's build isolation) still works: it says that the library will be
    compiled at first import, and names the command that builds it ahead of time, without a traceback."""
    py = "/usr/bin/python3"
    if not os.path.exists(py) or subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("no system python without torch")
    r = subprocess.run([py, os.path.join(ROOT, "setup.py"), "--version"], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "first import" in r.stderr and "pip install --no-build-isolation -e ." in r.stderr
    assert "Traceback" not in r.stderr
