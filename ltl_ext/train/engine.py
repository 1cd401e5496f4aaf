"""The LTL step, layer by layer: each layer learns, and frees its memory, as soon as its local loss exists.

One step reads as a straight line (ltl-method.md §3, §4)::

    batch -> teacher forward (hooks collect a_l) -> targets y_l = normalise(a_l)
          -> student forward over T steps inside a TandemRun(backward=True): each LIF computes loss_l and
             back-propagates it at once (its graph reaches back to the previous layer's detached spikes only,
             so it is freed before the next layer runs); only detached spikes travel on
          -> readout CE over the per-step readout -> its backward
          -> (several processes: one all-reduce of the gradients) -> one optimiser step

Backward of each ``loss_l`` separately gives the gradient of ``ce_weight * CE + sum_l loss_l`` (gradients add
linearly; tests/test_engine.py checks it against one backward of the sum). Online LTL with ``memory="constant"``
runs the student one time step at a time, and with ``time_block=n`` n steps at a time (``SpikingModel.step``):
memory grows with the block, not with T; same gradients (online LTL has no gradient through time).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..distributed import Replica
from ..ltl import tandem
from ..nn import SpikingModel, TandemRun
from .config import LTLConfig, autocast

__all__ = ["ltl_step", "ltl_losses", "readout_loss"]


def ltl_step(model: SpikingModel, link: "tandem.Tandem", opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
             config: LTLConfig, scaler: Optional["torch.amp.GradScaler"] = None) -> Dict[str, float]:
    """One LTL step on a batch (x [B, ...], labels y [B]): every gradient, then one ``opt.step()``.

    ``model`` may be a :class:`~ltl_ext.distributed.Replica` (DDP): gradients accumulate locally during the step
    and are averaged over the ranks once, before the optimiser step. Mixed precision: teacher and student run
    under ``autocast(config.precision)``; with ``scaler`` (float16) every backward is of the scaled loss and the
    step goes through the scaler. Returns the losses as floats: ``loss``, ``ce`` and ``local/<layer>``.
    """
    opt.zero_grad(set_to_none=True)
    scale = scaler.scale if scaler is not None else None
    amp = autocast(config.precision, x.device)
    with amp:
        run = link.batch(x, mode=config.mode, warmup=config.warmup, backward=True, loss_scale=scale,
                         compact_targets=config.holds_compact_targets(link.normaliser.normalises))
    with _one_all_reduce(model):
        block = config.block_steps()
        if block < config.time_steps:
            ce = _blockwise(model, run, x, y, config, amp, scale, block)
        else:
            with amp, run:                                  # each layer's backward runs inside this forward
                _, steps = model(x, return_steps=True)
            ce = readout_loss(_at_least_float32(steps), y, config)
            _backward(config.ce_weight * ce, scale)
            del steps
    if scaler is not None:
        scaler.unscale_(opt)              # clip (and step) on the true gradient
    if config.grad_clip is not None:      # on the whole student's gradient (after DDP's average)
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], config.grad_clip)
    if scaler is not None:
        scaler.step(opt)                  # skipped when the scaled gradient overflowed; the scale then drops
        scaler.update()
    else:
        opt.step()
    return _stats(ce.detach(), run, config)


def _at_least_float32(t: Tensor) -> Tensor:
    """The readout in float32 when autocast made it 16-bit (the CE and its running mean want the range); float64
    stays float64."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _backward(loss: Tensor, scale) -> None:
    (loss if scale is None else scale(loss)).backward()


@torch.no_grad()
def ltl_losses(model: SpikingModel, link: "tandem.Tandem", x: Tensor, y: Tensor, config: LTLConfig
               ) -> Dict[str, float]:
    """The losses of :func:`ltl_step` on a batch, without gradients or update (the constant-memory mode is measured
    in its equal batched online form)."""
    # Measuring must not move the "running" target scales: training updates them, once per training batch. Before
    # the first training step there are none yet; this batch's percentile then stands in, and is not kept.
    norm = link.normaliser
    kept = dict(norm.scales)
    try:
        with autocast(config.precision, x.device):
            with link.batch(x, mode=config.mode, warmup=config.warmup, update=not kept) as run:
                _, steps = model(x, return_steps=True)
    finally:
        norm.scales = kept
    return _stats(readout_loss(_at_least_float32(steps), y, config), run, config)


