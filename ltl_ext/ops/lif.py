"""The fused multi-step LIF op (floor 4): ``lif`` over ``torch.ops.ltl_ext.lif_fwd`` / ``lif_bwd``.

Same signature and semantics as :func:`ltl_ext.ops.reference.lif_reference` (the spec). The wrapper is one dispatch:
it only splits each parameter into a tensor or a float (the op's schema has both), and the C++ op does the rest
(csrc/op.h): every shape, dtype, device and value check with the same ValueError / TypeError messages as the
reference, the view of x as [T, N], and the parameters in their own broadcast shape (per channel, per feature, per
neuron: never copied to [N]), whose gradients come back reduced to that shape and dtype.

Forward saves only x (and the parameters); backward recomputes H from x (cheaper than writing and re-reading a
[T, N] H on these machines) and runs BPTT with the surrogate. The autograd formula is registered in C++
(csrc/autograd.cpp: a call is one dispatch, its backward one more); the fake kernels for torch.compile and
opcheck are here.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .library import _C, HAS_C, HAS_CUDA_KERNELS, check_device
from .params import check_flag, check_names, check_surrogate_alpha, check_v_reset, is_compiling

__all__ = ["lif"]

_LIF_FWD = torch.ops.ltl_ext.lif_fwd.default if HAS_C else None  # the overload itself: no resolution per call
_LIF_FWD_FAST = getattr(_C, "lif_fwd", None) if HAS_C else None  # the same op unboxed (call_op)


def split_param(name: str, p):
    """``(p, 0.0)`` for a tensor, ``(None, float(p))`` for a number: the op's ``Tensor? name, float name_s``."""
    if type(p) is float:   # the common case first: this is part of every call's fixed cost
        return None, p
    if isinstance(p, Tensor):
        return p, 0.0
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        return None, float(p)
    raise TypeError(f"{name} must be a float or a tensor broadcastable to x.shape[1:], got {type(p).__name__}")


def check_ready(x, op: str, **state) -> None:
    """What the op cannot say itself: no library, a device without kernels, a non-tensor state argument."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape [T, ...], got {type(x).__name__}")
    if not HAS_C or (x.is_cuda and not HAS_CUDA_KERNELS):
        check_device(x, op)
    for name, t in state.items():
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name} must be None or a floating tensor of shape x.shape[1:], got {type(t).__name__}")


_functorch = torch._C._functorch


def refuse_nested_grad(op) -> None:
    """The ops are differentiable once (csrc/autograd.cpp refuses a double backward and forward-mode AD). Inside two
    torch.func gradient transforms (``jacrev(jacrev(f))``, ``grad(grad(f))``) the outer one differentiates the op's
    backward below the inner one's autograd, where no error node can be seen: it would read zero. Refuse it."""
    stack = _functorch.get_interpreter_stack() or ()
    if sum(i.key() == _functorch.TransformType.Grad for i in stack) > 1:
        raise NotImplementedError(f"{op.name()}: is differentiable once; nested torch.func gradient transforms "
                                  f"(jacrev(jacrev(f)), grad(grad(f)), a Hessian) are not supported")


def call_op(fast, boxed, *args):
    """An ltl_ext op through its unboxed entry (``fast``, csrc/bindings.cpp: ~5 us less per call) when that takes
    the call, else through ``torch.ops`` (``boxed``): the entry answers NotImplemented for what it does not handle
    plainly (a __torch_function__ subclass or mode, an unusual argument type), and torch.compile traces the
    torch.ops call (dynamo cannot see into the entry)."""
    if is_compiling():
        return boxed(*args)
    if _functorch.maybe_current_level() is not None:     # inside a torch.func transform
        refuse_nested_grad(boxed)
    out = fast(*args) if fast is not None else NotImplemented
    return boxed(*args) if out is NotImplemented else out


def lif(x: Tensor, *, beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0, v0=None, surrogate="sigmoid",
        surrogate_alpha=None, detach_reset=False, return_v=False):
    """Multi-step LIF over ``x`` [T, *] with the fused kernel of x's device; see ``lif_reference``."""
    check_ready(x, "lif", v0=v0)
    if type(reset) is not str or type(surrogate) is not str:   # (the common case needs no call)
        check_names(reset, surrogate)
    b, bs = split_param("beta", beta)
    a, as_ = split_param("alpha", alpha)
    th, ths = split_param("threshold", threshold)
    v_reset = check_v_reset(v_reset)   # never a tensor (no gradient)
    surrogate_alpha = check_surrogate_alpha(surrogate_alpha)   # the same, and never True (read as 1.0)
    detach_reset = check_flag("detach_reset", detach_reset)
    out = call_op(_LIF_FWD_FAST, _LIF_FWD, x, b, a, th, v0, bs, as_, ths, reset, v_reset, surrogate, surrogate_alpha,
                  detach_reset)
    return out if return_v else out[0]


# ---- fake kernels (shapes only: torch.compile, opcheck) --------------------------------------------------------
def math_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_same_device(x: Tensor, **tensors) -> None:
    """The real kernels' device check, for the meta/fake path (a meta tensor among CPU ones dispatches here)."""
    for name, t in tensors.items():
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; move both to the same device")


def grad_like(t, need: bool, x: Tensor) -> Tensor:
    """A parameter's gradient as the op returns it: its own shape and dtype, or empty [0] in the math type."""
    return t.new_empty(t.shape) if need and t is not None else x.new_empty((0,), dtype=math_dtype(x.dtype))


def _lif_fwd_fake(x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset, surrogate,
                  surrogate_alpha, detach_reset):
    torch._check(x.dim() >= 1, lambda: "ltl_ext::lif_fwd takes x as [T, ...]")
    check_same_device(x, beta=beta, alpha=alpha, threshold=threshold, v0=v0)
    return x.new_empty(x.shape), x.new_empty(x.shape[1:])


def _lif_bwd_fake(grad_spikes, grad_v, x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset,
                  surrogate, surrogate_alpha, detach_reset, need_v0, need_beta, need_alpha, need_threshold):
    return (x.new_empty(x.shape), grad_like(v0, need_v0, x), grad_like(beta, need_beta, x),
            grad_like(alpha, need_alpha, x), grad_like(threshold, need_threshold, x))


if HAS_C:  # without the library, lif() raises check_device's message; there is nothing to register on
    torch.library.register_fake("ltl_ext::lif_fwd")(_lif_fwd_fake)
    torch.library.register_fake("ltl_ext::lif_bwd")(_lif_bwd_fake)
