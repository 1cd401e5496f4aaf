"""Teacher/student pairing, teacher-target normalisation, and tandem mode for one batch (ltl-method.md §2-§4).

The trainer's handle is :class:`Tandem` (pairing + normalisation + the tandem run in one object)::

    link = tandem.Tandem(teacher, student, percentile=99.9)     # or "running", or None
    with link.batch(x, mode="offline") as run:                 # teacher forward -> targets y_l for this batch
        logits, steps = student(x, return_steps=True)          # each LIF computes its local loss into `run`
    loss = F.cross_entropy(logits, labels) + run.total()
    loss.backward()

``link.batch(x, mode=..., backward=True)`` back-propagates each layer's loss inside the forward instead (the
engine's way: one layer's graph alive at a time; ``run.losses`` are then plain values). Online LTL is the same
with ``mode="online", warmup=...`` and ``steps`` for the per-step readout; constant memory:
``student.reset_state()`` then ``student.step(x)`` T times inside the run (``run.losses`` sums the steps).

No hook stays on the teacher: :class:`Tandem` hooks its activations for the length of each teacher forward.
The lower-level functions keep the hooks until ``remove()``::

    pairs = tandem.pair(teacher, student)                  # hooks on the teacher's activations
    with torch.no_grad():
        teacher.eval(); teacher(x)                          # hooks capture a_l  [B, *]
    targets = pairs.targets(norm)                           # y_l = clamp(a_l / pct_p(a_l), 0, 1)
    with tandem.tandem_batch(pairs, targets, mode="offline") as run:
        logits = student(x)
    (F.cross_entropy(logits, labels) + run.total()).backward()
    pairs.remove()
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from fractions import Fraction
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..nn import ANN_ACTIVATIONS, LIF, SpikingModel, TandemRun, lifs
from .activations import before_readout, expose_activations, trace

__all__ = ["percentile", "target_scale", "normalise", "TargetNormaliser", "TandemPair", "Pairs", "pair",
           "tandem_batch", "Tandem", "TandemRun", "NORMALISATIONS"]

NORMALISATIONS = ("batch", "running", "none")


def percentile(a: Tensor, p: float) -> Tensor:
    """The p-th percentile (nearest rank, 0 < p <= 100) of all elements of ``a``, zeros included; a 0-d tensor."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    flat = a.detach().reshape(-1)
    if flat.numel() == 0:
        raise ValueError("percentile of an empty tensor")
    if not flat.is_floating_point() or flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    k = nearest_rank(flat.numel(), p)
    from_top = flat.numel() - k + 1          # its rank counted from the largest
    if from_top < k:                         # a high percentile: a partial top-k is ~3x faster than a full select
        return flat.topk(from_top).values[-1]
    return flat.kthvalue(k).values


@functools.lru_cache(maxsize=256)
def nearest_rank(n: int, p: float) -> int:
    """The rank k (1-based) of the p-th percentile of n values: k = ceil(p/100 n), computed exactly (99.9 % of 1000
    is 999, which float arithmetic gets wrong). The one definition: single-process, distributed and running
    targets all use it."""
    return min(n, max(1, math.ceil(Fraction(str(p)) * n / 100)))


_percentile = percentile  # for functions whose argument is called `percentile`


def target_scale(a: Tensor, p: float, percentile_fn=percentile) -> Tensor:
    """The scale s that maps a teacher activation onto targets in [0, 1]: ``pct_p(a)``, or ``max(a)`` where that
    percentile is not positive. Why: in a sparse layer more than (100 - p) % of the values are <= 0, so pct_p is
    0 although some values are positive, and dividing by it (or by a tiny eps) would saturate every one of them to
    a target of exactly 1. ``percentile_fn(a, p)`` as in :class:`TargetNormaliser`. A 0-d tensor, no host sync."""
    s = percentile_fn(a, p)
    return torch.where(s > 0, s, percentile_fn(a, 100.0).to(s.dtype))


