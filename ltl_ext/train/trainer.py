"""``LocalTandemTrainer``: the face of the training floor (fit, evaluate, calibrate, save/load).

The step itself lives in :mod:`.engine`, evaluation in :mod:`.evaluation`, checkpoint I/O in :mod:`.checkpoint`.
The trainer sees only ``ltl_ext.nn`` / ``ltl_ext.ltl`` (floor 5), never the kernels.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch
from torch import Tensor, nn

from ..distributed import Distributed
from ..ltl import tandem
from ..nn import SpikingModel
from ..nn.layers import time_average
from .calibration import _calibration_params, _cycle
from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state, write_json
from .callbacks import Callback, CallbackList
from .schedules import SchedulerFactory, schedule as schedule_by_name
from .config import DEFAULT_LR, LTLConfig, autocast, default_device, default_percentile, default_warmup
from .engine import ltl_losses, ltl_step
from .evaluation import evaluate_spiking
from .progress import _len_or_none, _print_epoch, _progress
from .teacher import _build_from_spec, _load_module

CKPT_KIND = "ltl_trainer"


# ============================================================================================= the trainer
class LocalTandemTrainer:
    """Train a spiking student from a trained ANN teacher with Local Tandem Learning.

    >>> trainer = LocalTandemTrainer(teacher, time_steps=16, mode="offline")
    >>> history = trainer.fit(train_loader, epochs=5, val_loader=val_loader, checkpoint="run/last.pt",
    ...                       best_checkpoint="run/best.pt")
    >>> report = trainer.evaluate(test_loader)         # the test set: once, at the end
    >>> trainer.save("run/ckpt.pt"); trainer = LocalTandemTrainer.load("run/ckpt.pt")

    ``student=None`` converts the teacher (``ltl_ext.convert``; ``init="teacher"`` copies its BN-folded weights
    and balances thresholds, ``"random"`` keeps only the structure). ``mode="online"`` with ``memory="constant"``
    runs the student one time step at a time with a backward per step: memory independent of ``time_steps``.

    Each step is layer-wise (:mod:`.engine`): a layer's local loss is back-propagated as soon as the layer has
    run, inside the student's forward, so only one layer's graph is alive at a time; one optimiser step per batch.

    The teacher passed in is used in place, not copied: it is moved to the device, put in eval mode and its
    parameters are frozen (``requires_grad=False``); with several processes rank 0's weights are copied into it.
    No hook stays on it: the hooks that read its activations are on only during each teacher forward.

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
                 precision: str = "32", callbacks: Optional[Iterable[Callback]] = None):
        if warmup is None:                # the code's 12 of 16 steps, scaled to T
            warmup = default_warmup(time_steps)
        if isinstance(percentile, str) and percentile == "auto":      # the mode's default (train/config.py)
            percentile = default_percentile(mode)
        self._schedule_factory = schedule if callable(schedule) else None   # a factory is not saved: pass it again
        self.config = LTLConfig(time_steps=time_steps, mode=mode, warmup=warmup, percentile=percentile,
                                init=init, lr=float(lr), memory=memory, ce_weight=float(ce_weight),
                                weight_decay=float(weight_decay), encoding=encoding,
                                schedule="custom" if callable(schedule) else (schedule or "none"),
                                grad_clip=grad_clip, precision=precision).check()
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module (a trained ANN), got {type(teacher).__name__}")
        if seed is not None:
            torch.manual_seed(seed)
        self.dist = _join(distributed, device)
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
        if encoding == "none":             # sequences [T, B, ...]: the teacher sees their time-average
            self._teacher_hooks.append(self.teacher.register_forward_pre_hook(time_average))
        if not isinstance(student, SpikingModel):
            student = SpikingModel(student, time_steps=time_steps, encoding=encoding)
        student.time_steps = time_steps          # the SpikingModel passes T on to its LIFs
        self.student = student.to(self.device)
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
        self._check_labels(x, y)
        return ltl_step(self.replica, self.link, self.optimizer, x.to(self.device), y.to(self.device),
                        self.config, scaler=self.scaler)

    # ------------------------------------------------------------------------------------------ fit
    def fit(self, train_loader: Iterable, epochs: int = 5, val_loader: Optional[Iterable] = None, *,
            checkpoint=None, checkpoint_every: Optional[int] = None, progress: bool = True,
            metrics_path=None, callback: Optional[Callable[[Dict[str, Any]], None]] = None,
            max_steps: Optional[int] = None, best_checkpoint=None) -> List[Dict[str, Any]]:
        """Train until ``epochs`` epochs are done in total (a resumed trainer continues where it stopped).

        ``val_loader``: a validation set (``make_loaders``' ``val``, never the test set), evaluated after every
        epoch; its figures go into the history as ``val_student_acc``, ``val_teacher_acc``, ``val_firing_rate``.
        ``checkpoint`` (the last state): written after every epoch's training, *before* its evaluation (an error
        there never costs the epoch), again after it, and every ``checkpoint_every`` steps, atomically;
        ``LocalTandemTrainer.load(path).fit(same loader, epochs)`` then gives the same result as an
        uninterrupted run (bit for bit on CPU). ``best_checkpoint``: written when an epoch beats every earlier one
        on validation student accuracy (``self.best`` says which). ``metrics_path``: the history as JSON.
        Returns the history: one dict per epoch (losses, per-layer local losses, validation accuracies, seconds).

        Raises ``ValueError`` when the loader yields no batch or a label outside the model's classes, and
        ``FloatingPointError`` naming the layer and the step when a loss is NaN or infinite; the checkpoints
        written before stay as they were.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
        train_loader = self.dist.shard_loader(train_loader, train=True)
        progress = progress and self.dist.is_main
        self._start_schedule(epochs)
        self.callbacks.on_fit_start(self)
        while self.epoch < epochs:
            skip = self._begin_epoch(train_loader)
            t0 = time.perf_counter() - self._epoch_sums.get("seconds", 0.0)
            self.student.train()
            bar = _progress(train_loader, progress, desc=f"LTL {self.mode} epoch {self.epoch + 1}/{epochs}",
                            total=_len_or_none(train_loader))
            seen = 0
            for i, (x, y) in enumerate(bar):
                seen += 1
                if i < skip:
                    if i == skip - 1:
                        set_rng_state(self._resume_rng)
                    continue
                stats = self.train_step(x, y)
                self._check_finite(stats)
                self._accumulate(stats, len(y))
                self.step_in_epoch += 1
                self.global_step += 1
                self.callbacks.on_step_end(self, self.global_step, stats)
                if progress:
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", ce=f"{stats['ce']:.3f}")
                if checkpoint is not None and checkpoint_every and self.step_in_epoch % checkpoint_every == 0:
                    self._epoch_sums["seconds"] = time.perf_counter() - t0
                    self.save(checkpoint)
                if max_steps is not None and self.step_in_epoch >= max_steps:
                    break
            if seen == 0:
                raise ValueError(f"fit: the training loader yielded no batch in epoch {self.epoch + 1} (an empty "
                                 f"data set, or a batch size larger than the data with drop_last?)")
            self._epoch_sums["seconds"] = time.perf_counter() - t0
            if checkpoint is not None:       # the epoch's training is saved before anything can fail in evaluation
                self.save(checkpoint)
            entry = self._end_epoch(time.perf_counter() - t0, val_loader, progress)
            if progress:
                _print_epoch(entry)
            if callback is not None:
                callback(entry)
            self.callbacks.on_epoch_end(self, entry)
            if metrics_path is not None and self.dist.is_main:
                write_json(metrics_path, {"config": asdict(self.config), "history": self.history})
            if checkpoint is not None:
                self.save(checkpoint)
            if best_checkpoint is not None and self.best is not None and self.best["epoch"] == entry["epoch"]:
                self.save(best_checkpoint)
        self.callbacks.on_fit_end(self, self.history)
        return self.history

    def _start_schedule(self, epochs: int) -> None:
        """Build the learning-rate scheduler once, for a run of ``epochs`` epochs (a resumed run keeps its own)."""
        if self.scheduler is not None or self.config.schedule == "none":
            return
        if self.config.schedule == "custom":
            if self._schedule_factory is None:
                raise ValueError("this run was trained with a custom scheduler factory: pass schedule= (the same "
                                 "factory) to LocalTandemTrainer.load to resume it")
            self.scheduler = self._schedule_factory(self.optimizer)
        else:
            self.scheduler = schedule_by_name(self.config.schedule, max(epochs, 1))(self.optimizer)
        self.schedule_epochs = epochs

    def _check_finite(self, stats: Dict[str, float]) -> None:
        """A NaN or infinite loss stops training, naming the layer(s) and the step (nothing is saved after it)."""
        bad = {k: v for k, v in stats.items() if not math.isfinite(v)}
        if not bad:
            return
        names = [f"layer {k[len('local/'):]!r} local loss {v}" for k, v in bad.items() if k.startswith("local/")]
        if "ce" in bad:
            names.append(f"readout cross-entropy {bad['ce']}")
        names = names or [f"total loss {bad.get('loss')}"]
        raise FloatingPointError(
            f"non-finite loss at epoch {self.epoch + 1}, step {self.step_in_epoch + 1} (global step "
            f"{self.global_step + 1}): {'; '.join(names)}. The student's weights after this step are not saved; "
            f"the last checkpoint written stays as it was (lower the learning rate, or check the inputs)")

    def _check_labels(self, x: Tensor, y: Tensor) -> None:
        """Labels must index the model's outputs: a ``ValueError`` names those that do not (cross-entropy would
        fail obscurely on the CPU and with a device assert on CUDA; accuracy would just count them wrong)."""
        if self._num_classes is None:     # the teacher's output width, from one sample (no hooks are disturbed:
            with torch.no_grad():         # the next step's teacher forward overwrites what they captured)
                self._num_classes = int(self.teacher(x[:1].to(self.device)).shape[-1])
        c = self._num_classes
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= c):
            bad = sorted(set(y[(y < 0) | (y >= c)].tolist()))
            raise ValueError(f"labels {bad[:10]}{' ...' if len(bad) > 10 else ''} lie outside the model's {c} "
                             f"classes [0, {c - 1}]: the data and the model do not match")

    def _begin_epoch(self, loader) -> int:
        """Fix the loader's order and the RNG state at the start of an epoch; on resume, rewind to them.

        A loader whose sampler has ``set_epoch`` (``ltl_ext.data``'s, ``DistributedSampler``) is told the epoch;
        otherwise the state of its ``generator`` at the start of the epoch is kept in the checkpoint. Returns
        how many batches of this epoch were already trained: a mid-epoch resume replays the same order, skips
        them, then restores the RNG state of the interruption.
        """
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        gen = getattr(loader, "generator", None)
        if self._epoch_start is not None and self.step_in_epoch > 0:   # resuming in the middle of an epoch
            glob, loader_state = self._epoch_start
            self._resume_rng = rng_state()
            set_rng_state(glob)
            if gen is not None and loader_state is not None:
                gen.set_state(loader_state)
            return self.step_in_epoch
        self._epoch_start = (rng_state(), gen.get_state() if gen is not None else None)
        self._epoch_sums = {}
        self.step_in_epoch = 0
        return 0

    def _accumulate(self, stats: Dict[str, float], n: int):
        s = self._epoch_sums
        s["n"] = s.get("n", 0) + n
        s["batches"] = s.get("batches", 0) + 1
        for k, v in stats.items():
            s[k] = s.get(k, 0.0) + v

    def _end_epoch(self, seconds: float, val_loader, progress: bool) -> Dict[str, Any]:
        s = self.dist.all_sum({k: v for k, v in self._epoch_sums.items() if k != "seconds"})  # over the ranks
        b = max(s.get("batches", 0), 1)
        entry: Dict[str, Any] = {
            "epoch": self.epoch + 1, "seconds": seconds, "samples": int(s.get("n", 0)),
            "images_per_s": s.get("n", 0) / seconds if seconds > 0 else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "loss": s.get("loss", 0.0) / b, "ce": s.get("ce", 0.0) / b,
            "local_loss": {k[len("local/"):]: v / b for k, v in s.items() if k.startswith("local/")},
        }
        if val_loader is not None:
            report = self.evaluate(val_loader, progress=progress)
            entry.update(val_student_acc=report["student_acc"], val_teacher_acc=report["teacher_acc"],
                         val_firing_rate=report["firing_rate"], val_acc_per_step=report["acc_per_step"])
            if self.best is None or report["student_acc"] > self.best["val_student_acc"]:
                self.best = {"epoch": entry["epoch"], "val_student_acc": report["student_acc"]}
        if self.scheduler is not None:   # here, once per epoch: a resume from the pre-evaluation save replays it
            self.scheduler.step()
        self.history.append(entry)
        self.epoch += 1
        self.step_in_epoch = 0
        self._epoch_sums = {}
        self._epoch_start = None
        return entry

    @torch.no_grad()
    def local_losses(self, loader: Iterable, max_batches: Optional[int] = None) -> Dict[str, Any]:
        """The LTL losses on ``loader`` without training: ``{"loss", "ce", "local_loss": {layer: loss}}``, each
        averaged over batches (online constant-memory runs are measured in the equal batched online form)."""
        config = self.config
        if config.memory == "constant":
            config = LTLConfig(**dict(asdict(config), memory="batched"))
        sums, b = {}, 0
        was_training = self.student.training
        self.student.eval()
        try:
            for i, (x, y) in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                for k, v in ltl_losses(self.student, self.link, x.to(self.device), y.to(self.device),
                                       config).items():
                    sums[k] = sums.get(k, 0.0) + v
                b += 1
        finally:
            self.student.train(was_training)
        b = max(b, 1)
        return {"loss": sums.get("loss", 0.0) / b, "ce": sums.get("ce", 0.0) / b,
                "local_loss": {k[len("local/"):]: v / b for k, v in sums.items() if k.startswith("local/")}}

    # ------------------------------------------------------------------------------------------ evaluate
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
        model = self.student if model is None else self._as_spiking(model)
        with autocast(self.config.precision, self.device):      # evaluated as it was trained
            report = evaluate_spiking(model, self._labels_checked(self.dist.shard_loader(loader, train=False)),
                                      teacher=self.teacher, device=self.device,
                                      progress=progress and self.dist.is_main, max_batches=max_batches)
        return self.dist.weighted_mean(report, weight=report["samples"])   # this rank's share -> all of it

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
        Runs ``steps`` batches (cycling ``loader``) with a fresh Adam (``lr`` defaults to the trainer's).
        Returns ``{"steps", "loss", "ce", "local_loss"}`` averaged over the last 10 % of the steps.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        model = self._as_spiking(model)
        T = model.time_steps
        if warmup is None:
            warmup = self.config.warmup if self.config.warmup < T else default_warmup(T)
        config = LTLConfig(**dict(asdict(self.config), mode=mode, memory=memory, time_steps=T, warmup=warmup,
                                  lr=float(lr if lr is not None else self.config.lr))).check()
        params, toggled = _calibration_params(model, train_thresholds)
        if not params:
            raise ValueError("calibrate: the model has no trainable parameter")
        for p in toggled:
            p.requires_grad_(not p.requires_grad)
        opt = torch.optim.Adam(params, lr=config.lr)
        link = tandem.Tandem(self.teacher, model, percentile=config.percentile)
        was_training = model.training
        model.train()
        tail, sums = max(1, steps // 10), {}
        try:
            it = _cycle(loader)
            for i in _progress(range(steps), progress, desc="calibrate"):
                x, y = next(it)
                stats = ltl_step(model, link, opt, x.to(self.device), y.to(self.device), config)
                if i >= steps - tail:
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v / tail
        finally:
            link.close()
            for p in toggled:
                p.requires_grad_(not p.requires_grad)
            model.train(was_training)
        return {"steps": steps, "loss": sums.get("loss"), "ce": sums.get("ce"),
                "local_loss": {k[len("local/"):]: v for k, v in sums.items() if k.startswith("local/")}}

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        gen_state = None
        if self._epoch_start is not None:
            gen_state = {"rng": self._epoch_start[0], "loader": self._epoch_start[1]}
        return {
            "config": asdict(self.config),
            "teacher_spec": self.teacher_spec,
            "student_converted": self.student_converted,
            "teacher": self.teacher.state_dict(),
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "link": self.link.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "history": copy.deepcopy(self.history), "epoch_sums": dict(self._epoch_sums),
            "epoch_start": gen_state, "rng": rng_state(), "best": self.best,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "schedule_epochs": self.schedule_epochs,
        }

    def save(self, path) -> Path:
        """Write a checkpoint atomically: models, optimiser, epoch/step, history, config, RNG states.
        With several processes rank 0 writes it and every rank returns once it is written."""
        if self.dist.is_main:
            save_checkpoint(self.state_dict(), path, kind=CKPT_KIND)
        self.dist.barrier("saving a checkpoint")
        return Path(path)

    def close(self) -> None:
        """Take any hook off the teacher (the trainer leaves none between teacher forwards) and leave the process
        group, if this trainer joined one (after the last ``fit`` / ``evaluate``). ``with LocalTandemTrainer(...)
        as trainer:`` calls it at the end of the block."""
        self.link.close()
        for handle in self._teacher_hooks:
            handle.remove()
        self._teacher_hooks = []
        self.dist.close()

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
        state = load_checkpoint(path, kind=CKPT_KIND)
        try:
            config = LTLConfig(**state["config"]).check()
            if teacher is None:
                teacher = _build_from_spec(state.get("teacher_spec"), path)
            if student is None and not state["student_converted"]:
                raise CheckpointError(f"{path}: the student was user-built; pass student= to load it")
            trainer = cls(teacher, student, device=device, teacher_spec=state.get("teacher_spec"),
                          distributed=distributed,
                          **{k: v for k, v in asdict(config).items()
                             if k in ("time_steps", "mode", "warmup", "percentile", "lr", "memory",
                                      "ce_weight", "weight_decay", "encoding", "grad_clip", "precision")},
                          schedule=schedule if config.schedule == "custom" else config.schedule,
                          callbacks=callbacks, init="random")
            trainer.config = config
            trainer.student_converted = state["student_converted"]
            _load_module(trainer.teacher, state["teacher"], "teacher", path)
            _load_module(trainer.student, state["student"], "student", path)
            trainer.optimizer.load_state_dict(state["optimizer"])
            trainer.link.load_state_dict(state.get("link") or {})
            trainer.epoch, trainer.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
            trainer.global_step = int(state["global_step"])
            trainer.history = list(state["history"])
            trainer._epoch_sums = dict(state["epoch_sums"])
            es = state.get("epoch_start")
            trainer._epoch_start = None if es is None else (es["rng"], es["loader"])
            trainer.best = state.get("best")
            if trainer.scaler is not None and state.get("scaler") is not None:
                trainer.scaler.load_state_dict(state["scaler"])
            if state.get("scheduler") is not None:
                trainer._start_schedule(int(state["schedule_epochs"]))
                trainer.scheduler.load_state_dict(state["scheduler"])
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: checkpoint does not match this version of ltl_ext or these "
                                  f"models ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        if restore_rng:
            set_rng_state(state["rng"])
        return trainer



def _join(distributed, device) -> Distributed:
    """The trainer's view of the job: ``None`` joins torchrun's job if launched by it, ``True`` requires it."""
    if isinstance(distributed, Distributed):
        return distributed
    if distributed is False:
        return Distributed.single(default_device(device))
    if distributed is None or distributed is True:
        return Distributed.setup(device, required=distributed is True)
    raise ValueError(f"distributed must be None, True, False or a Distributed, got {distributed!r}")

