"""The fit loop of :class:`~ltl_ext.train.trainer.LocalTandemTrainer`: epochs of steps, and what makes them resumable.

:func:`fit` runs the epochs a trainer has left: per step the engine's ``train_step``, a finite-loss check
(:func:`check_finite`), the callbacks and the checkpoint cadence; per epoch the history entry (losses averaged over
the ranks, validation figures, the best epoch so far), the learning-rate schedule's step (:func:`start_schedule`
builds it once per run), the metrics file and the checkpoints.

Resume bookkeeping: at the start of an epoch the global RNG state and the loader's generator state are kept on the
trainer (``trainer._epoch_start``, saved in every checkpoint); a trainer loaded from a mid-epoch checkpoint replays
the same batch order, skips the batches it already trained and restores the RNG state of the interruption, so a
resumed run equals an uninterrupted one (bit for bit on CPU).

The functions read and update the trainer's counters in place (``epoch``, ``step_in_epoch``, ``global_step``,
``history``, ``best``, ``scheduler``, ``_epoch_sums``, ``_epoch_start``): the trainer stays the one holder of a run's
state, which :mod:`.state` saves and restores.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor
from torch.optim import lr_scheduler

from .checkpoint import rng_state, set_rng_state, write_json
from .evaluation import per_layer
from .progress import _len_or_none, _print_epoch, _progress
from .schedules import schedule as schedule_by_name


def fit(trainer, train_loader: Iterable, epochs: int, val_loader: Optional[Iterable] = None, *, checkpoint=None,
        checkpoint_every: Optional[int] = None, progress: bool = True, metrics_path=None,
        callback: Optional[Callable[[Dict[str, Any]], None]] = None, max_steps: Optional[int] = None,
        best_checkpoint=None) -> List[Dict[str, Any]]:
    """Train ``trainer`` until ``epochs`` epochs are done in total (``LocalTandemTrainer.fit`` documents the
    arguments); returns its history."""
    check_epochs(epochs)
    for name, value in (("checkpoint_every", checkpoint_every), ("max_steps", max_steps)):
        # a float, 0 or a negative value would not fail: saves at odd steps (or never), a step beyond the limit
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"fit: {name} must be a positive int (steps) or None, got {value!r}")
    if checkpoint_every is not None and checkpoint is None:
        # without a file to write, checkpoint_every would silently save nothing
        raise ValueError("fit: checkpoint_every needs checkpoint= (the file the mid-epoch checkpoints go to)")
    if callback is not None and not callable(callback):
        # else a TypeError only once the first epoch is trained and evaluated
        raise TypeError(f"fit: callback must be a function of the epoch's history entry, got {type(callback).__name__}"
                        f" (Callback objects go to LocalTandemTrainer(callbacks=[...]))")
    for name, path, example in (("checkpoint", checkpoint, "last.pt"), ("best_checkpoint", best_checkpoint, "best.pt"),
                                ("metrics_path", metrics_path, "history.json")):
        if path is not None and Path(path).is_dir():
            # else an IsADirectoryError at the first save, after an epoch (or checkpoint_every steps) of training
            raise ValueError(f"fit: {name} must be a file path, got the directory {path} (e.g. {Path(path) / example})")
    if best_checkpoint is not None and val_loader is None:
        # the best epoch is chosen on validation: without it best.pt would silently never be written
        raise ValueError("fit: best_checkpoint needs a val_loader (the best epoch is chosen on validation); "
                         "pass val_loader=, or use checkpoint= alone to keep the last epoch")
    if best_checkpoint is not None and checkpoint is not None and Path(best_checkpoint).resolve() == Path(
            checkpoint).resolve():
        # the last epoch's save would overwrite the best one's, and load(best_checkpoint) give the last epoch
        raise ValueError(f"fit: checkpoint and best_checkpoint are the same file ({checkpoint}); give them "
                         f"different paths (e.g. run/last.pt and run/best.pt)")
    warn_if_nothing_to_train(trainer.epoch, epochs)
    dist = trainer.dist
    train_loader = dist.shard_loader(train_loader, train=True)
    progress = progress and dist.is_main
    start_schedule(trainer, epochs)
    trainer.callbacks.on_fit_start(trainer)
    first = trainer.epoch                # epochs before it in this call read the loader: see no_batch_error
    while trainer.epoch < epochs:
        skip, resume_rng = _begin_epoch(trainer, train_loader)
        t0 = time.perf_counter() - trainer._epoch_sums.get("seconds", 0.0)
        trainer.student.train()
        bar = _progress(train_loader, progress, desc=f"LTL {trainer.mode} epoch {trainer.epoch + 1}/{epochs}",
                        total=_len_or_none(train_loader))
        seen = 0
        for i, batch in enumerate(bar):
            x, y = unpack_batch(batch, "fit")
            seen += 1
            if i < skip:
                if i == skip - 1:
                    set_rng_state(resume_rng)
                    if max_steps is not None and trainer.step_in_epoch >= max_steps:
                        break            # resumed at the epoch's step limit: no step beyond it
                continue
            stats = trainer.train_step(x, y)
            trainer._check_finite(stats)
            _accumulate(trainer._epoch_sums, stats, len(y))
            trainer.step_in_epoch += 1
            trainer.global_step += 1
            trainer.callbacks.on_step_end(trainer, trainer.global_step, stats)
            if progress:
                bar.set_postfix(loss=f"{stats['loss']:.4f}", ce=f"{stats['ce']:.3f}")
            if checkpoint is not None and checkpoint_every and trainer.step_in_epoch % checkpoint_every == 0:
                trainer._epoch_sums["seconds"] = time.perf_counter() - t0
                trainer.save(checkpoint)
            if max_steps is not None and trainer.step_in_epoch >= max_steps:
                break
        if seen == 0:
            raise no_batch_error(trainer.epoch, trainer.epoch > first)
        trainer._epoch_sums["seconds"] = time.perf_counter() - t0
        if checkpoint is not None:       # the epoch's training is saved before anything can fail in evaluation
            trainer.save(checkpoint)
        entry = _end_epoch(trainer, time.perf_counter() - t0, val_loader, progress)
        if progress:
            _print_epoch(entry)
        # the epoch's files before the callbacks: one that raised used to leave trainer.best naming an epoch whose
        # best.pt was never written (and a last.pt that did not know the epoch was evaluated); best.pt before
        # last.pt, so that no last.pt on disk names a best epoch its best.pt does not hold
        if metrics_path is not None and dist.is_main:
            write_json(metrics_path, {"config": asdict(trainer.config), "history": trainer.history})
        if best_checkpoint is not None and trainer.best is not None and trainer.best["epoch"] == entry["epoch"]:
            trainer.save(best_checkpoint)
        if checkpoint is not None:
            trainer.save(checkpoint)
        if callback is not None:
            callback(entry)
        trainer.callbacks.on_epoch_end(trainer, entry)
    trainer.callbacks.on_fit_end(trainer, trainer.history)
    return trainer.history


def unpack_batch(batch, where: str) -> Tuple[Tensor, Tensor]:
    """A loader's batch as ``(inputs, labels)`` tensors. Why: a dict, a triple or numpy arrays would otherwise fail
    deep inside a step with an AttributeError or an unpacking error that does not say what the loader must yield."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        kind = f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise TypeError(f"{where}: the loader must yield (inputs, labels) pairs, got {kind} (a dict or a longer "
                        f"tuple: wrap the loader, e.g. ((b['image'], b['label']) for b in loader))")
    x, y = batch
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{where}: inputs and labels must be torch tensors, got {type(x).__name__} and "
                        f"{type(y).__name__} (numpy arrays: torch.from_numpy)")
    return x, y


