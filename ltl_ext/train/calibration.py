"""What on-chip calibration trains, and an endless pass over a loader."""
from __future__ import annotations

from torch import nn

from ..nn import LIF


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
        raise ValueError("train_thresholds=True but the model's LIF thresholds are floats, not tensors; "
                         "build its LIFs with learnable=True (or program a chip, which makes them tensors)")
    return params, toggled


def _cycle(loader):
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batch")

