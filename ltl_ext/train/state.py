"""A trainer's checkpoint: what :class:`~ltl_ext.train.trainer.LocalTandemTrainer` saves, and the trainer rebuilt
from it.

:func:`trainer_state` is everything a run needs to continue: config, both models, optimiser, scheduler and loss
scaler, the pairing's running state, the counters and history of :mod:`.fit` (including the RNG and loader state at
the start of the current epoch) and the global RNG state. :func:`load_trainer` builds a fresh trainer from the
checkpoint's config and loads all of it back; the file itself is written and read by :mod:`.checkpoint` (atomic,
``weights_only``, a ``kind`` tag).
"""
from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any, Dict, Iterable, Optional

from torch import nn

from .callbacks import Callback
from .checkpoint import CheckpointError, load_checkpoint, rng_state, set_rng_state
from .config import LTLConfig
from .fit import start_schedule
from .schedules import SchedulerFactory
from .teacher import _build_from_spec, _load_module

#: the ``kind`` of a trainer's checkpoint files
CKPT_KIND = "ltl_trainer"

#: the constructor arguments a checkpoint's config gives back to the trainer
_CONFIG_KWARGS = ("time_steps", "mode", "warmup", "percentile", "lr", "memory", "ce_weight", "weight_decay",
                  "encoding", "grad_clip", "precision", "time_block", "compact_targets")


def trainer_state(trainer) -> Dict[str, Any]:
    """The trainer's whole state as a ``weights_only``-safe dict (see the module docstring)."""
    gen_state = None
    if trainer._epoch_start is not None:
        gen_state = {"rng": trainer._epoch_start[0], "loader": trainer._epoch_start[1]}
    return {
        "config": asdict(trainer.config),
        "teacher_spec": trainer.teacher_spec,
        "student_converted": trainer.student_converted,
        "teacher": trainer.teacher.state_dict(),
        "student": trainer.student.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "link": trainer.link.state_dict(),
        "epoch": trainer.epoch, "step_in_epoch": trainer.step_in_epoch, "global_step": trainer.global_step,
        "history": copy.deepcopy(trainer.history), "epoch_sums": dict(trainer._epoch_sums),
        "epoch_start": gen_state, "rng": rng_state(), "best": trainer.best,
        "scheduler": None if trainer.scheduler is None else trainer.scheduler.state_dict(),
        "scaler": None if trainer.scaler is None else trainer.scaler.state_dict(),
        "schedule_epochs": trainer.schedule_epochs,
    }


def load_trainer(cls, path, teacher: Optional[nn.Module] = None, student: Optional[nn.Module] = None, *,
                 device=None, restore_rng: bool = True, distributed=None,
                 schedule: Optional[SchedulerFactory] = None, callbacks: Optional[Iterable[Callback]] = None):
    """A ``cls`` (the trainer class) rebuilt from the checkpoint at ``path``; ``LocalTandemTrainer.load`` documents
    the arguments. Every way the checkpoint can fail to fit raises :class:`CheckpointError`."""
    state = load_checkpoint(path, kind=CKPT_KIND)
    named = state["config"].get("schedule") if isinstance(state.get("config"), dict) else None
    if schedule is not None and named not in (None, "custom"):
        # a resumed run keeps its own schedule: a factory passed for another one would be silently ignored
        raise ValueError(f"{path}: this run uses the named schedule {named!r}, which is rebuilt from the checkpoint; "
                         f"schedule= is only for runs trained with a custom scheduler factory")
    try:
        config = LTLConfig(**state["config"]).check()
        if teacher is None:
            teacher = _build_from_spec(state.get("teacher_spec"), path)
        if student is None and not state["student_converted"]:
            raise CheckpointError(f"{path}: the student was user-built; pass student= to load it")
        trainer = cls(teacher, student, device=device, teacher_spec=state.get("teacher_spec"),
                      distributed=distributed,
                      **{k: v for k, v in asdict(config).items() if k in _CONFIG_KWARGS},
                      schedule=schedule if config.schedule == "custom" else config.schedule,
                      callbacks=callbacks, init="random")
        trainer.config = config
        trainer.student_converted = state["student_converted"]
        _load_module(trainer.teacher, state["teacher"], "teacher", path)
        built = [id(p) for p in trainer.student.parameters()]
        _load_module(trainer.student, state["student"], "student", path)
        if [id(p) for p in trainer.student.parameters()] != built:
            # a learnable LIF value of another shape (per-neuron into a scalar module) loads as a new Parameter,
            # which the optimiser (and DDP) built with the trainer do not hold: it would silently never train again
            trainer.optimizer = trainer._make_optimizer(trainer.student.parameters(), config.lr)
            trainer.replica = trainer.dist.wrap(trainer.student)
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.link.load_state_dict(state.get("link") or {})
        trainer.epoch, trainer.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        trainer.global_step = int(state["global_step"])
        trainer.history = list(state["history"])
        trainer._epoch_sums = dict(state["epoch_sums"])
        if not trainer.dist.is_main:   # the sums over all ranks (trainer.save): rank 0 holds them, the others 0
            trainer._epoch_sums = {k: (v if k == "seconds" else 0.0) for k, v in trainer._epoch_sums.items()}
        es = state.get("epoch_start")
        trainer._epoch_start = None if es is None else (es["rng"], es["loader"])
        trainer.best = state.get("best")
        if trainer.scaler is not None and state.get("scaler") is not None:
            trainer.scaler.load_state_dict(state["scaler"])
        if state.get("scheduler") is not None:
            start_schedule(trainer, int(state["schedule_epochs"]))
            trainer.scheduler.load_state_dict(state["scheduler"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: checkpoint does not match this version of ltl_ext or these "
                              f"models ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if restore_rng:
        set_rng_state(state["rng"])
    return trainer
