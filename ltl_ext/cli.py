"""The command line: ``demo`` (the main job), ``train``, ``eval``, ``info``, ``robustness`` (delegated).

This floor only parses arguments, calls the trainer and the data loaders, prints a short table and writes
files; all training logic lives in :mod:`ltl_ext.trainer`. A user error (wrong path, wrong format, bad flag
value, a corrupt checkpoint) ends with one line on stderr and exit status 2, not a traceback; set
``LTL_EXT_DEBUG=1`` to see the traceback anyway.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .data.catalog import DATASETS as _DATASETS

DATASETS = tuple(_DATASETS)
ARCHS = ("cnn_small", "mlp", "vgg11", "vgg16", "resnet")


class UserError(Exception):
    """A problem with the command's input, shown as one line."""


# ============================================================================================= parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ltl_ext",
                                description="Local Tandem Learning: train spiking neural networks from ANN "
                                            "teachers.")
    sub = p.add_subparsers(dest="command", metavar="{demo,train,eval,info,robustness}")
    sub.required = True

    d = sub.add_parser("demo", help="the main job: embedded Fashion-MNIST subset, teacher + offline LTL, "
                                    "a couple of minutes on a CPU")
    d.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    d.add_argument("--epochs", type=int, default=None, help="LTL epochs (default: the demo recipe's, <= 5)")
    d.add_argument("--time-steps", type=int, default=None, help="T (default: the demo recipe's)")
    d.add_argument("--mode", choices=("offline", "online"), default="offline")
    d.add_argument("--init", choices=("random", "teacher"), default=None,
                   help="student start (default: the recipe's, teacher)")
    d.add_argument("--teacher-epochs", type=int, default=None, help="(default: the demo recipe's)")
    d.add_argument("--limit", type=int, default=None, help="use at most N train and N test images (smoke runs)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a teacher (or load one) and its spiking student with LTL")
    _add_data_args(t)
    t.add_argument("--arch", choices=ARCHS, default=None,
                   help="teacher architecture from the zoo (default: vgg11 for CIFAR, cnn_small otherwise)")
    t.add_argument("--channels", default=None, metavar="C1,C2,..",
                   help="cnn_small conv widths (default 32,64,64)")
    t.add_argument("--hidden", default=None, metavar="H[,H2..]",
                   help="hidden fc width(s) of cnn_small (one) or mlp (a list)")
    t.add_argument("--teacher", default=None, metavar="CKPT",
                   help="a teacher checkpoint (teacher.pt of an earlier run); default: train one")
    t.add_argument("--teacher-epochs", type=int, default=10)
    t.add_argument("--teacher-lr", type=float, default=0.05)
    t.add_argument("--mode", choices=("offline", "online"), default="offline")
    t.add_argument("--memory", choices=("batched", "constant"), default="batched",
                   help="online mode: batched over T (fast) or one step at a time (memory independent of T)")
    t.add_argument("--epochs", type=int, default=5, help="LTL epochs (default: %(default)s)")
    t.add_argument("--time-steps", "-T", type=int, default=16)
    t.add_argument("--warmup", type=int, default=None, help="online warm-up steps (default: 3T/4)")
    t.add_argument("--percentile", default=None,
                   help="target normalisation: a percentile, 'running' or 'none' (default: 99.9 offline, "
                        "99 online)")
    t.add_argument("--init", choices=("random", "teacher"), default="random",
                   help="student weights: random (the paper) or the teacher's, BN folded, thresholds balanced")
    t.add_argument("--lr", type=float, default=1e-3, help="LTL Adam learning rate (default: %(default)s)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt if it exists")
    t.add_argument("--out", default="runs/train", help="output folder (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a trained student (ckpt.pt of a run) on a test set")
    e.add_argument("checkpoint", metavar="CKPT")
    _add_data_args(e)
    e.add_argument("--out", default=None, help="write eval.json (and acc_per_step.png) here")
    e.add_argument("--device", default=None)
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)

    i = sub.add_parser("info", help="versions, devices, the compiled kernels, data sets found")
    i.set_defaults(func=cmd_info)

    _add_robustness(sub)
    return p


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", choices=list(DATASETS), default="embedded",
                   help="data set (default: the embedded Fashion-MNIST subset)")
    p.add_argument("--data-dir", default=None, metavar="PATH", help="where the data set's files are")
    p.add_argument("--limit", type=int, default=None, help="use at most N train and N test images")
    p.add_argument("--image-size", type=int, default=None, help="folder data: resize images to S x S")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="training augmentation (default: on for CIFAR, off otherwise)")


