"""The robustness study: a trained spiking student on noisy analog chips, before and after on-chip LTL calibration.

::

    python -m ltl_ext robustness [--checkpoint CKPT] [--sigmas 0.05,0.1,0.2,0.3] [--chips 3] [--steps 300]
                                 [--mode multiplicative|additive] [--out DIR]

For each programming-variation sigma and each of ``--chips`` chip seeds (ltl-method.md §7): the accuracy of the
ideal student, of the chip as programmed ("before"), and of the chip after ``--steps`` online LTL steps on the
chip with teacher targets from the host ("after"); then the same for stuck devices and for 4/8/16 conductance
levels. A control calibrates the *ideal* student with the same steps, to tell compensation of the noise apart
from plain extra training. Writes ``DIR/robustness.json``, ``DIR/robustness.png`` and prints a table.

Without ``--checkpoint`` the student is trained first with the demo recipe (``python -m ltl_ext demo``) into
``DIR/student/``. The function API is :func:`run_study` (a trainer and loaders in, the results dict out).

"Recovered" is the fraction of the accuracy the noise cost that calibration won back, over the chips of a
setting: ``mean(after - before) / mean(ideal - before)``; "strict" first subtracts what the same calibration gives
the ideal student (the control), so plain extra training of an unconverged student does not count. The verdict is
decided on the strict ratio, and a cost inside the resolution (twice the standard error of the cost, from the test
set's binomial error and the spread over chips) is "not measurable" (:mod:`ltl_ext.hw.verdict`). The same
fractions on the *rate error* (sum over layers of the MSE of firing rates to the teacher's targets) are continuous
measures of what the noise does when accuracy cannot resolve it. Device presets and drift: ``--preset``
(:mod:`ltl_ext.hw.drift_study`, docs/hardware.md). Results: ``docs/results.md``, "Device non-idealities".
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

from . import noise, verdict


def torch_no_grad_lazy(fn):
    """``torch.no_grad()`` as a decorator without importing torch at module import (the CLI imports us)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch
        with torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper

DEFAULT_SIGMAS = (0.05, 0.1, 0.2, 0.3)
#: the extra device settings of the study: (name, DeviceModel keyword arguments)
DEFAULT_DEVICES = (
    ("stuck 1% off + 1% on", dict(programming_sigma=0.0, stuck_off=0.01, stuck_on=0.01)),
    ("4 levels", dict(programming_sigma=0.0, levels=4)),
    ("8 levels", dict(programming_sigma=0.0, levels=8)),
    ("16 levels", dict(programming_sigma=0.0, levels=16)),
)
CLAIM_SIGMA, CLAIM_RECOVERY = 0.2, 0.70


# ============================================================================================= the study
def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _mean_std(values: Sequence[float]) -> tuple:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def _summarise(entry: Dict[str, Any], ideal: float, control: Optional[float],
               ideal_err: Optional[float] = None, n_test: int = 1000,
               control_err: Optional[float] = None) -> Dict[str, Any]:
    before = [c["before"] for c in entry["chips"]]
    after = [c["after"] for c in entry["chips"]]
    entry["before_mean"], entry["before_std"] = _mean_std(before)
    entry["after_mean"], entry["after_std"] = _mean_std(after)
    # the strict ratio and the resolution of the test set and the chips (ltl_ext.hw.verdict)
    v = verdict.verdict(ideal, before, after, n_test, target=CLAIM_RECOVERY, control=control, min_chips=1)
    entry.update(cost=v["cost"], gain=v["gain"], resolution=v["resolution"], recovered=v["recovered"],
                 recovered_strict=v["strict"] if control is not None else None)
    if ideal_err is not None:
        eb = _mean_std([c["rate_error_before"] for c in entry["chips"]])[0]
        ea = _mean_std([c["rate_error_after"] for c in entry["chips"]])[0]
        entry["rate_error_before"], entry["rate_error_after"] = eb, ea
        # the same fraction on the continuous measure: how much of the added rate error calibration removed
        entry["rate_recovered"] = (eb - ea) / (eb - ideal_err) if eb - ideal_err > 1e-4 else None
        if control_err is not None:   # minus what the same calibration does to an ideal chip's rate error
            extra = ideal_err - control_err
            entry["rate_recovered_strict"] = ((eb - ea - extra) / (eb - ideal_err)
                                              if eb - ideal_err > 1e-4 else None)
    return entry