def readout_loss(step_logits: Tensor, y: Tensor, config: LTLConfig, t0: int = 0,
                 before: Optional[Tensor] = None) -> Tensor:
    """Readout CE from the per-step readout ``step_logits`` [n, B, classes] of steps t0 .. t0+n-1.

    Offline: CE of the time-averaged readout (one block of all T steps). Online: sum over t >= warmup of
    CE(O[t] / (t+1)) with O[t] = O[t-1].detach() + readout current at t, so each step's gradient is local in time
    (§4); ``before`` is O[t0-1] (the sum of the earlier blocks' readout, detached; None at t0 = 0)."""
    if config.mode == "offline":
        return F.cross_entropy(step_logits.mean(0), y)
    n = step_logits.shape[0]
    cur = step_logits.detach()
    prev = torch.cumsum(cur, 0) - cur                                        # O[t-1] within the block, detached
    if before is not None:
        prev = prev + before
    steps = torch.arange(t0 + 1, t0 + n + 1, device=step_logits.device, dtype=step_logits.dtype).view(n, 1, 1)
    running = (prev + step_logits) / steps                                     # O[t] / (t+1)
    w = max(config.warmup - t0, 0)
    if w >= n:
        return step_logits.new_zeros(())
    return F.cross_entropy(running[w:].flatten(0, 1), y.repeat(n - w), reduction="sum") / y.shape[0]


def _blockwise(model: SpikingModel, run: TandemRun, x: Tensor, y: Tensor, config: LTLConfig, amp, scale,
               block: int) -> Tensor:
    """Online LTL in blocks of ``block`` time steps: the LIFs back-propagate their block's loss inside
    ``model.step``, the readout's CE of the block right after; only the detached state crosses blocks, so memory
    grows with the block, not with T. Gradients equal those of one block of all T steps (online LTL has no
    gradient through time). Returns the summed readout CE (detached)."""
    ce_sum = x.new_zeros((), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    before, T, B = None, config.time_steps, y.shape[0]
    model.reset_state()
    try:
        with run:
            for t0 in range(0, T, block):
                n = min(block, T - t0)
                with torch.set_grad_enabled(t0 + n > config.warmup):      # warm-up blocks carry no loss
                    with amp:
                        inputs = x[t0:t0 + n] if config.encoding == "none" else x
                        if config.encoding == "none" and n == 1:
                            inputs = inputs[0]
                        current = _at_least_float32(model.step(inputs, steps=n))   # readout current [n*B, classes]
                    current = current.reshape(n, B, *current.shape[1:])
                    if t0 + n > config.warmup:
                        ce = readout_loss(current, y, config, t0, before)
                        _backward(config.ce_weight * ce, scale)
                        ce_sum = ce_sum + ce.detach()
                    block_sum = current.detach().sum(0)
                    before = block_sum if before is None else before + block_sum
    finally:
        # state cleared and the LIFs back to whole sequences, as a forward leaves them: left stepwise, a later
        # bare run of the model (or export_nir) would cut its [T*B, ...] input into blocks of the last block's size
        model.end_steps()
    return ce_sum


@contextlib.contextmanager
def _one_all_reduce(model) -> Iterator[None]:
    """DDP: every backward of the step inside ``no_sync`` (gradients accumulate locally), then one all-reduce."""
    if not isinstance(model, Replica):
        yield
        return
    with model.no_sync():
        yield
    model.average_gradients()


def _stats(ce: Tensor, run: TandemRun, config: LTLConfig) -> Dict[str, float]:
    local = {k: float(v.detach()) for k, v in run.losses.items()}
    out = {"loss": config.ce_weight * float(ce) + sum(local.values()), "ce": float(ce)}
    out.update({f"local/{k}": v for k, v in local.items()})
    return out
