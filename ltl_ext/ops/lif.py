"""The fused multi-step LIF op (floor 4): ``lif`` over ``torch.ops.ltl_ext.lif_fwd`` / ``lif_bwd``.

Same signature and semantics as :func:`ltl_ext.ops.reference.lif_reference` (the spec). The op sees x as [T, N]
(a view of any [T, ...] input) and per-neuron parameters as [N] tensors in the math type (float32 for
half/bf16/float32 x, float64 for float64 x); float parameters travel as plain floats (no tensor, no gradient).
The expand/reshape/cast that brings a parameter to [N] is ordinary autograd, so its gradient arrives reduced to
its own shape and dtype.

Forward saves only x (and the parameters); backward recomputes H from x (cheaper than writing and re-reading a
[T, N] H on these machines) and runs BPTT with the surrogate.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .library import HAS_C, check_device
from .params import check_lif_args

__all__ = ["lif"]


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
                       surrogate=surrogate, surrogate_alpha=surrogate_alpha, detach_reset=detach_reset)
    check_device(x, "lif")
    T, shape = x.shape[0], x.shape[1:]
    n = math.prod(shape)
    md = _math_dtype(x.dtype)
    b, bs = _per_neuron(p.beta, shape, n, md)
    a, as_ = _per_neuron(p.alpha, shape, n, md)
    th, ths = _per_neuron(p.threshold, shape, n, md)
    v0t = None if p.v0 is None else p.v0.to(md).expand(shape).reshape(n)
    spikes, v = torch.ops.ltl_ext.lif_fwd(x.reshape(T, n), b, a, th, v0t, bs, as_, ths, p.reset, p.v_reset,
                                          p.surrogate, p.surrogate_alpha, p.detach_reset)
    spikes = spikes.view(x.shape)
    return (spikes, v.view(shape)) if return_v else spikes


def _register() -> None:
    """Fake kernels (shapes only: torch.compile, opcheck) and the autograd formula of ``ltl_ext::lif_fwd``."""
    torch.library.register_fake("ltl_ext::lif_fwd")(_lif_fwd_fake)
    torch.library.register_fake("ltl_ext::lif_bwd")(_lif_bwd_fake)
    torch.library.register_autograd("ltl_ext::lif_fwd", _backward, setup_context=_setup_context)


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


# ---- autograd ---------------------------------------------------------------------------------------------------
def _setup_context(ctx, inputs, output):
    x, beta, alpha, threshold, v0, *rest = inputs
    ctx.save_for_backward(x, beta, alpha, threshold, v0)
    ctx.rest = tuple(rest)  # beta_s, alpha_s, threshold_s, reset, v_reset, surrogate, surrogate_alpha, detach
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no [T, N] of zeros


def _backward(ctx, grad_spikes, grad_v):
    x, beta, alpha, threshold, v0 = ctx.saved_tensors
    need = ctx.needs_input_grad
    if grad_spikes is None and grad_v is None:
        return (None,) * 13
    gx, g0, gb, ga, gt = torch.ops.ltl_ext.lif_bwd(grad_spikes, grad_v, x, beta, alpha, threshold, v0, *ctx.rest,
                                                    need[4], need[1], need[2], need[3])
    return (gx if need[0] else None, gb if need[1] else None, ga if need[2] else None, gt if need[3] else None,
            g0 if need[4] else None) + (None,) * 8


if HAS_C:  # without the library, lif() raises check_device's message; there is nothing to register on
    _register()
