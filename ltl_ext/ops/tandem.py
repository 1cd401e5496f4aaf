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
- blocks (``tandem_block``): ``tandem_online`` over n steps from a given state (t0, v, count): O(n N) memory
  whatever T; ``tandem_step`` is its n = 1 case. ``tandem_block_`` (op ``tandem_online_``) updates the state in
  place, with the count in a byte while it is below 256: the state of the constant-memory mode.

The teacher target gets a gradient too (it rarely needs one). Tensor beta/alpha/threshold are read in their own
broadcast shape and get their gradients reduced to it by the op (csrc/op.h); every tensor check is the op's, with
the same messages as the reference. The wrappers check only what is plain Python (mode, warmup, t).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .library import _C, HAS_C
from .lif import _functorch, call_op, check_ready, check_same_device, grad_like, math_dtype, split_param
from .params import (check_continued_state, check_flag, check_names, check_surrogate_alpha, check_target_type,
                     check_unshared_state, check_v_reset, check_warmup)

__all__ = ["tandem_loss", "tandem_block", "tandem_block_", "online_state", "tandem_step"]

_ops = torch.ops.ltl_ext
# the overloads themselves: no overload resolution per call
_OFFLINE_FWD = _ops.tandem_offline_fwd.default if HAS_C else None
_ONLINE = _ops.tandem_online.default if HAS_C else None
# the same ops unboxed (lif.call_op; csrc/bindings.cpp)
_OFFLINE_FWD_FAST = getattr(_C, "tandem_offline_fwd", None) if HAS_C else None
_ONLINE_FAST = getattr(_C, "tandem_online", None) if HAS_C else None
_ONLINE_INPLACE = _ops.tandem_online_.default if HAS_C else None
_ONLINE_INPLACE_FAST = getattr(_C, "tandem_online_", None) if HAS_C else None


def _needs(t: Optional[Tensor]) -> bool:
    return t is not None and t.requires_grad


def _online_needs(x: Tensor, b, a, th, target) -> tuple:
    """Which local gradients the online op writes in its forward (x, beta, alpha, threshold, target): those autograd
    will ask for. Inside a torch.func transform every given tensor's: a vmap-batched tensor reports requires_grad
    False even when the tensor it wraps needs a gradient, and the op's backward would then hand autograd an empty
    gradient (an error, or, for a 0-d parameter, silently summed to zero)."""
    if not torch.is_grad_enabled():
        return False, False, False, False, False
    if _functorch.maybe_current_level() is not None:
        return True, b is not None, a is not None, th is not None, True
    return x.requires_grad, _needs(b), _needs(a), _needs(th), target.requires_grad


# ---- public API ---------------------------------------------------------------------------------------------

def tandem_loss(x: Tensor, target: Tensor, *, mode="offline", warmup=0, beta, alpha=1.0, threshold=1.0,
                reset="soft", v_reset=0.0, v0=None, surrogate="sigmoid", surrogate_alpha=None,
                detach_reset=False):
    """The local tandem loss of one layer, fused: LIF over ``x`` [T, *] and the MSE of its firing rate to
    ``target`` [*]. Returns ``(spikes [T, *] detached, loss)``; see ``tandem_loss_reference``."""
    check_ready(x, "tandem_loss", v0=v0)
    check_target_type(target)
    if mode != "offline" or type(warmup) is not int or warmup != 0:   # (the common case needs no check)
        check_warmup(mode, warmup, x.shape[0] if x.dim() else 0)
    if type(reset) is not str or type(surrogate) is not str:
        check_names(reset, surrogate)
    b, bs = split_param("beta", beta)
    a, as_ = split_param("alpha", alpha)
    th, ts = split_param("threshold", threshold)
    v_reset = check_v_reset(v_reset)   # never a tensor (no gradient)
    surrogate_alpha = check_surrogate_alpha(surrogate_alpha)   # the same, and never True (read as 1.0)
    detach_reset = check_flag("detach_reset", detach_reset)
    if mode == "offline":
        out = call_op(_OFFLINE_FWD_FAST, _OFFLINE_FWD, x, target, b, a, th, v0, bs, as_, ts, reset, v_reset,
                      surrogate, surrogate_alpha, detach_reset)
        return out[0], out[1]
    out = call_op(_ONLINE_FAST, _ONLINE, x, target, b, a, th, v0, None, bs, as_, ts, reset, v_reset, surrogate,
                  surrogate_alpha, 0, warmup, False, *_online_needs(x, b, a, th, target))
    return out[0], out[1]


