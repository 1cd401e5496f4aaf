"""Learning-rate schedules by name, stepped once per epoch: ``none``, ``cosine``, ``step:E1,E2,...:gamma``.

``schedule("step:30,60:0.1")`` is the paper's kind of step schedule: lr is multiplied by ``gamma`` after epochs
30 and 60. ``cosine`` anneals from the initial lr to 0 over the run's epochs, ``lr_e = lr_0 (1 + cos(pi e / E)) / 2``.
The result is a factory ``optimizer -> scheduler`` (or ``None``), which is what ``LocalTandemTrainer(scheduler=...)``
takes; a user may pass any factory of their own instead, e.g. ``lambda opt: torch.optim.lr_scheduler.ExponentialLR(
opt, 0.9)``. The scheduler's state is saved in the trainer's checkpoints and resumed with the optimiser's.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

SchedulerFactory = Callable[[torch.optim.Optimizer], "torch.optim.lr_scheduler.LRScheduler"]


def schedule(spec: Optional[str], epochs: int) -> Optional[SchedulerFactory]:
    """Parse ``spec`` into a scheduler factory for a run of ``epochs`` epochs (``None`` for ``"none"``)."""
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise TypeError(f"schedule must be a string like 'cosine' or 'step:30,60:0.1', got {type(spec).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:  # cosine's horizon
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    text = spec.strip().lower()
    if text in ("", "none", "constant"):
        return None
    if text == "cosine":
        return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if text.startswith("step:"):
        parts = text.split(":")
        usage = f"a step schedule reads step:E1,E2,...:gamma (e.g. step:30,60:0.1), got {spec!r}"
        if len(parts) != 3:
            raise ValueError(usage)
        try:
            milestones = sorted(int(e) for e in parts[1].split(",") if e.strip())
            gamma = float(parts[2])
        except ValueError:
            raise ValueError(usage) from None
        if not milestones or milestones[0] < 1 or len(set(milestones)) != len(milestones):
            raise ValueError(f"step milestones must be distinct epochs >= 1, got {parts[1]!r}")
        if not 0 < gamma <= 1:
            raise ValueError(f"step gamma must be in (0, 1], got {gamma}")
        return lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma)
    raise ValueError(f"unknown schedule {spec!r}: use none, cosine or step:E1,E2,...:gamma")
