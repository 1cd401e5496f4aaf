"""LIF arguments: validation and normalisation, shared by the fused ops and the reference.

Every public entry point (``lif``, ``tandem_loss``, ``tandem_step`` and their ``*_reference`` twins) calls
:func:`check_lif_args` first, so bad input gets the same clear Python exception whichever path runs.

Where the *values* of tensor arguments are checked (threshold > 0, beta in [0, 1], no NaN in alpha or the target):
reading a tensor's min/max back to Python is a host-device sync on a GPU and ~10 us on a CPU, so the fused ops
do not do it per call in Python (``check_values=False``):

- CPU tensors: the C++ op checks them before the launch (``csrc/op.h``, ``check_values_cpu``: one pass over
  [N] values next to the kernel's T passes), with the same messages;
- GPU tensors: they are validated where they are set: :func:`check_lif_values` (``nn.LIF`` calls it when a value
  is assigned; learnable values are clamped into range in its forward). A fused call on the GPU never syncs.

The references (the spec, not a hot path) check everything in Python, on every device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

#: surrogate name -> default parameter ``a`` (ltl-method.md §1). The formulas live in ``reference.surrogate_grad``
#: (the spec) and ``csrc/include/ltl/lif_math.h`` (the fast twin); tests hold them together.
SURROGATES = {"rect": 0.2, "sigmoid": 4.0, "atan": 2.0, "fast_sigmoid": 25.0}
RESETS = ("soft", "hard")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

Param = Union[float, Tensor]


@dataclass(frozen=True)
class LIFParams:
    """Validated LIF parameters. ``beta``, ``alpha``, ``threshold`` are floats or tensors broadcastable to
    ``x.shape[1:]``; ``v0`` is ``None`` or such a tensor."""

    beta: Param
    alpha: Param
    threshold: Param
    reset: str
    v_reset: float
    v0: Optional[Tensor]
    surrogate: str
    surrogate_alpha: float
    detach_reset: bool


def is_compiling() -> bool:
    """True while torch.compile traces (value checks and unboxed entries step aside then)."""
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - old torch
        return False


#: name -> (low, high, low_open): the legal values of each LIF parameter, always finite: an infinite threshold
#: (a neuron meant never to fire) makes the soft reset's H - threshold * S an inf * 0, NaN in V and every gradient
RANGES = {"beta": (0.0, 1.0, False), "alpha": (-math.inf, math.inf, False), "threshold": (0.0, math.inf, True)}


def _bound(name: str) -> str:
    low, high, low_open = RANGES[name]
    return f"{'(' if low_open or math.isinf(low) else '['}{low}, {high}{')' if math.isinf(high) else ']'}"


def _outside(name: str, lo: float, hi: float) -> bool:
    low, high, low_open = RANGES[name]
    return not (math.isfinite(lo) and math.isfinite(hi)) or (lo <= low if low_open else lo < low) or hi > high


def _check_tensor_values(name: str, p: Tensor) -> None:
    """Raise if a tensor's values leave ``RANGES[name]`` (reads min/max back: a host sync on a GPU)."""
    if is_compiling() or p.numel() == 0:
        return
    lo, hi = (float(v) for v in p.detach().aminmax())
    if _outside(name, lo, hi):
        raise ValueError(f"{name} values must lie in {_bound(name)} (got min {lo:g}, max {hi:g})")


def check_lif_values(*, beta=None, alpha=None, threshold=None) -> None:
    """Check the values of LIF parameters (floats or tensors; None = not given) where they are set.

    The fused ops do not read a GPU tensor's values per call (a host sync); a module that holds the parameters
    (``nn.LIF``) calls this when a value is assigned instead. Raises ``ValueError`` naming the parameter.
    """
    for name, p in (("beta", beta), ("alpha", alpha), ("threshold", threshold)):
        if isinstance(p, Tensor):
            _check_tensor_values(name, p)
        elif p is not None:
            _check_float(name, p)


def _check_float(name: str, p) -> float:
    p = float(p)
    if not math.isfinite(p) or _outside(name, p, p):
        raise ValueError(f"{name} must lie in {_bound(name)}, got {p}")
    return p


def _check_param(name: str, p, x: Tensor, check_values: bool) -> Param:
    """A float, or a floating tensor on x's device broadcastable to x.shape[1:] (values in range if
    ``check_values``)."""
    if isinstance(p, bool) or not isinstance(p, (int, float, Tensor)):
        raise TypeError(f"{name} must be a float or a tensor broadcastable to x.shape[1:], got {type(p).__name__}")
    if isinstance(p, Tensor):
        if not p.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got dtype {p.dtype}; convert it with .float()")
        if p.device != x.device:
            raise ValueError(f"{name} is on {p.device} but x is on {x.device}; move both to the same device")
        try:
            shape = torch.broadcast_shapes(p.shape, x.shape[1:])
        except RuntimeError:
            shape = None
        if shape != x.shape[1:]:
            raise ValueError(
                f"{name} has shape {tuple(p.shape)}, which does not broadcast to the neuron shape "
                f"x.shape[1:] = {tuple(x.shape[1:])}; per-neuron parameters must match the trailing dims of x")
        if check_values:
            _check_tensor_values(name, p)
        return p
    return _check_float(name, p)


