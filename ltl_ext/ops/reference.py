"""Pure-PyTorch references: the specification of every fused op, written for clarity, not speed.

Each ``*_reference`` has the signature and semantics of its fused twin in :mod:`ltl_ext.functional`; the tests
compare the two (outputs and all gradients). Equations: ``docs`` / ltl-method.md §1, §3, §4.

LIF, for t = 0 .. T-1 with V[-1] = v0 (default 0)::

    H[t] = beta * V[t-1] + alpha * X[t]
    S[t] = 1 if H[t] >= threshold else 0          (backward: dS/dH = psi(H - threshold), the surrogate)
    V[t] = H[t] - threshold * S[t]                 soft reset
    V[t] = H[t] * (1 - S[t]) + v_reset * S[t]      hard reset
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .params import (SURROGATES, LIFParams, check_lif_args, check_step_args, check_surrogate_alpha, check_target,
                     check_unshared_state, check_warmup, check_x)


def surrogate_grad(u: Tensor, kind: str, a: Optional[float] = None) -> Tensor:
    """psi(u), the surrogate of dS/dH at u = H - threshold (ltl-method.md §1 table); ``a`` None: the default."""
    if not isinstance(kind, str) or kind not in SURROGATES:
        raise ValueError(f"unknown surrogate {kind!r}; use one of {tuple(SURROGATES)}")
    # as the ops check surrogate_alpha: a <= 0 would flip the gradient's sign (or flatten it) with no error
    a = check_surrogate_alpha(a)
    a = SURROGATES[kind] if a is None else a
    if kind == "rect":
        return (u.abs() < a).to(u.dtype)
    if kind == "sigmoid":
        s = torch.sigmoid(a * u)
        return a * s * (1 - s)
    if kind == "atan":
        return (a / 2) / (1 + (math.pi / 2 * a * u) ** 2)
    return 1 / (1 + a * u.abs()) ** 2   # fast_sigmoid


class _Heaviside(torch.autograd.Function):
    """S = (u >= 0) forward; grad * psi(u) backward."""

    @staticmethod
    def forward(ctx, u: Tensor, kind: str, a: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.kind, ctx.a = kind, a
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (u,) = ctx.saved_tensors
        return grad * surrogate_grad(u, ctx.kind, ctx.a), None, None


def _as_state_dtype(p, x: Tensor):
    """Parameters and state are kept in float32 for half inputs (the kernels' opmath), else in x's dtype."""
    return p.to(_state_dtype(x.dtype)) if isinstance(p, Tensor) else p


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def lif_step_reference(x_t: Tensor, v: Tensor, p: LIFParams) -> Tuple[Tensor, Tensor]:
    """One LIF step from state ``v`` (state dtype); returns (S[t], V[t]) in the state dtype."""
    beta, alpha, theta = (_as_state_dtype(q, x_t) for q in (p.beta, p.alpha, p.threshold))
    h = beta * v + alpha * x_t.to(v.dtype)
    s = _Heaviside.apply(h - theta, p.surrogate, p.surrogate_alpha)
    s_reset = s.detach() if p.detach_reset else s
    if p.reset == "soft":
        v = h - theta * s_reset
    else:
        v = h * (1 - s_reset) + p.v_reset * s_reset
    return s, v


def _initial_v(x: Tensor, p: LIFParams) -> Tensor:
    shape, dtype = x.shape[1:], _state_dtype(x.dtype)
    if p.v0 is None:
        return torch.zeros(shape, dtype=dtype, device=x.device)
    return p.v0.to(dtype).expand(shape)


def lif_reference(x: Tensor, *, beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0, v0=None,
                  surrogate="sigmoid", surrogate_alpha=None, detach_reset=False, return_v=False):
    """Multi-step LIF over ``x`` of shape [T, *]: returns spikes [T, *] (x's dtype), and V[T-1] if ``return_v``.

    Differentiable (BPTT through time, surrogate gradient) w.r.t. x, v0 and tensor-valued beta/alpha/threshold.
    """
    p = check_lif_args(x, beta=beta, alpha=alpha, threshold=threshold, reset=reset, v_reset=v_reset, v0=v0,
                       surrogate=surrogate, surrogate_alpha=surrogate_alpha, detach_reset=detach_reset)
    v = _initial_v(x, p)
    spikes = []
    for t in range(x.shape[0]):
        s, v = lif_step_reference(x[t], v, p)
        spikes.append(s)
    out = torch.stack(spikes).to(x.dtype)
    return (out, v.to(x.dtype)) if return_v else out


def tandem_loss_reference(x: Tensor, target: Tensor, *, mode="offline", warmup=0, beta, alpha=1.0,
                          threshold=1.0, reset="soft", v_reset=0.0, v0=None, surrogate="sigmoid",
                          surrogate_alpha=None, detach_reset=False) -> Tuple[Tensor, Tensor]:
    """The local tandem loss of one layer: LIF over ``x`` [T, *] and MSE of its firing rate to ``target`` [*].

    Returns ``(spikes, loss)``: spikes [T, *] detached (the next layer's input), loss a scalar in the state dtype
    (float32 for half/bf16 x: a loss scale of 65536 must survive the way back, and it is not a finite float16).

    - offline: ``loss = mean((sum_t S[t] / T - target)^2)``, BPTT inside the layer.
    - online:  ``loss = sum_{t >= warmup} mean((C[t] / (t+1) - target)^2)`` with ``C[t] = C[t-1].detach() + S[t]``
      and ``H[t] = beta * V[t-1].detach() + alpha * X[t]``: no gradient through time.
    """
    p = check_lif_args(x, beta=beta, alpha=alpha, threshold=threshold, reset=reset, v_reset=v_reset, v0=v0,
                       surrogate=surrogate, surrogate_alpha=surrogate_alpha, detach_reset=detach_reset)
    check_target(target, x)
    T = x.shape[0]
    check_warmup(mode, warmup, T)
    y = target.to(_state_dtype(x.dtype))
    if mode == "offline":
        s = lif_reference(x, beta=beta, alpha=alpha, threshold=threshold, reset=reset, v_reset=v_reset, v0=v0,
                          surrogate=surrogate, surrogate_alpha=surrogate_alpha, detach_reset=detach_reset)
        rate = s.to(y.dtype).sum(0) / T
        loss = ((rate - y) ** 2).mean()
        return s.detach(), loss
    v, count = _initial_v(x, p), None
    spikes, loss = [], x.new_zeros((), dtype=y.dtype)
    for t in range(T):
        s, v, count, loss_t = _online_step(x[t], y, v, count, t, warmup, p)
        spikes.append(s.detach())
        loss = loss + loss_t
    return torch.stack(spikes).to(x.dtype), loss


def _online_step(x_t, y, v, count, t, warmup, p):
    s, v_new = lif_step_reference(x_t, v.detach(), p)
    count = s if count is None else count.detach() + s
    if t >= warmup:
        loss_t = ((count / (t + 1) - y) ** 2).mean()
    else:   # a zero still in the graph, as the op's: loss_t.backward() in warmup gives zero gradients, not an error.
        loss_t = s.reshape(-1)[:0].sum() + y.reshape(-1)[:0].sum()   # (an empty sum: no inf * 0 from the target)
    return s, v_new, count, loss_t


def tandem_block_reference(x: Tensor, target: Tensor, v: Optional[Tensor], count: Optional[Tensor], t0: int, *,
                           warmup=0, beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0,
                           surrogate="sigmoid", surrogate_alpha=None, detach_reset=False):
    """Online LTL over a block of n steps ``t0 .. t0+n-1``: ``x`` [n, *] from the state ``v``, ``count`` after step
    t0-1 (``None`` at t0 = 0 only: later the rates would miss the earlier steps, so a ValueError). Returns
    ``(spikes [n, *], loss, v_new, count_new)``, spikes and state detached; ``loss`` is the sum of the block's
    ``tandem_step`` losses (the same gradient). Blocks of n = 1 are :func:`tandem_step_reference`; one block of
    n = T is the online :func:`tandem_loss_reference`. Memory O(n N).
    """
    check_x(x)   # x [n, *]: its steps are stacked below (n = 0 would stack nothing)
    if isinstance(t0, bool) or not isinstance(t0, int) or t0 < 0:
        raise ValueError(f"t0 must be the non-negative index of the block's first step, got {t0!r}")
    spikes, loss = [], None
    for i in range(x.shape[0]):
        s, loss_t, v, count = tandem_step_reference(x[i], target, v, count, t0 + i, warmup=warmup, beta=beta,
                                                    alpha=alpha, threshold=threshold, reset=reset, v_reset=v_reset,
                                                    surrogate=surrogate, surrogate_alpha=surrogate_alpha,
                                                    detach_reset=detach_reset)
        spikes.append(s)
        loss = loss_t if loss is None else loss + loss_t
    return torch.stack(spikes), loss, v, count


def tandem_block_reference_(x: Tensor, target: Tensor, v: Tensor, count: Tensor, t0: int, *, warmup=0, beta,
                            alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0, surrogate="sigmoid",
                            surrogate_alpha=None, detach_reset=False):
    """:func:`tandem_block_reference` with the state ``v``, ``count`` [*] updated in place (the count in its own
    dtype: uint8 holds the counts of up to 255 steps). Returns ``(spikes [n, *], loss)``."""
    check_x(x)
    if not (isinstance(v, Tensor) and isinstance(count, Tensor)):
        raise ValueError("tandem_block_ updates the state in place: pass v and count tensors")
    for name, state in (("v", v), ("count", count)):   # before anything is written (not v updated, then count refused)
        if state.shape != x.shape[1:]:
            raise ValueError(f"the in-place state {name} must be a tensor of the neuron shape x.shape[1:] = "
                             f"{tuple(x.shape[1:])}, got shape {tuple(state.shape)}")
    if v.dtype != _state_dtype(x.dtype):   # the state is kept in the math type, not rounded
        raise TypeError(f"the in-place state v must be {_state_dtype(x.dtype)} for x of dtype {x.dtype}, got {v.dtype}")
    if count.dtype not in (torch.uint8, v.dtype):
        raise TypeError(f"the in-place count must be in v's dtype {v.dtype} or uint8, got {count.dtype}")
    if count.dtype == torch.uint8 and t0 + x.shape[0] > 255:
        raise ValueError(f"a uint8 count holds at most 255 steps, but this call ends at step {t0 + x.shape[0]}")
    check_unshared_state(x=x, target=target, v=v, count=count)
    # the graph saves the state it read (for beta's gradient): a copy, so the update below cannot invalidate it
    s, loss, v_new, count_new = tandem_block_reference(
        x, target, v.clone(), count.to(v.dtype), t0, warmup=warmup, beta=beta, alpha=alpha, threshold=threshold,
        reset=reset, v_reset=v_reset, surrogate=surrogate, surrogate_alpha=surrogate_alpha, detach_reset=detach_reset)
    v.copy_(v_new)
    count.copy_(count_new)
    return s, loss


def tandem_step_reference(x_t: Tensor, target: Tensor, v: Optional[Tensor], count: Optional[Tensor], t: int, *,
                          warmup=0, beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0,
                          surrogate="sigmoid", surrogate_alpha=None, detach_reset=False):
    """One step of online LTL, for constant memory in T. ``x_t`` [*] is this step's input current.

    ``v`` and ``count`` are the state after step t-1 (``None`` at t = 0: zeros; at t > 0 a ValueError). Returns
    ``(spikes_t, loss_t, v_new, count_new)``: spikes and state detached; ``loss_t`` (state dtype) is
    ``mean((count_new / (t+1) - target)^2)`` for ``t >= warmup`` (else 0), differentiable w.r.t. ``x_t`` and the
    tensor parameters, with a gradient local to this step. Summed over t it equals the online ``tandem_loss``.
    """
    p = check_step_args(x_t, target, v, count, t, warmup, beta=beta, alpha=alpha, threshold=threshold, reset=reset,
                        v_reset=v_reset, surrogate=surrogate, surrogate_alpha=surrogate_alpha,
                        detach_reset=detach_reset)
    x1 = x_t.unsqueeze(0)
    y = target.to(_state_dtype(x_t.dtype))
    v = _initial_v(x1, p) if v is None else v.to(y.dtype)
    s, v_new, count_new, loss_t = _online_step(x_t, y, v, None if count is None else count.to(y.dtype),
                                               t, warmup, p)
    return s.detach().to(x_t.dtype), loss_t, v_new.detach(), count_new.detach()