@torch_no_grad_lazy
def rate_error(trainer, model, loader: Iterable, max_batches: Optional[int] = 4) -> float:
    """Mean over the first ``max_batches`` batches of sum_l mean((rate_l - y_l)^2): how far ``model``'s firing rates
    are from the teacher's normalised activations (the offline local tandem loss, without gradient).

    A continuous, low-variance measure of what the noise does to the network, next to accuracy (which, on 1000
    test images, resolves about half a point).
    """
    from ..ltl import tandem
    link = tandem.Tandem(trainer.teacher, model, percentile=trainer.link.normaliser)
    total, n = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for i, (x, _) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = x.to(trainer.device)
            with link.batch(x, mode="offline", update=False) as run:
                model(x)
            total += float(run.total())
            n += 1
    finally:
        link.close()
        model.train(was_training)
    return total / max(n, 1)


def claim_verdict(entry: Dict[str, Any], steps: int, n_test: int, control: Optional[float]) -> Dict[str, Any]:
    """The paper's claim on one sweep entry, decided on the strict ratio (:func:`ltl_ext.hw.verdict.verdict`):
    ``status`` is ``"holds"``, ``"fails"`` or ``"not measurable"`` (the cost is inside the resolution of the
    test set and the chips)."""
    v = verdict.verdict(entry_ideal(entry), [c["before"] for c in entry["chips"]],
                        [c["after"] for c in entry["chips"]], n_test, target=CLAIM_RECOVERY, control=control,
                        steps=steps)
    v["statement"] = (f"multiplicative sigma={CLAIM_SIGMA}: calibration with <= 300 online steps recovers "
                      f">= {CLAIM_RECOVERY:.0%} of the accuracy the noise cost (strict), over >= 3 chips")
    v["after_vs_ideal"] = v["after_mean"] - v["ideal"]
    return v


def entry_ideal(entry: Dict[str, Any]) -> float:
    return entry["before_mean"] + entry["cost"]


def evaluate_chip(trainer, dev: "noise.DeviceModel", seed: int, calib_loader: Iterable, test_loader: Iterable, *,
                  steps: int, lr: Optional[float] = None, train_thresholds: bool = False,
                  max_eval_batches: Optional[int] = None) -> Dict[str, Any]:
    """One chip: program the trainer's student, evaluate, calibrate on the chip (online LTL), evaluate.

    ``calib_loader`` may be a callable ``seed -> loader``: then each chip gets its own, seeded batch order, and
    the global RNG (read noise) is seeded from the chip seed inside a forked RNG state, so a chip's result does
    not depend on what ran before it.
    """
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loader = calib_loader(seed) if callable(calib_loader) else calib_loader
        return _evaluate_chip(trainer, dev, seed, loader, test_loader, steps=steps, lr=lr,
                              train_thresholds=train_thresholds, max_eval_batches=max_eval_batches)


def _evaluate_chip(trainer, dev, seed, calib_loader, test_loader, *, steps, lr, train_thresholds,
                   max_eval_batches) -> Dict[str, Any]:
    chip = noise.program(trainer.student, dev, seed=seed)
    t0 = time.perf_counter()
    before = trainer.evaluate(test_loader, model=chip, max_batches=max_eval_batches)["student_acc"]
    err_before = rate_error(trainer, chip, test_loader)
    t1 = time.perf_counter()
    calib = trainer.calibrate(chip, calib_loader, steps=steps, mode="online", lr=lr,
                              train_thresholds=train_thresholds) if steps > 0 else {}
    t2 = time.perf_counter()
    after = trainer.evaluate(test_loader, model=chip, max_batches=max_eval_batches)["student_acc"] \
        if steps > 0 else before
    err_after = rate_error(trainer, chip, test_loader) if steps > 0 else err_before
    return {"seed": seed, "before": before, "after": after, "rate_error_before": err_before,
            "rate_error_after": err_after, "calib_seconds": t2 - t1,
            "eval_seconds": (t1 - t0) + (time.perf_counter() - t2), "calib_loss": calib.get("loss")}