def class_labels(y: Tensor) -> Tensor:
    """Labels as the int64 class indices ``[B]`` the cross-entropy takes. Why: int32 labels (numpy's default on some
    platforms) made the cross-entropy fail with a bare dtype error, and one-hot float labels ``[B, classes]`` trained
    silently as soft targets (offline LTL, BPTT) while evaluation refuses them."""
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {y.dtype} (one-hot [B, classes]: "
                        f"y.argmax(1); class indices held as floats: y.long())")
    if y.dim() != 1:
        raise ValueError(f"labels must be class indices of shape [B], got shape {tuple(y.shape)} (a column "
                         f"[B, 1]: y.squeeze(1))")
    return y.long()


def no_batch_error(epoch: int, after_batches: bool, what: str = "batch") -> ValueError:
    """The error of an epoch (0-based ``epoch``) whose loader yielded nothing. Why ``after_batches``: a one-shot
    iterator (a generator, ``iter(loader)``) yields its batches in the first epoch and nothing after; called an
    empty data set, that would send the user looking at the data instead of at the loader."""
    if after_batches:
        return ValueError(f"fit: the training loader yielded no {what} in epoch {epoch + 1}, after yielding some "
                          f"in the epoch before: a one-shot iterator or generator? Each epoch iterates the loader "
                          f"anew: pass a DataLoader or a list of batches")
    return ValueError(f"fit: the training loader yielded no {what} in epoch {epoch + 1} (an empty data set, or a "
                      f"batch size larger than the data with drop_last?)")


