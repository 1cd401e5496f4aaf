"""What the subcommands share: the user-error type, data flags, teacher building, checks, output tables."""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from ..data.catalog import DATASETS as _DATASETS
from ..data.loaders import DEFAULT_VAL_FRACTION

DATASETS = tuple(_DATASETS)
ARCHS = ("cnn_small", "mlp", "vgg11", "vgg16", "resnet")


#: the data sets whose classes their name fixes -> the classes (the embedded subset is Fashion-MNIST's)
FIXED_CLASSES = {"embedded": "fashion-mnist", "fashion-mnist": "fashion-mnist", "mnist": "mnist", "kmnist": "kmnist",
                 "cifar10": "cifar10", "cifar100": "cifar100"}

#: the files a run writes into its output folder; any of them there means a run is there
RUN_FILES = ("settings.json", "teacher.pt", "last.pt", "best.pt", "history.json", "history.csv", "metrics.json",
             "ckpt.pt")


class UserError(Exception):
    """A problem with the command's input, shown as one line."""


def add_data_args(p: argparse.ArgumentParser, training: bool = True) -> None:
    """The data flags; ``training=False`` (``eval``, which reads the test set only) leaves out --val-fraction and
    --augment, which it would accept and ignore."""
    p.add_argument("--data", choices=list(DATASETS), default="embedded",
                   help="data set (default: the embedded Fashion-MNIST subset)")
    p.add_argument("--data-dir", default=None, metavar="PATH", help="where the data set's files are")
    p.add_argument("--limit", type=int, default=None, help="use at most N train and N test images")
    p.add_argument("--image-size", type=int, default=None, help="folder data: resize images to S x S")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    if not training:
        return
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help="share of each class of the training data held out for validation, which selects the "
                        "epoch and the teacher (default: %(default)s); the test set is evaluated once, at the end")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="training augmentation (default: on for CIFAR, off otherwise)")


def _check_device(device: Optional[str]) -> None:
    import torch
    if device:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise UserError(f"--device {device!r} is not a device (use cpu, cuda or cuda:N)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but this torch sees no CUDA device")


def _torch(args):
    import torch
    _check_device(getattr(args, "device", None))
    if getattr(args, "seed", None) is not None:
        torch.manual_seed(args.seed)
    return torch


def _distributed(args):
    """This process's part in a ``torchrun`` job (or a one-process job): rank, device (``cuda`` -> the local
    rank's GPU), process group."""
    from ..distributed import Distributed
    return Distributed.setup(args.device)


def _positive(flag: str, value: int, maximum: Optional[int] = None, allow_zero: bool = False) -> int:
    if value < (0 if allow_zero else 1):
        raise UserError(f"{flag} must be {'>= 0' if allow_zero else '>= 1'}, got {value}")
    if maximum is not None and value > maximum:
        raise UserError(f"{flag} must be <= {maximum}, got {value}")
    return value


def _percentile(text: Optional[str], mode: str):
    if text is None:
        from ..train.config import default_percentile
        return default_percentile(mode)
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


def _val_fraction(args) -> float:
    v = args.val_fraction
    if not 0.0 <= v < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {v}")
    return v


def _load_data(args):
    """The data set the data flags (:func:`add_data_args`) name, the flags checked before anything runs on it."""
    from .. import data as ltl_data
    _positive("--batch-size", args.batch_size)
    _positive("--workers", args.workers, allow_zero=True)
    splits = ltl_data.load_dataset(args.data, args.data_dir, limit=_limit(args), image_size=args.image_size)
    _require_test(splits)
    return splits


def _require_test(splits) -> None:
    """The commands report test figures: data without test images fail here, not after a whole training run."""
    if splits.x_test.shape[0] == 0:
        raise UserError(f"no test images in {splits.describe()}: the accuracy is reported on the test split")


def _check_teacher_batches(train_loader, epochs: int, fix: str) -> None:
    """Every zoo teacher has BatchNorm, which cannot train on a batch of one image: --batch-size 1, or a training
    split whose size leaves one image over (N % batch == 1), crashed in the teacher's first epoch."""
    n, size = train_loader.sampler.num_samples, train_loader.sampler.batch_size
    if epochs > 0 and (size == 1 or n % size == 1):
        raise UserError(f"the teacher's training batches would include one of a single image ({n} training images, "
                        f"batches of {size}), which its BatchNorm layers cannot train on: {fix}")