def run_study(trainer, calib_loader: Iterable, test_loader: Iterable, *, sigmas: Sequence[float] = DEFAULT_SIGMAS,
              chips: int = 3, steps: int = 300, mode: str = "multiplicative", lr: Optional[float] = None,
              train_thresholds: bool = False, devices=DEFAULT_DEVICES, control: bool = True, seed: int = 0,
              max_eval_batches: Optional[int] = None, progress: bool = True,
              callback=None) -> Dict[str, Any]:
    """The study on ``trainer``'s student (a trained :class:`~ltl_ext.trainer.LocalTandemTrainer`).

    ``calib_loader`` feeds the calibration (the host streams inputs and teacher targets; a loader, or a callable
    ``seed -> loader`` for a per-chip batch order that makes each chip reproducible on its own), ``test_loader``
    measures accuracy. Chip seeds are ``seed, seed+1, ...``. ``devices``: extra settings as
    ``(name, DeviceModel kwargs)``; a setting without randomness (levels only) is measured on one chip.
    ``callback(results)`` is called after every chip (to write partial results). Returns a JSON-able dict.
    """
    if isinstance(chips, bool) or not isinstance(chips, int) or chips < 1:
        # (chips=2.0 failed in range() only after the ideal and control runs)
        raise ValueError(f"chips must be an int >= 1, got {chips!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        # a negative count skipped calibration silently ("after" = "before") and passed the protocol's <= 300
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    # every device model up front: a bad sigma, mode or device setting fails before the (long) control run
    sweep_devs = [noise.DeviceModel(programming_sigma=float(sigma), mode=mode) for sigma in sigmas]
    extra_devs = [(name, noise.DeviceModel(**kwargs)) for name, kwargs in devices]
    t_start = time.perf_counter()
    ideal_report = trainer.evaluate(test_loader, max_batches=max_eval_batches)
    ideal = ideal_report["student_acc"]
    ideal_err = rate_error(trainer, trainer.student, test_loader)
    n_test = int(ideal_report.get("samples") or 0)
    if n_test < 1:
        raise ValueError("the test loader yields no sample")
    results: Dict[str, Any] = {
        "teacher_acc": ideal_report["teacher_acc"], "ideal_acc": ideal, "ideal_rate_error": ideal_err,
        "test_samples": n_test,
        "config": {"sigmas": list(sigmas), "chips": chips, "steps": steps, "mode": mode, "lr": lr,
                   "calib_lr": lr if lr is not None else trainer.config.lr, "train_thresholds": train_thresholds,
                   "seed": seed, "time_steps": trainer.time_steps, "warmup": trainer.config.warmup,
                   "percentile": trainer.config.percentile, "calibration": "online LTL on the chip",
                   "calib_batch_size": None},
        "sweep": [], "devices": [], "control": None,
    }
    _say(progress, f"ideal student {ideal:.2f}%  (teacher {ideal_report['teacher_acc']:.2f}%)")
    control_acc = control_err = None
    if control and steps > 0:
        c = evaluate_chip(trainer, noise.DeviceModel(programming_sigma=0.0), seed, calib_loader, test_loader,
                          steps=steps, lr=lr, train_thresholds=train_thresholds, max_eval_batches=max_eval_batches)
        control_acc, control_err = c["after"], c["rate_error_after"]
        results["control"] = {"ideal_calibrated_acc": control_acc, "rate_error": c["rate_error_after"],
                              "seconds": c["calib_seconds"]}
        _say(progress, f"control: ideal student after the same {steps} calibration steps {control_acc:.2f}%")
    for sigma, dev in zip(sigmas, sweep_devs):
        entry = {"sigma": float(sigma), "device": dev.to_dict(), "chips": []}
        results["sweep"].append(entry)
        for k in range(chips):
            r = evaluate_chip(trainer, dev, seed + k, calib_loader, test_loader, steps=steps, lr=lr,
                              train_thresholds=train_thresholds, max_eval_batches=max_eval_batches)
            entry["chips"].append(r)
            _summarise(entry, ideal, control_acc, ideal_err, n_test, control_err)
            _say(progress, f"sigma {sigma:g} chip {seed + k}: before {r['before']:.2f}%  after {r['after']:.2f}%  "
                           f"({r['calib_seconds']:.0f} s)")
            if callback:
                callback(results)
    for name, dev in extra_devs:
        random = dev.random
        entry = {"name": name, "device": dev.to_dict(), "chips": []}
        results["devices"].append(entry)
        for k in range(chips if random else 1):
            r = evaluate_chip(trainer, dev, seed + k, calib_loader, test_loader, steps=steps, lr=lr,
                              train_thresholds=train_thresholds, max_eval_batches=max_eval_batches)
            entry["chips"].append(r)
            _summarise(entry, ideal, control_acc, ideal_err, n_test, control_err)
            _say(progress, f"{name} chip {seed + k}: before {r['before']:.2f}%  after {r['after']:.2f}%")
            if callback:
                callback(results)
    claim = next((e for e in results["sweep"] if abs(e["sigma"] - CLAIM_SIGMA) < 1e-9), None)
    if claim is not None and mode == "multiplicative":
        results["claim"] = claim_verdict(claim, steps, n_test, control_acc)
    results["seconds"] = time.perf_counter() - t_start
    return results


# ============================================================================================= outputs
def table(results: Dict[str, Any]) -> str:
    """The study as a text table (accuracies in %, mean +- sd over chips)."""
    def pct(m, s=None):
        return f"{m:6.2f}" + (f" +- {s:4.2f}" if s is not None else "")

    def rec(r):
        return "   -" if r is None else f"{100 * r:4.0f}%"

    lines = [f"ideal student {results['ideal_acc']:.2f}%   teacher {results['teacher_acc']:.2f}%   "
             f"ideal rate error {results.get('ideal_rate_error', float('nan')):.5f}"]
    if results.get("control"):
        lines.append(f"control: ideal student after the same calibration "
                     f"{results['control']['ideal_calibrated_acc']:.2f}%")
    cfg = results["config"]
    lines.append(f"calibration: {cfg['steps']} online LTL steps on the chip, lr {cfg['calib_lr']:g}; "
                 f"{cfg['chips']} chips per setting")
    head = (f"  {'setting':<26} {'chips':>5}  {'before':>15}  {'after':>15}  {'recovered':>9}  "
            f"{'strict':>6}  {'rate err before -> after':>24}  {'rate':>5}  {'strict':>6}")
    lines += [head, "  " + "-" * (len(head) - 2)]
    rows = [(f"{cfg['mode']} sigma={e['sigma']:g}", e) for e in results["sweep"]]
    rows += [(e["name"], e) for e in results["devices"]]
    for name, e in rows:
        lines.append(f"  {name:<26} {len(e['chips']):>5}  {pct(e['before_mean'], e['before_std'])}  "
                     f"{pct(e['after_mean'], e['after_std'])}  {rec(e['recovered']):>9}  "
                     f"{rec(e.get('recovered_strict')):>6}  "
                     f"{e.get('rate_error_before', float('nan')):>11.5f} -> "
                     f"{e.get('rate_error_after', float('nan')):.5f}"
                     f"  {rec(e.get('rate_recovered')):>5}  {rec(e.get('rate_recovered_strict')):>6}")
    claim = results.get("claim")
    if claim:
        lines.append(f"claim (sigma={CLAIM_SIGMA}, >= {CLAIM_RECOVERY:.0%} recovered, strict): "
                     f"{verdict.describe(claim)}")
    lines.append("  recovered = mean(after - before) / mean(ideal - before); strict: minus the gain the same "
                 "calibration gives an ideal chip;\n  rate err = sum over layers of the MSE of firing rates to "
                 "the teacher's targets (test set), rate = the same fraction on it")
    return "\n".join(lines)


def plot(results: Dict[str, Any], path) -> Path:
    """Accuracy vs sigma (ideal, chip before/after calibration: mean and spread over chips, each chip a dot),
    and the extra device settings as before/after bars."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    has_dev = bool(results["devices"])
    fig, axes = plt.subplots(1, 2 if has_dev else 1, figsize=(10 if has_dev else 5.5, 3.8),
                             gridspec_kw={"width_ratios": [3, 2]} if has_dev else None)
    ax = axes[0] if has_dev else axes
    sweep = results["sweep"]
    xs = [e["sigma"] for e in sweep]
    ax.axhline(results["ideal_acc"], color="gray", ls="--", label="ideal student")
    if results.get("control"):
        ax.axhline(results["control"]["ideal_calibrated_acc"], color="gray", ls=":", label="ideal, calibrated")
    for key, color, label in (("before", "tab:red", "chip, before calibration"),
                              ("after", "tab:blue", "chip, after calibration")):
        m = [e[f"{key}_mean"] for e in sweep]
        s = [e[f"{key}_std"] for e in sweep]
        ax.errorbar(xs, m, yerr=s, fmt="o-", color=color, capsize=3, label=label)
        ax.fill_between(xs, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=color, alpha=0.12)
        for e in sweep:
            ax.plot([e["sigma"]] * len(e["chips"]), [c[key] for c in e["chips"]], ".", color=color, alpha=0.4)
    cfg = results["config"]
    ax.set_xlabel(f"programming variation sigma ({cfg['mode']})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{cfg['chips']} chips per sigma, {cfg['steps']} online LTL steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if has_dev:
        bx = axes[1]
        devs = results["devices"]
        idx = list(range(len(devs)))
        w = 0.38
        for off, key, color, label in ((-w / 2, "before", "tab:red", "before"),
                                       (w / 2, "after", "tab:blue", "after")):
            bx.bar([i + off for i in idx], [e[f"{key}_mean"] for e in devs], w,
                   yerr=[e[f"{key}_std"] for e in devs], color=color, alpha=0.8, capsize=3, label=label)
        bx.axhline(results["ideal_acc"], color="gray", ls="--")
        bx.set_xticks(idx)
        bx.set_xticklabels([e["name"].replace(" + ", "\n+ ") for e in devs], fontsize=8)
        lo = min([e["before_mean"] - e["before_std"] for e in devs] + [results["ideal_acc"]])
        bx.set_ylim(max(0.0, lo - 5), min(100.0, results["ideal_acc"] + 5))
        bx.set_title("stuck devices, conductance levels")
        bx.legend(fontsize=8)
        bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
