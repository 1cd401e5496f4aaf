"""Drop-in spiking layers: :class:`LIF`, :class:`ClampReLU`, :class:`SpikingModel` and the input encodings.

Time is folded into the batch. Inside a spiking model every tensor is ``[T*B, ...]`` (time-major: rows
``t*B .. t*B + B - 1`` are step t), so every stateless layer (Conv, Linear, BN, pooling, ``nn.Flatten``,
``torch.flatten(x, 1)``, residual adds) works unchanged. Only :class:`LIF` unfolds its input to
``[T, B, ...]``, runs the neuron over time with :func:`ltl_ext.functional.lif` and folds the spikes back.

The neuron (ltl-method.md §1), for t = 0 .. T-1 with V[-1] = v0 (default 0)::

    H[t] = beta * V[t-1] + alpha * X[t]          charge
    S[t] = 1 if H[t] >= threshold else 0         fire   (backward: dS/dH = psi(H - threshold))
    V[t] = H[t] - threshold * S[t]               soft reset
    V[t] = H[t] * (1 - S[t]) + v_reset * S[t]    hard reset

Mapping from other libraries: snnTorch ``Leaky(beta, reset_mechanism="subtract")`` is
``LIF(beta=beta, reset="soft")``; SpikingJelly ``LIFNode(tau, decay_input=True, v_reset=0.)`` is
``LIF(beta=1 - 1/tau, alpha=1/tau, reset="hard")`` (``v_reset=None`` there means ``reset="soft"`` here);
SpikingJelly ``IFNode`` is ``LIF(beta=1.0, ...)``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .. import functional
from ..ops.lif import math_dtype
from ..ops.params import RESETS, SURROGATES, check_flag, check_lif_values, is_compiling
from .encoding import ENCODINGS, encode, time_average  # noqa: F401 (re-exported: ltl_ext.nn.layers.encode)
from .tandem_run import TandemRun

__all__ = ["LIF", "ClampReLU", "SpikingModel", "encode", "time_average", "lifs", "ANN_ACTIVATIONS"]

_LEARNABLE = {False: (), None: (), "threshold": ("threshold",), "beta": ("beta",), "both": ("threshold", "beta")}
_TENSOR_PARAMS = ("beta", "threshold", "alpha")


def _learnable_mode(learnable) -> Union[bool, str]:
    """``learnable`` as the key of :data:`_LEARNABLE` it names (True is "both"; None is False), or a ValueError."""
    if learnable is True:
        learnable = "both"
    if learnable not in _LEARNABLE:
        raise ValueError(f"learnable must be False, 'threshold', 'beta' or 'both', got {learnable!r}")
    return learnable or False
# a stepwise LIF's state and the pass it last ran in: plain attributes, never a buffer or parameter
_STEP_STATE = frozenset(("v", "count", "t", "block", "_ran_in"))


class _Pass:
    """The SpikingModel forward (or step) now running, by number: a stepwise or learning LIF module runs once in
    each. Why: a neuron has state, so an activation module used at two places needs a LIF for each; convert splits
    reused activations only where torch.fx can trace the model, and a shared LIF would otherwise mix the two places'
    membranes (stepwise) or learn twice from one target (online) without a word."""
    current: Optional[int] = None
    count: int = 0


class ReusedLIFError(ValueError):
    """A LIF module ran twice in one SpikingModel forward (or step); ``lif`` is the module."""

    def __init__(self, lif: "LIF"):
        super().__init__("a LIF module ran twice in one forward of its SpikingModel")
        self.lif = lif


class ClampReLU(nn.Module):
    """The teacher's clipped activation ``y = clamp(x, 0, max)`` (the LTL code uses ``max = 2``).

    Shapes: any -> same. A module (not a functional call) so that :func:`ltl_ext.convert` can replace it.
    """

    def __init__(self, max: float = 2.0, inplace: bool = False):
        super().__init__()
        if not max > 0:
            raise ValueError(f"ClampReLU max must be > 0, got {max}")
        self.max = float(max)
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp_(0.0, self.max) if self.inplace else x.clamp(0.0, self.max)

    def extra_repr(self) -> str:
        return f"max={self.max:g}" + (", inplace=True" if self.inplace else "")


#: ANN activation modules that ``ltl_ext.convert`` replaces by LIFs (LeakyReLU with a warning); ReLU6 is a Hardtanh.
ANN_ACTIVATIONS = (nn.ReLU, nn.Hardtanh, ClampReLU, nn.LeakyReLU)


class LIF(nn.Module):
    """Leaky integrate-and-fire neuron layer, a drop-in replacement for ``nn.ReLU`` inside a spiking model.

    Args:
        beta: leak factor in [0, 1] (1 = non-leaky IF). Default ``exp(-1/10)`` as in the LTL code.
        threshold: firing threshold > 0. Default 0.6 (LTL code).
        reset: ``"hard"`` (to ``v_reset``, LTL code) or ``"soft"`` (subtract the threshold).
        alpha: input scale (1 by default).
        v_reset: the hard-reset potential.
        surrogate, surrogate_alpha: surrogate gradient of the spike (see ``ltl_ext.ops.params.SURROGATES``);
            default ``"rect"`` with half-width 0.2 (LTL code).
        detach_reset: no surrogate gradient through the reset.
        learnable: ``False``, ``"threshold"``, ``"beta"`` or ``"both"``: which of threshold / beta are
            ``nn.Parameter`` s. In the forward a learnable threshold is clamped to ``>= min_threshold`` and a
            learnable beta to [0, 1] (the op validates its arguments; clamping keeps training from breaking it).
            Assigning ``lif.learnable`` later re-registers them (new parameters: build the optimiser afterwards).
        time_steps: T, used to unfold ``[T*B, ...]``; :class:`SpikingModel` sets it.
        stepwise: if True each forward is the next ``block`` time steps ``[block*B, ...]`` (default one step,
            ``[B, ...]``) and the state ``v``, ``count``, ``t`` is kept (detached) between calls until
            :meth:`reset_state`: memory grows with the block, not with T (online LTL).

    ``beta``, ``threshold`` and ``alpha`` are always tensors (buffers, or parameters when learnable), so they
    move with ``.to()`` and are saved in the ``state_dict``. They are scalars (0-d) or per-neuron tensors of
    the neuron shape without batch, e.g. ``[C, H, W]`` or ``[F]`` (chip mismatch; as many dims as the neurons,
    ``[C, 1, 1]`` per channel: a ``[C]`` is refused). Assign to change them,
    e.g. ``lif.threshold = torch.full((64, 16, 16), 0.6)``: the value becomes a buffer or parameter as
    ``learnable`` says (a new shape makes a new ``nn.Parameter``: build the optimiser afterwards). Prefer
    assignment to in-place edits: it checks the values (a scalar *buffer* is cached as a float for the op's fast
    scalar path; an in-place edit or a swapped-in tensor is noticed, but a GPU buffer's new value is then passed as
    a tensor until the next assignment or ``.to()``); ``load_state_dict`` accepts per-neuron values even into a
    scalar module. ``torch.nn.utils.parametrize`` and ``torch.func.functional_call`` work on ``threshold`` / ``beta``
    (the noise models use parametrize).

    Tandem mode: inside an active :class:`~ltl_ext.nn.tandem_run.TandemRun` that names this LIF, the forward
    computes the layer's local loss against the run's target (:func:`ltl_ext.functional.tandem_loss`, or
    ``tandem_step`` when stepwise), hands it to the run (which may back-propagate it at once) and returns
    detached spikes, so each layer's gradient stays inside the layer. Nothing is stored on the module.

    Shapes: forward ``[T*B, *neuron] -> [T*B, *neuron]`` spikes in {0, 1} (x's dtype); stepwise
    ``[block*B, *neuron] -> [block*B, *neuron]``. A channels-last ``[T*B, C, H, W]`` input runs as it lies in
    memory (no copy) and gives channels-last spikes.
    """

    def __init__(self, beta: Union[float, Tensor] = math.exp(-1 / 10), threshold: Union[float, Tensor] = 0.6,
                 reset: str = "hard", *, alpha: Union[float, Tensor] = 1.0, v_reset: float = 0.0,
                 surrogate: str = "rect", surrogate_alpha: Optional[float] = None, detach_reset: bool = False,
                 learnable: Union[bool, str, None] = False, min_threshold: float = 1e-3,
                 time_steps: Optional[int] = None,
                 stepwise: bool = False):
        super().__init__()
        learnable = _learnable_mode(learnable)
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {tuple(SURROGATES)}, got {surrogate!r}")
        self.learnable = learnable
        self._learn = _LEARNABLE[learnable]
        self._scalars: Dict[str, Optional[Tuple[Tensor, int, float]]] = {}   # name -> (buffer, its version, value)
        self.reset = reset
        self.v_reset = float(v_reset)
        self.surrogate = surrogate
        self.surrogate_alpha = surrogate_alpha
        self.detach_reset = check_flag("detach_reset", detach_reset)
        self.min_threshold = float(min_threshold)
        if not (math.isfinite(self.min_threshold) and self.min_threshold > 0):   # (NaN fails too)
            # the clamp is what keeps a learnt threshold > 0, and on the GPU nothing else checks it per call
            raise ValueError(f"min_threshold must be a finite float > 0, got {min_threshold!r}")
        self.time_steps = time_steps
        self.stepwise = bool(stepwise)
        # which teacher activation this neuron learns from (set by convert; None = the module of the same name)
        self.teacher_name: Optional[str] = None
        self.teacher_call: int = 0
        # stepwise state, and the time steps one stepwise call runs ([block*B, ...] in, SpikingModel.step sets it)
        self.block: int = 1
        self.v: Optional[Tensor] = None
        self.count: Optional[Tensor] = None
        self.t: int = 0
        self._ran_in: Optional[int] = None   # the _Pass this LIF last ran in
        for name, value in (("beta", beta), ("threshold", threshold), ("alpha", alpha)):
            self._set_param(name, value)
        self._ready = True

    # ---------------------------------------------------------------- parameters
    def __setattr__(self, name, value):
        if name in _STEP_STATE:   # plain attributes, set every step: Module.__setattr__'s checks cost ~4 us each
            self.__dict__[name] = value
            return
        if name == "time_steps":  # checked at every assignment (SpikingModel sets it per forward: a plain attribute)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                # (int(2.7) would run T = 2 without a word; 0 failed in the forward with a ZeroDivisionError)
                raise ValueError(f"time_steps must be a positive int or None, got {value!r}")
            self.__dict__[name] = value
            return
        if name == "learnable" and self.__dict__.get("_ready", False):
            self._set_learnable(value)   # re-registers threshold / beta: setting the flag alone would change nothing
            return
        # plain buffer/parameter: (re)register; parametrized (torch.nn.utils.parametrize): its property setter
        if name in _TENSOR_PARAMS and self.__dict__.get("_ready", False) and (
                name in self._buffers or name in self._parameters):
            self._set_param(name, value)
        else:
            super().__setattr__(name, value)

    def _set_learnable(self, learnable) -> None:
        """``lif.learnable = ...`` after construction: threshold / beta become parameters or buffers as it says
        (new ``nn.Parameter`` s: build the optimiser afterwards)."""
        learnable = _learnable_mode(learnable)
        changed = set(self._learn) ^ set(_LEARNABLE[learnable])
        hidden = sorted(n for n in changed if n not in self._buffers and n not in self._parameters)
        if hidden:   # its tensor lives in the parametrization: changing the flag alone would change nothing
            raise ValueError(f"cannot make {hidden} (un)learnable: parametrized (torch.nn.utils.parametrize); "
                             f"set learnable before registering the parametrization, or remove it first")
        for n in changed - set(_LEARNABLE[learnable]):   # a buffer again: its learnt value must be valid unclamped;
            check_lif_values(**{n: getattr(self, n).detach()})   # checked before anything changes
        self.__dict__["learnable"], self._learn = learnable, _LEARNABLE[learnable]
        for n in sorted(changed):
            self._set_param(n, getattr(self, n))

    def _set_param(self, name: str, value, check: bool = True) -> None:
        """(Re)register ``name`` as a buffer or, if learnable, a parameter holding ``value`` (its values checked
        unless ``check`` is False: a learnt value loaded from a checkpoint, which the forward clamps)."""
        old = self._parameters.get(name, self._buffers.get(name))
        if isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool):
            # (float(True) is 1.0: LIF(beta=True) ran with beta = 1, no leak, where the functional ops refuse bools)
            raise TypeError(f"LIF {name} must be a float or a floating tensor, got {value!r}")
        if isinstance(value, Tensor):
            new = value.detach()
            if not new.is_floating_point():
                new = new.float()
            if old is not None:
                new = new.to(old.device)
        else:
            try:
                value = float(value)
            except (TypeError, ValueError):   # (float()'s own message names neither the parameter nor the fix)
                raise TypeError(f"LIF {name} must be a float or a tensor (per-neuron values: a tensor of the neuron "
                                f"shape), got {type(value).__name__}") from None
            new = torch.tensor(value, dtype=old.dtype if old is not None else torch.get_default_dtype(),
                               device=old.device if old is not None else None)
        if check:
            check_lif_values(**{name: new})   # here, once, not per call: the fused ops never sync to read values
        if name in self._learn:
            if isinstance(old, nn.Parameter) and old.shape == new.shape:
                with torch.no_grad():  # keep the Parameter object: optimisers hold it
                    old.copy_(new)
            else:
                self._buffers.pop(name, None)
                self._parameters.pop(name, None)
                self.register_parameter(name, nn.Parameter(new.clone()))
        else:
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            self.register_buffer(name, new.clone())
        self._refresh_scalar(name)

    def _refresh_scalar(self, name: str) -> None:
        """Cache a 0-d, non-learnable buffer as a float (the op's fast scalar path, no device sync), with the buffer
        and its version counter, so that :meth:`_scalar` can tell when the cache no longer describes it."""
        t = self._buffers.get(name)
        ok = t is not None and t.dim() == 0 and not t.requires_grad and not t.is_inference()  # (no version counter)
        self._scalars[name] = (t, t._version, float(t)) if ok else None

    def _scalar(self, name: str) -> Optional[float]:
        """The cached float of buffer ``name``, or None: use the tensor. The cache holds only while that very buffer
        is there, unchanged: ``torch.func.functional_call`` swaps buffers in behind ``__setattr__``,
        ``parametrize.remove_parametrizations`` writes the parametrized value into the original buffer, and an
        in-place edit changes it; each would otherwise run the neuron silently with the old value. A 0-d CPU
        buffer is re-read on a miss (no device sync; copies and unpickled modules start a new version count).
        torch.compile traces the tensor (it cannot guard on a version counter)."""
        if is_compiling():
            return None
        c = self._scalars.get(name)
        t = self._buffers.get(name)
        if c is not None and c[0] is t and t._version == c[1]:
            return c[2]
        if t is None or t.device.type != "cpu":
            return None
        self._refresh_scalar(name)
        c = self._scalars[name]
        return None if c is None else c[2]

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        for n in _TENSOR_PARAMS:
            self._refresh_scalar(n)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for n in _TENSOR_PARAMS:  # accept per-neuron values into a scalar module (and back)
            key = prefix + n
            if key not in state_dict:
                continue
            # values checked as an assignment checks them (a GPU op never reads them), except learnt ones: they may
            # have left the range while training (the forward clamps them), and their checkpoint must load
            if state_dict[key].shape != getattr(self, n).shape:
                self._set_param(n, state_dict[key], check=n not in self._learn)   # the right shape; loaded below
            elif n not in self._learn:
                check_lif_values(**{n: state_dict[key].detach()})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        for n in _TENSOR_PARAMS:
            self._refresh_scalar(n)

    def lif_kwargs(self) -> dict:
        """Keyword arguments for ``ltl_ext.functional.lif`` / ``tandem_loss`` / ``tandem_step`` (no v0)."""
        beta, threshold, alpha = (self._scalar(n) for n in _TENSOR_PARAMS)
        if beta is None:
            beta = self.beta.clamp(0.0, 1.0) if self.beta.requires_grad else self.beta
        if threshold is None:
            threshold = (self.threshold.clamp_min(self.min_threshold) if self.threshold.requires_grad
                         else self.threshold)
        if alpha is None:
            alpha = self.alpha
        return dict(beta=beta, alpha=alpha, threshold=threshold, reset=self.reset, v_reset=self.v_reset,
                    surrogate=self.surrogate, surrogate_alpha=self.surrogate_alpha,
                    detach_reset=self.detach_reset)

    def _kwargs_for(self, x: Tensor) -> dict:
        """:meth:`lif_kwargs` for the input ``x`` [n*B, *neuron], refusing a per-neuron parameter with fewer dims than
        the neuron shape: broadcasting lines it up with the *last* dims, so a per-channel ``[C]`` threshold on
        ``[C, H, W]`` neurons would silently be a per-column one wherever W == C."""
        kwargs = self.lif_kwargs()
        for n in _TENSOR_PARAMS:
            p = kwargs[n]
            if isinstance(p, Tensor) and 0 < p.dim() < x.dim() - 1:
                neuron = tuple(x.shape[1:])
                raise ValueError(f"LIF {n} has shape {tuple(p.shape)} but the neurons are {neuron} ([T*B, ...] "
                                 f"without the leading dim): give it as many dims as the neurons, a 1 where it is "
                                 f"shared, e.g. {(neuron[0],) + (1,) * (len(neuron) - 1)} per channel")
        return kwargs

    # ---------------------------------------------------------------- state
    def reset_state(self) -> None:
        """Clear the stepwise state (``v``, ``count``, ``t``)."""
        self.v, self.count, self.t = None, None, 0

    # ---------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        run = TandemRun.current()
        name = None if run is None else run.name_of(self)
        if _Pass.current is not None and (self.stepwise or name is not None):  # (whole sequences from rest, not
            if self._ran_in == _Pass.current:                                   # learning: sharing is harmless)
                raise ReusedLIFError(self)
            self._ran_in = _Pass.current
        if self.stepwise:
            return self._forward_step(x, run, name)
        T = self.time_steps
        if T is None:      # a silent T = 1 would be a different neuron: no membrane carried over time
            raise ValueError("LIF does not know T: inputs are [T*B, ...] with time folded into the batch; wrap the "
                             "model in ltl_ext.nn.SpikingModel (which sets it), or build LIF(time_steps=T)")
        if x.shape[0] % T != 0:
            raise ValueError(f"LIF got a leading dim of {x.shape[0]}, not a multiple of time_steps = {T}; inside "
                             f"a spiking model tensors are [T*B, ...] (wrap the model in SpikingModel)")
        xs, kwargs, target, _, back = _time_major(x, T, self._kwargs_for(x), None if name is None else run.target(name))
        if name is None:
            return back(functional.lif(xs, **kwargs)).reshape(x.shape)
        s, loss = functional.tandem_loss(xs, target, mode=run.mode, warmup=run.warmup, **kwargs)
        del target         # (a compacted target's float32 copy) freed before the backward that give runs
        return run.give(name, loss, back(s).reshape(x.shape))

    def _forward_step(self, x: Tensor, run: Optional[TandemRun], name: Optional[str]) -> Tensor:
        n = self.block
        if x.shape[0] % n != 0:
            raise ValueError(f"stepwise LIF got a leading dim of {x.shape[0]}, not a multiple of its block of {n} "
                             f"steps ([n*B, ...]: SpikingModel.step(x, steps=n) sets it)")
        step_shape = (x.shape[0] // n, *x.shape[1:])
        if self.v is not None and self.v.shape != step_shape:
            raise RuntimeError(f"stepwise LIF state has shape {tuple(self.v.shape)} but the input is "
                               f"{step_shape} per step; call reset_state() (SpikingModel.reset_state()) "
                               f"between batches")
        xs, kwargs, target, (v, count), back = _time_major(x, n, self._kwargs_for(x),
                                                           None if name is None else run.target(name),
                                                           (self.v, self.count))
        if name is None:
            # the op returns V in x's dtype; a float16/bfloat16 V carried from block to block would be rounded at
            # every step, unlike the whole-sequence forward's float32 state: run the block in the math type
            md = math_dtype(xs.dtype)
            s, v = functional.lif(xs.to(md), v0=v, return_v=True, **kwargs)
            v = v.detach()
            count = s.detach().sum(0) if count is None else count + s.detach().sum(0)
            s = s.to(xs.dtype)
        else:
            if run.mode != "online":
                raise RuntimeError("a stepwise LIF learns online only: run it in a TandemRun with mode='online'")
            v, count = _learning_state(v, count, xs, self.t)
            s, loss = functional.tandem_block_(xs, target, v, count, self.t, warmup=run.warmup, **kwargs)
        del target         # (a compacted target's float32 copy) freed before the backward that give runs
        self.v, self.count = back(v), back(count)
        self.t += n
        s = back(s).reshape(x.shape)
        return s if name is None else run.give(name, loss, s)

    def extra_repr(self) -> str:
        def show(n):
            t = getattr(self, n)
            return f"{float(t.detach()):.4g}" if t.dim() == 0 else f"tensor{tuple(t.shape)}"
        s = f"beta={show('beta')}, threshold={show('threshold')}, reset={self.reset!r}"
        if self.alpha.dim() != 0 or float(self.alpha.detach()) != 1.0:
            s += f", alpha={show('alpha')}"
        if self.reset == "hard" and self.v_reset != 0.0:
            s += f", v_reset={self.v_reset:g}"
        s += f", surrogate={self.surrogate!r}"
        if self.learnable:
            s += f", learnable={self.learnable!r}"
        if self.stepwise:
            s += ", stepwise=True"
        return s


def _learning_state(v: Optional[Tensor], count: Optional[Tensor], xs: Tensor, t: int):
    """The state ``(v, count)`` a learning stepwise LIF hands ``tandem_block_`` to update in place, for the block
    ``xs`` [n, *] from step ``t``: one copy of the state per layer, the count in one byte per neuron below 256 steps
    (the constant-memory mode keeps every layer's state for the whole sequence). Made once per sequence, so the
    copies below happen only when a sequence changes form (a count passing 255 steps, a state the inference path
    left in x's dtype)."""
    if v is None:
        return functional.online_state(xs[0], t + xs.shape[0])
    md = math_dtype(xs.dtype)
    if count.dtype == torch.uint8 and t + xs.shape[0] > 255:
        count = count.to(md)
    v, count = v.to(md).contiguous(), count.contiguous()
    return v, (count if count.dtype in (torch.uint8, md) else count.to(md))


def _time_major(x: Tensor, n: int, kwargs: dict, target: Optional[Tensor], states: tuple = ()):
    """``x`` [n*B, *neuron] as the op's ``[n, B, *neuron]``, laid out as its memory lies, so the op never copies it.

    A channels-last ``[n*B, C, H, W]`` becomes the view ``[n, B, H, W, C]`` (the op is elementwise over neurons,
    so their order is free), with the per-neuron parameters, the target ``[B, C, H, W]`` and the ``states``
    ``[B, C, H, W]`` permuted alike (views; a parameter or the target, which have no T, may be copied by the op).
    Returns ``(xs, kwargs, target, states, back)``; ``back`` puts an op output (spikes ``[n, B, ...]`` or a state
    ``[B, ...]``) back in x's layout."""
    xs = x.reshape(n, x.shape[0] // n, *x.shape[1:])
    if not (x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
        return xs, kwargs, target, states, lambda t: t

    def last(p):          # a parameter broadcast to [C, H, W] -> [H, W, C]; one with a batch dim [1, C, 1, 1] too
        if not isinstance(p, Tensor) or p.dim() == 0:
            return p
        return p.reshape((1,) * (3 - p.dim()) + tuple(p.shape)).movedim(-3, -1)

    def back(t):
        return t.permute(0, 1, 4, 2, 3) if t.dim() == 5 else t.permute(0, 3, 1, 2)
    kwargs = {k: last(v) if k in _TENSOR_PARAMS else v for k, v in kwargs.items()}
    states = tuple(None if t is None else t.permute(0, 2, 3, 1) for t in states)
    return (xs.permute(0, 1, 3, 4, 2), kwargs, None if target is None else target.permute(0, 2, 3, 1), states,
            back)


def lifs(model: nn.Module) -> List[Tuple[str, LIF]]:
    """All ``(name, LIF)`` in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LIF)]


class SpikingModel(nn.Module):
    """Runs a model containing :class:`LIF` layers over T time steps.

    ``forward(x)``: x ``[B, ...]`` -> encoded ``[T*B, ...]`` -> model -> ``[T*B, classes]``, the readout's input
    current at each step O[t] -> returns the time-averaged logits ``[B, classes] = mean_t O[t]``.
    ``forward(x, return_steps=True)`` returns ``(logits [B, classes], steps [T, B, classes])`` with ``steps[t] =
    O[t]`` (with graph: online LTL's readout loss and per-step accuracy use it). Each forward starts every neuron
    from rest, so no state leaks between batches; nothing of the forward is kept on the module.

    ``step(x, steps=1)``: the next ``steps`` time steps, for runs whose memory must not grow with T: x ``[B, ...]``
    (the raw input, encoded for these steps; with ``encoding="none"`` the block's own inputs: the frame ``[B, ...]``
    for one step, ``[steps, B, ...]`` for several)
    -> readout current ``[steps*B, classes]`` at these steps. The LIFs switch to stepwise mode and keep their
    state until :meth:`reset_state` (call it before each batch). ``forward`` switches them back.

    ``time_steps`` (settable) is propagated to every LIF.
    """

    def __init__(self, model: nn.Module, time_steps: int = 16, encoding: str = "direct"):
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        self.model = model
        self.encoding = encoding
        self.time_steps = time_steps
        self._stepwise = False
        self._step_lifs: List[LIF] = []   # the LIFs, as of the last reset_state / switch to stepwise

    @property
    def time_steps(self) -> int:
        return self._time_steps

    @time_steps.setter
    def time_steps(self, T: int) -> None:
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"time_steps must be a positive int, got {T!r}")
        self._time_steps = T
        for _, m in self.lifs():
            m.time_steps = T

    def lifs(self) -> List[Tuple[str, LIF]]:
        """``(name, LIF)`` pairs, names relative to the wrapped model (the names the teacher uses)."""
        return lifs(self.model)

    def _set_stepwise(self, on: bool) -> None:
        self._stepwise = on
        self.reset_state()

    def end_steps(self) -> None:
        """After a sequence of :meth:`step` calls: clear the state and put the LIFs back to whole sequences (as a
        forward does), so that a bare run of the wrapped model (or ``export_nir``) reads ``[T*B, ...]`` again."""
        self._set_stepwise(False)

    def reset_state(self) -> None:
        """Clear every LIF's stepwise state; call before each batch of ``step`` calls."""
        self._step_lifs = [m for _, m in self.lifs()]   # (re)read once per batch, not at every step
        for m in self._step_lifs:
            m.stepwise = self._stepwise
            m.reset_state()

    def forward(self, x: Tensor, return_steps: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        T = self._time_steps
        # The LIFs are the wrapped model's, not ours: another SpikingModel around the same student (another T, or
        # left stepwise by its step calls) may have retuned them since. A LIF told the wrong T unfolds [T*B, ...]
        # with the wrong B, silently mixing samples and steps; so every forward tells them ours (one module walk).
        self._stepwise = False
        for _, m in self.lifs():
            if m.stepwise:
                m.stepwise = False
                m.reset_state()
            m.time_steps = T
        xs = encode(x, T, self.encoding)   # (it checks x's shape: read B after)
        out = self._run(xs)
        steps = out.reshape(T, xs.shape[0] // T, *out.shape[1:])
        return (steps.mean(0), steps) if return_steps else steps.mean(0)

    def step(self, x: Tensor, steps: int = 1) -> Tensor:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not self._stepwise:
            self._set_stepwise(True)
        for m in self._step_lifs:
            if not m.stepwise:   # a forward of another SpikingModel over the same LIFs switched them back mid-sequence
                raise RuntimeError("the LIFs left stepwise mode since the last reset_state() (a forward of another "
                                   "SpikingModel over the same model): their state is gone; call reset_state() and "
                                   "run the sequence again")
            m.block = steps
        if self.encoding == "none":          # x holds these steps already: one frame [B, ...], or [steps, B, ...]
            if steps == 1:
                return self._run(x)
            if x.dim() < 2 or x.shape[0] != steps:
                raise ValueError(f"encoding='none': step(x, steps={steps}) takes the block's inputs [steps, B, ...], "
                                 f"got shape {tuple(x.shape)}")
            return self._run(x.flatten(0, 1))
        return self._run(encode(x, steps, self.encoding))

    def _run(self, x: Tensor) -> Tensor:
        """The wrapped model on x, as one pass in which each LIF may run once (:class:`_Pass`)."""
        outer, _Pass.count = _Pass.current, _Pass.count + 1
        _Pass.current = _Pass.count
        try:
            return self.model(x)
        except ReusedLIFError as e:
            name = next((n for n, m in self.lifs() if m is e.lif), "?")
            raise ValueError(f"LIF {name!r} ran twice in one forward (or step) of the SpikingModel: an activation "
                             f"module used at several places needs a spiking neuron for each (a neuron has state). "
                             f"ltl_ext.convert splits reused activations only in models torch.fx can trace; give "
                             f"each use its own activation module in the teacher") from None
        finally:
            _Pass.current = outer

    def extra_repr(self) -> str:
        return f"time_steps={self._time_steps}, encoding={self.encoding!r}"