def normalise(a: Tensor, percentile: Optional[float] = 99.9, *, scale: Union[None, float, Tensor] = None,
              eps: float = 1e-8) -> Tensor:
    """Teacher activation -> target in [0, 1]: ``y = clamp(a / s, 0, 1)`` with ``s = pct_p(a)`` over the whole
    batch (its max where pct_p is not positive: :func:`target_scale`), or the given ``scale``.
    ``percentile=None`` and no scale: no normalisation, ``a`` is returned.
    Shape: [B, *] -> [B, *], detached."""
    a = a.detach()
    if scale is None:
        if percentile is None:
            return a
        scale = target_scale(a, percentile)
    if a.is_floating_point():   # a floor a's dtype can hold: 1e-8 is 0 in float16, and an all-zero (dead) layer's
        eps = max(eps, torch.finfo(a.dtype).tiny)   # 0 / 0 made every target NaN
    if isinstance(scale, Tensor):
        scale = scale.to(a.dtype).clamp_min(eps)
    else:
        scale = max(float(scale), eps)
    return (a / scale).clamp(0.0, 1.0)


class TargetNormaliser:
    """Per-layer target normalisation.

    - ``"batch"`` (default, LTL code): s_l = pct_p(a_l) of the current batch (p = 99.9 offline, 99 online; its max
      where pct_p is not positive, :func:`target_scale`);
    - ``"running"`` (ours): s_l = EMA of the batch percentile, ``s <- (1 - momentum) s + momentum pct_p(a)``
      (the first batch initialises it); frozen when ``update=False`` (e.g. evaluation);
    - ``"none"``: y_l = a_l.

    ``__call__(name, a) -> y``. ``state_dict()`` / ``load_state_dict()`` keep the running scales in checkpoints.
    ``percentile_fn(a, p)`` computes the batch percentile (default :func:`percentile`; with several processes,
    ``Distributed.percentile``: the global batch's).
    """

    def __init__(self, mode: Optional[str] = "batch", percentile: float = 99.9, momentum: float = 0.1, *,
                 percentile_fn=None):
        mode = "none" if mode is None else mode
        if mode not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {mode!r}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.mode, self.percentile, self.momentum = mode, float(percentile), float(momentum)
        self.percentile_fn = _percentile if percentile_fn is None else percentile_fn
        self.scales: Dict[str, Tensor] = {}

    @property
    def normalises(self) -> bool:
        """Whether the targets come out normalised into [0, 1] (every mode but ``"none"``)."""
        return self.mode != "none"

    def __call__(self, name: str, a: Tensor, update: bool = True) -> Tensor:
        if not self.normalises:
            return a.detach()
        if self.mode == "batch":
            return normalise(a, scale=target_scale(a, self.percentile, self.percentile_fn))
        s = self.scales.get(name)
        if update:
            p = target_scale(a, self.percentile, self.percentile_fn).to(torch.float32)
            s = p if s is None else (1 - self.momentum) * s.to(p.device) + self.momentum * p
            self.scales[name] = s
        if s is None:
            raise RuntimeError(f"running normalisation has no scale for {name!r} yet; call it with update=True")
        return normalise(a, scale=s)

    def fork(self) -> "TargetNormaliser":
        """A normaliser for another run on one process (calibrating a chip against a trained run's teacher): the
        same mode, percentile, momentum and running scales (cloned), the local percentile, updating apart from this
        one. Why: targets scaled as in training, where a fresh running normaliser would restart from the first
        calibration batch's percentile."""
        twin = TargetNormaliser(self.mode, self.percentile, self.momentum)
        twin.scales = {k: v.detach().clone() for k, v in self.scales.items()}
        return twin

    def state_dict(self) -> dict:
        return {"mode": self.mode, "percentile": self.percentile, "momentum": self.momentum,
                "scales": {k: v.detach().cpu() for k, v in self.scales.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.mode, self.percentile, self.momentum = state["mode"], state["percentile"], state["momentum"]
        self.scales = dict(state["scales"])

    def __repr__(self) -> str:
        return f"TargetNormaliser(mode={self.mode!r}, percentile={self.percentile:g}, momentum={self.momentum:g})"


class TandemPair(NamedTuple):
    """One student neuron layer and the teacher activation it learns from (``name`` is the student's name)."""

    name: str
    teacher: nn.Module
    student: LIF


class Pairs(list):
    """The list of :class:`TandemPair` returned by :func:`pair`, and the teacher hooks that capture its activations.

    After a teacher forward with the hooks on, :meth:`activations` gives each pair's teacher activation ``[B, *]``,
    and :meth:`targets` the normalised targets. The hooks are on from :func:`pair` (``hooks=True``) until
    :meth:`remove` (or the end of a ``with`` block), or only inside ``with pairs.capturing():``.
    """

    def __init__(self, pairs: List[TandemPair], teacher: nn.Module, calls: Dict[str, List[str]]):
        super().__init__(pairs)
        self.teacher = teacher
        self._store: Dict[str, List[Tuple[Tensor, int]]] = {n: [] for n in calls}   # (activation, its version)
        self._handles: list = []
        self._where = {p.name: (p.student.teacher_name or p.name, p.student.teacher_call) for p in pairs}

    def _clear(self, module, args) -> None:
        for v in self._store.values():
            v.clear()

    def _capture(self, tname: str):
        def hook(module, args, out):
            # a view of the output, not a copy: its version tells whether the teacher changed it in place later
            self._store[tname].append((out.detach(), out._version))
        return hook

    def attach(self) -> None:
        """Put the capturing hooks on the teacher (idempotent)."""
        if self._handles:
            return
        self._handles.append(self.teacher.register_forward_pre_hook(self._clear))
        for tname in self._store:
            self._handles.append(self.teacher.get_submodule(tname).register_forward_hook(self._capture(tname)))

    def remove(self) -> None:
        """Take the hooks off the teacher."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    @contextmanager
    def capturing(self) -> Iterator["Pairs"]:
        """Hooks on for the block only (unless they were on already)."""
        was = self.attached
        self.attach()
        try:
            yield self
        finally:
            if not was:
                self.remove()

    @property
    def students(self) -> List[LIF]:
        return [p.student for p in self]

    def activations(self) -> Dict[str, Tensor]:
        """Student name -> the teacher activation captured in the teacher's last forward ([B, *], detached)."""
        out = {}
        for name, (tname, k) in self._where.items():
            got = self._store[tname]
            if len(got) <= k:
                raise RuntimeError(f"no teacher activation for {name!r} (teacher module {tname!r}, call {k}); run "
                                   f"the teacher on the batch first, with the hooks on")
            a, version = got[k]
            if a._version != version:
                raise ValueError(f"the teacher changes its activation {tname!r} in place after computing it (e.g. "
                                 f"`out += h` on it): {name!r}'s target would be the changed value; write that "
                                 f"update out of place (`out = out + h`)")
            out[name] = a
        return out

    def forget(self) -> None:
        """Drop the captured activations (they hold a batch's worth of memory)."""
        self._clear(None, None)

    def targets(self, normaliser: Union[None, str, float, TargetNormaliser] = "batch") -> Dict[str, Tensor]:
        """Normalised targets from the last teacher forward. ``normaliser``: a :class:`TargetNormaliser`, a
        percentile (float, batch mode), ``"batch"`` (p = 99.9) or ``None`` (raw activations)."""
        if not isinstance(normaliser, TargetNormaliser):
            if isinstance(normaliser, (int, float)) and not isinstance(normaliser, bool):
                normaliser = TargetNormaliser("batch", float(normaliser))
            elif normaliser == "running":   # one made here per call restarted its EMA at every batch: batch mode
                raise ValueError("targets('running') would start a new running scale at every call (each batch's "
                                 "own percentile); make one TargetNormaliser('running') and pass it at every call")
            else:
                normaliser = TargetNormaliser(normaliser)
        return {name: normaliser(name, a) for name, a in self.activations().items()}

    def run(self, targets: Dict[str, Tensor], *, mode: str = "offline", warmup: int = 0, backward: bool = False,
            pack_spikes: bool = True, loss_scale=None, compact_targets: bool = False) -> TandemRun:
        """A :class:`TandemRun` of these pairs' student LIFs with ``targets`` (every pair needs one)."""
        return TandemRun({p.name: p.student for p in self}, targets, mode=mode, warmup=warmup, backward=backward,
                         pack_spikes=pack_spikes, loss_scale=loss_scale, compact_targets=compact_targets)

    def __enter__(self) -> "Pairs":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


#: teacher modules that are no activation: a student LIF of the same name is misplaced, not paired
_NOT_ACTIVATIONS = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.modules.batchnorm._NormBase, nn.LayerNorm,
                    nn.GroupNorm, nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd,
                    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd,
                    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Sequential,
                    nn.ModuleList, nn.ModuleDict, nn.Embedding)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.model if isinstance(model, SpikingModel) else model


def pair(teacher: nn.Module, student: nn.Module, *, strict: bool = True, hooks: bool = True) -> Pairs:
    """Pair each student :class:`LIF` with the teacher activation module of the same name (or the one recorded
    by :func:`ltl_ext.convert` in ``lif.teacher_name`` / ``lif.teacher_call`` for split reused activations),
    and hook the teacher so its activations are captured at every forward.

    ``student`` may be a :class:`SpikingModel` (its wrapped model's names are used). Raises ``ValueError`` naming
    the student LIFs with no teacher module of their name, or one that is no activation (a conv/linear, BN, pooling,
    dropout, ...), and (``strict``) the teacher activations with no student LIF.
    Returns :class:`Pairs`, a list of ``(name, teacher_module, student_lif)``; ``hooks=False`` leaves the teacher
    untouched until :meth:`Pairs.attach` / :meth:`Pairs.capturing`.
    """
    teacher, s_model = _unwrap(teacher), _unwrap(student)
    t_modules = dict(teacher.named_modules())
    pairs, missing, used = [], [], {}
    for name, lif in lifs(s_model):
        tname = lif.teacher_name or name
        if tname not in t_modules or tname == "":
            missing.append(name if tname == name else f"{name} (teacher name {tname!r})")
            continue
        if isinstance(t_modules[tname], _NOT_ACTIVATIONS):
            # a hand-built student whose indices are shifted (no Identity where the teacher's BN was) paired its LIF
            # with the teacher's BN or Linear output, silently, under strict=False
            missing.append(f"{name} (the teacher's {tname!r} is a {type(t_modules[tname]).__name__}, not an "
                           f"activation)")
            continue
        used.setdefault(tname, []).append(name)
        pairs.append(TandemPair(name, t_modules[tname], lif))
    # strict: every teacher activation convert turns into a neuron needs a student LIF; those it keeps as they are
    # (called after the readout, e.g. on the logits, or never called) have none
    sites = set(before_readout(teacher, trace(teacher)[0])) if strict else set()
    unmatched = [n for n, m in t_modules.items()
                 if n in sites and isinstance(m, ANN_ACTIVATIONS + (LIF,)) and n not in used]
    if missing or unmatched:
        msg = ["teacher and student do not line up:"]
        if missing:
            msg.append(f"  student LIF layers with no teacher activation of that name: {missing}")
        if unmatched:
            msg.append(f"  teacher activations with no student LIF: {unmatched}")
        # strict=False is for pair() / Tandem() callers, and only helps with unmatched teacher activations
        msg.append("  (build the student with ltl_ext.convert(teacher) so that the names match; a teacher calling "
                   "F.relu & co has those neurons' modules in ltl_ext.ltl.convert.expose_activations(teacher), "
                   "which Tandem() pairs"
                   + ("; pair() and Tandem() take strict=False to leave those teacher activations unpaired)"
                      if unmatched else ")"))
        raise ValueError("\n".join(msg))
    if not pairs:
        raise ValueError("the student has no LIF layers to pair")
    out = Pairs(pairs, teacher, used)
    if hooks:
        out.attach()
    return out


def tandem_batch(pairs: Union[Pairs, List[TandemPair]], targets: Dict[str, Tensor], *, mode: str = "offline",
                 warmup: int = 0, backward: bool = False) -> TandemRun:
    """``with tandem_batch(pairs, targets, mode=..., warmup=...) as run:`` student forwards inside compute local
    losses into ``run.losses``; nothing is left on the modules after the block."""
    return TandemRun({p.name: p.student for p in pairs}, targets, mode=mode, warmup=warmup, backward=backward)


class Tandem:
    """Teacher/student link for LTL: :func:`pair` + a :class:`TargetNormaliser` + a :class:`TandemRun` per batch.

    Args:
        teacher: the ANN (run in eval mode, without gradient, by :meth:`targets` / :meth:`batch`).
        student: the spiking model (a :class:`SpikingModel` or the model inside it).
        percentile: target normalisation: a float p (batch percentile, default 99.9; the code uses 99 online),
            ``"running"`` (EMA of the batch 99.9th percentile, or ``running_percentile``), ``None`` (raw
            activations), or a :class:`TargetNormaliser`.
        strict: see :func:`pair`.
        percentile_fn: ``(a, p) -> 0-d tensor``, the batch percentile (see :class:`TargetNormaliser`).

    The teacher is used as given (not copied) and keeps no hook: the capturing hooks are on only during each
    teacher forward of :meth:`targets`, which restores the teacher's train/eval mode afterwards.

    Attributes: ``pairs`` (:class:`Pairs`), ``normaliser``.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, percentile: Union[None, float, str,
                 TargetNormaliser] = 99.9, *, momentum: float = 0.1, running_percentile: float = 99.9,
                 strict: bool = True, percentile_fn=None):
        # a teacher whose activations are functions (F.relu, x.clamp) gets hookable modules at the names convert
        # gave its student's LIFs; the same parameters, the caller's teacher untouched (ltl/activations.py)
        self.teacher = expose_activations(teacher)
        self.pairs = pair(self.teacher, student, strict=strict, hooks=False)
        if isinstance(percentile, TargetNormaliser):
            self.normaliser = percentile
        elif percentile is None or percentile == "none":
            self.normaliser = TargetNormaliser("none")
        elif percentile == "running":
            self.normaliser = TargetNormaliser("running", running_percentile, momentum,
                                               percentile_fn=percentile_fn)
        elif isinstance(percentile, (int, float)) and not isinstance(percentile, bool):
            self.normaliser = TargetNormaliser("batch", float(percentile), percentile_fn=percentile_fn)
        elif percentile == "batch":   # the name TargetNormaliser and Pairs.targets take: the default p
            self.normaliser = TargetNormaliser("batch", percentile_fn=percentile_fn)
        else:
            raise ValueError(f"percentile must be a float in (0, 100], 'batch', 'running', None or a TargetNormaliser, "
                             f"got {percentile!r}")

    @torch.no_grad()
    def targets(self, x: Tensor, update: bool = True) -> Dict[str, Tensor]:
        """Run the teacher (eval mode, no grad) on ``x`` [B, ...]; return student name -> y_l [B, *] in [0, 1].
        The teacher's logits of that forward are kept in ``teacher_logits``."""
        # Each module's own mode, not the root's flag: an exposed teacher (a GraphModule over the user's modules)
        # keeps the flag it was built with while the user may have put their teacher in train mode since (BN then
        # drew batch statistics into the targets and updated its running ones); and exactly those modules go back
        # to train mode (a BN the user froze in eval stays there).
        training = [m for m in self.teacher.modules() if m.training]
        for m in training:
            m.training = False
        try:
            with self.pairs.capturing():
                self.teacher_logits = self.teacher(x)
            return {name: self.normaliser(name, a, update=update) for name, a in self.pairs.activations().items()}
        finally:
            self.pairs.forget()
            for m in training:
                m.training = True

    def batch(self, x: Tensor, *, mode: str = "offline", warmup: int = 0, backward: bool = False,
              pack_spikes: bool = True, update: bool = True, loss_scale=None,
              compact_targets: bool = False) -> TandemRun:
        """Teacher forward on ``x`` and the :class:`TandemRun` of the student for this batch (enter it around the
        student's forward, or its ``step`` calls). ``backward=True``: each local loss is back-propagated as soon
        as its layer has run. ``compact_targets``: see :class:`TandemRun`; refused without normalisation (raw
        activations are not in [0, 1])."""
        if compact_targets and not self.normaliser.normalises:
            raise ValueError("compact_targets holds normalised targets in [0, 1] as float16; this Tandem does not "
                             "normalise (percentile=None): run without compact_targets")
        return self.pairs.run(self.targets(x, update=update), mode=mode, warmup=warmup, backward=backward,
                              pack_spikes=pack_spikes, loss_scale=loss_scale, compact_targets=compact_targets)

    def close(self) -> None:
        """Remove any hook left on the teacher (none, unless ``pairs.attach()`` was called)."""
        self.pairs.remove()

    def state_dict(self) -> dict:
        return {"normaliser": self.normaliser.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state and "normaliser" in state:
            self.normaliser.load_state_dict(state["normaliser"])

    def __enter__(self) -> "Tandem":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
