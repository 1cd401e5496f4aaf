"""Fused local tandem loss (floor 4): the public ``tandem_loss`` / ``tandem_step`` over the compiled ops
``torch.ops.ltl_ext.tandem_*`` (csrc/tandem_ops.cpp), with their fake kernels (torch.compile, opcheck). Their
autograd formulas are registered in C++ (csrc/autograd.cpp): a call is one dispatch, with no Python on the way.

Same signatures and semantics as ``reference.tandem_loss_reference`` / ``tandem_step_reference`` (the spec).

- offline: ``tandem_offline_fwd`` writes the spikes and the [N] error ``err = rate - target``; it saves x and
  err. The backward (``tandem_offline_bwd``) recomputes H from x and runs BPTT with dL/dS[t] = 2 err / (N T)
  for every t: no [T, N] upstream gradient exists anywhere.
- online (batched): ``tandem_online`` writes the spikes and, in the same pass, the local gradient gX[t] (state and
  count are detached through time, so gX[t] depends only on step t); backward is a scale by dL/dloss (free when
  it is 1, the usual ``loss.backward()``). gX is the only [T, N] tensor kept, in the math type: at N = 2^20 its
  entries are ~1e-8, below float16's range, and only the loss scale brings them back into it.

The loss is returned in the math type (float32 for half/bf16 x, as autocast does for reductions), so that a loss
scale such as ``GradScaler``'s 65536 reaches the backward intact (65536 is not a finite float16).
- stepwise: ``tandem_online`` with T = 1 from a given state: O(N) memory whatever T.

The teacher target gets a gradient too (it rarely needs one). Tensor beta/alpha/threshold get theirs, reduced to
their own shape and dtype by autograd (the ops see them as [N] math-type tensors).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .params import check_lif_args, check_step_args, check_target, check_warmup
from .reference import _state_dtype
from .library import HAS_C, check_device

__all__ = ["tandem_loss", "tandem_step"]

_ops = torch.ops.ltl_ext
# the overloads themselves: no overload resolution per call
_OFFLINE_FWD = _ops.tandem_offline_fwd.default if HAS_C else None
_ONLINE = _ops.tandem_online.default if HAS_C else None


def _flat(p: Tensor, shape, n: int, dtype: torch.dtype) -> Tensor:
    """A per-neuron tensor as the [N] math-type tensor the ops take (differentiable: autograd reduces back)."""
    return p.to(dtype).expand(shape).reshape(n)


def _param(p, shape, n: int, dtype: torch.dtype):
    if isinstance(p, Tensor):
        return _flat(p, shape, n, dtype), 1.0
    return None, float(p)


def _needs(t: Optional[Tensor]) -> bool:
    return t is not None and t.requires_grad


def _math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- public API ---------------------------------------------------------------------------------------------

def tandem_loss(x: Tensor, target: Tensor, *, mode="offline", warmup=0, beta, alpha=1.0, threshold=1.0,
                reset="soft", v_reset=0.0, v0=None, surrogate="sigmoid", surrogate_alpha=None,
                detach_reset=False):
    """The local tandem loss of one layer, fused: LIF over ``x`` [T, *] and the MSE of its firing rate to
    ``target`` [*]. Returns ``(spikes [T, *] detached, loss)``; see ``tandem_loss_reference``."""
    # tensor values (and NaN targets): the C++ glue on the CPU, where they are set on a GPU (params.py)
    p = check_lif_args(x, beta=beta, alpha=alpha, threshold=threshold, reset=reset, v_reset=v_reset, v0=v0,
                       surrogate=surrogate, surrogate_alpha=surrogate_alpha, detach_reset=detach_reset,
                       check_values=False)
    check_target(target, x, check_values=False)
    T = x.shape[0]
    check_warmup(mode, warmup, T)
    check_device(x, "tandem_loss")
    shape = x.shape[1:]
    n = shape.numel()
    sd = _state_dtype(x.dtype)
    x2 = x.reshape(T, n)
    y = target.to(sd).reshape(n)
    b, bs = _param(p.beta, shape, n, sd)
    a, as_ = _param(p.alpha, shape, n, sd)
    th, ts = _param(p.threshold, shape, n, sd)
    if mode == "offline":
        v0f = None if p.v0 is None else _flat(p.v0, shape, n, sd)
        spikes, loss, _ = _OFFLINE_FWD(x2, y, b, a, th, v0f, bs, as_, ts, p.reset, p.v_reset, p.surrogate,
                                       p.surrogate_alpha, p.detach_reset)
        return spikes.detach().view(x.shape), loss
    v0f = None if p.v0 is None else _flat(p.v0.detach(), shape, n, sd)
    g = torch.is_grad_enabled()
    out = _ONLINE(x2, y, b, a, th, v0f, None, bs, as_, ts, p.reset, p.v_reset, p.surrogate, p.surrogate_alpha, 0,
                  warmup, False, g and x2.requires_grad, g and _needs(b), g and _needs(a), g and _needs(th),
                  g and y.requires_grad)
    return out[0].detach().view(x.shape), out[1]


def tandem_step(x_t: Tensor, target: Tensor, v: Optional[Tensor], count: Optional[Tensor], t: int, *, warmup=0,
                beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0, surrogate="sigmoid",
                surrogate_alpha=None, detach_reset=False):
    """One step of online LTL with O(N) memory: ``(spikes_t, loss_t, v_new, count_new)``; see
    ``tandem_step_reference``. ``loss_t.backward()`` gives this step's local gradient (x_t, tensor params)."""
    p = check_step_args(x_t, target, v, count, t, warmup, check_values=False, beta=beta, alpha=alpha,
                        threshold=threshold, reset=reset, v_reset=v_reset, surrogate=surrogate,
                        surrogate_alpha=surrogate_alpha, detach_reset=detach_reset)
    x1 = x_t.unsqueeze(0)
    check_device(x1, "tandem_step")
    shape = x_t.shape
    n = shape.numel()
    sd = _state_dtype(x_t.dtype)
    y = target.to(sd).reshape(n)
    b, bs = _param(p.beta, shape, n, sd)
    a, as_ = _param(p.alpha, shape, n, sd)
    th, ts = _param(p.threshold, shape, n, sd)
    vf = None if v is None else _flat(v.detach(), shape, n, sd)
    cf = None if count is None else _flat(count.detach(), shape, n, sd)
    g = torch.is_grad_enabled()
    out = _ONLINE(x1.reshape(1, n), y, b, a, th, vf, cf, bs, as_, ts, p.reset, p.v_reset, p.surrogate,
                  p.surrogate_alpha, t, warmup, True, g and x_t.requires_grad, g and _needs(b), g and _needs(a),
                  g and _needs(th), g and y.requires_grad)
    spikes, loss, v_new, count_new = out[:4]
    return spikes.detach().view(shape), loss, v_new.view(shape), count_new.view(shape)


