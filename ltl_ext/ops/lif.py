"""The fused multi-step LIF op (floor 4): ``lif`` over ``torch.ops.ltl_ext.lif_fwd`` / ``lif_bwd``.

Same signature and semantics as :func:`ltl_ext.ops.reference.lif_reference` (the spec). The op sees x as [T, N]
(a view of any [T, ...] input) and per-neuron parameters as [N] tensors in the math type (float32 for
half/bf16/float32 x, float64 for float64 x); float parameters travel as plain floats (no tensor, no gradient).
The expand/reshape/cast that brings a parameter to [N] is ordinary autograd, so its gradient arrives reduced to
its own shape and dtype.

Forward saves only x (and the parameters); backward recomputes H from x (cheaper than writing and re-reading a
[T, N] H on these machines) and runs BPTT with the surrogate. The autograd formula is registered in C++
(csrc/autograd.cpp: a call is one dispatch, its backward one more); the fake kernels for torch.compile and
opcheck are here.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .library import HAS_C, check_device
from .params import check_lif_args

__all__ = ["lif"]

_LIF_FWD = torch.ops.ltl_ext.lif_fwd.default if HAS_C else None  # the overload itself: no resolution per call


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _per_neuron(p, shape, n: int, dtype: torch.dtype):
    """(tensor [N] in the math type, 0.0) for a tensor parameter; (None, value) for a float."""
    if isinstance(p, Tensor):
        return p.to(dtype).expand(shape).reshape(n), 0.0
    return None, float(p)


def lif(x: Tensor, *, beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0, v0=None, surrogate="sigmoid",
        surrogate_alpha=None, detach_reset=False, return_v=False):
    """Multi-step LIF over ``x`` [T, *] with the fused kernel of x's device; see ``lif_reference``."""
    p = check_lif_args(x, beta=beta, alpha=alpha, threshold=threshold, reset=reset, v_reset=v_reset, v0=v0,
                       surrogate=surrogate, surrogate_alpha=surrogate_alpha, detach_reset=detach_reset,
                       check_values=False)  # tensor values: the C++ glue (CPU) / where they are set (GPU)
    check_device(x, "lif")
    T, shape = x.shape[0], x.shape[1:]
    n = math.prod(shape)
    md = _math_dtype(x.dtype)
    b, bs = _per_neuron(p.beta, shape, n, md)
    a, as_ = _per_neuron(p.alpha, shape, n, md)
    th, ths = _per_neuron(p.threshold, shape, n, md)
    v0t = None if p.v0 is None else p.v0.to(md).expand(shape).reshape(n)
    spikes, v = _LIF_FWD(x.reshape(T, n), b, a, th, v0t, bs, as_, ths, p.reset, p.v_reset,
                                          p.surrogate, p.surrogate_alpha, p.detach_reset)
    spikes = spikes.view(x.shape)
    return (spikes, v.view(shape)) if return_v else spikes


# ---- fake kernels (shapes only: torch.compile, opcheck) --------------------------------------------------------
def _lif_fwd_fake(x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset, surrogate,
                  surrogate_alpha, detach_reset):
    torch._check(x.dim() == 2, lambda: "ltl_ext::lif_fwd takes x as [T, N]")
    return x.new_empty(x.shape), x.new_empty((x.shape[1],))


def _lif_bwd_fake(grad_spikes, grad_v, x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                  surrogate, surrogate_alpha, detach_reset, need_v0, need_beta, need_alpha, need_threshold):
    n, md = x.shape[1], _math_dtype(x.dtype)

    def opt(need):
        return x.new_empty((n if need else 0,), dtype=md)

    return x.new_empty(x.shape), opt(need_v0), opt(need_beta), opt(need_alpha), opt(need_threshold)


if HAS_C:  # without the library, lif() raises check_device's message; there is nothing to register on
    torch.library.register_fake("ltl_ext::lif_fwd")(_lif_fwd_fake)
    torch.library.register_fake("ltl_ext::lif_bwd")(_lif_bwd_fake)
