"""The BPTT baseline: surrogate-gradient backpropagation through all layers and time steps."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import SpikingModel
from .config import default_device, place_student
from .evaluation import evaluate_spiking
from .fit import check_epochs, warn_if_nothing_to_train
from .progress import _len_or_none, _progress


# ============================================================================================= BPTT baseline
class BPTTTrainer:
    """The usual direct training of the same student: surrogate-gradient BPTT through all layers and all time
    steps, CE on the time-averaged readout, Adam. The baseline of the LTL-vs-BPTT comparison."""

    def __init__(self, student: nn.Module, time_steps: int = 16, lr: float = 1e-3, device=None):
        self.device = default_device(device)
        if not isinstance(student, SpikingModel):
            student = SpikingModel(student, time_steps=time_steps)
        student.time_steps = time_steps
        self.student = place_student(student, self.device, all_steps_at_once=True)
        self.time_steps = time_steps
        self.optimizer = torch.optim.Adam([p for p in self.student.parameters() if p.requires_grad], lr=lr)
        self.history: List[Dict[str, Any]] = []

    def train_step(self, x: Tensor, y: Tensor) -> Dict[str, float]:
        x, y = x.to(self.device), y.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.student(x), y)      # spikes keep their graph: BPTT through every layer
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach()), "ce": float(loss.detach())}

    def fit(self, loader: Iterable, epochs: int = 1, val_loader: Optional[Iterable] = None,
            progress: bool = True) -> List[Dict[str, Any]]:
        check_epochs(epochs)
        warn_if_nothing_to_train(len(self.history), epochs, stacklevel=3)
        for epoch in range(len(self.history), epochs):
            self.student.train()
            t0, loss_sum, seen = time.perf_counter(), 0.0, 0
            for x, y in _progress(loader, progress, desc=f"BPTT epoch {epoch + 1}/{epochs}",
                                  total=_len_or_none(loader)):
                loss_sum += self.train_step(x, y)["loss"] * len(y)   # a mean over samples, as LTL's epochs report
                seen += len(y)
            if seen == 0:   # else the epoch would be recorded with a loss of 0, as if trained
                raise ValueError(f"fit: the training loader yielded no sample in epoch {epoch + 1} (an empty data "
                                 f"set, or a batch size larger than the data with drop_last?)")
            entry = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0, "loss": loss_sum / seen}
            if val_loader is not None:
                entry["student_acc"] = evaluate_spiking(self.student, val_loader, device=self.device)["student_acc"]
            self.history.append(entry)
        return self.history

    def evaluate(self, loader: Iterable, **kw) -> Dict[str, Any]:
        return evaluate_spiking(self.student, loader, device=self.device, **kw)