def is_finite_number(v) -> bool:
    """A finite int or float, not a bool (Python's True is an int; it is never a setting here): the one test of every
    numeric setting (LIF constants, trainer rates, device models)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_v_reset(v_reset) -> float:
    """``v_reset`` as a float: a finite number, never a tensor. The ops' schema has a float there, and torch.ops would
    silently read a tensor's value (a host sync on a GPU), leaving a learnable v_reset without a gradient."""
    if not is_finite_number(v_reset):
        raise ValueError(f"v_reset must be a finite float (not a tensor: it gets no gradient), got {v_reset!r}")
    return float(v_reset)


def check_surrogate_alpha(surrogate_alpha) -> Optional[float]:
    """``surrogate_alpha`` as a float, or None (the surrogate's default): a positive finite number, never a tensor or a
    bool. The ops' schema has an optional float there, and torch.ops would silently read a tensor's value (a learnable
    one would get no gradient) and True as 1.0."""
    if surrogate_alpha is None:
        return None
    if not is_finite_number(surrogate_alpha) or surrogate_alpha <= 0:
        raise ValueError(f"surrogate_alpha must be a positive float, got {surrogate_alpha!r}")
    return float(surrogate_alpha)


def check_names(reset, surrogate) -> None:
    """``reset`` and ``surrogate`` as the references check them. The fused ops' schema reads them as strings and
    answers anything else (None, a list) with a dispatcher RuntimeError; the op itself checks the string's value."""
    if not isinstance(reset, str):
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
    if not isinstance(surrogate, str):
        raise ValueError(f"surrogate must be one of {tuple(SURROGATES)}, got {surrogate!r}")


def check_flag(name: str, value) -> bool:
    """A yes/no setting (``detach_reset``) as a bool: True, False or a numpy bool, nothing else. ``bool()`` of the
    string "False" is True, and the ops' schema would refuse it with a dispatcher message."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_x(x) -> None:
    """``x`` [T, *]: a floating tensor with at least one time step (of a block or a run)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape [T, ...], got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be float16, bfloat16, float32 or float64, got {x.dtype}; convert it with .float()")
    if x.dim() < 1:
        raise ValueError("x must have a leading time dimension: shape [T, ...], got a 0-d tensor")
    if x.shape[0] < 1:
        raise ValueError("x has T = 0 time steps; the LIF needs T >= 1 (x.shape[0] is time)")


def check_lif_args(x: Tensor, *, beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0, v0=None,
                   surrogate="sigmoid", surrogate_alpha=None, detach_reset=False,
                   check_values: bool = True) -> LIFParams:
    """Validate the arguments of a multi-step LIF call on ``x`` of shape [T, *] and return them normalised.

    Raises ``TypeError`` for wrong types/dtypes and ``ValueError`` for wrong shapes, devices and values.
    ``check_values=False`` (the fused ops) leaves the values of tensor parameters to the C++ glue (CPU) and to
    :func:`check_lif_values` where they are set (see the module docstring); float values are always checked.
    """
    check_x(x)
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {tuple(SURROGATES)}, got {surrogate!r}")
    surrogate_alpha = check_surrogate_alpha(surrogate_alpha)
    if surrogate_alpha is None:
        surrogate_alpha = SURROGATES[surrogate]
    v_reset = check_v_reset(v_reset)
    beta = _check_param("beta", beta, x, check_values)
    alpha = _check_param("alpha", alpha, x, check_values)
    threshold = _check_param("threshold", threshold, x, check_values)
    if v0 is not None:
        _check_state("v0", v0, x, "x.shape[1:]", x.shape[1:])
    return LIFParams(beta, alpha, threshold, reset, v_reset, v0, surrogate, float(surrogate_alpha),
                     check_flag("detach_reset", detach_reset))


def _check_state(name: str, state, x: Tensor, where: str, shape) -> None:
    """A state tensor (``v0``, ``count``): floating, on ``x``'s device, broadcastable to ``shape`` (named ``where``)."""
    if not isinstance(state, Tensor) or not state.is_floating_point():
        raise TypeError(f"{name} must be None or a floating tensor of shape {where}")
    if state.device != x.device:
        raise ValueError(f"{name} is on {state.device} but {where.split('.')[0]} is on {x.device}; move both to the "
                         f"same device")
    try:
        ok = torch.broadcast_shapes(state.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} has shape {tuple(state.shape)}, expected one broadcastable to {where} = "
                         f"{tuple(shape)}")


