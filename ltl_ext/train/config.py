"""What defines an LTL run: :class:`LTLConfig` (stored in every checkpoint) and the defaults it derives."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from ..ltl.convert import TARGET_PERCENTILE
from ..ops.params import is_finite_number

MODES = ("offline", "online")
MEMORIES = ("batched", "constant")
INITS = ("random", "teacher")
PRECISIONS = ("32", "bf16", "16-mixed")


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` on ``device`` (a no-op for "32"): teacher and student forwards run
    in it, so the convolutions and the fused LIF ops compute in bfloat16 / float16."""
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def default_device(device=None) -> torch.device:
    """``device`` as given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def place_student(student: torch.nn.Module, device: torch.device, all_steps_at_once: bool) -> torch.nn.Module:
    """Move ``student`` to ``device``; on a CPU, channels-last when its convolutions run over all T steps at once
    (offline LTL, BPTT) and it has 2-d convolutions.

    Why: oneDNN's weight gradient of an NCHW convolution reorders its ``[T*B, ...]`` input and output gradient to
    its blocked layout, transients of about 1.5x the layer's current; channels-last activations are read as they
    lie (VGG-11, T = 8, batch 16: offline LTL's peak 145 -> 99 MB, BPTT's 262 -> 239 MB, both faster;
    ``scripts/train_memory.py``). Online LTL's blocks of a few steps gain nothing (the weights' reorders then
    dominate, and cost more channels-last), so they stay NCHW; so does every GPU model (cuDNN picks its own).
    :class:`~ltl_ext.nn.LIF` runs channels-last activations without a copy."""
    student = student.to(device)
    if all_steps_at_once and device.type == "cpu" and any(
            isinstance(m, torch.nn.Conv2d) for m in student.modules()):
        student = student.to(memory_format=torch.channels_last)
    return student


#: The defaults of the API and the CLI, in one place: LTL's Adam learning rate, and the target percentile per
#: mode (offline normalises each layer's targets by the 99.9th percentile of its teacher activations, online by the
#: 99th: online targets come from fewer steps, so a less extreme scale keeps them in range).
DEFAULT_LR = 1e-3
DEFAULT_PERCENTILE = TARGET_PERCENTILE     # defined with the method (ltl/convert.py): thresholds use it too


def default_percentile(mode: str):
    """The target percentile ``mode`` uses unless told otherwise (:data:`DEFAULT_PERCENTILE`)."""
    if mode not in DEFAULT_PERCENTILE:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return DEFAULT_PERCENTILE[mode]


def default_warmup(time_steps: int) -> int:
    """Online LTL's warm-up: the released code's 12 of T = 16, i.e. 3T/4 (at least one step is left)."""
    return max(0, min(time_steps * 3 // 4, time_steps - 1)) if isinstance(time_steps, int) else 0


#: Online LTL runs its T steps in blocks of this many (memory grows with the block; no gradient crosses time).
TIME_BLOCK = 2


# ============================================================================================= config
@dataclass
class LTLConfig:
    """Everything that defines an LTL run (stored in every checkpoint)."""

    time_steps: int = 16
    mode: str = "offline"
    warmup: int = 12                # LocalTandemTrainer's default: 3T/4 (12 at T = 16)
    percentile: Any = 99.9          # float in (0, 100], "running", or None (no normalisation)
    init: str = "random"
    lr: float = DEFAULT_LR
    memory: str = "batched"
    ce_weight: float = 1.0
    weight_decay: float = 0.0
    encoding: str = "direct"
    schedule: str = "none"          # learning-rate schedule by name (train/schedules.py), or "custom" (a factory)
    grad_clip: Any = None           # max global L2 norm of the student's gradient per step, or None
    precision: str = "32"           # "32", "bf16" (autocast) or "16-mixed" (autocast float16 + GradScaler)
    time_block: Any = None          # online: run the T steps in blocks of this many (None: memory's default)
    compact_targets: bool = True    # constant memory: hold the normalised targets in float16 (TandemRun)

    def block_steps(self) -> int:
        """The time steps one student call runs: T offline; online 1 with ``memory="constant"``, else
        ``time_block`` (default :data:`TIME_BLOCK`), at most T."""
        if self.mode == "offline":
            return self.time_steps
        if self.memory == "constant":
            return 1
        return min(self.time_block or TIME_BLOCK, self.time_steps)

    def holds_compact_targets(self, normalised: bool) -> bool:
        """Whether a step holds its float32 targets in float16 (``TandemRun(compact_targets=True)``): in the
        constant-memory mode, which keeps every layer's target for all T steps (with V and the spike count, all
        it keeps: half their bytes is a tenth of its peak), when the targets are normalised into [0, 1] (float16
        rounds them by at most 2^-12) and ``compact_targets`` is on."""
        return self.compact_targets and self.memory == "constant" and normalised

    def check(self) -> "LTLConfig":
        if isinstance(self.time_steps, bool) or not isinstance(self.time_steps, int) or self.time_steps < 1:
            raise ValueError(f"time_steps must be a positive int, got {self.time_steps!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.memory not in MEMORIES:
            raise ValueError(f"memory must be one of {MEMORIES}, got {self.memory!r}")
        if self.memory == "constant" and self.mode != "online":
            raise ValueError("memory='constant' is the stepwise form of online LTL: use it with mode='online'")
        if self.encoding not in ("direct", "poisson", "none"):
            raise ValueError(f"encoding must be 'direct', 'poisson' or 'none', got {self.encoding!r}")
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
        if not (is_finite_number(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (is_finite_number(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        # a negative ce_weight would ascend the readout's cross-entropy
        if not (is_finite_number(self.ce_weight) and self.ce_weight >= 0):
            raise ValueError(f"ce_weight must be a number >= 0 (the readout CE's weight), got {self.ce_weight!r}")
        if self.schedule != "custom":
            from .schedules import schedule
            schedule(self.schedule, 1)          # a bad name fails here, not after the first epoch
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.compact_targets, bool):
            raise TypeError(f"compact_targets must be a bool, got {self.compact_targets!r}")
        b = self.time_block
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ValueError(f"time_block must be a positive int (time steps per block) or None, got {b!r}")
        if b is not None and self.mode != "online":
            raise ValueError("time_block splits online LTL's T steps (no gradient crosses time); offline LTL runs "
                             "all T steps at once: use it with mode='online'")
        if b is not None and self.memory == "constant" and b != 1:
            raise ValueError(f"memory='constant' runs one step at a time; time_block={b} contradicts it")
        g = self.grad_clip
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not g > 0):
            raise ValueError(f"grad_clip must be a positive number (a max gradient norm) or None, got {g!r}")
        return self

