"""Input encodings: how a batch ``[B, ...]`` becomes the ``[T*B, ...]`` input current of a spiking model.

- ``"direct"``: the (normalised) input is the first layer's current at every step;
- ``"poisson"``: rate coding, independent Bernoulli spikes per step;
- ``"none"``: the input already is a time-major sequence ``[T, B, ...]`` (event frames, audio features,
  pre-encoded spikes); its ANN teacher sees the time-average (:func:`time_average`).
"""
from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

__all__ = ["ENCODINGS", "encode", "time_average", "attach_time_average"]

ENCODINGS = ("direct", "poisson", "none")


def encode(x: Tensor, time_steps: int, encoding: str = "direct") -> Tensor:
    """Encode a batch ``x`` [B, ...] over T steps into ``[T*B, ...]`` (time-major).

    - ``"direct"``: the (normalised) input is the first layer's current at every step: x repeated T times.
    - ``"poisson"``: rate coding, S[t] ~ Bernoulli(x) independently per step, spikes in x's dtype (x must be in
      [0, 1], e.g. pixel intensities, not mean/std-normalised values; others raise).
    - ``"none"``: x already is a sequence ``[T, B, ...]`` (event frames, audio features, pre-encoded spikes),
      time-major; it is only folded to ``[T*B, ...]``. Its teacher sees the time-average (:func:`time_average`).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:   # (0 gave an empty batch)
        raise ValueError(f"time_steps must be a positive int, got {time_steps!r}")
    if encoding == "none":
        if x.dim() < 2 or x.shape[0] != time_steps:
            raise ValueError(f"encoding='none' takes time-major sequences [T={time_steps}, B, ...], got shape "
                             f"{tuple(x.shape)}")
        return x.flatten(0, 1)
    if x.dim() < 1:
        raise ValueError(f"encoding={encoding!r} takes a batch [B, ...], got a 0-d tensor")
    xs = x.unsqueeze(0).expand(time_steps, *x.shape).reshape(time_steps * x.shape[0], *x.shape[1:])
    if encoding == "poisson":
        if not x.is_floating_point():
            raise TypeError(f"poisson encoding takes floating intensities in [0, 1], got dtype {x.dtype}; scale and "
                            f"convert it, e.g. x.float() / 255 for 8-bit images")
        # one sync per batch: firing probabilities must be probabilities (an empty batch has none to check)
        lo, hi = torch.aminmax(x) if x.numel() else (0.0, 0.0)
        if not (float(lo) >= 0 and float(hi) <= 1):   # (so written that NaN fails: rand < NaN would be no spike)
            raise ValueError(f"poisson encoding takes intensities in [0, 1] (firing probabilities), got values in "
                             f"[{float(lo):.3g}, {float(hi):.3g}]: pass raw images (ltl_ext's loaders do; the zoo's "
                             f"models normalise inside), not mean/std-normalised ones")
        # drawn in float32 at least: a float16 / bfloat16 uniform has 11 / 8 bits, which skews small rates (a
        # bfloat16 rate of 0.001 fired about 3 times as often)
        u = torch.rand(xs.shape, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
        xs = (u < xs).to(x.dtype)
    return xs


def time_average(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook giving a teacher the time-average ``[B, ...]`` of a time-major input ``[T, B, ...]``.

    The ANN teacher of a student fed sequences (``encoding="none"``) has no time axis; it sees the mean over T,
    the rate that direct encoding would repeat at every step. ``teacher.register_forward_pre_hook(time_average)``,
    once: a second one would average the batch too (:func:`attach_time_average` shares one between its users).
    """
    return (args[0].mean(0),) + tuple(args[1:])


# teacher -> [the hook's handle, how many attach_time_average users share it]; weak: a dropped teacher is forgotten
_SHARED: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()


class _SharedHook:
    """One user's claim on a teacher's shared :func:`time_average` hook (None: nothing claimed); ``remove()`` lets
    it go, and the hook goes with the last claim. Removing twice does nothing."""

    def __init__(self, teacher: "nn.Module | None"):
        self._teacher = None if teacher is None else weakref.ref(teacher)

    def remove(self) -> None:
        teacher = self._teacher() if self._teacher is not None else None
        self._teacher = None
        entry = _SHARED.get(teacher) if teacher is not None else None
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].remove()
            del _SHARED[teacher]


def attach_time_average(teacher: nn.Module) -> _SharedHook:
    """Put :func:`time_average` in front of ``teacher`` once, however many users (trainers on one teacher) ask for
    it; returns a handle whose ``remove()`` drops this user's claim. Why: each trainer of a sequence student
    registered its own hook, so with two trainers (or a hook the user had put there) the teacher averaged the
    batch away as well and failed deep in a layer. A hook the user registered stays theirs: used, not claimed,
    never removed here."""
    entry = _SHARED.get(teacher)
    if entry is not None:
        entry[1] += 1
    elif any(hook is time_average for hook in teacher._forward_pre_hooks.values()):
        return _SharedHook(None)                        # the user's own hook does it
    else:
        _SHARED[teacher] = [teacher.register_forward_pre_hook(time_average), 1]
    return _SharedHook(teacher)