def tandem_block(x: Tensor, target: Tensor, v: Optional[Tensor], count: Optional[Tensor], t0: int, *, warmup=0,
                 beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0, surrogate="sigmoid",
                 surrogate_alpha=None, detach_reset=False):
    """Online LTL over a block of n steps from a given state, O(n N) memory: ``(spikes [n, *], loss, v_new,
    count_new)``; see ``tandem_block_reference``. Running T steps in blocks gives the gradient of the online
    ``tandem_loss`` (no gradient crosses time), in memory that grows with the block, not with T."""
    check_ready(x, "tandem_block", v=v, count=count)
    out = _online_block(False, x, target, v, count, t0, warmup, beta, alpha, threshold, reset, v_reset, surrogate,
                        surrogate_alpha, detach_reset)
    return out[0], out[1], out[2], out[3]


def tandem_block_(x: Tensor, target: Tensor, v: Tensor, count: Tensor, t0: int, *, warmup=0, beta, alpha=1.0,
                  threshold=1.0, reset="soft", v_reset=0.0, surrogate="sigmoid", surrogate_alpha=None,
                  detach_reset=False):
    """:func:`tandem_block` with the state updated in place: ``v`` and ``count`` [*] hold the state after step
    t0-1 (zeros at t0 = 0) and receive the state after the block; returns ``(spikes [n, *], loss)``. ``v`` is in
    the math type (float32, float64 for float64 x); ``count`` too, or uint8 while ``t0 + n <= 255`` (a byte per
    neuron: :func:`online_state` makes both). One copy of the state per layer, and a count in a quarter of the bytes:
    the constant-memory training mode's state. Neither may require a gradient (none crosses time)."""
    check_ready(x, "tandem_block_", v=v, count=count)
    if v is None or count is None:
        raise ValueError("tandem_block_ updates the state in place: pass v and count tensors "
                         "(ltl_ext.functional.online_state makes the zero state)")
    check_unshared_state(x=x, target=target, v=v, count=count)
    out = _online_block(True, x, target, v, count, t0, warmup, beta, alpha, threshold, reset, v_reset, surrogate,
                        surrogate_alpha, detach_reset)
    return out[0], out[1]


def _online_block(in_place: bool, x, target, v, count, t0, warmup, beta, alpha, threshold, reset, v_reset, surrogate,
                  surrogate_alpha, detach_reset):
    """The online op over a block from the state (v, count): ``tandem_online_`` (the state updated in place) or
    ``tandem_online`` (a new state returned), after the checks both share. ``detach_reset`` is only checked: online
    LTL has no gradient through time, so there is no reset path to detach."""
    if isinstance(t0, bool) or not isinstance(t0, int) or t0 < 0:
        raise ValueError(f"t0 must be the non-negative index of the block's first step, got {t0!r}")
    check_target_type(target)
    check_continued_state(t0, v, count)
    check_warmup("offline", warmup, t0 + 1)
    if type(reset) is not str or type(surrogate) is not str:
        check_names(reset, surrogate)
    b, bs = split_param("beta", beta)
    a, as_ = split_param("alpha", alpha)
    th, ts = split_param("threshold", threshold)
    v_reset = check_v_reset(v_reset)   # never a tensor (no gradient)
    surrogate_alpha = check_surrogate_alpha(surrogate_alpha)   # the same, and never True (read as 1.0)
    check_flag("detach_reset", detach_reset)
    needs = _online_needs(x, b, a, th, target)
    lif = (reset, v_reset, surrogate, surrogate_alpha, t0, warmup)
    if in_place:
        return call_op(_ONLINE_INPLACE_FAST, _ONLINE_INPLACE, x, target, b, a, th, v, count, bs, as_, ts, *lif, *needs)
    return call_op(_ONLINE_FAST, _ONLINE, x, target, b, a, th, v, count, bs, as_, ts, *lif, True, *needs)


