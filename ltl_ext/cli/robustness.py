"""``robustness``: the study of :mod:`ltl_ext.hw.robustness` from the command line (table, JSON, plot)."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import List

from ..hw import drift_study, noise, robustness as study
from ..hw.robustness import DEFAULT_DEVICES, DEFAULT_SIGMAS, _say, plot, run_study, table
from .common import DATASETS, UserError, _check_device, _check_fits, _out_folder, _require_test


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``robustness`` on the CLI's subparsers (called by :mod:`ltl_ext.cli`)."""
    r = subparsers.add_parser("robustness", help="accuracy on noisy analog chips before/after on-chip LTL "
                                                 "calibration (programming variation, stuck devices, levels)",
                              description=study.__doc__.split("\n\n")[0])
    r.add_argument("--checkpoint", default=None, metavar="CKPT",
                   help="a trained run's best.pt (from demo/train); default: train one with the demo recipe")
    r.add_argument("--data", default="embedded", choices=DATASETS,
                   help="data set (default: the embedded Fashion-MNIST subset)")
    r.add_argument("--data-dir", default=None, metavar="PATH")
    r.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default: %(default)s)")
    r.add_argument("--calib-batch-size", type=int, default=32,
                   help="samples the host streams to the chip per calibration step (default: %(default)s)")
    r.add_argument("--sigmas", default=",".join(f"{s:g}" for s in DEFAULT_SIGMAS),
                   help="programming variation sigmas, comma separated, or 'none' (default: %(default)s)")
    r.add_argument("--mode", choices=noise.MODES, default="multiplicative")
    r.add_argument("--chips", type=int, default=3, help="chip instances (seeds) per setting (default: 3)")
    r.add_argument("--steps", type=int, default=300, help="online LTL calibration steps per chip (default: 300)")
    r.add_argument("--calib-lr", type=float, default=None, help="calibration learning rate (default: the run's)")
    r.add_argument("--train-thresholds", action="store_true", help="calibrate the LIF thresholds too")
    r.add_argument("--no-devices", action="store_true", help="skip the stuck-device and conductance-level runs")
    r.add_argument("--no-control", action="store_true", help="skip calibrating the ideal student (the control)")
    r.add_argument("--preset", choices=sorted(noise.PRESETS), default=None,
                   help="device preset from published measurements: run the drift study on it (chips calibrated "
                        "once at --calib-time, then aged over --drift-times, with and without drift "
                        "compensation) instead of the sigma sweep")
    r.add_argument("--drift-times", default=",".join(f"{t:g}" for t in drift_study.DEFAULT_DRIFT_TIMES),
                   help="seconds after programming, comma separated (default: %(default)s)")
    r.add_argument("--calib-time", type=float, default=86400.0,
                   help="when the chips are calibrated, seconds after programming (default: %(default)g)")
    r.add_argument("--in-the-loop", choices=("spikes", "membrane"), default=None,
                   help="also calibrate the same chips as black boxes from recorded spikes (and membrane traces)")
    r.add_argument("--seed", type=int, default=0, help="first chip seed (default: 0)")
    r.add_argument("--out", default="runs/robustness", help="output folder (default: %(default)s)")
    r.add_argument("--overwrite", action="store_true", help="replace the results of an earlier study in --out")
    r.add_argument("--device", default=None)
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=run)
    return r


def _parse_sigmas(text: str) -> List[float]:
    if text.strip().lower() == "none":
        return []   # no sweep: only the device settings
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--sigmas must be comma-separated numbers, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"--sigmas must be numbers >= 0, got {text!r}")
    return values


def _parse_times(text: str) -> List[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--drift-times must be comma-separated seconds, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"--drift-times must be seconds > 0, got {text!r}")
    return sorted(values)


def _user_error(msg: str) -> Exception:
    return UserError(msg)


