"""``LocalTandemTrainer``: the face of the training floor (fit, evaluate, calibrate, save/load).

The trainer builds a run (teacher, student, pairing, optimiser, process group) and holds its state; the work is
done elsewhere: the step in :mod:`.engine`, the fit loop with its resume bookkeeping in :mod:`.fit`, evaluation in
:mod:`.evaluation`, on-chip calibration in :mod:`.calibration`, the checkpoint's content in :mod:`.state` (written
by :mod:`.checkpoint`). The trainer sees only ``ltl_ext.nn`` / ``ltl_ext.ltl`` (floor 5), never the kernels.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch
from torch import Tensor, nn

from ..data.loaders import check_seed
from ..distributed import Distributed
from ..ltl import tandem
from ..nn import SpikingModel
from ..nn.encoding import attach_time_average
from . import calibration, evaluation, fit as fit_loop, state
from .callbacks import Callback, CallbackList
from .checkpoint import save_checkpoint
from .schedules import SchedulerFactory
from .config import DEFAULT_LR, LTLConfig, autocast, default_device, default_percentile, default_warmup, place_student
from .engine import ltl_step
from .state import CKPT_KIND


class LocalTandemTrainer:
    """Train a spiking student from a trained ANN teacher with Local Tandem Learning.

    >>> trainer = LocalTandemTrainer(teacher, time_steps=16, mode="offline")
    >>> history = trainer.fit(train_loader, epochs=5, val_loader=val_loader, checkpoint="run/last.pt",
    ...                       best_checkpoint="run/best.pt")
    >>> report = trainer.evaluate(test_loader)         # the test set: once, at the end
    >>> trainer.save("run/ckpt.pt"); trainer = LocalTandemTrainer.load("run/ckpt.pt")

    ``student=None`` converts the teacher (``ltl_ext.convert``; ``init="teacher"`` copies its BN-folded weights
    and balances thresholds, ``"random"`` keeps only the structure). ``mode="online"`` with ``memory="constant"``
    runs the student one time step at a time with a backward per step: memory independent of ``time_steps``;
    otherwise online LTL runs in blocks of ``time_block`` steps (default 2, :data:`.config.TIME_BLOCK`): memory
    grows with the block, the gradient is the same (no gradient crosses time in online LTL), and warm-up blocks
    run without a graph. The constant-memory mode holds its normalised targets in float16 (rounded by at most
    2^-12; ``compact_targets=False`` keeps them in float32).

    Each step is layer-wise (:mod:`.engine`): a layer's local loss is back-propagated as soon as the layer has
    run, inside the student's forward, so only one layer's graph is alive at a time; one optimiser step per batch.

    The teacher passed in is used in place, not copied: it is moved to the device, put in eval mode and its
    parameters are frozen (``requires_grad=False``); with several processes rank 0's weights are copied into it.
    The hooks that read its activations are on only during each teacher forward; the one hook that stays is the
    time-average a sequence student (``encoding="none"``) puts in front of it, until :meth:`close`.

    Several processes (``torchrun --nproc_per_node N``; ``distributed=None`` detects it, ``True`` requires it,
    ``False`` ignores it, or pass a :class:`ltl_ext.distributed.Distributed`): the student trains in DDP (one
    gradient all-reduce per batch, also in the constant-memory mode), the teacher is rank 0's on every rank, each
    loader batch is split across the ranks (the loader's batch stays the global batch), metrics are reduced over
    the ranks, and only rank 0 shows progress, writes checkpoints and metrics. Call ``fit``, ``evaluate`` and
    ``save`` on every rank.
    """

    def __init__(self, teacher: nn.Module, student: Optional[nn.Module] = None, time_steps: int = 16,
                 mode: str = "offline", warmup: Optional[int] = None, percentile="auto", init: str = "random",
                 lr: float = DEFAULT_LR, memory: str = "batched", device=None, *, ce_weight: float = 1.0,
                 weight_decay: float = 0.0, encoding: str = "direct", calib_data=None,
                 seed: Optional[int] = None, teacher_spec: Optional[dict] = None, distributed=None,
                 schedule: Union[str, SchedulerFactory, None] = "none", grad_clip: Optional[float] = None,
                 precision: str = "32", callbacks: Optional[Iterable[Callback]] = None,
                 time_block: Optional[int] = None, compact_targets: bool = True):
        if warmup is None:                # the code's 12 of 16 steps, scaled to T
            warmup = default_warmup(time_steps)
        if isinstance(percentile, str) and percentile == "auto":      # the mode's default (train/config.py)
            percentile = default_percentile(mode)
        self._schedule_factory = schedule if callable(schedule) else None   # a factory is not saved: pass it again
        self.config = LTLConfig(time_steps=time_steps, mode=mode, warmup=warmup, percentile=percentile,
                                init=init, lr=float(lr), memory=memory, ce_weight=float(ce_weight),
                                weight_decay=float(weight_decay), encoding=encoding,
                                schedule="custom" if callable(schedule) else (schedule or "none"),
                                grad_clip=grad_clip, precision=precision, time_block=time_block,
                                compact_targets=compact_targets).check()
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module (a trained ANN), got {type(teacher).__name__}")
        if seed is not None:
            torch.manual_seed(check_seed(seed))   # (manual_seed(1.5) seeds with 1)
        self.dist = _join(distributed, device)
        _check_same_config(self.dist, self.config)
        self.device = self.dist.device
        teacher = self.dist.broadcast_module(teacher.to(self.device))   # rank 0's teacher on every rank
        self.teacher_spec = teacher_spec if teacher_spec is not None else getattr(teacher, "spec", None)
        self.student_converted = student is None
        if student is None:
            student = self._convert(teacher, init, calib_data)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self._teacher_hooks = []           # what this trainer installs on the caller's teacher; close() removes it
        self._closed = False               # close() ends the trainer's life: see _check_open
        if encoding == "none":             # sequences [T, B, ...]: the teacher sees their time-average
            self._teacher_hooks.append(attach_time_average(self.teacher))   # (one hook, shared by its trainers)
        if not isinstance(student, SpikingModel):
            student = SpikingModel(student, time_steps=time_steps, encoding=encoding)
        elif student.encoding != encoding:
            # the step, the teacher's view of sequences and the checkpoint's config follow ``encoding``: a student
            # encoding otherwise trained (poisson under "direct") or failed deep in a layer (sequences, "none")
            raise ValueError(f"the student SpikingModel encodes its input as {student.encoding!r} but "
                             f"encoding={encoding!r}: pass encoding={student.encoding!r} (or a bare student)")
        student.time_steps = time_steps          # the SpikingModel passes T on to its LIFs
        self.student = place_student(student, self.device,
                                     all_steps_at_once=self.config.block_steps() == self.config.time_steps)
        # several processes: per-batch percentiles of the global batch, so N processes train like one
        self.link = tandem.Tandem(self.teacher, self.student, percentile=percentile,
                                  percentile_fn=self.dist.percentile if self.dist.enabled else None)
        self.optimizer = self._make_optimizer(self.student.parameters(), self.config.lr)
        # float16 needs loss scaling (its gradients underflow); bfloat16 has float32's range and does not
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "16-mixed" else None
        self.scheduler = None            # built by the first fit (a cosine schedule needs the run's epochs)
        self.schedule_epochs: Optional[int] = None
        self.callbacks = CallbackList(callbacks)
        self.replica = self.dist.wrap(self.student)         # DDP with several processes, the student alone
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: List[Dict[str, Any]] = []
        self._epoch_sums: Dict[str, float] = {}
        self._epoch_start = None  # (global rng state, loader rng state) at the start of the current epoch
        self.best: Optional[Dict[str, Any]] = None   # {"epoch", "val_student_acc"}: the epoch best.pt holds
        self._num_classes: Optional[int] = None      # the teacher's output width, read on the first batch

    # ------------------------------------------------------------------------------------------ building
    def _convert(self, teacher, init, calib_data):
        from ..ltl.convert import convert
        if isinstance(calib_data, Tensor):
            calib_data = calib_data.to(self.device)
        p = self.config.percentile          # thresholds balanced at the percentile the targets use
        student = convert(teacher, init=init, calib_data=calib_data, mode=self.config.mode,
                          percentile=p if isinstance(p, (int, float)) else None)
        for p in student.parameters():        # the teacher may come frozen; its student learns
            p.requires_grad_(True)
        return student

    def _make_optimizer(self, params, lr):
        return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr,
                                weight_decay=self.config.weight_decay)

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def time_steps(self) -> int:
        return self.config.time_steps

    # ------------------------------------------------------------------------------------------ one step
    def train_step(self, x: Tensor, y: Tensor) -> Dict[str, float]:
        """One LTL step on a batch (all layers at once); returns the losses as floats."""
        self._check_open("train_step")
        y = fit_loop.class_labels(y)
        if not x.is_floating_point():      # else a bare dtype error deep in the first layer
            raise TypeError(f"inputs must be floating point, got {x.dtype} (8-bit images: x.float() / 255, the "
                            f"[0, 1] range ltl_ext.data's loaders yield)")
        # else a bare batch-size error in the cross-entropy, or none at all when encoding="none" is given [B, ...]
        # where B happens to equal T
        time_major = self.config.encoding == "none" and x.dim() > 1
        batch = x.shape[1] if time_major else x.shape[0]
        if y.shape[0] != batch:
            layout = "time-major [T, B, ...] (encoding='none')" if time_major else "[B, ...]"
            raise ValueError(f"{y.shape[0]} labels for a batch of {batch} inputs (shape {tuple(x.shape)}, read as "
                             f"{layout}): the inputs and labels of a batch must match")
        self._check_labels(x, y)
        return ltl_step(self.replica, self.link, self.optimizer, x.to(self.device), y.to(self.device),
                        self.config, scaler=self.scaler)

    # ------------------------------------------------------------------------------------------ fit
    def fit(self, train_loader: Iterable, epochs: int = 5, val_loader: Optional[Iterable] = None, *,
            checkpoint=None, checkpoint_every: Optional[int] = None, progress: bool = True,
            metrics_path=None, callback: Optional[Callable[[Dict[str, Any]], None]] = None,
            max_steps: Optional[int] = None, best_checkpoint=None) -> List[Dict[str, Any]]:
        """Train until ``epochs`` epochs are done in total (a resumed trainer continues where it stopped; a call
        whose ``epochs`` are done already trains nothing and warns: pass ``trainer.epoch + n`` for n more).

        ``val_loader``: a validation set (``make_loaders``' ``val``, never the test set), evaluated after every
        epoch; its figures go into the history as ``val_student_acc``, ``val_teacher_acc``, ``val_firing_rate``.
        ``checkpoint`` (the last state): written after every epoch's training, *before* its evaluation (an error
        there never costs the epoch), again after it, and every ``checkpoint_every`` steps, atomically;
        ``LocalTandemTrainer.load(path).fit(same loader, epochs)`` then gives the same result as an
        uninterrupted run (bit for bit on CPU). ``best_checkpoint``: written when an epoch beats every earlier one
        on validation student accuracy (``self.best`` says which); it needs ``val_loader``. ``metrics_path``: the
        history as JSON. ``max_steps``: at most this many steps per epoch. ``callback``: called with each epoch's entry
        once the epoch's files are written (as the callbacks' ``on_epoch_end``), so one that raises leaves them whole.
        Returns the history: one dict per epoch (losses, per-layer local losses, validation accuracies, seconds).

        Raises ``ValueError`` when the loader yields no batch or a label outside the model's classes, and
        ``FloatingPointError`` naming the layer and the step when a loss is NaN or infinite; the checkpoints
        written before stay as they were.
        """
        self._check_open("fit")
        return fit_loop.fit(self, train_loader, epochs, val_loader, checkpoint=checkpoint,
                            checkpoint_every=checkpoint_every, progress=progress, metrics_path=metrics_path,
                            callback=callback, max_steps=max_steps, best_checkpoint=best_checkpoint)

    def _check_finite(self, stats: Dict[str, float]) -> None:
        """A NaN or infinite loss stops training, naming the layer(s) and the step (:func:`.fit.check_finite`)."""
        fit_loop.check_finite(stats, epoch=self.epoch, step_in_epoch=self.step_in_epoch,
                              global_step=self.global_step)

    def _check_labels(self, x: Tensor, y: Tensor) -> None:
        """Labels must index the model's outputs (:func:`.evaluation.check_labels`)."""
        self._num_classes = evaluation.check_teacher_labels(self.teacher, x[:1].to(self.device), y, self._num_classes)

    # ------------------------------------------------------------------------------------------ evaluate
    def local_losses(self, loader: Iterable, max_batches: Optional[int] = None) -> Dict[str, Any]:
        """The LTL losses on ``loader`` without training: ``{"loss", "ce", "local_loss": {layer: loss}}``, each
        a mean over samples (online constant-memory runs are measured in the equal batched online form); an empty
        loader raises ``ValueError``."""
        self._check_open("local_losses")
        return evaluation.local_losses(self.student, self.link, loader, self.config, device=self.device,
                                       max_batches=max_batches)

    def _as_spiking(self, model: nn.Module) -> SpikingModel:
        """A model given to ``evaluate``/``calibrate`` (a chip programmed from a bare student, say) runs over this
        trainer's T and encoding; its own parameters are used (and trained) in place."""
        if not isinstance(model, SpikingModel):
            model = SpikingModel(model, time_steps=self.config.time_steps, encoding=self.config.encoding)
        return model.to(self.device)

    @torch.no_grad()
    def evaluate(self, loader: Iterable, model: Optional[nn.Module] = None, *, progress: bool = False,
                 max_batches: Optional[int] = None) -> Dict[str, Any]:
        """Accuracy of the student (or of ``model``, e.g. a noisy chip) and of the teacher on ``loader``.

        Returns ``student_acc``, ``teacher_acc`` (in %), ``acc_per_step`` (accuracy of the running mean of the
        readout up to each time step), ``firing_rate`` (spikes per neuron per step, per LIF layer),
        ``spikes_per_sample`` and ``samples``.
        """
        self._check_open("evaluate")
        model = self.student if model is None else self._as_spiking(model)
        with autocast(self.config.precision, self.device):      # evaluated as it was trained
            # a rank's share of a small set may be empty (fewer samples than ranks): only the whole may not be
            report = evaluation.evaluate_spiking(
                model, self._labels_checked(self.dist.shard_loader(loader, train=False)), teacher=self.teacher,
                device=self.device, progress=progress and self.dist.is_main, max_batches=max_batches,
                allow_empty=self.dist.enabled)
        report = self.dist.weighted_mean(report, weight=report["samples"])   # this rank's share -> all of it
        if report["samples"] == 0:
            raise ValueError("the evaluation loader yields no sample")
        return report

    def _labels_checked(self, loader: Iterable) -> Iterable:
        for x, y in loader:
            self._check_labels(x, y)
            yield x, y

    # ------------------------------------------------------------------------------------------ calibrate
    def calibrate(self, model: nn.Module, loader: Iterable, steps: int = 300, mode: str = "online",
                  lr: Optional[float] = None, train_thresholds: bool = False, *, memory: str = "batched",
                  warmup: Optional[int] = None, progress: bool = False) -> Dict[str, Any]:
        """Train ``model`` (a copy of the student on a noisy chip, say) with LTL against this trainer's teacher.

        Only ``model``'s own trainable weights learn (for a chip: the programmed weights behind its
        parametrizations, noise fixed); LIF thresholds too if ``train_thresholds``; other LIF parameters stay.
        Runs ``steps`` batches (cycling ``loader``) with a fresh Adam (``lr`` defaults to the trainer's). Targets
        are normalised as in training (running scales continue from the trainer's, which stay as they are).
        Returns ``{"steps", "loss", "ce", "local_loss"}`` averaged over the last 10 % of the steps.
        """
        self._check_open("calibrate")
        return calibration.calibrate(self.teacher, self._as_spiking(model), loader, self.config, steps=steps,
                                     mode=mode, lr=lr, train_thresholds=train_thresholds, memory=memory,
                                     warmup=warmup, device=self.device, normaliser=self.link.normaliser,
                                     progress=progress)

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """Everything a run needs to continue (:func:`.state.trainer_state`)."""
        return state.trainer_state(self)

    def save(self, path) -> Path:
        """Write a checkpoint atomically: models, optimiser, epoch/step, history, config, RNG states.
        With several processes rank 0 writes it and every rank returns once it is written."""
        sums = self._epoch_sums
        if self.dist.enabled:
            # the epoch's partial loss sums are each rank's own: rank 0's alone, restored on every rank and summed
            # over the ranks at the epoch's end, counted N times (a mid-epoch resume logged another loss). Summed
            # here on every rank (a collective); restored on rank 0 only (state.load_trainer)
            sums = {**self.dist.all_sum({k: v for k, v in sums.items() if k != "seconds"}),
                    **{k: v for k, v in sums.items() if k == "seconds"}}
        if self.dist.is_main:
            state_ = self.state_dict()
            state_["epoch_sums"] = sums
            save_checkpoint(state_, path, kind=CKPT_KIND)
        self.dist.barrier("saving a checkpoint")
        return Path(path)

    def close(self) -> None:
        """End the trainer: take its hooks off the teacher (``encoding="none"`` keeps one on it that shows the
        teacher the time-average of a sequence) and leave the process group, if this trainer joined one. Call it
        after the last ``fit`` / ``evaluate`` / ``calibrate``, which refuse a closed trainer (to go on later: ``save``
        before closing, then ``LocalTandemTrainer.load``). ``with LocalTandemTrainer(...) as trainer:`` calls it at
        the end of the block; a second call does nothing."""
        self._closed = True
        self.link.close()
        for handle in self._teacher_hooks:
            handle.remove()
        self._teacher_hooks = []
        self.dist.close()

    def _check_open(self, what: str) -> None:
        """Refuse work after :meth:`close`. Why: close took the teacher's hooks off and left the process group, so
        a time-major run (``encoding="none"``) failed deep in the teacher's first layer, and a run of several
        processes at its first collective."""
        if self._closed:
            raise ValueError(f"{what}: this LocalTandemTrainer is closed (close() or the end of its with block): "
                             f"call {what} before closing it, or go on with a new trainer "
                             f"(trainer.save(path) before close(), then LocalTandemTrainer.load(path))")

    def __enter__(self) -> "LocalTandemTrainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def load(cls, path, teacher: Optional[nn.Module] = None, student: Optional[nn.Module] = None,
             device=None, restore_rng: bool = True, distributed=None,
             schedule: Optional[SchedulerFactory] = None,
             callbacks: Optional[Iterable[Callback]] = None) -> "LocalTandemTrainer":
        """Rebuild a trainer from a checkpoint (safe ``weights_only`` load), ready to ``fit`` on.

        Models built from the zoo (or converted from such a teacher) are rebuilt from the checkpoint's config;
        a user-built teacher (or student) must be passed again, and so must a custom scheduler factory (named
        schedules are rebuilt; the scheduler's state is restored with the optimiser's). Mismatches raise
        :class:`CheckpointError`.
        """
        return state.load_trainer(cls, path, teacher, student, device=device, restore_rng=restore_rng,
                                  distributed=distributed, schedule=schedule, callbacks=callbacks)