def _out_folder(text: str) -> Path:
    """``--out`` as the folder a command writes into; an existing file there (a data set, a checkpoint) is refused
    before anything runs."""
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: choose a folder for the results")
    return out


def _limit(args) -> Optional[int]:
    return None if args.limit is None else _positive("--limit", args.limit)


def _default_arch(data: str) -> str:
    return {"cifar10": "vgg11", "cifar100": "vgg11", "folder": "resnet"}.get(data, "cnn_small")


def _build_teacher(arch: str, splits, extra: Optional[Dict[str, Any]] = None):
    """A fresh zoo model for these data, and its spec (what a checkpoint needs to rebuild it). The model normalises
    its own input with the training images' mean and std, so every checkpoint of it carries them."""
    from ..nn.zoo import MODELS
    c, (h, w) = splits.in_channels, splits.image_size
    kwargs: Dict[str, Any] = {"num_classes": splits.num_classes, "mean": list(splits.mean), "std": list(splits.std)}
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
    # the class names travel with the spec (teacher.pt, every checkpoint): labels are positions in them, so data
    # with other names in the same positions can be refused (:func:`_check_fits`) rather than scored permuted
    # the data set's name too: MNIST's class names are its digits, which say nothing (:func:`_check_fits`)
    return MODELS[arch](**kwargs), {"arch": arch, "kwargs": kwargs, "class_names": list(splits.class_names),
                                    "data": splits.name}


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
    # the catalogued data sets have fixed classes: a model of one is refused on another even where the names cannot
    # tell them apart (MNIST's "0".."9" are compared with nothing); the embedded subset is Fashion-MNIST
    trained_on = (spec or {}).get("data")
    if trained_on in FIXED_CLASSES and splits.name in FIXED_CLASSES \
            and FIXED_CLASSES[trained_on] != FIXED_CLASSES[splits.name]:
        raise UserError(f"{where} was trained on {trained_on}, but this is {splits.name}, whose classes are "
                        f"others: its labels would be scored against the wrong classes (pass the --data it was "
                        f"trained on)")
    names, data_names = (spec or {}).get("class_names"), list(splits.class_names)
    # a checkpoint from before names were stored, or integer labels on either side: nothing to compare
    if names is None or _index_names(names) or _index_names(data_names) or list(names) == data_names:
        return
    i = next((i for i, (a, b) in enumerate(zip(names, data_names)) if a != b), None)
    label = "" if i is None else f" (label {i} is {names[i]!r} there, {data_names[i]!r} here)"
    raise UserError(f"{where} was trained with the classes {_shown(names)}, but {splits.name} has "
                    f"{_shown(data_names)}{label}, so its labels would be scored against the wrong classes; for "
                    f".npz data give class_names in the model's order")


def _index_names(names) -> bool:
    """The names integer labels get ("0", "1", ...): they say nothing about which class a label stands for."""
    return list(names) == [str(i) for i in range(len(names))]


def _shown(names, n: int = 10) -> str:
    return "[" + ", ".join(map(repr, names[:n])) + (", ...]" if len(names) > n else "]")