def _add_robustness(sub) -> None:
    try:
        from . import robustness
    except ModuleNotFoundError as e:
        if e.name not in ("ltl_ext.robustness", __package__ + ".robustness"):
            raise
        return
    robustness.add_parser(sub)


# ============================================================================================= entry point
def main(argv: Optional[Sequence[str]] = None) -> int:
    if "TORCHELASTIC_ERROR_FILE" in os.environ:      # under torchrun: the failing rank's traceback goes to it
        from torch.distributed.elastic.multiprocessing.errors import record
        return record(_main)(argv)
    return _main(argv)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("LTL_EXT_DEBUG", "") not in ("", "0")
    try:
        out = args.func(args)
        return int(out or 0)
    except KeyboardInterrupt:
        print("ltl_ext: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the user-facing boundary
        if debug or not _is_user_error(e):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"ltl_ext {args.command}: error: {msg}", file=sys.stderr)
        return 2


def _is_user_error(e: BaseException) -> bool:
    from .checkpoint import CheckpointError
    from .distributed import DistributedError
    kinds: List[type] = [UserError, CheckpointError, DistributedError, FileNotFoundError, NotADirectoryError,
                         IsADirectoryError, PermissionError]
    try:
        from .data import DataError
        kinds.append(DataError)
    except ImportError:  # pragma: no cover
        pass
    return isinstance(e, tuple(kinds))


# ============================================================================================= commands
#: The demo recipe: sized to finish in about 2 minutes on 2 CPU cores (measured: docs/results.md).
#: The student starts from the teacher (BN folded, thresholds balanced: ltl-method.md §2 "ours"); from random
#: weights LTL needs more epochs than fit in 2 minutes here (docs/results.md, init table).
DEMO = dict(arch="cnn_small", arch_kwargs={"channels": [16, 32, 32], "hidden": 128}, batch_size=64,
            teacher_epochs=3, teacher_lr=0.05, epochs=3, time_steps=8, lr=1e-3, init="teacher")


def cmd_demo(args) -> int:
    t_start = time.perf_counter()
    _torch(args)
    from . import data as ltl_data
    from .trainer import LocalTandemTrainer, evaluate_ann, save_teacher, train_teacher
    recipe = dict(DEMO)
    if args.epochs is not None:
        recipe["epochs"] = _positive("--epochs", args.epochs, 5)
    if args.time_steps is not None:
        recipe["time_steps"] = _positive("--time-steps", args.time_steps)
    if args.teacher_epochs is not None:
        recipe["teacher_epochs"] = _positive("--teacher-epochs", args.teacher_epochs, allow_zero=True)
    if args.init is not None:
        recipe["init"] = args.init
    out = Path(args.out)
    progress = not args.quiet
    splits = ltl_data.load_dataset("embedded", limit=_limit(args))
    train_loader, test_loader = ltl_data.make_loaders(splits, batch_size=recipe["batch_size"], augment=False,
                                                      seed=args.seed)
    teacher, spec = _build_teacher(recipe["arch"], splits, recipe["arch_kwargs"])
    _say(progress, f"{splits.describe()}\nteacher: {recipe['arch']}, {recipe['teacher_epochs']} epochs")
    train_teacher(teacher, train_loader, recipe["teacher_epochs"], lr=recipe["teacher_lr"], device=args.device,
                  progress=progress)
    teacher_acc = evaluate_ann(teacher, test_loader, args.device)
    save_teacher(teacher, spec, out / "teacher.pt", {"test_acc": teacher_acc, "data": "embedded"})
    _say(progress, f"teacher test accuracy {teacher_acc:.2f}%; LTL {args.mode}, T = {recipe['time_steps']}")
    trainer = LocalTandemTrainer(teacher, time_steps=recipe["time_steps"], mode=args.mode,
                                 percentile=99.9 if args.mode == "offline" else 99.0, init=recipe["init"],
                                 lr=recipe["lr"], device=args.device, teacher_spec=spec,
                                 calib_data=_first_images(train_loader) if recipe["init"] == "teacher" else None)
    t_ltl = time.perf_counter()
    trainer.fit(train_loader, recipe["epochs"], val_loader=test_loader, progress=progress,
                checkpoint=out / "ckpt.pt")
    ltl_seconds = time.perf_counter() - t_ltl
    final = trainer.evaluate(test_loader)
    metrics = _metrics(trainer, final, data="embedded", seconds=time.perf_counter() - t_start,
                       ltl_seconds=ltl_seconds, teacher_acc=teacher_acc)
    _finish(out, trainer, final, metrics, teacher_acc)
    return 0