# ---- fake kernels (shapes and dtypes only: torch.compile, opcheck) ---------------------------------------------

def _offline_fwd_fake(x, target, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                      surrogate, surrogate_alpha, detach_reset):
    torch._check(x.dim() == 2)
    T, n = x.shape
    md = _math_dtype(x.dtype)
    return x.new_empty((T, n)), x.new_empty((), dtype=md), x.new_empty((n,), dtype=md)


def _offline_bwd_fake(grad_loss, x, err, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                      surrogate, surrogate_alpha, detach_reset, need_v0, need_beta, need_alpha, need_threshold):
    torch._check(x.dim() == 2)
    T, n = x.shape
    md = _math_dtype(x.dtype)
    return (x.new_empty((T, n)),) + tuple(x.new_empty((n if need else 0,), dtype=md)
                                           for need in (need_v0, need_beta, need_alpha, need_threshold))


def _online_fake(x, target, beta, alpha, threshold, v0, count0, beta_s, alpha_s, threshold_s, reset, v_reset,
                 surrogate, surrogate_alpha, t0, warmup, need_state, need_grad_x, need_beta, need_alpha,
                 need_threshold, need_target):
    torch._check(x.dim() == 2)
    T, n = x.shape
    md = _math_dtype(x.dtype)
    vec = [x.new_empty((n if need else 0,), dtype=md) for need in (need_state, need_state)]
    gx = x.new_empty((T, n) if need_grad_x else (0, 0), dtype=md)
    grads = [x.new_empty((n if need else 0,), dtype=md)
             for need in (need_beta, need_alpha, need_threshold, need_target)]
    return (x.new_empty((T, n)), x.new_empty((), dtype=md), *vec, gx, *grads)


if HAS_C:  # without the library the wrappers raise check_device's message; nothing to register on
    torch.library.register_fake("ltl_ext::tandem_offline_fwd")(_offline_fwd_fake)
    torch.library.register_fake("ltl_ext::tandem_offline_bwd")(_offline_bwd_fake)
    torch.library.register_fake("ltl_ext::tandem_online")(_online_fake)