def _spec_arguments(spec: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A zoo model's builder arguments from its spec, the builder's defaults filling the gaps; None if unknown."""
    from ..nn.zoo import MODELS
    build = MODELS.get((spec or {}).get("arch"))
    if build is None:
        return None
    args = inspect.signature(build).bind_partial(**spec.get("kwargs", {}))
    args.apply_defaults()
    return dict(args.arguments)


def _check_teacher_flags(args, spec: Optional[Dict[str, Any]], where) -> None:
    """With ``--teacher`` the model is the loaded one: ``--arch``, ``--channels`` and ``--hidden`` must describe it.
    Why: they would be ignored, yet written to settings.json as the run's architecture."""
    arch, built = (spec or {}).get("arch"), _spec_arguments(spec) or {}
    if args.arch is not None and args.arch != arch:
        raise UserError(f"--arch {args.arch} contradicts --teacher {where}, which is a {arch}: drop --arch (the "
                        f"teacher's architecture is used)")
    for key, value in _arch_kwargs(arch, args.channels, args.hidden).items():
        have = built.get(key)
        if _as_list(value) != _as_list(have):
            raise UserError(f"--{key} {getattr(args, key)} contradicts --teacher {where}, whose {key} is "
                            f"{_as_list(have)}: drop --{key} (the teacher's widths are used)")


def _split_record(data: str, limit: Optional[int], seed: int, val_fraction: float) -> Dict[str, Any]:
    """What fixes a run's train/validation split (:func:`~ltl_ext.data.validation_split`), as a teacher file records
    it: the data set, its --limit, the --seed and the --val-fraction."""
    return {"data": data, "limit": limit, "seed": seed, "val_fraction": val_fraction}


def _check_teacher_split(meta: Optional[Dict[str, Any]], split: Dict[str, Any], where) -> None:
    """A teacher trained by this CLI on another train/validation split (another --seed, --val-fraction, --limit or
    data set) trained on images that this run holds out for validation: every validation figure, and the epoch
    they select, would then look better than it is, with no error. Teachers without the record (older files, the
    Python API's) are not compared."""
    theirs = (meta or {}).get("split")
    if not isinstance(theirs, dict) or not split["val_fraction"]:
        return
    differ = [k for k in split if theirs.get(k) != split[k]]
    if differ:
        def flags(rec):
            return ", ".join(f"{k} {rec.get(k)}" for k in differ)
        raise UserError(f"--teacher {where} was trained on another train/validation split ({flags(theirs)}; this run: "
                        f"{flags(split)}), so this run's validation images include some the teacher trained on: use "
                        f"the teacher's settings, --val-fraction 0 (no validation), or let this run train its teacher")


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


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
             selected_epoch: Optional[int]) -> Dict[str, Any]:
    """``metrics.json``: ``teacher_acc``, ``student_acc``, ``gap`` and the rest are **test** figures, measured once
    at the end on the model of ``selected_epoch`` (best on validation); ``val_*`` are that epoch's validation
    figures; the history holds the validation figures of every epoch."""
    from dataclasses import asdict
    chosen = next((h for h in trainer.history if h["epoch"] == selected_epoch), {})
    return {
        "evaluated_on": "test (once, at the end, the model of selected_epoch)",
        "teacher_acc": report["teacher_acc"],
        "student_acc": report["student_acc"],
        "gap": report["teacher_acc"] - report["student_acc"],
        "selected_epoch": selected_epoch,
        # the epoch's entry exists without validation too: only its validation figure says it was selected on it
        "selected_on": ("validation student accuracy" if chosen.get("val_student_acc") is not None
                        else "no validation set: the last epoch"),
        "val_teacher_acc": chosen.get("val_teacher_acc"),
        "val_student_acc": chosen.get("val_student_acc"),
        "test_samples": report["samples"],
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


def _finish(out: Path, trainer, report, metrics) -> None:
    from ..train.plots import plot_run
    from ..train import write_json
    write_json(out / "metrics.json", metrics)
    plot_run(trainer.history, report, out, test_epoch=metrics["selected_epoch"])
    val = metrics.get("val_student_acc")
    rows = [("teacher accuracy, test", f"{report['teacher_acc']:.2f} %"),
            ("student accuracy, test", f"{report['student_acc']:.2f} %  (epoch {metrics['selected_epoch']}, "
                                       + (f"selected on validation: {val:.2f} %)" if val is not None
                                          else "the last: no validation set)")),
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


def _final_test(out: Path, trainer, test_loader, *, device, dist=None):
    """The one evaluation on the test set, at the end: of ``best.pt`` (the epoch best on validation) when the run
    has one, else of the trainer as it is. Returns ``(report, selected_epoch)``."""
    from ..train import LocalTandemTrainer
    best = out / "best.pt"
    if trainer.best is not None and best.is_file():
        kw = {} if dist is None else {"distributed": dist}
        chosen = LocalTandemTrainer.load(best, device=device, restore_rng=False, **kw)
        return chosen.evaluate(test_loader), trainer.best["epoch"]
    return trainer.evaluate(test_loader), trainer.epoch
