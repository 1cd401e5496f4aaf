"""On-chip calibration: LTL on a copy of the student (a noisy chip, say) against the trainer's teacher, what it
trains (the programmed weights; thresholds on request), and an endless pass over a loader."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, Iterable, Optional

import torch
from torch import nn

from ..ltl import tandem
from ..nn import LIF, SpikingModel
from .config import LTLConfig, default_warmup
from .engine import ltl_step
from .evaluation import check_teacher_labels, per_layer
from .fit import class_labels, unpack_batch
from .progress import _progress


def calibrate(teacher: nn.Module, model: SpikingModel, loader: Iterable, base: LTLConfig, *, steps: int = 300,
              mode: str = "online", lr: Optional[float] = None, train_thresholds: bool = False,
              memory: str = "batched", warmup: Optional[int] = None, device=None,
              normaliser: Optional[tandem.TargetNormaliser] = None, progress: bool = False) -> Dict[str, Any]:
    """Train ``model`` with LTL against ``teacher`` for ``steps`` batches (cycling ``loader``) with a fresh Adam;
    the run's config is ``base`` with ``mode``, ``memory``, the model's T, ``warmup`` (default ``base``'s when it
    fits T) and ``lr`` (default ``base``'s). The targets are normalised by a fork of ``normaliser`` (the trained
    run's: running scales continue from where training left them), else as ``base.percentile`` says.
    ``LocalTandemTrainer.calibrate`` documents the rest; returns
    ``{"steps", "loss", "ce", "local_loss"}`` averaged over the last 10 % of the steps."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    T = model.time_steps
    if warmup is None:
        warmup = base.warmup if base.warmup < T else default_warmup(T)
    # the trainer's online blocks apply only where calibration runs batched online LTL too (offline and the
    # constant-memory mode refuse a time_block)
    time_block = base.time_block if (mode, memory) == ("online", "batched") else None
    config = LTLConfig(**dict(asdict(base), mode=mode, memory=memory, time_steps=T, warmup=warmup,
                              time_block=time_block, lr=float(lr if lr is not None else base.lr))).check()
    params, toggled = _calibration_params(model, train_thresholds)
    if not params:
        raise ValueError("calibrate: the model has no trainable parameter")
    for p in toggled:
        p.requires_grad_(not p.requires_grad)
    opt = torch.optim.Adam(params, lr=config.lr)
    # float16 gradients underflow without loss scaling, as in the trainer's own steps
    scaler = torch.amp.GradScaler(params[0].device.type) if config.precision == "16-mixed" else None
    link = tandem.Tandem(teacher, model, percentile=config.percentile if normaliser is None else normaliser.fork())
    was_training = model.training
    model.train()
    tail, sums = max(1, steps // 10), {}
    try:
        it = _cycle(loader)
        classes = None
        for i in _progress(range(steps), progress, desc="calibrate"):
            x, y = unpack_batch(next(it), "calibrate")
            x, y = x.to(device), class_labels(y).to(device)
            classes = check_teacher_labels(teacher, x, y, classes)   # else an IndexError / device assert in the CE
            stats = ltl_step(model, link, opt, x, y, config, scaler=scaler)
            if i >= steps - tail:
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v / tail
    finally:
        link.close()
        for p in toggled:
            p.requires_grad_(not p.requires_grad)
        model.train(was_training)
    return {"steps": steps, "loss": sums.get("loss"), "ce": sums.get("ce"), "local_loss": per_layer(sums, 1)}


def _calibration_params(model: nn.Module, train_thresholds: bool):
    """What calibration trains: every trainable parameter outside the LIFs (for a chip, the programmed weights
    behind its parametrizations), plus the LIF thresholds (programmed values) if ``train_thresholds``.
    Returns ``(params, toggled)``: ``toggled`` are parameters whose ``requires_grad`` was flipped, to restore."""
    in_lif = {}
    for m in model.modules():
        if isinstance(m, LIF):
            for n, p in m.named_parameters():
                in_lif[id(p)] = n
    params, toggled, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        name = in_lif.get(id(p))
        if name is None:
            if p.requires_grad:
                params.append(p)
        elif train_thresholds and name in ("threshold", "parametrizations.threshold.original"):
            if not p.requires_grad:
                toggled.append(p)
            params.append(p)
        elif p.requires_grad:                 # a learnable beta etc.: calibration leaves it alone
            toggled.append(p)
    if train_thresholds and not any(in_lif.get(id(p)) is not None for p in params):
        raise ValueError("train_thresholds=True but the model's LIF thresholds are not parameters (a LIF keeps a "
                         "fixed threshold in a buffer); calibrate a chip made by ltl_ext.hw.noise.program (its "
                         "thresholds are parameters), or build the LIFs with learnable='threshold'")
    return params, toggled


def _cycle(loader):
    passes = 0
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            # after a first pass, the loader was a one-shot iterator (a generator, iter(loader)): say so, rather
            # than call a loader that yielded batches empty
            raise ValueError("calibrate: the loader yields no batch" if not passes else
                             "calibrate: the loader yielded no batch on its second pass (a one-shot iterator or "
                             "generator?); steps cycle the loader: pass a DataLoader or a list of batches")
        passes += 1