def check_target_type(target) -> None:
    """A target that is not a tensor gets a TypeError (before anything reads its attributes: the fused ops' schema
    would answer with a dispatcher message, the online wrappers with an AttributeError)."""
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a floating tensor with the shape of one time step of x, got "
                        f"{type(target).__name__}")


def check_target(target, x: Tensor, *, time_dim: bool = True, check_values: bool = True) -> Tensor:
    """The teacher target of a tandem loss: same shape as one time step of ``x``, same device, no NaN.

    Values outside [0, 1] are allowed (an unnormalised teacher); NaN is an error because it would silently turn
    every gradient of the layer into NaN. ``check_values=False`` (the fused ops): the NaN check is the C++ glue's
    on the CPU, and is not made per call on a GPU (a host sync).
    """
    check_target_type(target)
    if not target.is_floating_point():
        raise TypeError("target must be a floating tensor with the shape of one time step of x")
    want = x.shape[1:] if time_dim else x.shape
    if target.shape != want:
        raise ValueError(f"target has shape {tuple(target.shape)} but x has neuron shape {tuple(want)}; "
                         f"the target is the teacher's activation of this layer, one value per neuron")
    if target.device != x.device:
        raise ValueError(f"target is on {target.device} but x is on {x.device}; move both to the same device")
    if check_values and not is_compiling() and bool(torch.isnan(target).any()):
        raise ValueError("target contains NaN; check the teacher's activations and their normalisation")
    return target


def check_unshared_state(**tensors) -> None:
    """The in-place online block writes ``v`` and ``count`` while it reads ``x`` and the target: two of them in
    overlapping memory (``v`` passed as ``count``, say) would update each other mid-block, a wrong state with no
    error. Views of one buffer that do not overlap (``state[0]``, ``state[1]``) are fine, and so are inputs that are
    only read sharing memory with each other (a target that is a view of x)."""
    if is_compiling():   # (traced tensors have no addresses to compare)
        return
    spans = []
    for name, t in tensors.items():
        if not isinstance(t, Tensor) or t.device.type == "meta" or t.numel() == 0:
            continue
        last = sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))   # the farthest element, in elements
        start = t.data_ptr()
        end = start + (last + 1) * t.element_size()
        for other, (device, s0, e0) in spans:
            if {name, other} <= {"x", "target"}:   # both only read: nothing is written through either
                continue
            if device == t.device and start < e0 and s0 < end:
                raise ValueError(f"tandem_block_: {other} and {name} share memory; the state is updated in place, "
                                 f"so v and count must be tensors of their own (ltl_ext.functional.online_state "
                                 f"makes them)")
        spans.append((name, (t.device, start, end)))


def check_warmup(mode: str, warmup: int, T: int) -> None:
    """``mode`` is offline/online; ``warmup`` a non-negative int that leaves an online run a step to learn from."""
    if mode not in ("offline", "online"):
        raise ValueError(f"mode must be 'offline' or 'online', got {mode!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    if mode == "online" and 0 < T <= warmup:   # T = 0 (or a 0-d x) is x's own error, which its check reports
        raise ValueError(f"warmup = {warmup} leaves no step to learn from with T = {T}; use warmup < T")


def check_continued_state(t: int, v, count) -> None:
    """A step (or block) at t > 0 continues a run: it needs the state (v, count) after step t-1, the count for the
    rate C[t] / (t+1). ``None`` is the zero state before step 0 only; at t > 0 it would compute every later rate as
    if the earlier steps had never spiked, a wrong loss with no error."""
    if t > 0 and (v is None or count is None):   # per step in the constant-memory loop: names built on error only
        missing = " and ".join(name for name, state in (("v", v), ("count", count)) if state is None)
        raise ValueError(f"step {t} continues a run, but {missing} is None: pass the state the previous step or "
                         f"block returned (None is the zero state before step 0 only)")


def check_step_args(x_t: Tensor, target, v, count, t, warmup, check_values: bool = True,
                    **lif_kwargs) -> LIFParams:
    """Validate one ``tandem_step`` call (``x_t`` [*], state ``v``/``count`` [*] or None, step index ``t``)."""
    x1 = x_t.unsqueeze(0) if isinstance(x_t, Tensor) else x_t
    p = check_lif_args(x1, v0=v, check_values=check_values, **lif_kwargs)
    check_target(target, x1, check_values=check_values)
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise ValueError(f"t must be the non-negative step index, got {t!r}")
    check_continued_state(t, v, count)
    check_warmup("offline", warmup, t + 1)
    if count is not None:
        _check_state("count", count, x_t, "x_t.shape", x_t.shape)
    return p