def cmd_train(args) -> int:
    # torchrun --nproc_per_node N: this process's rank, device and process group; a rank that fails leaves the
    # group at once, so the others stop with a clear error instead of waiting
    _torch(args)                         # checks --device first
    with _distributed(args) as dist:
        return _train(args, dist)


def _train(args, dist) -> int:
    t_start = time.perf_counter()
    _torch(args)
    from . import data as ltl_data
    from .trainer import LocalTandemTrainer, evaluate_ann, load_teacher, save_teacher, train_teacher
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


def cmd_eval(args) -> int:
    _torch(args)
    from . import data as ltl_data
    from .trainer import LocalTandemTrainer, write_json
    from .plots import plot_acc_per_step
    trainer = LocalTandemTrainer.load(args.checkpoint, device=args.device, restore_rng=False)
    splits = _load_data(args)
    _check_fits(trainer.teacher_spec, splits, args.checkpoint)
    _, test_loader = ltl_data.make_loaders(splits, batch_size=args.batch_size, augment=False, seed=0,
                                           num_workers=args.workers)
    report = trainer.evaluate(test_loader, progress=not args.quiet)
    rows = [("teacher accuracy", f"{report['teacher_acc']:.2f} %"),
            ("student accuracy", f"{report['student_acc']:.2f} %"),
            ("time steps", str(trainer.time_steps)), ("mode", trainer.mode),
            ("spikes per sample", f"{report['spikes_per_sample']:.0f}"), ("test samples", str(report["samples"]))]
    print(_table(rows))
    if args.out:
        out = Path(args.out)
        write_json(out / "eval.json", dict(report, checkpoint=str(args.checkpoint), data=args.data))
        plot_acc_per_step(report["acc_per_step"], out / "acc_per_step.png", report["teacher_acc"])
    return 0


def cmd_info(args) -> int:
    import platform
    import torch
    import ltl_ext
    rows = [("ltl_ext", ltl_ext.__version__), ("python", platform.python_version()), ("torch", torch.__version__),
            ("CPU threads", str(torch.get_num_threads())),
            ("CUDA", f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"
             if torch.cuda.is_available() else "not available")]
    try:
        from ._ops import build_info
        info = build_info()
        rows += [(f"build: {k}", str(v)) for k, v in info.items()]
    except ImportError:
        rows.append(("compiled kernels", "not built (pure-PyTorch reference in use)"))
    except Exception as e:  # noqa: BLE001 - info must always print
        rows.append(("compiled kernels", f"failed to load: {str(e).splitlines()[0][:120]}"))
    fm = Path("/usr/share/datasets/fashion-mnist")
    rows.append(("Fashion-MNIST (full)", str(fm) if fm.is_dir() else "not installed "
                 "(apt-get install dataset-fashion-mnist)"))
    print(_table(rows))
    return 0


# ============================================================================================= helpers
def _torch(args):
    import torch
    if getattr(args, "device", None):
        try:
            dev = torch.device(args.device)
        except RuntimeError:
            raise UserError(f"--device {args.device!r} is not a device (use cpu, cuda or cuda:N)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but this torch sees no CUDA device")
    if getattr(args, "seed", None) is not None:
        torch.manual_seed(args.seed)
    return torch


def _distributed(args):
    """This process's part in a ``torchrun`` job (or a one-process job): rank, device (``cuda`` -> the local
    rank's GPU), process group."""
    from .distributed import Distributed
    return Distributed.setup(args.device)


def _positive(flag: str, value: int, maximum: Optional[int] = None, allow_zero: bool = False) -> int:
    if value < (0 if allow_zero else 1):
        raise UserError(f"{flag} must be {'>= 0' if allow_zero else '>= 1'}, got {value}")
    if maximum is not None and value > maximum:
        raise UserError(f"{flag} must be <= {maximum}, got {value}")
    return value


def _percentile(text: Optional[str], mode: str):
    if text is None:
        return 99.9 if mode == "offline" else 99.0
    if text.lower() in ("none", "off"):
        return None
    if text.lower() == "running":
        return "running"
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--percentile must be a number in (0, 100], 'running' or 'none', got {text!r}") from None
    if not 0 < value <= 100:
        raise UserError(f"--percentile must be in (0, 100], got {value}")
    return value


def _load_data(args):
    from . import data as ltl_data
    return ltl_data.load_dataset(args.data, args.data_dir, limit=_limit(args), image_size=args.image_size)


def _limit(args) -> Optional[int]:
    return None if args.limit is None else _positive("--limit", args.limit)


