"""Shared test helpers: the device x dtype grid this machine supports, tolerances by dtype, input makers.

Naming convention for GPU tests (scripts/gpu_check.sh runs ``pytest tests -m cuda``): any test whose node id
contains "cuda" gets the ``cuda`` marker automatically, so parametrize over :data:`DEVICES` (ids "cpu" / "cuda")
or put "cuda" in the test name (``test_something_cuda``). Tests on the "cuda" device skip where there is no GPU or
no CUDA kernels in the build.

Use in a test module::

    from conftest import DEVICES, DTYPES, tol, assert_close_dtype, make_input
    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("dtype", DTYPES)
    def test_x(device, dtype): ...
"""
from __future__ import annotations

from typing import Sequence

import pytest
import torch

from ltl_ext.ops import HAS_CUDA_KERNELS

CUDA_OK = torch.cuda.is_available() and HAS_CUDA_KERNELS
_CUDA_SKIP = pytest.mark.skipif(not CUDA_OK, reason="no GPU, or ltl_ext built without CUDA kernels")

#: device parameters: "cpu" always; "cuda" skips without a GPU (keep the id "cuda": gpu_check.sh selects it)
DEVICES = ["cpu", pytest.param("cuda", marks=_CUDA_SKIP, id="cuda")]
#: all supported dtypes, and the two exact ones
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
FULL_DTYPES = [torch.float32, torch.float64]
requires_cuda = _CUDA_SKIP

# (rtol, atol) for values of order 1, per dtype. float64 compares different summation orders (~1e-15); float32
# accumulates over T steps; half/bf16 round the stored input/output (state and math are float32 inside, so the
# error is one or two roundings of the output: eps(fp16) = 1e-3, eps(bf16) = 8e-3).
TOL = {
    torch.float64: (1e-9, 1e-10),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-2, 2e-3),
    torch.bfloat16: (5e-2, 2e-2),
}


def tol(dtype: torch.dtype) -> dict:
    """kwargs for torch.testing.assert_close at ``dtype``."""
    rtol, atol = TOL[dtype]
    return {"rtol": rtol, "atol": atol}


#: bound on |actual - expected| / |expected| (L2 norms) per dtype: a few units of its rounding, summed over T
NORM_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def assert_close_dtype(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, *, scale: float = None,
                       msg: str = "") -> None:
    """assert_close with the tolerance of ``dtype``; atol scales with max |expected| (gradients summed over T)."""
    rtol, atol = TOL[dtype]
    if scale is None:
        scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach().to(expected.dtype), expected.detach(), rtol=rtol, atol=atol * scale,
                               msg=(lambda m: f"{msg}\n{m}") if msg else None)
    # the atol above scales with the largest value, so it alone would leave small entries unchecked in 16-bit
    # dtypes: the error relative to the reference's norm holds every entry to the dtype's precision
    a, e = actual.detach().double(), expected.detach().double()
    norm = float(e.norm())
    if norm > 0:
        rel = float((a - e).norm()) / norm
        assert rel <= NORM_TOL[dtype], f"{msg}: error relative to the reference's norm {rel:.3g} > {NORM_TOL[dtype]}"


def make_input(shape: Sequence[int], dtype=torch.float32, device="cpu", *, seed=0, scale=1.0, offset=0.3,
               noncontig=False, requires_grad=False) -> torch.Tensor:
    """Random input currents (normal * scale + offset) that make a LIF with threshold ~1 fire sometimes.

    ``noncontig=True`` returns a strided view (every other element of the last dim): same shape, non-contiguous.
    """
    g = torch.Generator().manual_seed(seed)
    shape = tuple(shape)
    if noncontig and shape:
        x = torch.randn(shape[:-1] + (2 * shape[-1],), generator=g, dtype=torch.float64)
        x = (x * scale + offset).to(dtype=dtype, device=device)[..., ::2]
    else:
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        x = (x * scale + offset).to(dtype=dtype, device=device)
    if noncontig:
        assert not x.is_contiguous() or x.numel() <= 1
    return x.requires_grad_(requires_grad)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs on the GPU (auto-applied to node ids containing 'cuda')")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cuda" in item.nodeid.lower():
            item.add_marker(pytest.mark.cuda)


# --------------------------------------------------------------------------------------------- a small trained LTL run
def _blobs(n=800, d=16, k=6, seed=0):
    """Gaussian blobs: k classes in d dimensions, n samples (learnable in seconds, hard enough to lose to noise)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 0.8
    y = torch.randint(0, k, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


@pytest.fixture(scope="module")
def tiny_trainer():
    """(trainer, train batches, test batches): a trained MLP teacher and its teacher-initialised student, T = 8,
    for the chip, calibration and drift tests (one per test module)."""
    from torch import nn

    from ltl_ext import LocalTandemTrainer, train_teacher
    from ltl_ext.ltl.convert import convert
    from ltl_ext.nn import ClampReLU
    x, y = _blobs()
    train = [(x[i:i + 50], y[i:i + 50]) for i in range(0, 500, 50)]
    test = [(x[500:], y[500:])]
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 64), ClampReLU(), nn.Linear(64, 64), ClampReLU(), nn.Linear(64, 6))
    train_teacher(teacher, train, 6, progress=False)
    student = convert(teacher, init="teacher", calib_data=x[:300])
    trainer = LocalTandemTrainer(teacher, student=student, time_steps=8, warmup=6, lr=3e-3, seed=0)
    return trainer, train, test
