"""One student forward in tandem mode, as a value: what its LIFs learn from, and the local losses they give back.

Nothing is left on the modules. A :class:`TandemRun` is entered around a student forward (or a batch of stepwise
calls); while it is active, each :class:`~ltl_ext.nn.LIF` it names computes its local tandem loss against its
target (``ltl_ext.functional.tandem_loss``, or ``tandem_step`` when stepwise) and returns detached spikes::

    run = TandemRun({"features.0.2": lif0, ...}, {"features.0.2": y0, ...}, mode="offline", backward=True)
    with run:
        logits, steps = student(x, return_steps=True)
    run.losses          # {"features.0.2": loss_0, ...}

``backward=True`` (the engine's mode, ltl-method.md §3): each layer's loss is back-propagated the moment the
layer has produced it, inside the forward. Its graph reaches back only to the previous layers' detached spikes
(or the input), so the layer's weights get their whole gradient at once, and the layer's saved tensors are freed
before the next layer runs: at any time only one layer's graph is alive. ``losses`` then holds detached values.
``backward=False``: the losses keep their graph, for the caller to combine.

The backward keeps the graph (``retain_graph=True``): a current that also feeds a later layer without passing
through a LIF (a pre-activation residual branch, say) must still be there when the later loss goes back through
it. Gradients add linearly, so the sum equals that of one backward of ``sum_l loss_l``. In the usual layout
nothing else holds the layer's graph, and it is freed as soon as the layer returns.

Spikes the LIFs give out are marked in a :class:`~ltl_ext.nn.packing.SpikeStore`, so a layer that saves them
for its weight gradient stores them as 1 byte per spike (bool), not 4.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Set

import torch
from torch import Tensor, nn

from .packing import SpikeStore

__all__ = ["TandemRun", "MODES"]

MODES = ("offline", "online")
# The active runs, innermost last. A plain module global (not a ContextVar) so that torch.compile can trace the
# LIF's look-up (it guards on it); a training process drives one student forward at a time.
_ACTIVE: List["TandemRun"] = []


class TandemRun:
    """The context of one tandem forward.

    Args:
        layers: student layer name -> the LIF module (the names the teacher pairs with).
        targets: student layer name -> target y_l ``[B, *neuron]`` (normalised teacher activation, detached).
        mode: ``"offline"`` (MSE of the rate over all T steps) or ``"online"`` (per-step loss from ``warmup`` on).
        warmup: online only: steps before it carry no loss.
        backward: back-propagate each local loss as soon as it exists (see the module docstring); offline, a
            layer's target is then released once its loss went back (one forward per run).
        pack_spikes: store spikes saved for the backward as bool, 1 byte each (:class:`SpikeStore`).
        loss_scale: with ``backward``, what is back-propagated is ``loss_scale(loss_l)`` (mixed precision: a
            ``torch.amp.GradScaler``'s ``scale``); ``losses`` keep the unscaled values.
        compact_targets: hold float32 targets as float16 while the run lasts, and hand each LIF its target back in
            float32 (a copy made for the call). For a run that keeps every layer's target over many steps (the
            constant-memory mode: with V and the spike count, all it keeps): half their bytes. Meant for
            normalised targets in [0, 1], which float16 rounds by at most 2^-12 (1/512 of a firing-rate step at
            T = 8); a target float16 cannot hold (beyond +-65504) is refused with a ``ValueError``. Targets in
            other dtypes are kept as given.

    Attributes: ``losses`` (name -> loss, summed over the calls of a layer in this run: the T steps of a
    stepwise run, say), ``mode``, ``warmup``.
    """

    def __init__(self, layers: Mapping[str, nn.Module], targets: Mapping[str, Tensor], *, mode: str = "offline",
                 warmup: int = 0, backward: bool = False, pack_spikes: bool = True,
                 loss_scale: Optional[Callable[[Tensor], Tensor]] = None, compact_targets: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
        missing = [n for n in layers if n not in targets]
        if missing:
            raise KeyError(f"no target for student layer(s) {missing}")
        self.mode, self.warmup, self.backward = mode, warmup, bool(backward)
        self.loss_scale = loss_scale
        self.targets = {n: targets[n] for n in layers}
        self._compacted: Set[str] = set()             # the layers whose float32 target is held in float16
        if compact_targets:
            self._compact()
        self._names = {id(m): n for n, m in layers.items()}
        self._modules = dict(layers)          # keeps the ids above valid for the run's lifetime
        self.losses: Dict[str, Tensor] = {}
        self.spikes = SpikeStore() if pack_spikes else None
        self._entered = False

    @staticmethod
    def current() -> Optional["TandemRun"]:
        """The innermost active run, or ``None``."""
        return _ACTIVE[-1] if _ACTIVE else None

    def name_of(self, module: nn.Module) -> Optional[str]:
        """The layer name of ``module`` in this run, ``None`` if it does not learn in it."""
        return self._names.get(id(module))

    def _compact(self) -> None:
        """float32 targets -> float16 (``compact_targets``), refusing any that float16 cannot hold (one check for
        all layers: a single device sync per run)."""
        names = [n for n, t in self.targets.items() if t.dtype == torch.float32]
        if not names:
            return
        halves = {n: self.targets[n].to(torch.float16) for n in names}
        finite = torch.stack([h.isfinite().all() for h in halves.values()])
        if not bool(finite.all()):
            bad = [n for n, ok in zip(names, finite.tolist()) if not ok]
            raise ValueError(f"compact_targets: the targets of {bad} do not fit in float16 (|y| > 65504); it is "
                             f"meant for normalised targets in [0, 1]: normalise them, or run without it")
        self.targets.update(halves)
        self._compacted = set(names)

    def target(self, name: str) -> Tensor:
        """The target of layer ``name`` (its LIF calls this once per forward, or once per call when stepwise), in
        the dtype it was given (a float32 copy of a compacted one)."""
        if name not in self.targets:
            raise RuntimeError(f"LIF {name!r} ran twice in one offline tandem forward; its target was released after "
                               f"its first call. Each LIF learns once per forward: use one LIF module per activation "
                               f"(ltl_ext.convert splits reused activations)")
        t = self.targets[name]
        return t.float() if name in self._compacted else t

    def give(self, name: str, loss: Tensor, spikes: Tensor) -> Tensor:
        """Called by a LIF with its local ``loss`` and (detached) ``spikes``: back-propagates the loss at once
        if ``backward``, records it, marks the spikes for the spike store; returns the spikes. An offline layer
        that has back-propagated is done with its target, which is released (the targets of the layers still to
        come are all that stays)."""
        if self.backward and loss.requires_grad:
            (loss if self.loss_scale is None else self.loss_scale(loss)).backward(retain_graph=True)
            loss = loss.detach()
            if self.mode == "offline":
                del self.targets[name]
        prev = self.losses.get(name)
        self.losses[name] = loss if prev is None else prev + loss
        return spikes if self.spikes is None else self.spikes.mark(spikes)

    def total(self) -> Tensor:
        """Sum of the local losses (a 0-d tensor; with graph unless ``backward``)."""
        if not self.losses:
            raise RuntimeError("no local losses: no LIF of this run has run inside it")
        return torch.stack(list(self.losses.values())).sum()

    def __enter__(self) -> "TandemRun":
        if self._entered:
            raise RuntimeError("a TandemRun is not re-entrant")
        self._entered = True
        _ACTIVE.append(self)
        if self.spikes is not None:
            self.spikes.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.spikes is not None:
                self.spikes.__exit__(*exc)
        finally:
            _ACTIVE.remove(self)
            self._entered = False
