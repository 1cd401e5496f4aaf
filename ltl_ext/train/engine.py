"""The LTL step: teacher targets -> student with local losses -> readout CE -> backward -> optimiser step.

One step reads as a straight line (ltl-method.md §3, §4)::

    batch -> teacher forward (hooks collect a_l) -> targets y_l = normalise(a_l), set on the student's LIFs
          -> student forward over T steps (each LIF returns detached spikes and keeps its local loss)
          -> readout CE + sum_l local_loss_l -> backward (each layer's gradient stays inside it) -> step
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import Replica
from ..ltl import tandem
from ..nn import SpikingModel
from .config import LTLConfig


# ============================================================================================= the LTL step
def _ltl_step(model: SpikingModel, link: "tandem.Tandem", opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
              config: LTLConfig) -> Dict[str, float]:
    """One LTL step: teacher targets -> student with local losses -> readout CE -> backward -> update."""
    opt.zero_grad(set_to_none=True)
    if config.memory == "constant":
        stats = _online_constant_memory(model, link, x, y, config)
    else:
        link.set_targets(x, mode=config.mode, warmup=config.warmup)     # teacher forward, y_l on the LIFs
        logits = model(x)                                                # student over T steps
        ce = _readout_loss(model.last_step_logits, y, config)
        local = link.local_losses()                                      # {layer: loss_l}
        loss = config.ce_weight * ce + sum(local.values())
        loss.backward()                                                  # each layer's gradient stays local
        stats = _stats(loss, ce, local)
        del logits
    opt.step()
    _leave_tandem(link, model)
    return stats


def _leave_tandem(link, model: Optional[nn.Module] = None) -> None:
    """Plain SNN again; drop what holds the step's autograd graph (local losses, the per-step logits), which
    would keep memory alive and make the model impossible to deep-copy."""
    link.clear()
    for lif in link.pairs.students:
        lif.local_loss = None
    if model is not None and getattr(model, "last_step_logits", None) is not None:
        model.last_step_logits = None


def _readout_loss(step_logits: Tensor, y: Tensor, config: LTLConfig) -> Tensor:
    """Readout CE. Offline: CE of the time-averaged readout. Online: sum over t >= warmup of CE(O[t] / (t+1)),
    O[t] = O[t-1].detach() + readout current at t, so each step's gradient is local in time (§4)."""
    if config.mode == "offline":
        return F.cross_entropy(step_logits.mean(0), y)
    T = step_logits.shape[0]
    prev = torch.cumsum(step_logits.detach(), 0) - step_logits.detach()        # O[t-1], detached
    steps = torch.arange(1, T + 1, device=step_logits.device, dtype=step_logits.dtype).view(T, 1, 1)
    running = (prev + step_logits) / steps                                     # O[t] / (t+1)
    w = config.warmup
    return F.cross_entropy(running[w:].flatten(0, 1), y.repeat(T - w), reduction="sum") / y.shape[0]


def _online_constant_memory(model: SpikingModel, link, x: Tensor, y: Tensor, config: LTLConfig):
    """Online LTL one time step at a time: a backward per step accumulates dW; nothing is kept across steps,
    so memory does not grow with T. Gradients equal those of the batched online form."""
    link.set_targets(x, mode="online", warmup=config.warmup, stepwise=True)
    model.reset_state()
    out_sum = None
    totals: Dict[str, float] = {"loss": 0.0, "ce": 0.0}
    try:
        for t in range(config.time_steps):
            learn = t >= config.warmup
            # DDP: gradients accumulate locally until the last step, whose backward all-reduces them once
            with torch.set_grad_enabled(learn), _sync_if(model, t == config.time_steps - 1):
                current = model.step(x)                                   # readout current at step t
                running = current if out_sum is None else out_sum + current
                out_sum = running.detach()
                if not learn:
                    continue
                ce = F.cross_entropy(running / (t + 1), y)
                local = link.local_losses()
                loss = config.ce_weight * ce + sum(local.values())
                loss.backward()
                totals["loss"] += float(loss.detach())
                totals["ce"] += float(ce.detach())
                for k, v in local.items():
                    totals[f"local/{k}"] = totals.get(f"local/{k}", 0.0) + float(v.detach())
    finally:
        model.reset_state()
    return totals


def _sync_if(model, sync: bool):
    return model.sync_if(sync) if isinstance(model, Replica) else contextlib.nullcontext()


def _stats(loss: Tensor, ce: Tensor, local: Dict[str, Tensor]) -> Dict[str, float]:
    out = {"loss": float(loss.detach()), "ce": float(ce.detach())}
    out.update({f"local/{k}": float(v.detach()) for k, v in local.items()})
    return out

