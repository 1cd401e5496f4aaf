"""Plots of an LTL run (matplotlib, Agg backend, PNG files): accuracy per epoch, local losses, accuracy vs T.

Every function takes plain data (the trainer's history list and evaluation report) and a path, so runs can be
re-plotted from their ``metrics.json`` alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_accuracy(history: Sequence[Dict[str, Any]], path, test: Optional[Dict[str, float]] = None,
                  title: str = "LTL: student vs teacher") -> Path:
    """Student and teacher **validation** accuracy per epoch (what selection sees); ``test``
    (``{"student_acc", "teacher_acc", "epoch"}``), the one final test evaluation, is drawn as its own markers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    rows = [h for h in history if "val_student_acc" in h]
    epochs = [h["epoch"] for h in rows]
    ax.plot(epochs, [h["val_student_acc"] for h in rows], "o-", label="student (SNN), validation")
    ax.plot(epochs, [h["val_teacher_acc"] for h in rows], "--", color="gray", label="teacher (ANN), validation")
    if test:
        at = test.get("epoch", epochs[-1] if epochs else 0)
        ax.plot([at], [test["student_acc"]], "*", ms=12, color="C3", label="student, test (once, at the end)")
        ax.plot([at], [test["teacher_acc"]], "x", ms=9, color="black", label="teacher, test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if epochs:
        ax.set_xticks(epochs)
    return _save(fig, path)


def plot_local_losses(history: Sequence[Dict[str, Any]], path, title: str = "per-layer local loss") -> Path:
    """Each layer's mean local (tandem) loss per epoch, log scale, and the readout CE."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [h["epoch"] for h in history]
    names: List[str] = []
    for h in history:
        names += [n for n in h.get("local_loss", {}) if n not in names]
    for n in names:
        ax.plot(epochs, [h.get("local_loss", {}).get(n, float("nan")) for h in history], "o-", label=n)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("local loss (MSE of rate to target)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    if epochs:
        ax.set_xticks(epochs)
    return _save(fig, path)


def plot_acc_per_step(acc_per_step: Sequence[float], path, teacher_acc: Optional[float] = None,
                      title: str = "accuracy vs time step") -> Path:
    """Accuracy of the running-mean readout after t = 1 .. T time steps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    steps = list(range(1, len(acc_per_step) + 1))
    ax.plot(steps, list(acc_per_step), "o-", label="student (SNN)")
    if teacher_acc is not None:
        ax.axhline(teacher_acc, ls="--", color="gray", label="teacher (ANN)")
    ax.set_xlabel("time steps")
    ax.set_ylabel("test accuracy (%), at the end")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_run(history: Sequence[Dict[str, Any]], report: Optional[Dict[str, Any]], out_dir,
             test_epoch: Optional[int] = None) -> List[Path]:
    """The three standard plots of a run into ``out_dir``: accuracy.png (validation per epoch, and the final test
    evaluation ``report`` of the model from ``test_epoch``), local_loss.png, acc_per_step.png (test)."""
    out_dir = Path(out_dir)
    teacher = report.get("teacher_acc") if report else None
    paths = []
    if any("val_student_acc" in h for h in history):
        test = None if not report else {"student_acc": report["student_acc"], "teacher_acc": report["teacher_acc"],
                                        **({"epoch": test_epoch} if test_epoch is not None else {})}
        paths.append(plot_accuracy(history, out_dir / "accuracy.png", test))
    if history:
        paths.append(plot_local_losses(history, out_dir / "local_loss.png"))
    if report and report.get("acc_per_step"):
        paths.append(plot_acc_per_step(report["acc_per_step"], out_dir / "acc_per_step.png", teacher))
    return paths
