"""Callbacks and loggers: what a training run tells the outside world while it runs.

A :class:`Callback` is told when a fit starts and ends, after every optimiser step and after every epoch; the
trainer passes itself and plain numbers (floats, ints, dicts of them), never tensors holding a graph::

    class Callback:
        on_fit_start(trainer)                        before the first step of a fit
        on_step_end(trainer, step, stats)            after every optimiser step; stats = {"loss", "ce", "local/<layer>"}
        on_epoch_end(trainer, entry)                 after each epoch, once its metrics file and checkpoints are
                                                     written; entry = the history row (losses per layer,
                                                     validation accuracy, firing rates, accuracy per time step,
                                                     images/s, seconds)
        on_fit_end(trainer, history)                 after the last epoch

Two loggers ship: :class:`CSVLogger` (always on in the CLI; one row per epoch, flattened keys such as
``local_loss/features.2``, ``firing_rate/features.2``, ``val_acc_per_step/7``) and :class:`TensorBoardLogger`
(when ``tensorboard`` is installed: scalars per step and per epoch under the same names).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence


class Callback:
    """Base class: override what you need; every hook does nothing by default."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_step_end(self, trainer, step: int, stats: Dict[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer, entry: Dict[str, Any]) -> None:
        pass

    def on_fit_end(self, trainer, history: List[Dict[str, Any]]) -> None:
        pass


class CallbackList(Callback):
    """Several callbacks called in order (what the trainer holds)."""

    def __init__(self, callbacks: Optional[Iterable[Callback]] = None):
        self.callbacks: List[Callback] = []
        if isinstance(callbacks, Callback):   # callbacks=CSVLogger(...): one callback, not a list of them
            callbacks = [callbacks]
        elif callbacks is not None and not isinstance(callbacks, Iterable):   # a function, say (fit's callback=)
            raise TypeError(f"callbacks must be a list of ltl_ext.train.callbacks.Callback instances, got "
                            f"{type(callbacks).__name__} (a function per epoch goes to fit(callback=...))")
        for cb in callbacks or ():
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be ltl_ext.train.callbacks.Callback instances, got "
                                f"{type(cb).__name__} (subclass Callback and override on_epoch_end etc.)")
            self.callbacks.append(cb)

    def on_fit_start(self, trainer) -> None:
        for cb in self.callbacks:
            cb.on_fit_start(trainer)

    def on_step_end(self, trainer, step: int, stats: Dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_step_end(trainer, step, stats)

    def on_epoch_end(self, trainer, entry: Dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(trainer, entry)

    def on_fit_end(self, trainer, history: List[Dict[str, Any]]) -> None:
        for cb in self.callbacks:
            cb.on_fit_end(trainer, history)


def flatten(entry: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    """A history row as flat ``name -> number``: nested dicts join with ``/``, lists get their index.

    >>> flatten({"loss": 0.5, "local_loss": {"fc1": 0.1}, "acc_per_step": [10.0, 20.0]})
    {'loss': 0.5, 'local_loss/fc1': 0.1, 'acc_per_step/0': 10.0, 'acc_per_step/1': 20.0}
    """
    out: Dict[str, float] = {}
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "/"))
        elif isinstance(value, (list, tuple)):
            out.update(flatten({str(i): v for i, v in enumerate(value)}, name + "/"))
        elif isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)):
            out[name] = value
    return out


class CSVLogger(Callback):
    """One row per epoch in ``path`` (CSV, flattened keys). Columns are the union of every row's keys: a key that
    appears later (validation accuracy from the second epoch on, say) rewrites the header; missing cells are empty.
    The file is rewritten whole and atomically after each epoch, so a reader never sees half a row. With several
    processes rank 0 writes it (:func:`writes`)."""

    def __init__(self, path, *, append: bool = False):
        self.path = Path(path)
        self.rows: List[Dict[str, float]] = []
        if append and self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]

    def on_epoch_end(self, trainer, entry: Dict[str, Any]) -> None:
        if not writes(trainer):
            return
        self.rows.append(flatten(entry))
        self._write()

    def _write(self) -> None:
        columns: List[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(buf.getvalue())
        tmp.replace(self.path)


class TensorBoardLogger(Callback):
    """Scalars for TensorBoard in ``log_dir``: ``step/<stat>`` every ``every`` optimiser steps and ``epoch/<key>``
    for every number of the epoch's history row (rank 0's steps; with several processes rank 0 writes, see
    :func:`writes`). Needs ``tensorboard`` (``pip install tensorboard``)."""

    def __init__(self, log_dir, every: int = 10):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError("TensorBoardLogger needs the tensorboard package: pip install tensorboard "
                              f"({type(e).__name__}: {e})") from None
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self._make_writer = lambda: SummaryWriter(str(log_dir))
        self.writer = None                # made at the first write: on rank 0 only (other ranks made empty files)
        self.every = every

    def _writer(self, trainer):
        if not writes(trainer):
            return None
        if self.writer is None:
            self.writer = self._make_writer()
        return self.writer

    def on_step_end(self, trainer, step: int, stats: Dict[str, float]) -> None:
        if step % self.every == 0 and self._writer(trainer) is not None:
            for k, v in stats.items():
                self.writer.add_scalar(f"step/{k}", v, step)

    def on_epoch_end(self, trainer, entry: Dict[str, Any]) -> None:
        if self._writer(trainer) is None:
            return
        epoch = int(entry.get("epoch", 0))
        for k, v in flatten(entry).items():
            if k != "epoch":
                self.writer.add_scalar(f"epoch/{k}", v, epoch)
        self.writer.flush()

    def on_fit_end(self, trainer, history: List[Dict[str, Any]]) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def writes(trainer) -> bool:
    """Whether this process writes the loggers' files: rank 0 of several (its history holds every rank's figures;
    all ranks wrote one CSV through one temporary file, a race, and TensorBoard one event file each), or alone."""
    dist = getattr(trainer, "dist", None)
    return dist is None or dist.is_main


LOGGERS: Sequence[str] = ("csv", "tensorboard")