def run(args) -> int:
    """The ``robustness`` command."""
    from .. import data as ltl_data
    from ..train import LocalTandemTrainer, write_json
    try:
        sigmas = _parse_sigmas(args.sigmas)
        times = _parse_times(args.drift_times)
        if not (math.isfinite(args.calib_time) and args.calib_time > 0):
            raise ValueError(f"--calib-time must be seconds > 0, got {args.calib_time}")
        if args.in_the_loop and not args.preset:
            raise ValueError("--in-the-loop runs in the drift study: give a --preset too")
        # checked here: the trainer would refuse it only after the checkpoint and the data are loaded
        if args.calib_lr is not None and not (math.isfinite(args.calib_lr) and args.calib_lr > 0):
            raise ValueError(f"--calib-lr must be a number > 0, got {args.calib_lr}")
    except ValueError as e:
        raise _user_error(str(e)) from None
    _check_device(args.device)           # before anything loads (the seed seeds each chip, not torch)
    if args.checkpoint is None and args.data != "embedded":
        # the student it would train follows the demo recipe, on the embedded Fashion-MNIST subset: a study of it
        # on other data measures nothing (and is refused only after the training, or not at all for MNIST)
        raise _user_error(f"without --checkpoint the student is trained on the embedded data, not {args.data}: "
                          f"give --checkpoint (a run's best.pt trained on {args.data})")
    for flag, v, low in (("--chips", args.chips, 1), ("--steps", args.steps, 0), ("--batch-size", args.batch_size, 1),
                           ("--calib-batch-size", args.calib_batch_size, 1)):
        if v < low:
            raise _user_error(f"{flag} must be >= {low}, got {v}")
    out = _out_folder(args.out)
    result = out / ("drift.json" if args.preset else "robustness.json")
    if result.exists() and not args.overwrite:   # a study takes long: its results are never replaced unasked
        raise _user_error(f"{result} holds an earlier study: pass --overwrite to replace it, or choose another --out")
    if args.data != "embedded" and not args.data_dir:
        raise _user_error(f"--data {args.data} needs --data-dir PATH (nothing is ever downloaded)")
    splits = ltl_data.load_dataset(args.data, args.data_dir)    # a wrong path fails before any training
    _require_test(splits)
    progress = not args.quiet
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = out / "student" / "best.pt"
        if not ckpt.exists():
            from . import main as cli_main
            _say(progress, f"no --checkpoint: training a student with the demo recipe into {ckpt.parent}")
            argv = ["demo", "--out", str(ckpt.parent)] + (["--device", args.device] if args.device else []) \
                + (["--quiet"] if args.quiet else [])
            rc = cli_main(argv)
            if rc:
                return rc
    elif not Path(ckpt).exists():
        raise _user_error(f"--checkpoint {ckpt}: no such file (a best.pt or last.pt written by demo or train)")
    trainer = LocalTandemTrainer.load(ckpt, device=args.device, restore_rng=False)
    _check_fits(trainer.teacher_spec, splits, str(ckpt))

    def calib_loader(chip_seed):   # each chip: its own batch order, from its seed (reproducible chip by chip)
        return ltl_data.make_loaders(splits, batch_size=args.calib_batch_size, augment=False, seed=chip_seed).train
    test_loader = ltl_data.make_loaders(splits, batch_size=args.batch_size, augment=False, seed=args.seed).test

    command = " ".join(["python -m ltl_ext"] + sys.argv[1:])
    if args.preset:
        return _drift(args, trainer, calib_loader, test_loader, times, out, ckpt, command, progress)

    def partial(res):
        write_json(out / "robustness.json", dict(res, partial=True, checkpoint=str(ckpt), data=args.data))

    results = run_study(trainer, calib_loader, test_loader, sigmas=sigmas, chips=args.chips, steps=args.steps,
                        mode=args.mode, lr=args.calib_lr, train_thresholds=args.train_thresholds,
                        devices=() if args.no_devices else DEFAULT_DEVICES, control=not args.no_control,
                        seed=args.seed, progress=progress, callback=partial)
    results["config"]["calib_batch_size"] = args.calib_batch_size
    results.update(checkpoint=str(ckpt), data=args.data, command=command)
    write_json(out / "robustness.json", results)
    plot(results, out / "robustness.png")
    print(table(results))
    print(f"  written to {out}/robustness.json, robustness.png ({results['seconds']:.0f} s)")
    return 0


def _drift(args, trainer, calib_loader, test_loader, times, out, ckpt, command, progress) -> int:
    """``--preset``: the drift study (:mod:`ltl_ext.hw.drift_study`): table, ``drift.json``, ``drift.png``."""
    from ..train import write_json

    def partial(res):
        write_json(out / "drift.json", dict(res, partial=True, checkpoint=str(ckpt), data=args.data))

    res = drift_study.run_drift_study(trainer, calib_loader, test_loader, preset=args.preset,
                                      calib_time=args.calib_time, drift_times=times, chips=args.chips,
                                      steps=args.steps, lr=args.calib_lr, in_the_loop=args.in_the_loop,
                                      compensation=(True, False) if args.preset == "pcm" else (False,),
                                      seed=args.seed, progress=progress, callback=partial)
    res["config"]["calib_batch_size"] = args.calib_batch_size
    res.update(checkpoint=str(ckpt), data=args.data, command=command)
    write_json(out / "drift.json", res)
    drift_study.drift_plot(res, out / "drift.png")
    print(drift_study.drift_table(res))
    print(f"  written to {out}/drift.json, drift.png ({res['seconds']:.0f} s)")
    return 0
