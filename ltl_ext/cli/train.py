"""``train``: train (or load) a teacher and its spiking student with LTL; works under torchrun."""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from .common import (ARCHS, RUN_FILES, UserError, _arch_kwargs, _build_teacher, _check_fits, _check_teacher_batches,
                     _check_teacher_flags, _check_teacher_split, _default_arch, _distributed, _final_test, _finish,
                     _first_images, _limit, _load_data, _metrics, _out_folder, _percentile, _positive, _say,
                     _split_record, _torch, _val_fraction, add_data_args)
from ..train.callbacks import CallbackList, CSVLogger, TensorBoardLogger
from ..train.config import DEFAULT_LR

#: flags that may differ when a run is resumed (where and how to run, how far); every other flag defines the run
RESUMABLE = ("epochs", "resume", "overwrite", "out", "device", "workers", "quiet", "func", "command")


#: The teacher this command trains when no --teacher is given.
TEACHER_EPOCHS, TEACHER_LR = 10, 0.05


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a teacher (or load one) and its spiking student with LTL")
    add_data_args(p)
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="teacher architecture from the zoo (default: vgg11 for CIFAR, cnn_small otherwise)")
    p.add_argument("--channels", default=None, metavar="C1,C2,..",
                   help="cnn_small conv widths (default 32,64,64)")
    p.add_argument("--hidden", default=None, metavar="H[,H2..]",
                   help="hidden fc width(s) of cnn_small (one) or mlp (a list)")
    p.add_argument("--teacher", default=None, metavar="CKPT",
                   help="a teacher checkpoint (teacher.pt of an earlier run); default: train one")
    p.add_argument("--teacher-epochs", type=int, default=None,
                   help=f"epochs of the teacher this run trains (default {TEACHER_EPOCHS}; not with --teacher)")
    p.add_argument("--teacher-lr", type=float, default=None,
                   help=f"its SGD learning rate (default {TEACHER_LR}; not with --teacher)")
    p.add_argument("--mode", choices=("offline", "online"), default="offline")
    p.add_argument("--memory", choices=("batched", "constant"), default="batched",
                   help="online mode: in blocks of --time-block steps (default) or one step at a time")
    p.add_argument("--exact-targets", action="store_true",
                   help="--memory constant: keep the targets in float32 (default: float16, half the bytes)")
    p.add_argument("--time-block", type=int, default=None, metavar="N",
                   help="online mode: time steps per block (memory grows with it, not with T; default 2)")
    p.add_argument("--epochs", type=int, default=5, help="LTL epochs (default: %(default)s)")
    p.add_argument("--time-steps", "-T", type=int, default=16)
    p.add_argument("--warmup", type=int, default=None, help="online warm-up steps (default: 3T/4)")
    p.add_argument("--percentile", default=None,
                   help="target normalisation: a percentile, 'running' or 'none' (default: 99.9 offline, "
                        "99 online)")
    p.add_argument("--init", choices=("random", "teacher"), default="teacher",
                   help="student weights: the teacher's, BN folded, scaled to the neuron (default: closest to the "
                        "teacher in docs/results/init_study.json), or random (the paper)")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="LTL Adam learning rate (default: %(default)s)")
    p.add_argument("--schedule", default="none", metavar="{none,cosine,step:E1,E2,...:gamma}",
                   help="learning-rate schedule, stepped per epoch (e.g. step:30,60:0.1; default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default: %(default)s)")
    p.add_argument("--grad-clip", type=float, default=None, metavar="NORM",
                   help="clip the student's gradient to this global L2 norm each step (default: off)")
    p.add_argument("--precision", choices=("32", "bf16", "16-mixed"), default="32",
                   help="autocast teacher and student in bfloat16, or float16 with loss scaling (default: %(default)s)")
    p.add_argument("--log", choices=("csv", "tensorboard"), default="csv",
                   help="OUT/history.csv is always written; 'tensorboard' also logs to OUT/tensorboard "
                        "(needs pip install tensorboard)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT (from OUT/last.pt) with the same settings, up to --epochs")
    p.add_argument("--overwrite", action="store_true", help="replace the run in OUT, if there is one")
    p.add_argument("--out", default="runs/train", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    # torchrun --nproc_per_node N: this process's rank, device and process group; a rank that fails leaves the
    # group at once, so the others stop with a clear error instead of waiting
    _torch(args)                         # checks --device first
    with _distributed(args) as dist:
        return _train(args, dist)


def _loggers(args, out: Path) -> list:
    """The CSV logger always (appending on --resume), TensorBoard's when asked for."""
    loggers = [CSVLogger(out / "history.csv", append=args.resume)]
    if args.log == "tensorboard":
        try:
            loggers.append(TensorBoardLogger(out / "tensorboard"))
        except ImportError as e:
            raise UserError(str(e)) from None
    return loggers


def _settings(args) -> dict:
    """The flags that define the run (all but :data:`RESUMABLE`), as written to OUT/settings.json."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in RESUMABLE}


def _prepare_out(args, out: Path, is_main: bool) -> None:
    """Never overwrite a run by accident: an OUT holding one needs --resume (same settings) or --overwrite.
    Rank 0 decides (the others wait at the barrier after it, and stop with its error if it refuses)."""
    import json
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if not is_main:
        return
    found = [f for f in RUN_FILES if (out / f).exists()]
    if args.resume:
        if not (out / "last.pt").is_file():
            raise UserError(f"--resume: no checkpoint to resume in {out} (no last.pt"
                            + (f"; it holds {', '.join(found)})" if found else ")"))
        saved = json.loads((out / "settings.json").read_text()) if (out / "settings.json").is_file() else {}
        now = _settings(args)
        diff = [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
                if saved.get(k) != now.get(k)]
        if diff:
            raise UserError(f"--resume: the settings differ from the run in {out}: {'; '.join(diff)} (resume with "
                            f"the same flags, or start a new run in another --out)")
        return
    if found and not args.overwrite:
        raise UserError(f"{out} holds a run already ({', '.join(found)}): pass --resume to continue it or "
                        f"--overwrite to replace it")
    keep = Path(args.teacher).resolve() if args.teacher else None   # the teacher this run starts from stays
    for f in found:                      # --overwrite: nothing of the old run may mix with the new one
        if (out / f).resolve() != keep:
            (out / f).unlink()
    if (out / "tensorboard").is_dir():  # the old run's event files would show as the same run's curves
        shutil.rmtree(out / "tensorboard")
    from ..train import write_json
    write_json(out / "settings.json", _settings(args))


def _teacher_training_flags(args) -> None:
    """--teacher-epochs and --teacher-lr train this run's teacher: checked, and their defaults filled in (so
    settings.json records what trained it). With --teacher no teacher is trained; given there, they would be
    ignored, yet recorded as if they had trained it. (--resume compares them with the run's settings.json.)"""
    given = [flag for flag, v in (("--teacher-epochs", args.teacher_epochs), ("--teacher-lr", args.teacher_lr))
             if v is not None]
    if args.teacher and given and not args.resume:
        raise UserError(f"{' and '.join(given)} train this run's teacher, but --teacher {args.teacher} loads one: "
                        f"drop {' and '.join(given)}")
    if args.teacher:
        return
    args.teacher_epochs = TEACHER_EPOCHS if args.teacher_epochs is None else args.teacher_epochs
    args.teacher_lr = TEACHER_LR if args.teacher_lr is None else args.teacher_lr
    _positive("--teacher-epochs", args.teacher_epochs, allow_zero=True)
    if not args.teacher_lr >= 0:         # negative (or nan): SGD would refuse it once the teacher starts training
        raise UserError(f"--teacher-lr must be >= 0, got {args.teacher_lr}")


def _check_ltl_flags(args, percentile) -> None:
    """The trainer's own checks of the LTL flags (--lr, --grad-clip, --time-block ...), run before the teacher
    trains and OUT is written: the trainer runs them only after both, minutes later, leaving a half-made run."""
    from ..train.config import LTLConfig, default_warmup
    try:
        LTLConfig(time_steps=args.time_steps, mode=args.mode, memory=args.memory, init=args.init, lr=args.lr,
                  warmup=default_warmup(args.time_steps) if args.warmup is None else args.warmup,
                  percentile=percentile, weight_decay=args.weight_decay, schedule=args.schedule,
                  grad_clip=args.grad_clip, precision=args.precision, time_block=args.time_block,
                  compact_targets=not args.exact_targets).check()
    except (ValueError, TypeError) as e:
        raise UserError(str(e).splitlines()[0]) from None


def _train(args, dist) -> int:
    t_start = time.perf_counter()
    _torch(args)
    from .. import data as ltl_data
    from ..train import LocalTandemTrainer, load_teacher, save_teacher, train_teacher
    _positive("--epochs", args.epochs, allow_zero=True)
    _positive("--time-steps", args.time_steps)
    _teacher_training_flags(args)
    percentile = _percentile(args.percentile, args.mode)
    if args.exact_targets and args.memory != "constant":
        raise UserError("--exact-targets applies to --memory constant (the only mode that compacts its targets)")
    # offline LTL learns from every step: --warmup would be ignored (a run made before this check still resumes)
    if args.warmup is not None and args.mode != "online" and not args.resume:
        raise UserError("--warmup applies to --mode online (offline LTL learns from all T steps)")
    _check_ltl_flags(args, percentile)
    out = _out_folder(args.out)
    device = dist.device
    progress = not args.quiet and dist.is_main
    splits = _load_data(args)
    augment = args.augment if args.augment is not None else args.data in ("cifar10", "cifar100")
    train_loader, val_loader, test_loader = ltl_data.make_loaders(
        splits, batch_size=args.batch_size, val_fraction=_val_fraction(args), augment=augment, seed=args.seed,
        num_workers=args.workers)
    split = _split_record(args.data, _limit(args), args.seed, _val_fraction(args))
    if not args.teacher and not args.resume:      # this run trains its teacher
        _check_teacher_batches(train_loader, args.teacher_epochs, "choose another --batch-size")
    teacher = spec = None
    if args.teacher and not args.resume:   # read before --overwrite clears OUT: it may be OUT/teacher.pt
        teacher, spec, meta = load_teacher(args.teacher)
        _check_fits(spec, splits, args.teacher)
        _check_teacher_flags(args, spec, args.teacher)
        _check_teacher_split(meta, split, args.teacher)
    _prepare_out(args, out, dist.is_main)     # once the flags, the data and the teacher are known to be good
    dist.barrier("preparing the output folder")
    ckpt = out / "last.pt"
    if args.resume:
        trainer = LocalTandemTrainer.load(ckpt, device=device, distributed=dist)
        _check_fits(trainer.teacher_spec, splits, str(ckpt))
        _say(progress, f"resuming {ckpt} at epoch {trainer.epoch}")
    else:
        if teacher is None:
            arch = args.arch or _default_arch(args.data)
            teacher, spec = _build_teacher(arch, splits, _arch_kwargs(arch, args.channels, args.hidden))
            _say(progress, f"teacher: {arch}, {args.teacher_epochs} epochs")
            # every rank trains the same teacher (same seed, same batches); the trainer keeps rank 0's. The
            # teacher keeps its best epoch on validation.
            history = train_teacher(teacher, train_loader, args.teacher_epochs, lr=args.teacher_lr, device=device,
                                    progress=progress, val_loader=val_loader)
            if dist.is_main:
                save_teacher(teacher, spec, out / "teacher.pt", {"data": args.data, "history": history, "split": split})
        try:
            trainer = LocalTandemTrainer(
                teacher, time_steps=args.time_steps, mode=args.mode, warmup=args.warmup, memory=args.memory,
                percentile=percentile, init=args.init, lr=args.lr, device=device, teacher_spec=spec,
                calib_data=_first_images(train_loader) if args.init == "teacher" else None, distributed=dist,
                schedule=args.schedule, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                precision=args.precision, time_block=args.time_block, compact_targets=not args.exact_targets)
        except ValueError as e:      # a flag combination the trainer refuses (e.g. --warmup >= -T online)
            raise UserError(str(e).splitlines()[0]) from None
    if dist.is_main:                 # loggers on rank 0 only (its history holds the figures of all ranks)
        trainer.callbacks = CallbackList(_loggers(args, out))
    t_ltl = time.perf_counter()
    trainer.fit(train_loader, args.epochs, val_loader=val_loader, progress=progress, checkpoint=ckpt,
                best_checkpoint=None if val_loader is None else out / "best.pt", metrics_path=out / "history.json")
    ltl_seconds = time.perf_counter() - t_ltl
    final, selected = _final_test(out, trainer, test_loader, device=device, dist=dist)
    metrics = _metrics(trainer, final, data=args.data, seconds=time.perf_counter() - t_start,
                       ltl_seconds=ltl_seconds, selected_epoch=selected)
    metrics["processes"] = dist.world_size
    if dist.is_main:
        _finish(out, trainer, final, metrics)
    return 0
