"""``train``: train (or load) a teacher and its spiking student with LTL; works under torchrun."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import (ARCHS, UserError, _arch_kwargs, _build_teacher, _check_fits, _default_arch, _distributed, _finish,
                     _first_images, _load_data, _metrics, _percentile, _positive, _say, _torch, add_data_args)


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
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--teacher-lr", type=float, default=0.05)
    p.add_argument("--mode", choices=("offline", "online"), default="offline")
    p.add_argument("--memory", choices=("batched", "constant"), default="batched",
                   help="online mode: batched over T (fast) or one step at a time (memory independent of T)")
    p.add_argument("--epochs", type=int, default=5, help="LTL epochs (default: %(default)s)")
    p.add_argument("--time-steps", "-T", type=int, default=16)
    p.add_argument("--warmup", type=int, default=None, help="online warm-up steps (default: 3T/4)")
    p.add_argument("--percentile", default=None,
                   help="target normalisation: a percentile, 'running' or 'none' (default: 99.9 offline, "
                        "99 online)")
    p.add_argument("--init", choices=("random", "teacher"), default="random",
                   help="student weights: random (the paper) or the teacher's, BN folded, thresholds balanced")
    p.add_argument("--lr", type=float, default=1e-3, help="LTL Adam learning rate (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt if it exists")
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


def _train(args, dist) -> int:
    t_start = time.perf_counter()
    _torch(args)
    from .. import data as ltl_data
    from ..train import LocalTandemTrainer, evaluate_ann, load_teacher, save_teacher, train_teacher
    _positive("--epochs", args.epochs, allow_zero=True)
    _positive("--time-steps", args.time_steps)
    _positive("--batch-size", args.batch_size)
    percentile = _percentile(args.percentile, args.mode)
    out = Path(args.out)
    device = dist.device
    progress = not args.quiet and dist.is_main
    splits = _load_data(args)
    augment = args.augment if args.augment is not None else args.data in ("cifar10", "cifar100")
    train_loader, test_loader = ltl_data.make_loaders(splits, batch_size=args.batch_size, augment=augment,
                                                      seed=args.seed, num_workers=args.workers)
    ckpt = out / "ckpt.pt"
    if args.resume and ckpt.exists():
        trainer = LocalTandemTrainer.load(ckpt, device=device, distributed=dist)
        _check_fits(trainer.teacher_spec, splits, str(ckpt))
        teacher_acc = trainer.history[0]["teacher_acc"] if trainer.history and \
            "teacher_acc" in trainer.history[0] else evaluate_ann(trainer.teacher, test_loader, device)
        _say(progress, f"resuming {ckpt} at epoch {trainer.epoch}")
    else:
        if args.teacher:
            teacher, spec, _ = load_teacher(args.teacher)
            _check_fits(spec, splits, args.teacher)
        else:
            arch = args.arch or _default_arch(args.data)
            teacher, spec = _build_teacher(arch, splits, _arch_kwargs(arch, args.channels, args.hidden))
            _say(progress, f"teacher: {arch}, {args.teacher_epochs} epochs")
            # every rank trains the same teacher (same seed, same batches); the trainer keeps rank 0's
            train_teacher(teacher, train_loader, args.teacher_epochs, lr=args.teacher_lr, device=device,
                          progress=progress)
        teacher_acc = evaluate_ann(teacher, test_loader, device)
        if dist.is_main:
            save_teacher(teacher, spec, out / "teacher.pt", {"test_acc": teacher_acc, "data": args.data})
        _say(progress, f"teacher test accuracy {teacher_acc:.2f}%")
        try:
            trainer = LocalTandemTrainer(
                teacher, time_steps=args.time_steps, mode=args.mode, warmup=args.warmup, memory=args.memory,
                percentile=percentile, init=args.init, lr=args.lr, device=device, teacher_spec=spec,
                calib_data=_first_images(train_loader) if args.init == "teacher" else None, distributed=dist)
        except ValueError as e:      # a flag combination the trainer refuses (e.g. --warmup >= -T online)
            raise UserError(str(e).splitlines()[0]) from None
    t_ltl = time.perf_counter()
    trainer.fit(train_loader, args.epochs, val_loader=test_loader, progress=progress, checkpoint=ckpt,
                metrics_path=out / "history.json")
    ltl_seconds = time.perf_counter() - t_ltl
    final = trainer.evaluate(test_loader)
    metrics = _metrics(trainer, final, data=args.data, seconds=time.perf_counter() - t_start,
                       ltl_seconds=ltl_seconds, teacher_acc=teacher_acc)
    metrics["processes"] = dist.world_size
    if dist.is_main:
        _finish(out, trainer, final, metrics, teacher_acc)
    return 0