def check_epochs(epochs) -> None:
    """``epochs`` (the run's total, as both trainers count it) must be a non-negative int."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")


def warn_if_nothing_to_train(done: int, epochs: int, stacklevel: int = 4) -> None:
    """``epochs`` counts every epoch of the run (so that a resumed run continues where it stopped): a second
    ``fit(loader, epochs=1)`` on a trainer that has done one trains nothing, which must not pass in silence."""
    if epochs > 0 and done >= epochs:
        warnings.warn(f"fit: nothing to train: this trainer has done {done} epoch(s), and epochs={epochs} counts "
                      f"the run's epochs in total (a resumed run continues where it stopped); to train n more, pass "
                      f"epochs={done} + n", stacklevel=stacklevel)   # at the caller of the trainer's fit


def start_schedule(trainer, epochs: int) -> None:
    """Build the trainer's learning-rate scheduler once, for a run of ``epochs`` epochs (a resumed run keeps its
    own; a named cosine is re-timed when ``epochs`` moves the run's end, :func:`_retime_cosine`)."""
    if trainer.config.schedule == "none":
        return
    if trainer.scheduler is not None:
        if (trainer.config.schedule != "custom" and epochs != trainer.schedule_epochs and epochs > trainer.epoch
                and isinstance(trainer.scheduler, lr_scheduler.CosineAnnealingLR)):
            _retime_cosine(trainer, epochs)
        return
    if trainer.config.schedule == "custom":
        if trainer._schedule_factory is None:
            raise ValueError("this run was trained with a custom scheduler factory: pass schedule= (the same "
                             "factory) to LocalTandemTrainer.load to resume it")
        scheduler = trainer._schedule_factory(trainer.optimizer)
        if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            # its step() needs a metric, which the once-per-epoch step does not pass: refused here, before any
            # training, rather than with a bare TypeError once the first epoch is trained and evaluated
            raise TypeError("schedule: ReduceLROnPlateau steps on a metric, which the trainer's once-per-epoch "
                            "scheduler.step() does not pass; use a schedule that needs none (StepLR, ExponentialLR, "
                            "'cosine', 'step:E1,E2:gamma', ...)")
        if scheduler is not None and not (hasattr(scheduler, "step") and hasattr(scheduler, "state_dict")):
            # else an AttributeError once the first epoch is trained (step) or at the first save (state_dict)
            raise TypeError(f"schedule: the factory must return a learning-rate scheduler (torch.optim.lr_scheduler"
                            f".StepLR(opt, ...), say) or None, got {type(scheduler).__name__}")
        trainer.scheduler = scheduler
    else:
        factory = schedule_by_name(trainer.config.schedule, max(epochs, 1))
        # None for the other names of no schedule ("constant", "None", " none "), which the config accepts
        trainer.scheduler = None if factory is None else factory(trainer.optimizer)
    trainer.schedule_epochs = epochs


def _retime_cosine(trainer, epochs: int) -> None:
    """Anneal the named cosine over ``epochs`` from here on: a run extended by a later ``fit`` (or a resume with
    more epochs) would otherwise keep the first horizon, whose lr is 0 at its end, so the next epoch would train at
    lr = 0 and the ones after it on a rising lr. The lr becomes the closed form at the current epoch for the new
    horizon; CosineAnnealingLR's recursive step continues exactly from a lr on its curve."""
    sched = trainer.scheduler
    sched.T_max = epochs
    for group, base in zip(trainer.optimizer.param_groups, sched.base_lrs):
        group["lr"] = sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * sched.last_epoch / epochs)) / 2
    sched._last_lr = [group["lr"] for group in trainer.optimizer.param_groups]   # what get_last_lr() reports
    trainer.schedule_epochs = epochs