def _check_same_config(dist: Distributed, config: LTLConfig) -> None:
    """Several processes: every rank must run the same LTL config. Why: ranks launched with different settings
    (another T, mode or learning rate) would average gradients of different runs, or hang at a collective one
    rank does not make. Every rank gets the same error, naming the settings and each rank's value."""
    if not dist.enabled:
        return
    mine = {k: repr(v) for k, v in asdict(config).items()}
    ranks = dist.gather_object(mine)
    differ = {k: [r[k] for r in ranks] for k in mine if any(r.get(k) != ranks[0][k] for r in ranks)}
    if differ:
        listing = "; ".join(f"{k}: {', '.join(f'rank {i} {v}' for i, v in enumerate(vals))}"
                            for k, vals in differ.items())
        raise ValueError(f"the {dist.world_size} processes were given different training settings ({listing}); "
                         f"launch every rank with the same arguments")


def _join(distributed, device) -> Distributed:
    """The trainer's view of the job: ``None`` joins torchrun's job if launched by it, ``True`` requires it."""
    if isinstance(distributed, Distributed):
        return distributed
    if distributed is False:
        return Distributed.single(default_device(device))
    if distributed is None or distributed is True:
        return Distributed.setup(device, required=distributed is True)
    raise ValueError(f"distributed must be None, True, False or a Distributed, got {distributed!r}")
