"""Floor 6, training: the LTL engine and its face, evaluation, the teacher, the BPTT baseline, checkpoints.

- ``config``: :class:`LTLConfig`, what defines a run;
- ``engine``: one LTL step (offline, online batched, online constant-memory);
- ``trainer``: :class:`LocalTandemTrainer`, the thin face (fit, evaluate, calibrate, save/load);
- ``fit``: the fit loop (epochs, resume bookkeeping, finite-loss checks, callbacks, checkpoint cadence, schedule);
- ``state``: what a trainer checkpoint holds, and the trainer rebuilt from one;
- ``evaluation`` (accuracy, firing rates, LTL losses without training), ``calibration`` (LTL on a chip);
- ``teacher``, ``bptt``, ``checkpoint`` (the atomic writer, RNG state), ``schedules``, ``callbacks``, ``plots``,
  ``progress``.
"""
from .bptt import BPTTTrainer  # noqa: F401
from .checkpoint import CheckpointError, write_json  # noqa: F401
from .config import LTLConfig  # noqa: F401
from .evaluation import evaluate_ann, evaluate_spiking  # noqa: F401
from .teacher import load_teacher, save_teacher, train_teacher  # noqa: F401
from .trainer import LocalTandemTrainer  # noqa: F401
