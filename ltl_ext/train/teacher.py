"""The teacher: a plain, good ANN training loop, and teacher checkpoints (rebuilt from their zoo spec)."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import default_device
from .evaluation import evaluate_ann
from .progress import _len_or_none, _progress


# ============================================================================================= the teacher
def train_teacher(model: nn.Module, loader: Iterable, epochs: int = 10, *, lr: float = 0.05,
                  optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4,
                  label_smoothing: float = 0.0, schedule: str = "cosine", val_loader: Optional[Iterable] = None,
                  device=None, progress: bool = True) -> List[Dict[str, Any]]:
    """A plain, good ANN training loop for the teacher (SGD + Nesterov momentum, cosine schedule with a short
    warm-up, weight decay; or Adam). Trains ``model`` in place; returns one dict per epoch.

    ``val_loader`` (a validation set, never the test set): evaluated after every epoch (``val_acc``), and the
    model ends with the weights of its best epoch on it (the entry of that epoch has ``selected: True``).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    device = default_device(device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    steps_per_epoch = _len_or_none(loader)
    sched = None
    if schedule == "cosine" and steps_per_epoch:
        total = max(1, epochs * steps_per_epoch)
        warm = min(max(1, total // 20), 200)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    elif schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    history, best_acc, best_state = [], -1.0, None
    for epoch in range(epochs):
        model.train()
        t0, loss_sum, correct, n = time.perf_counter(), 0.0, 0, 0
        bar = _progress(loader, progress, desc=f"teacher epoch {epoch + 1}/{epochs}", total=steps_per_epoch)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            try:
                out = model(x)
            except ValueError as e:        # BatchNorm's bare "Expected more than 1 value per channel when training"
                if len(y) == 1 and "more than 1 value per channel" in str(e):
                    raise ValueError(f"train_teacher: epoch {epoch + 1} has a batch of one sample, which the "
                                     f"model's BatchNorm cannot train on: use another batch size (the last batch "
                                     f"holds len(data) % batch_size samples), or drop_last=True") from None
                raise
            loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
            if progress:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        entry = {"epoch": epoch + 1, "loss": loss_sum / max(n, 1), "train_acc": 100.0 * correct / max(n, 1),
                 "seconds": time.perf_counter() - t0}
        if val_loader is not None:
            entry["val_acc"], entry["selected"] = evaluate_ann(model, val_loader, device), False
            if entry["val_acc"] > best_acc:
                best_acc, best_state = entry["val_acc"], {k: v.detach().clone() for k, v in model.state_dict().items()}
                for h in history:
                    h["selected"] = False
                entry["selected"] = True
        history.append(entry)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


TEACHER_KIND = "teacher"


def save_teacher(model: nn.Module, spec: Optional[dict], path, meta: Optional[dict] = None) -> Path:
    """Save a teacher (state dict + its zoo spec, so it can be rebuilt) atomically."""
    return save_checkpoint({"spec": spec, "state": model.state_dict(), "meta": dict(meta or {})}, path,
                           kind=TEACHER_KIND)


def load_teacher(path, model: Optional[nn.Module] = None):
    """Load a teacher saved by :func:`save_teacher`: returns ``(model, spec, meta)``. A teacher from outside the
    zoo needs ``model`` (the same architecture) to load into."""
    state = load_checkpoint(path, kind=TEACHER_KIND)
    if model is None:
        model = _build_from_spec(state.get("spec"), path)
    _load_module(model, state["state"], "teacher", path)
    return model.eval(), state.get("spec"), state.get("meta", {})


# ============================================================================================= helpers
def _build_from_spec(spec, path):
    if not spec:
        raise CheckpointError(f"{path}: the teacher was user-built (no zoo spec in the checkpoint); "
                              f"pass teacher= to LocalTandemTrainer.load")
    from ..nn.zoo import MODELS
    if spec.get("arch") not in MODELS:
        raise CheckpointError(f"{path}: unknown architecture {spec.get('arch')!r} (this ltl_ext has "
                              f"{', '.join(MODELS)})")
    return MODELS[spec["arch"]](**spec.get("kwargs", {}))


def _load_module(module: nn.Module, state: Dict[str, Tensor], what: str, path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{path}: the {what} in the checkpoint does not match the model "
                              f"({detail[:300]})") from None