def check_finite(stats: Dict[str, float], *, epoch: int, step_in_epoch: int, global_step: int) -> None:
    """A NaN or infinite loss stops training, naming the layer(s) and the step (nothing is saved after it)."""
    bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
    if not bad:
        return
    names = [f"layer {k[len('local/'):]!r} local loss {v}" for k, v in bad.items() if k.startswith("local/")]
    if "ce" in bad:
        names.append(f"readout cross-entropy {bad['ce']}")
    names = names or [f"total loss {bad.get('loss')}"]
    raise FloatingPointError(
        f"non-finite loss at epoch {epoch + 1}, step {step_in_epoch + 1} (global step {global_step + 1}): "
        f"{'; '.join(names)}. The student's weights after this step are not saved; the last checkpoint written "
        f"stays as it was (lower the learning rate, or check the inputs)")


def _begin_epoch(trainer, loader) -> Tuple[int, Optional[Dict[str, Any]]]:
    """Fix the loader's order and the RNG state at the start of an epoch; on resume, rewind to them.

    A loader whose sampler has ``set_epoch`` (``ltl_ext.data``'s, ``DistributedSampler``) is told the epoch;
    otherwise the state of its ``generator`` at the start of the epoch is kept in the checkpoint. Returns how many
    batches of this epoch were already trained and the RNG state of the interruption: a mid-epoch resume replays
    the same order, skips those batches, then restores that state.
    """
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(trainer.epoch)
    gen = getattr(loader, "generator", None)
    if trainer._epoch_start is not None and trainer.step_in_epoch > 0:   # resuming in the middle of an epoch
        glob, loader_state = trainer._epoch_start
        resume_rng = rng_state()
        set_rng_state(glob)
        if gen is not None and loader_state is not None:
            gen.set_state(loader_state)
        return trainer.step_in_epoch, resume_rng
    trainer._epoch_start = (rng_state(), gen.get_state() if gen is not None else None)
    trainer._epoch_sums = {}
    trainer.step_in_epoch = 0
    return 0, None


def _accumulate(sums: Dict[str, float], stats: Dict[str, float], n: int) -> None:
    """Add a step's batch-mean losses weighted by its ``n`` samples: the epoch's figures are means over its samples,
    so a smaller last batch counts for its share, not as much as a full one."""
    sums["n"] = sums.get("n", 0) + n
    for k, v in stats.items():
        sums[k] = sums.get(k, 0.0) + v * n


def _end_epoch(trainer, seconds: float, val_loader, progress: bool) -> Dict[str, Any]:
    """The epoch's history entry (losses summed over the ranks), its validation, the best epoch, the schedule's
    step; the trainer's counters move on to the next epoch."""
    s = trainer.dist.all_sum({k: v for k, v in trainer._epoch_sums.items() if k != "seconds"})
    n = max(s.get("n", 0), 1)                # the losses are sums over samples (_accumulate)
    entry: Dict[str, Any] = {
        "epoch": trainer.epoch + 1, "seconds": seconds, "samples": int(s.get("n", 0)),
        "images_per_s": s.get("n", 0) / seconds if seconds > 0 else None,
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "loss": s.get("loss", 0.0) / n, "ce": s.get("ce", 0.0) / n, "local_loss": per_layer(s, n),
    }
    if val_loader is not None:
        report = trainer.evaluate(val_loader, progress=progress)
        entry.update(val_student_acc=report["student_acc"], val_teacher_acc=report["teacher_acc"],
                     val_firing_rate=report["firing_rate"], val_acc_per_step=report["acc_per_step"])
        if trainer.best is None or report["student_acc"] > trainer.best["val_student_acc"]:
            trainer.best = {"epoch": entry["epoch"], "val_student_acc": report["student_acc"]}
    if trainer.scheduler is not None:   # here, once per epoch: a resume from the pre-evaluation save replays it
        trainer.scheduler.step()
    trainer.history.append(entry)
    trainer.epoch += 1
    trainer.step_in_epoch = 0
    trainer._epoch_sums = {}
    trainer._epoch_start = None
    return entry