def _default_arch(data: str) -> str:
    return {"cifar10": "vgg11", "cifar100": "vgg11", "folder": "resnet"}.get(data, "cnn_small")


def _build_teacher(arch: str, splits, extra: Optional[Dict[str, Any]] = None):
    """A fresh zoo model for these data, and its spec (what a checkpoint needs to rebuild it)."""
    from .models import MODELS
    c, (h, w) = splits.in_channels, splits.image_size
    kwargs: Dict[str, Any] = {"num_classes": splits.num_classes}
    if arch == "mlp":
        kwargs["in_features"] = c * h * w
    else:
        kwargs["in_channels"] = c
    if arch in ("vgg11", "vgg16", "cnn_small"):
        if h != w:
            raise UserError(f"--arch {arch} needs square images, got {h}x{w} (use --image-size for folder data)")
        if arch.startswith("vgg") and h % 16:
            raise UserError(f"--arch {arch} needs an image size divisible by 16, got {h}")
        kwargs["input_size"] = h
    kwargs.update(extra or {})
    return MODELS[arch](**kwargs), {"arch": arch, "kwargs": kwargs}


def _check_fits(spec: Optional[Dict[str, Any]], splits, where) -> None:
    """A saved model must match the data it is run on (classes, channels, input size): one clear line if not."""
    kw = (spec or {}).get("kwargs", {})
    c, (h, w) = splits.in_channels, splits.image_size
    checks = [("classes", kw.get("num_classes"), splits.num_classes), ("input channels", kw.get("in_channels"), c),
              ("input features", kw.get("in_features"), c * h * w),
              ("image size", kw.get("input_size"), h if h == w else f"{h}x{w}")]
    for what, model, data in checks:
        if model is not None and model != data:
            raise UserError(f"{where} was trained for {model} {what}, but {splits.name} has {data}")


def _arch_kwargs(arch: str, channels: Optional[str], hidden: Optional[str]) -> Dict[str, Any]:
    def ints(flag, text):
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values or min(values) < 1:
            raise UserError(f"{flag} must be positive integers separated by commas, got {text!r}")
        return values
    out: Dict[str, Any] = {}
    if channels is not None:
        if arch != "cnn_small":
            raise UserError(f"--channels applies to --arch cnn_small, not {arch}")
        out["channels"] = ints("--channels", channels)
    if hidden is not None:
        if arch not in ("cnn_small", "mlp"):
            raise UserError(f"--hidden applies to --arch cnn_small or mlp, not {arch}")
        h = ints("--hidden", hidden)
        if arch == "cnn_small" and len(h) != 1:
            raise UserError("--hidden takes one width for cnn_small")
        out["hidden"] = h[0] if arch == "cnn_small" else h
    return out


def _first_images(loader, n: int = 256):
    import torch
    xs, got = [], 0
    for x, _ in loader:
        xs.append(x)
        got += len(x)
        if got >= n:
            break
    return torch.cat(xs)[:n]


def _metrics(trainer, report: Dict[str, Any], *, data: str, seconds: float, ltl_seconds: float,
             teacher_acc: float) -> Dict[str, Any]:
    from dataclasses import asdict
    return {
        "teacher_acc": teacher_acc,
        "student_acc": report["student_acc"],
        "gap": teacher_acc - report["student_acc"],
        "epochs": trainer.epoch,
        "mode": trainer.mode,
        "memory": trainer.config.memory,
        "time_steps": trainer.time_steps,
        "seconds": seconds,
        "ltl_seconds": ltl_seconds,
        "spikes_per_sample": report["spikes_per_sample"],
        "firing_rate": report["firing_rate"],
        "acc_per_step": report["acc_per_step"],
        "data": data,
        "device": str(trainer.device),
        "config": asdict(trainer.config),
        "history": trainer.history,
    }


def _finish(out: Path, trainer, report, metrics, teacher_acc) -> None:
    from .plots import plot_run
    from .trainer import write_json
    write_json(out / "metrics.json", metrics)
    plot_run(trainer.history, report, out)
    rows = [("teacher accuracy", f"{teacher_acc:.2f} %"), ("student accuracy", f"{report['student_acc']:.2f} %"),
            ("epochs", f"{metrics['epochs']} ({metrics['mode']}, T = {metrics['time_steps']})"),
            ("wall time", f"{metrics['seconds']:.0f} s (LTL {metrics['ltl_seconds']:.0f} s)"),
            ("spikes per sample", f"{report['spikes_per_sample']:.0f}"), ("written to", str(out))]
    print(_table(rows))


def _table(rows) -> str:
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def _say(enabled: bool, msg: str) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)
