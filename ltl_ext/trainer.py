"""Training: Local Tandem Learning (offline, online batched, online constant-memory), the teacher, a BPTT baseline.

One LTL step reads as a straight line (ltl-method.md §3, §4)::

    batch -> teacher forward (hooks collect a_l) -> targets y_l = normalise(a_l), set on the student's LIFs
          -> student forward over T steps (each LIF returns detached spikes and keeps its local loss)
          -> readout CE + sum_l local_loss_l -> one backward (each layer's gradient stays inside it) -> step

The trainer sees only ``ltl_ext.nn`` / ``ltl_ext.tandem`` / ``ltl_ext.convert`` (floor 5), never the kernels.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import tandem
from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distributed import Distributed, Replica
from .nn import LIF, SpikingModel

MODES = ("offline", "online")
MEMORIES = ("batched", "constant")
INITS = ("random", "teacher")
CKPT_KIND = "ltl_trainer"


def default_device(device=None) -> torch.device:
    """``device`` as given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _progress(iterable, enabled: bool, **kw):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, leave=False, dynamic_ncols=True, disable=None, **kw)   # None: no bar off a terminal


def _lifs(model: nn.Module) -> Dict[str, LIF]:
    """The model's LIF layers by name; inside a SpikingModel, names relative to the wrapped model (the names
    the teacher and the local losses use)."""
    if isinstance(model, SpikingModel):
        return dict(model.lifs())
    return {name: m for name, m in model.named_modules() if isinstance(m, LIF)}


