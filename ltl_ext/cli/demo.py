"""``demo``: the main job on the embedded Fashion-MNIST subset (teacher, conversion, LTL)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import (RUN_FILES, UserError, _build_teacher, _check_teacher_batches, _final_test, _finish,
                     _first_images, _limit, _metrics, _out_folder, _positive, _say, _split_record, _torch)
from ..data.loaders import DEFAULT_VAL_FRACTION


#: The demo recipe: sized to finish in a few minutes on 2 CPU cores (its wall time and figures: the artefact
#: docs/results/demo.json, from `make demo`). The student starts from the teacher (BN folded, thresholds balanced:
#: ltl-method.md §2 "ours"). Each epoch is checked on the validation split; the test set is evaluated once, at the
#: end, on the epoch best on validation (best.pt), so the recipe's epoch count selects nothing on the test set.
DEMO = dict(arch="cnn_small", arch_kwargs={"channels": [16, 32, 32], "hidden": 128}, batch_size=64,
            teacher_epochs=3, teacher_lr=0.05, epochs=3, time_steps=8, lr=1e-3, init="teacher")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="the main job: embedded Fashion-MNIST subset, teacher + offline LTL, "
                                    "a couple of minutes on a CPU")
    p.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="LTL epochs (default: the demo recipe's, <= 5)")
    p.add_argument("--time-steps", type=int, default=None, help="T (default: the demo recipe's)")
    p.add_argument("--mode", choices=("offline", "online"), default="offline")
    p.add_argument("--init", choices=("random", "teacher"), default=None,
                   help="student start (default: the recipe's, teacher)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="(default: the demo recipe's)")
    p.add_argument("--limit", type=int, default=None, help="use at most N train and N test images (smoke runs)")
    p.add_argument("--precision", choices=("32", "bf16", "16-mixed"), default="32",
                   help="LTL in float32, bfloat16 autocast, or float16 with loss scaling (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _check_out(out: Path) -> None:
    """The demo replaces its own earlier run in ``out`` and nothing else: a folder holding a ``train`` run (its
    settings.json) or run files of another origin (a user's checkpoints, say) is refused before anything is written.
    A demo run is known by its teacher.pt, which the demo writes first (meta ``data="embedded"``)."""
    found = [f for f in RUN_FILES if (out / f).exists()]
    if not found:
        return
    from ..train.checkpoint import CheckpointError, load_checkpoint
    from ..train.teacher import TEACHER_KIND
    try:
        meta = load_checkpoint(out / "teacher.pt", kind=TEACHER_KIND).get("meta", {})
    except CheckpointError:              # none there, or not a teacher: not the demo's
        meta = {}
    if "settings.json" in found or meta.get("data") != "embedded":
        raise UserError(f"{out} holds files the demo did not write ({', '.join(found)}); the demo replaces only "
                        f"its own earlier run: choose another --out, or remove them")


def run(args) -> int:
    t_start = time.perf_counter()
    _torch(args)
    from .. import data as ltl_data
    from ..train import LocalTandemTrainer, save_teacher, train_teacher
    recipe = dict(DEMO)
    if args.epochs is not None:
        recipe["epochs"] = _positive("--epochs", args.epochs, 5)
    if args.time_steps is not None:
        recipe["time_steps"] = _positive("--time-steps", args.time_steps)
    if args.teacher_epochs is not None:
        recipe["teacher_epochs"] = _positive("--teacher-epochs", args.teacher_epochs, allow_zero=True)
    if args.init is not None:
        recipe["init"] = args.init
    out = _out_folder(args.out)
    _check_out(out)
    progress = not args.quiet
    splits = ltl_data.load_dataset("embedded", limit=_limit(args))
    train_loader, val_loader, test_loader = ltl_data.make_loaders(splits, batch_size=recipe["batch_size"],
                                                                  augment=False, seed=args.seed)
    _check_teacher_batches(train_loader, recipe["teacher_epochs"], "choose another --limit")
    teacher, spec = _build_teacher(recipe["arch"], splits, recipe["arch_kwargs"])
    _say(progress, f"{splits.describe()}\nteacher: {recipe['arch']}, {recipe['teacher_epochs']} epochs")
    history = train_teacher(teacher, train_loader, recipe["teacher_epochs"], lr=recipe["teacher_lr"],
                            device=args.device, progress=progress, val_loader=val_loader)
    save_teacher(teacher, spec, out / "teacher.pt", {"data": "embedded", "history": history,
                                                     "split": _split_record("embedded", _limit(args), args.seed,
                                                                            DEFAULT_VAL_FRACTION)})
    val_accs = [h["val_acc"] for h in history if "val_acc" in h]    # none when --limit leaves no validation split
    _say(progress, (f"teacher validation accuracy {max(val_accs):.2f}%; " if val_accs else "")
         + f"LTL {args.mode}, T = {recipe['time_steps']}")
    trainer = LocalTandemTrainer(teacher, time_steps=recipe["time_steps"], mode=args.mode, init=recipe["init"],
                                 lr=recipe["lr"], device=args.device, teacher_spec=spec, precision=args.precision,
                                 calib_data=_first_images(train_loader) if recipe["init"] == "teacher" else None)
    t_ltl = time.perf_counter()
    for stale in ("last.pt", "best.pt"):      # the demo replaces its own earlier run
        (out / stale).unlink(missing_ok=True)
    trainer.fit(train_loader, recipe["epochs"], val_loader=val_loader, progress=progress,
                checkpoint=out / "last.pt", best_checkpoint=None if val_loader is None else out / "best.pt")
    ltl_seconds = time.perf_counter() - t_ltl
    final, selected = _final_test(out, trainer, test_loader, device=args.device)
    metrics = _metrics(trainer, final, data="embedded", seconds=time.perf_counter() - t_start,
                       ltl_seconds=ltl_seconds, selected_epoch=selected)
    _finish(out, trainer, final, metrics)
    return 0
