"""The BPTT baseline: surrogate-gradient backpropagation through all layers and time steps."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import SpikingModel
from ..ops.params import is_finite_number
from .config import default_device, place_student
from .evaluation import check_labels, evaluate_spiking
from .fit import check_epochs, class_labels, no_batch_error, unpack_batch, warn_if_nothing_to_train
from .progress import _len_or_none, _progress


# ============================================================================================= BPTT baseline
class BPTTTrainer:
    """The usual direct training of the same student: surrogate-gradient BPTT through all layers and all time
    steps, CE on the time-averaged readout, Adam. The baseline of the LTL-vs-BPTT comparison."""

    def __init__(self, student: nn.Module, time_steps: int = 16, lr: float = 1e-3, device=None):
        # lr = 0 would "train" every epoch without changing a weight (Adam itself takes it); as LTLConfig checks
        if not (is_finite_number(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.device = default_device(device)
        if not isinstance(student, SpikingModel):
            student = SpikingModel(student, time_steps=time_steps)
        student.time_steps = time_steps
        self.student = place_student(student, self.device, all_steps_at_once=True)
        self.time_steps = time_steps
        self.optimizer = torch.optim.Adam([p for p in self.student.parameters() if p.requires_grad], lr=lr)
        self.history: List[Dict[str, Any]] = []

    def train_step(self, x: Tensor, y: Tensor) -> Dict[str, float]:
        x, y = x.to(self.device), class_labels(y).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.student(x)                        # spikes keep their graph: BPTT through every layer
        check_labels(y, logits.shape[-1])               # else a bare IndexError (CPU) or a device assert (CUDA)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        _check_finite(loss, self.optimizer, x)
        self.optimizer.step()
        return {"loss": float(loss.detach()), "ce": float(loss.detach())}

    def fit(self, loader: Iterable, epochs: int = 1, val_loader: Optional[Iterable] = None,
            progress: bool = True) -> List[Dict[str, Any]]:
        """Train until ``epochs`` epochs are done in total (as ``LocalTandemTrainer.fit`` counts them). Returns the
        history: one dict per epoch with ``epoch``, ``seconds``, ``loss`` and, with ``val_loader`` (a validation
        set), ``val_student_acc`` (%), the key ``LocalTandemTrainer`` uses."""
        check_epochs(epochs)
        warn_if_nothing_to_train(len(self.history), epochs, stacklevel=3)
        first = len(self.history)
        for epoch in range(first, epochs):
            self.student.train()
            t0, loss_sum, seen = time.perf_counter(), 0.0, 0
            for batch in _progress(loader, progress, desc=f"BPTT epoch {epoch + 1}/{epochs}",
                                   total=_len_or_none(loader)):
                x, y = unpack_batch(batch, "fit")
                loss_sum += self.train_step(x, y)["loss"] * len(y)   # a mean over samples, as LTL's epochs report
                seen += len(y)
            if seen == 0:   # else the epoch would be recorded with a loss of 0, as if trained
                raise no_batch_error(epoch, epoch > first, "sample")
            entry = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0, "loss": loss_sum / seen}
            if val_loader is not None:
                # named as LocalTandemTrainer names it: plots and comparisons read both histories by one key
                report = evaluate_spiking(self.student, val_loader, device=self.device)
                entry["val_student_acc"] = report["student_acc"]
            self.history.append(entry)
        return self.history

    def evaluate(self, loader: Iterable, **kw) -> Dict[str, Any]:
        return evaluate_spiking(self.student, loader, device=self.device, **kw)


def _check_finite(loss: Tensor, opt: torch.optim.Optimizer, x: Tensor) -> None:
    """A NaN or infinite loss or gradient stops training before the optimiser step, as LTL's steps do. Why the
    gradient too: a NaN input pixel fires no spike, so the loss stays finite, but the first layer's weight gradient
    (spikes' surrogate times the input) is NaN: the weights turned NaN in silence and the accuracy collapsed."""
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    finite = torch.stack([torch.isfinite(loss).all()] + [torch.isfinite(g).all() for g in grads]).all()
    if bool(finite):
        return
    where = "the loss" if not bool(torch.isfinite(loss)) else "the gradient (the loss is finite)"
    cause = "the input batch holds NaN or inf" if not bool(torch.isfinite(x).all()) else "lower the learning rate"
    raise FloatingPointError(f"BPTT: non-finite values in {where}; the weights were not updated ({cause})")
