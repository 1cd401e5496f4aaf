"""Evaluation of spiking students and ANN teachers: accuracy (final and per time step), firing rates, and the LTL
losses of a student measured without training."""
from __future__ import annotations

import itertools
from typing import Any, Dict, Iterable, Optional

import torch
from torch import nn

from ..nn import LIF, SpikingModel
from .config import LTLConfig, default_device
from .engine import ltl_losses
from .progress import _len_or_none, _progress


def _lifs(model: nn.Module) -> Dict[str, LIF]:
    """The model's LIF layers by name; inside a SpikingModel, names relative to the wrapped model (the names
    the teacher and the local losses use)."""
    if isinstance(model, SpikingModel):
        return dict(model.lifs())
    return {name: m for name, m in model.named_modules() if isinstance(m, LIF)}


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Which samples ``logits`` [B, classes] classify right, ``[B]`` bool, refusing labels that are not class
    indices: labels ``[B, 1]`` (or one-hot ``[B, B]``) would broadcast against the predictions ``[B]`` and count
    every pair, and a label outside the classes (1-based labels, say) would count as a wrong answer."""
    if y.shape != logits.shape[:1]:
        raise ValueError(f"labels must be class indices of shape [B] = [{logits.shape[0]}], got shape "
                         f"{tuple(y.shape)} (a column [B, 1]: y.squeeze(1); one-hot [B, classes]: y.argmax(1))")
    check_labels(y, logits.shape[1])
    return logits.argmax(1) == y


def check_labels(y: torch.Tensor, classes: int) -> None:
    """Labels must index the model's ``classes`` outputs: a ``ValueError`` names those that do not (cross-entropy
    would fail obscurely on the CPU and with a device assert on CUDA; accuracy would just count them wrong)."""
    if not y.numel():
        return
    lo, hi = torch.stack(torch.aminmax(y)).tolist()        # one host sync for both ends
    if lo < 0 or hi >= classes:
        bad = sorted(set(y[(y < 0) | (y >= classes)].tolist()))
        raise ValueError(f"labels {bad[:10]}{' ...' if len(bad) > 10 else ''} lie outside the model's {classes} "
                         f"classes [0, {classes - 1}]: the data and the model do not match")


def check_teacher_labels(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Optional[int]) -> int:
    """:func:`check_labels` of a training batch against the teacher's output width, which is read from one sample of
    ``x`` (on the teacher's device) when ``classes`` is None; returns it for the next batch. No capturing hook is
    disturbed: the step's own teacher forward overwrites what they caught."""
    if classes is None:
        with torch.no_grad():
            classes = int(teacher(x[:1]).shape[-1])
    check_labels(y, classes)
    return classes


# ============================================================================================= evaluation
@torch.no_grad()
def evaluate_spiking(model: nn.Module, loader: Iterable, *, teacher: Optional[nn.Module] = None, device=None,
                     progress: bool = False, max_batches: Optional[int] = None,
                     allow_empty: bool = False) -> Dict[str, Any]:
    """Accuracy (final and per time step), firing rates and spike counts of a spiking model on ``loader``.

    ``model`` is a :class:`SpikingModel` (or anything whose ``forward(x, return_steps=True)`` returns the logits
    ``[B, classes]`` and the per-step readout ``[T, B, classes]``). A loader with no sample raises, unless
    ``allow_empty`` (one rank's share of a small set): the report then has ``samples = 0`` and zeros, in the
    same structure, so that a weighted mean over the ranks counts it for nothing."""
    device = default_device(device)
    lifs = _lifs(model)
    spikes = {name: 0.0 for name in lifs}
    neurons = {name: 0 for name in lifs}

    def counter(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            # summed in float64: under autocast the spikes are float16 (whose sum overflows to inf past 65504)
            # or bfloat16 (whose sum is rounded to 8 bits)
            spikes[name] += float(out.sum(dtype=torch.float64))
            neurons[name] += out.numel()
        return hook

    handles = [m.register_forward_hook(counter(n)) for n, m in lifs.items()]
    # a teacher left in training mode would be scored with dropout on, and its BN statistics moved by the test set
    modes = [(m, m.training) for m in (model, teacher) if m is not None]
    for m, _ in modes:
        m.eval()
    correct, correct_t, teacher_correct, n = 0, None, 0, 0
    try:
        for i, (x, y) in enumerate(_progress(loader, progress, desc="eval", total=_len_or_none(loader))):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            logits, steps = model(x, return_steps=True)                     # [B, classes], [T, B, classes]
            correct += int(_correct(logits, y).sum())
            T = steps.shape[0]
            # summed in float32 at least: a float16 readout (autocast) summed over T steps overflows to inf
            steps = steps.to(torch.promote_types(steps.dtype, torch.float32))
            running = steps.cumsum(0) / torch.arange(1, T + 1, device=device, dtype=steps.dtype).view(T, 1, 1)
            c = (running.argmax(2) == y.unsqueeze(0)).sum(1).cpu()
            correct_t = c if correct_t is None else correct_t + c
            if teacher is not None:
                teacher_correct += int((teacher(x).argmax(1) == y).sum())    # y checked by _correct above
            n += len(y)
    finally:
        for h in handles:
            h.remove()
        for m, was_training in modes:
            m.train(was_training)
    if n == 0 and not allow_empty:
        raise ValueError("the evaluation loader yields no sample")
    T = getattr(model, "time_steps", None) or (len(correct_t) if correct_t is not None else 1)
    if correct_t is None:
        correct_t = [0] * T
    rates = {name: spikes[name] / max(neurons[name], 1) for name in lifs}
    per = 100.0 / max(n, 1)
    report = {
        "samples": n,
        "student_acc": correct * per,
        "acc_per_step": [float(c) * per for c in correct_t],
        "firing_rate": rates,
        "spikes_per_sample": sum(spikes.values()) / max(n, 1),
        "time_steps": T,
    }
    if teacher is not None:
        report["teacher_acc"] = teacher_correct * per
    return report


@torch.no_grad()
def evaluate_ann(model: nn.Module, loader: Iterable, device=None) -> float:
    """Test accuracy (%) of a plain ANN."""
    device = default_device(device)
    model.to(device)                 # a teacher loaded from a checkpoint arrives on the CPU
    was_training = model.training
    model.eval()
    correct = n = 0
    try:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += int(_correct(model(x), y).sum())
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("the evaluation loader yields no sample")
    return 100.0 * correct / n


@torch.no_grad()
def local_losses(student: SpikingModel, link, loader: Iterable, config: LTLConfig, *, device,
                 max_batches: Optional[int] = None) -> Dict[str, Any]:
    """The LTL losses of ``student`` against ``link``'s teacher on ``loader``, without training:
    ``{"loss", "ce", "local_loss": {layer: loss}}``, each a mean over samples (a smaller last batch counts for its
    share, as in training's history; a constant-memory online config is measured in the equal batched online
    form)."""
    sums, n = {}, 0
    was_training = student.training
    student.eval()
    try:
        for x, y in itertools.islice(loader, None if max_batches is None else max(max_batches, 0)):
            for k, v in ltl_losses(student, link, x.to(device), y.to(device), config).items():
                sums[k] = sums.get(k, 0.0) + v * len(y)
            n += len(y)
    finally:
        student.train(was_training)
    if n == 0:       # (zeros would read as a perfect student)
        raise ValueError("the loader yields no sample (or max_batches < 1): no loss to measure")
    return {"loss": sums.get("loss", 0.0) / n, "ce": sums.get("ce", 0.0) / n, "local_loss": per_layer(sums, n)}


def per_layer(sums: Dict[str, float], n: float) -> Dict[str, float]:
    """``{layer: sum / n}`` from the engine's ``"local/<layer>"`` entries of summed step statistics."""
    return {k[len("local/"):]: v / n for k, v in sums.items() if k.startswith("local/")}
