"""``eval``: evaluate a trained student (a run's best.pt or last.pt) on a test set."""
from __future__ import annotations

import argparse

from .common import UserError, add_data_args, _check_fits, _load_data, _out_folder, _table, _torch

#: what ``--out`` receives
EVAL_FILES = ("eval.json", "acc_per_step.png")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate a trained student (best.pt or last.pt of a run) on a test set")
    p.add_argument("checkpoint", metavar="CKPT")
    add_data_args(p, training=False)
    p.add_argument("--out", default=None, help="write eval.json (and acc_per_step.png) here")
    p.add_argument("--overwrite", action="store_true", help="replace eval.json and acc_per_step.png in --out")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    _torch(args)
    from .. import data as ltl_data
    from ..train import LocalTandemTrainer, write_json
    from ..train.plots import plot_acc_per_step
    out = _out_folder(args.out) if args.out else None
    found = [f for f in EVAL_FILES if out is not None and (out / f).exists()]
    if found and not args.overwrite:    # e.g. --out of the training run, whose acc_per_step.png is the test figure
        raise UserError(f"{out} holds {', '.join(found)} already: pass --overwrite to replace them, or choose "
                        f"another --out")
    trainer = LocalTandemTrainer.load(args.checkpoint, device=args.device, restore_rng=False)
    splits = _load_data(args)
    _check_fits(trainer.teacher_spec, splits, args.checkpoint)
    # raw [0, 1] images: the model normalises them with the statistics it was trained with (in the checkpoint),
    # whatever training images sit beside these test images
    test_loader = ltl_data.make_loaders(splits, batch_size=args.batch_size, val_fraction=0.0, augment=False,
                                        seed=0, num_workers=args.workers).test
    report = trainer.evaluate(test_loader, progress=not args.quiet)
    rows = [("teacher accuracy", f"{report['teacher_acc']:.2f} %"),
            ("student accuracy", f"{report['student_acc']:.2f} %"),
            ("time steps", str(trainer.time_steps)), ("mode", trainer.mode),
            ("spikes per sample", f"{report['spikes_per_sample']:.0f}"), ("test samples", str(report["samples"]))]
    print(_table(rows))
    if out is not None:
        write_json(out / "eval.json", dict(report, checkpoint=str(args.checkpoint), data=args.data))
        plot_acc_per_step(report["acc_per_step"], out / "acc_per_step.png", report["teacher_acc"])
    return 0