def default_warmup(time_steps: int) -> int:
    """Online LTL's warm-up: the released code's 12 of T = 16, i.e. 3T/4 (at least one step is left)."""
    return max(0, min(time_steps * 3 // 4, time_steps - 1)) if isinstance(time_steps, int) else 0


# ============================================================================================= config
@dataclass
class LTLConfig:
    """Everything that defines an LTL run (stored in every checkpoint)."""

    time_steps: int = 16
    mode: str = "offline"
    warmup: int = 12                # LocalTandemTrainer's default: 3T/4 (12 at T = 16)
    percentile: Any = 99.9          # float in (0, 100], "running", or None (no normalisation)
    init: str = "random"
    lr: float = 1e-4
    memory: str = "batched"
    ce_weight: float = 1.0
    weight_decay: float = 0.0
    encoding: str = "direct"

    def check(self) -> "LTLConfig":
        if isinstance(self.time_steps, bool) or not isinstance(self.time_steps, int) or self.time_steps < 1:
            raise ValueError(f"time_steps must be a positive int, got {self.time_steps!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.memory not in MEMORIES:
            raise ValueError(f"memory must be one of {MEMORIES}, got {self.memory!r}")
        if self.memory == "constant" and self.mode != "online":
            raise ValueError("memory='constant' is the stepwise form of online LTL: use it with mode='online'")
        if self.encoding not in ("direct", "poisson"):
            raise ValueError(f"encoding must be 'direct' or 'poisson', got {self.encoding!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {self.warmup!r}")
        if self.mode == "online" and self.warmup >= self.time_steps:
            raise ValueError(f"online LTL learns from steps t >= warmup: warmup = {self.warmup} leaves none "
                             f"with time_steps = {self.time_steps}")
        p = self.percentile
        if not (p is None or p == "running" or (isinstance(p, (int, float)) and not isinstance(p, bool)
                                                 and 0 < p <= 100)):
            raise ValueError(f"percentile must be a number in (0, 100], 'running' or None, got {p!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        return self


# ============================================================================================= the trainer
class LocalTandemTrainer:
    """Train a spiking student from a trained ANN teacher with Local Tandem Learning.

    >>> trainer = LocalTandemTrainer(teacher, time_steps=16, mode="offline")
    >>> history = trainer.fit(train_loader, epochs=5, val_loader=test_loader)
    >>> report = trainer.evaluate(test_loader)
    >>> trainer.save("run/ckpt.pt"); trainer = LocalTandemTrainer.load("run/ckpt.pt")

    ``student=None`` converts the teacher (``ltl_ext.convert``; ``init="teacher"`` copies its BN-folded weights
    and balances thresholds, ``"random"`` keeps only the structure). ``mode="online"`` with ``memory="constant"``
    runs the student one time step at a time with a backward per step: memory independent of ``time_steps``.

    Several processes (``torchrun --nproc_per_node N``; ``distributed=None`` detects it, ``True`` requires it,
    ``False`` ignores it, or pass a :class:`ltl_ext.distributed.Distributed`): the student trains in DDP (one
    gradient all-reduce per batch, also in the constant-memory mode), the teacher is rank 0's on every rank, each
    loader batch is split across the ranks (the loader's batch stays the global batch), metrics are reduced over
    the ranks, and only rank 0 shows progress, writes checkpoints and metrics. Call ``fit``, ``evaluate`` and
    ``save`` on every rank.
    """

    def __init__(self, teacher: nn.Module, student: Optional[nn.Module] = None, time_steps: int = 16,
                 mode: str = "offline", warmup: Optional[int] = None, percentile=99.9, init: str = "random",
                 lr: float = 1e-4, memory: str = "batched", device=None, *, ce_weight: float = 1.0,
                 weight_decay: float = 0.0, encoding: str = "direct", calib_data=None,
                 seed: Optional[int] = None, teacher_spec: Optional[dict] = None, distributed=None):
        if warmup is None:                # the code's 12 of 16 steps, scaled to T
            warmup = default_warmup(time_steps)
        self.config = LTLConfig(time_steps=time_steps, mode=mode, warmup=warmup, percentile=percentile,
                                init=init, lr=float(lr), memory=memory, ce_weight=float(ce_weight),
                                weight_decay=float(weight_decay), encoding=encoding).check()
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
        if not isinstance(student, SpikingModel):
            student = SpikingModel(student, time_steps=time_steps, encoding=encoding)
        student.time_steps = time_steps          # the SpikingModel passes T on to its LIFs
        self.student = student.to(self.device)
        # several processes: per-batch percentiles of the global batch, so N processes train like one
        self.link = tandem.Tandem(self.teacher, self.student, percentile=percentile,
                                  percentile_fn=self.dist.percentile if self.dist.enabled else None)
        self.optimizer = self._make_optimizer(self.student.parameters(), self.config.lr)
        self.replica = self.dist.wrap(self.student)         # DDP with several processes, the student alone
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: List[Dict[str, Any]] = []
        self._epoch_sums: Dict[str, float] = {}
        self._epoch_start = None  # (global rng state, loader rng state) at the start of the current epoch

    # ------------------------------------------------------------------------------------------ building
    def _convert(self, teacher, init, calib_data):
        from .convert import convert
        if isinstance(calib_data, Tensor):
            calib_data = calib_data.to(self.device)
        student = convert(teacher, init=init, calib_data=calib_data)
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
        return _ltl_step(self.replica, self.link, self.optimizer, x.to(self.device), y.to(self.device),
                         self.config)

    # ------------------------------------------------------------------------------------------ fit
    def fit(self, train_loader: Iterable, epochs: int = 5, val_loader: Optional[Iterable] = None, *,
            checkpoint=None, checkpoint_every: Optional[int] = None, progress: bool = True,
            metrics_path=None, callback: Optional[Callable[[Dict[str, Any]], None]] = None,
            max_steps: Optional[int] = None) -> List[Dict[str, Any]]:
        """Train until ``epochs`` epochs are done in total (a resumed trainer continues where it stopped).

        ``checkpoint``: a path written after every epoch (and every ``checkpoint_every`` steps), atomically;
        ``LocalTandemTrainer.load(path).fit(same loader, epochs)`` then gives the same result as an
        uninterrupted run (bit for bit on CPU). ``metrics_path``: the history as JSON, rewritten every epoch.
        Returns the history: one dict per epoch (losses, per-layer local losses, accuracies, seconds).
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
        train_loader = self.dist.shard_loader(train_loader, train=True)
        progress = progress and self.dist.is_main
        while self.epoch < epochs:
            skip = self._begin_epoch(train_loader)
            t0 = time.perf_counter() - self._epoch_sums.get("seconds", 0.0)
            self.student.train()
            bar = _progress(train_loader, progress, desc=f"LTL {self.mode} epoch {self.epoch + 1}/{epochs}",
                            total=_len_or_none(train_loader))
            for i, (x, y) in enumerate(bar):
                if i < skip:
                    if i == skip - 1:
                        set_rng_state(self._resume_rng)
                    continue
                stats = self.train_step(x, y)
                self._accumulate(stats, len(y))
                self.step_in_epoch += 1
                self.global_step += 1
                if progress:
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", ce=f"{stats['ce']:.3f}")
                if checkpoint is not None and checkpoint_every and self.step_in_epoch % checkpoint_every == 0:
                    self._epoch_sums["seconds"] = time.perf_counter() - t0
                    self.save(checkpoint)
                if max_steps is not None and self.step_in_epoch >= max_steps:
                    break
            entry = self._end_epoch(time.perf_counter() - t0, val_loader, progress)
            if progress:
                _print_epoch(entry)
            if callback is not None:
                callback(entry)
            if metrics_path is not None and self.dist.is_main:
                write_json(metrics_path, {"config": asdict(self.config), "history": self.history})
            if checkpoint is not None:
                self.save(checkpoint)
        return self.history

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
            "loss": s.get("loss", 0.0) / b, "ce": s.get("ce", 0.0) / b,
            "local_loss": {k[len("local/"):]: v / b for k, v in s.items() if k.startswith("local/")},
        }
        if val_loader is not None:
            report = self.evaluate(val_loader, progress=progress)
            entry.update(student_acc=report["student_acc"], teacher_acc=report["teacher_acc"],
                         firing_rate=report["firing_rate"])
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
                x, y = x.to(self.device), y.to(self.device)
                self.link.set_targets(x, mode=config.mode, warmup=config.warmup)
                self.student(x)
                ce = _readout_loss(self.student.last_step_logits, y, config)
                local = self.link.local_losses()
                for k, v in _stats(config.ce_weight * ce + sum(local.values()), ce, local).items():
                    sums[k] = sums.get(k, 0.0) + v
                b += 1
                _leave_tandem(self.link, self.student)
        finally:
            _leave_tandem(self.link, self.student)
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
        report = evaluate_spiking(model, self.dist.shard_loader(loader, train=False), teacher=self.teacher,
                                  device=self.device, progress=progress and self.dist.is_main,
                                  max_batches=max_batches)
        return self.dist.weighted_mean(report, weight=report["samples"])   # this rank's share -> all of it

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
                stats = _ltl_step(model, link, opt, x.to(self.device), y.to(self.device), config)
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
            "epoch_start": gen_state, "rng": rng_state(),
        }

    def save(self, path) -> Path:
        """Write a checkpoint atomically: models, optimiser, epoch/step, history, config, RNG states.
        With several processes rank 0 writes it and every rank returns once it is written."""
        if self.dist.is_main:
            save_checkpoint(self.state_dict(), path, kind=CKPT_KIND)
        self.dist.barrier("saving a checkpoint")
        return Path(path)

    def close(self) -> None:
        """Leave the process group, if this trainer joined one (after the last ``fit`` / ``evaluate``)."""
        self.dist.close()

    @classmethod
    def load(cls, path, teacher: Optional[nn.Module] = None, student: Optional[nn.Module] = None,
             device=None, restore_rng: bool = True, distributed=None) -> "LocalTandemTrainer":
        """Rebuild a trainer from a checkpoint (safe ``weights_only`` load), ready to ``fit`` on.

        Models built from the zoo (or converted from such a teacher) are rebuilt from the checkpoint's config;
        a user-built teacher (or student) must be passed again. Mismatches raise :class:`CheckpointError`.
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
                                      "ce_weight", "weight_decay", "encoding")},
                          init="random")
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
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: checkpoint does not match this version of ltl_ext or these "
                                  f"models ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        if restore_rng:
            set_rng_state(state["rng"])
        return trainer


# ============================================================================================= the LTL step
def _ltl_step(model: SpikingModel, link: "tandem.Tandem", opt: torch.optim.Optimizer, x: Tensor, y: Tensor,
              config: LTLConfig) -> Dict[str, float]:
    """One LTL step: teacher targets -> student with local losses -> readout CE -> backward -> update."""
    opt.zero_grad(set_to_none=True)
    if config.memory == "constant":
        stats = _online_constant_memory(model, link, x, y, config)
    else:
        link.set_targets(x, mode=config.mode, warmup=config.warmup)     # teacher forward, y_l on the LIFs
        logits = model(x)                                                # student over T steps
        ce = _readout_loss(model.last_step_logits, y, config)
        local = link.local_losses()                                      # {layer: loss_l}
        loss = config.ce_weight * ce + sum(local.values())
        loss.backward()                                                  # each layer's gradient stays local
        stats = _stats(loss, ce, local)
        del logits
    opt.step()
    _leave_tandem(link, model)
    return stats


def _leave_tandem(link, model: Optional[nn.Module] = None) -> None:
    """Plain SNN again; drop what holds the step's autograd graph (local losses, the per-step logits), which
    would keep memory alive and make the model impossible to deep-copy."""
    link.clear()
    for lif in link.pairs.students:
        lif.local_loss = None
    if model is not None and getattr(model, "last_step_logits", None) is not None:
        model.last_step_logits = None


def _readout_loss(step_logits: Tensor, y: Tensor, config: LTLConfig) -> Tensor:
    """Readout CE. Offline: CE of the time-averaged readout. Online: sum over t >= warmup of CE(O[t] / (t+1)),
    O[t] = O[t-1].detach() + readout current at t, so each step's gradient is local in time (§4)."""
    if config.mode == "offline":
        return F.cross_entropy(step_logits.mean(0), y)
    T = step_logits.shape[0]
    prev = torch.cumsum(step_logits.detach(), 0) - step_logits.detach()        # O[t-1], detached
    steps = torch.arange(1, T + 1, device=step_logits.device, dtype=step_logits.dtype).view(T, 1, 1)
    running = (prev + step_logits) / steps                                     # O[t] / (t+1)
    w = config.warmup
    return F.cross_entropy(running[w:].flatten(0, 1), y.repeat(T - w), reduction="sum") / y.shape[0]


def _online_constant_memory(model: SpikingModel, link, x: Tensor, y: Tensor, config: LTLConfig):
    """Online LTL one time step at a time: a backward per step accumulates dW; nothing is kept across steps,
    so memory does not grow with T. Gradients equal those of the batched online form."""
    link.set_targets(x, mode="online", warmup=config.warmup, stepwise=True)
    model.reset_state()
    out_sum = None
    totals: Dict[str, float] = {"loss": 0.0, "ce": 0.0}
    try:
        for t in range(config.time_steps):
            learn = t >= config.warmup
            # DDP: gradients accumulate locally until the last step, whose backward all-reduces them once
            with torch.set_grad_enabled(learn), _sync_if(model, t == config.time_steps - 1):
                current = model.step(x)                                   # readout current at step t
                running = current if out_sum is None else out_sum + current
                out_sum = running.detach()
                if not learn:
                    continue
                ce = F.cross_entropy(running / (t + 1), y)
                local = link.local_losses()
                loss = config.ce_weight * ce + sum(local.values())
                loss.backward()
                totals["loss"] += float(loss.detach())
                totals["ce"] += float(ce.detach())
                for k, v in local.items():
                    totals[f"local/{k}"] = totals.get(f"local/{k}", 0.0) + float(v.detach())
    finally:
        model.reset_state()
    return totals


def _sync_if(model, sync: bool):
    return model.sync_if(sync) if isinstance(model, Replica) else contextlib.nullcontext()


def _join(distributed, device) -> Distributed:
    """The trainer's view of the job: ``None`` joins torchrun's job if launched by it, ``True`` requires it."""
    if isinstance(distributed, Distributed):
        return distributed
    if distributed is False:
        return Distributed.single(default_device(device))
    if distributed is None or distributed is True:
        return Distributed.setup(device, required=distributed is True)
    raise ValueError(f"distributed must be None, True, False or a Distributed, got {distributed!r}")


def _stats(loss: Tensor, ce: Tensor, local: Dict[str, Tensor]) -> Dict[str, float]:
    out = {"loss": float(loss.detach()), "ce": float(ce.detach())}
    out.update({f"local/{k}": float(v.detach()) for k, v in local.items()})
    return out


def _calibration_params(model: nn.Module, train_thresholds: bool):
    """What calibration trains: every trainable parameter outside the LIFs (for a chip, the programmed weights
    behind its parametrizations), plus the LIF thresholds (programmed values) if ``train_thresholds``.
    Returns ``(params, toggled)``: ``toggled`` are parameters whose ``requires_grad`` was flipped, to restore."""
    in_lif = {}
    for m in model.modules():
        if isinstance(m, LIF):
            for n, p in m.named_parameters():
                in_lif[id(p)] = n
    params, toggled, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        name = in_lif.get(id(p))
        if name is None:
            if p.requires_grad:
                params.append(p)
        elif train_thresholds and name in ("threshold", "parametrizations.threshold.original"):
            if not p.requires_grad:
                toggled.append(p)
            params.append(p)
        elif p.requires_grad:                 # a learnable beta etc.: calibration leaves it alone
            toggled.append(p)
    if train_thresholds and not any(in_lif.get(id(p)) is not None for p in params):
        raise ValueError("train_thresholds=True but the model's LIF thresholds are floats, not tensors; "
                         "build its LIFs with learnable=True (or program a chip, which makes them tensors)")
    return params, toggled


def _cycle(loader):
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batch")


# ============================================================================================= evaluation
@torch.no_grad()
def evaluate_spiking(model: nn.Module, loader: Iterable, *, teacher: Optional[nn.Module] = None, device=None,
                     progress: bool = False, max_batches: Optional[int] = None) -> Dict[str, Any]:
    """Accuracy (final and per time step), firing rates and spike counts of a spiking model on ``loader``."""
    device = default_device(device)
    lifs = _lifs(model)
    spikes = {name: 0.0 for name in lifs}
    neurons = {name: 0 for name in lifs}

    def counter(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            spikes[name] += float(out.sum())
            neurons[name] += out.numel()
        return hook

    handles = [m.register_forward_hook(counter(n)) for n, m in lifs.items()]
    was_training = model.training
    model.eval()
    correct, correct_t, teacher_correct, n = 0, None, 0, 0
    try:
        for i, (x, y) in enumerate(_progress(loader, progress, desc="eval", total=_len_or_none(loader))):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            steps = model.last_step_logits                                   # [T, B, classes]
            T = steps.shape[0]
            running = steps.cumsum(0) / torch.arange(1, T + 1, device=device, dtype=steps.dtype).view(T, 1, 1)
            c = (running.argmax(2) == y.unsqueeze(0)).sum(1).cpu()
            correct_t = c if correct_t is None else correct_t + c
            if teacher is not None:
                teacher_correct += int((teacher(x).argmax(1) == y).sum())
            n += len(y)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n == 0:
        raise ValueError("the evaluation loader yields no sample")
    T = getattr(model, "time_steps", None) or (len(correct_t) if correct_t is not None else 1)
    rates = {name: spikes[name] / max(neurons[name], 1) for name in lifs}
    report = {
        "samples": n,
        "student_acc": 100.0 * correct / n,
        "acc_per_step": [100.0 * float(c) / n for c in correct_t],
        "firing_rate": rates,
        "spikes_per_sample": sum(spikes.values()) / n,
        "time_steps": T,
    }
    if teacher is not None:
        report["teacher_acc"] = 100.0 * teacher_correct / n
    return report


@torch.no_grad()
def evaluate_ann(model: nn.Module, loader: Iterable, device=None) -> float:
    """Test accuracy (%) of a plain ANN."""
    device = default_device(device)
    model.to(device)                 # a teacher loaded from a checkpoint arrives on the CPU
    was_training = model.training
    model.eval()
    correct = n = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += int((model(x).argmax(1) == y).sum())
        n += len(y)
    model.train(was_training)
    if n == 0:
        raise ValueError("the evaluation loader yields no sample")
    return 100.0 * correct / n


# ============================================================================================= the teacher
def train_teacher(model: nn.Module, loader: Iterable, epochs: int = 10, *, lr: float = 0.05,
                  optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4,
                  label_smoothing: float = 0.0, schedule: str = "cosine", val_loader: Optional[Iterable] = None,
                  device=None, progress: bool = True) -> List[Dict[str, Any]]:
    """A plain, good ANN training loop for the teacher (SGD + Nesterov momentum, cosine schedule with a short
    warm-up, weight decay; or Adam). Trains ``model`` in place; returns one dict per epoch."""
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
    history = []
    for epoch in range(epochs):
        model.train()
        t0, loss_sum, correct, n = time.perf_counter(), 0.0, 0, 0
        bar = _progress(loader, progress, desc=f"teacher epoch {epoch + 1}/{epochs}", total=steps_per_epoch)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            out = model(x)
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
            entry["test_acc"] = evaluate_ann(model, val_loader, device)
        history.append(entry)
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


# ============================================================================================= BPTT baseline
class BPTTTrainer:
    """The usual direct training of the same student: surrogate-gradient BPTT through all layers and all time
    steps, CE on the time-averaged readout, Adam. The baseline of the LTL-vs-BPTT comparison."""

    def __init__(self, student: nn.Module, time_steps: int = 16, lr: float = 1e-3, device=None):
        self.device = default_device(device)
        if not isinstance(student, SpikingModel):
            student = SpikingModel(student, time_steps=time_steps)
        student.time_steps = time_steps
        self.student = student.to(self.device)
        for lif in _lifs(self.student).values():
            lif.tandem_mode = None
            lif.target = None
        self.time_steps = time_steps
        self.optimizer = torch.optim.Adam([p for p in self.student.parameters() if p.requires_grad], lr=lr)
        self.history: List[Dict[str, Any]] = []

    def train_step(self, x: Tensor, y: Tensor) -> Dict[str, float]:
        x, y = x.to(self.device), y.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.student(x), y)      # spikes keep their graph: BPTT through every layer
        loss.backward()
        self.optimizer.step()
        self.student.last_step_logits = None
        return {"loss": float(loss.detach()), "ce": float(loss.detach())}

    def fit(self, loader: Iterable, epochs: int = 1, val_loader: Optional[Iterable] = None,
            progress: bool = True) -> List[Dict[str, Any]]:
        for epoch in range(len(self.history), epochs):
            self.student.train()
            t0, loss_sum, b = time.perf_counter(), 0.0, 0
            for x, y in _progress(loader, progress, desc=f"BPTT epoch {epoch + 1}/{epochs}",
                                  total=_len_or_none(loader)):
                loss_sum += self.train_step(x, y)["loss"]
                b += 1
            entry = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0, "loss": loss_sum / max(b, 1)}
            if val_loader is not None:
                entry["student_acc"] = evaluate_spiking(self.student, val_loader, device=self.device)["student_acc"]
            self.history.append(entry)
        return self.history

    def evaluate(self, loader: Iterable, **kw) -> Dict[str, Any]:
        return evaluate_spiking(self.student, loader, device=self.device, **kw)


# ============================================================================================= helpers
def _build_from_spec(spec, path):
    if not spec:
        raise CheckpointError(f"{path}: the teacher was user-built (no zoo spec in the checkpoint); "
                              f"pass teacher= to LocalTandemTrainer.load")
    from .models import MODELS
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


def _len_or_none(loader) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None


def _print_epoch(entry: Dict[str, Any]) -> None:
    from tqdm.auto import tqdm
    local = " ".join(f"{v:.4f}" for v in entry.get("local_loss", {}).values())
    msg = f"epoch {entry['epoch']}: loss {entry['loss']:.4f} (ce {entry['ce']:.3f}; local per layer {local})"
    if "student_acc" in entry:
        msg += f", student {entry['student_acc']:.2f}% / teacher {entry['teacher_acc']:.2f}%"
    msg += f", {entry['seconds']:.1f}s"
    tqdm.write(msg)


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(o):
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