def online_state(x_t: Tensor, steps: int):
    """The zero state ``(v, count)`` of :func:`tandem_block_` for inputs like ``x_t`` [*] (one time step), for a run
    of ``steps`` steps: v in the math type; the count in uint8 when ``steps <= 255``, else in the math type."""
    if not isinstance(x_t, Tensor):
        raise TypeError(f"x_t must be a tensor of one time step's shape, got {type(x_t).__name__}")
    # steps picks the count's dtype: None or "16" failed the comparison below with a bare TypeError
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be the run's number of time steps, a positive int, got {steps!r}")
    v = torch.zeros(x_t.shape, dtype=math_dtype(x_t.dtype), device=x_t.device)
    return v, torch.zeros(x_t.shape, dtype=torch.uint8 if steps <= 255 else v.dtype, device=x_t.device)


def tandem_step(x_t: Tensor, target: Tensor, v: Optional[Tensor], count: Optional[Tensor], t: int, *, warmup=0,
                beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0, surrogate="sigmoid",
                surrogate_alpha=None, detach_reset=False):
    """One step of online LTL with O(N) memory: ``(spikes_t, loss_t, v_new, count_new)``; see
    ``tandem_step_reference``. ``loss_t.backward()`` gives this step's local gradient (x_t, tensor params)."""
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise ValueError(f"t must be the non-negative step index, got {t!r}")
    if not isinstance(x_t, Tensor):
        check_ready(x_t, "tandem_step")
    s, loss, v, count = tandem_block(x_t.unsqueeze(0), target, v, count, t, warmup=warmup, beta=beta, alpha=alpha,
                                     threshold=threshold, reset=reset, v_reset=v_reset, surrogate=surrogate,
                                     surrogate_alpha=surrogate_alpha, detach_reset=detach_reset)
    return s[0], loss, v, count


# ---- fake kernels (shapes and dtypes only: torch.compile, opcheck) ---------------------------------------------

def _offline_fwd_fake(x, target, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                      surrogate, surrogate_alpha, detach_reset):
    torch._check(x.dim() >= 1)
    check_same_device(x, target=target, beta=beta, alpha=alpha, threshold=threshold, v0=v0)
    md = math_dtype(x.dtype)
    return x.new_empty(x.shape), x.new_empty((), dtype=md), x.new_empty((x[0].numel(),), dtype=md)


def _offline_bwd_fake(grad_loss, x, err, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                      surrogate, surrogate_alpha, detach_reset, need_v0, need_beta, need_alpha, need_threshold):
    return (x.new_empty(x.shape), grad_like(v0, need_v0, x), grad_like(beta, need_beta, x),
            grad_like(alpha, need_alpha, x), grad_like(threshold, need_threshold, x))


def _online_fake(x, target, beta, alpha, threshold, v0, count0, beta_s, alpha_s, threshold_s, reset, v_reset,
                 surrogate, surrogate_alpha, t0, warmup, need_state, need_grad_x, need_beta, need_alpha,
                 need_threshold, need_target):
    torch._check(x.dim() >= 1)
    check_same_device(x, target=target, beta=beta, alpha=alpha, threshold=threshold, v0=v0, count0=count0)
    md = math_dtype(x.dtype)
    state = [x.new_empty(x.shape[1:] if need_state else (0,), dtype=md) for _ in range(2)]
    gx = x.new_empty(x.shape if need_grad_x else (0, 0), dtype=md)
    return (x.new_empty(x.shape), x.new_empty((), dtype=md), *state, gx, grad_like(beta, need_beta, x),
            grad_like(alpha, need_alpha, x), grad_like(threshold, need_threshold, x), grad_like(target, need_target, x))


def _online_inplace_fake(x, target, beta, alpha, threshold, v, count, beta_s, alpha_s, threshold_s, reset, v_reset,
                         surrogate, surrogate_alpha, t0, warmup, need_grad_x, need_beta, need_alpha, need_threshold,
                         need_target):
    out = _online_fake(x, target, beta, alpha, threshold, None, None, beta_s, alpha_s, threshold_s, reset, v_reset,
                       surrogate, surrogate_alpha, t0, warmup, False, need_grad_x, need_beta, need_alpha,
                       need_threshold, need_target)
    check_same_device(x, v=v, count=count)
    return out[:2] + out[4:]


if HAS_C:  # without the library the wrappers raise check_device's message; nothing to register on
    torch.library.register_fake("ltl_ext::tandem_offline_fwd")(_offline_fwd_fake)
    torch.library.register_fake("ltl_ext::tandem_offline_bwd")(_offline_bwd_fake)
    torch.library.register_fake("ltl_ext::tandem_online")(_online_fake)
    torch.library.register_fake("ltl_ext::tandem_online_")(_online_inplace_fake)
