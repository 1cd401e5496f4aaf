"""The drift study: chips from a device preset, calibrated once, then aged over a drift-time axis.

For each drift-compensation setting (on, off) and each of ``chips`` chip seeds: program the student with
``DeviceModel.preset(preset, t=calib_time)``, measure it at every drift time ("before": never calibrated),
calibrate it white-box at ``calib_time`` (``trainer.calibrate``, online LTL, ``steps`` steps), and measure the
calibrated chip aged to every drift time >= ``calib_time`` ("after"). With ``in_the_loop`` the same chips are
also calibrated as black boxes (:mod:`ltl_ext.hw.loop`: spikes, and membrane when ``variant="membrane"``) and
measured by chip runs. The verdicts (:mod:`ltl_ext.hw.verdict`, strict ratio) are taken at ``calib_time``:
white-box against :data:`WHITE_BOX_TARGET`, in the loop against :data:`IN_THE_LOOP_TARGET`; "kept" says by how
many points the calibrated chips beat the uncalibrated ones at each later drift time.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

from . import loop, noise, verdict

DEFAULT_DRIFT_TIMES = (1.0, 3600.0, 86400.0, 2592000.0)       # 1 s, 1 h, 1 day, 30 days
WHITE_BOX_TARGET, IN_THE_LOOP_TARGET = 0.90, 0.80


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def _forked(seed: int, fn):
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def run_drift_study(trainer, calib_loader, test_loader: Iterable, *, preset: str = "pcm",
                    calib_time: float = 86400.0, drift_times: Sequence[float] = DEFAULT_DRIFT_TIMES,
                    chips: int = 3, steps: int = 300, lr: Optional[float] = None, in_the_loop: Optional[str] = None,
                    compensation: Sequence[bool] = (True, False), seed: int = 0, progress: bool = True,
                    callback=None) -> Dict[str, Any]:
    """The study (module docstring). ``calib_loader``: a loader or ``seed -> loader``; ``in_the_loop``: ``None``,
    ``"spikes"`` or ``"membrane"``. Returns a JSON-able dict."""
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (chips, steps)) or chips < 1 or steps < 0:
        # (chips=2.0 failed in range() only after the ideal and control runs; steps=True ran one step)
        raise ValueError(f"need ints chips >= 1 and steps >= 0, got {chips!r}, {steps!r}")
    times = sorted(float(t) for t in drift_times)
    if not times or times[0] <= 0 or calib_time <= 0:
        raise ValueError(f"drift times and calib_time must be > 0 s, got {drift_times}, {calib_time}")
    if in_the_loop not in (None, "spikes", "membrane"):
        raise ValueError(f"in_the_loop must be None, 'spikes' or 'membrane', got {in_the_loop!r}")
    noise.DeviceModel.preset(preset)    # unknown preset: fail before any work
    if preset != "pcm":
        # only PCM drifts: "with compensation" would be the same chips measured again under a false label
        compensation = (False,)
    t0 = time.perf_counter()
    loader = (lambda s: calib_loader(s)) if callable(calib_loader) else (lambda s: calib_loader)
    ideal_report = trainer.evaluate(test_loader)
    ideal, n = ideal_report["student_acc"], int(ideal_report["samples"])
    control = None
    if steps > 0:
        def calibrate_ideal():
            c = noise.program(trainer.student, noise.DeviceModel(programming_sigma=0.0), seed=seed)
            trainer.calibrate(c, loader(seed), steps=steps, mode="online", lr=lr)
            return trainer.evaluate(test_loader, model=c)["student_acc"]
        control = _forked(seed, calibrate_ideal)
    res: Dict[str, Any] = {"ideal_acc": ideal, "teacher_acc": ideal_report["teacher_acc"], "test_samples": n,
                           "control_acc": control, "settings": [],
                           "config": {"preset": preset, "calib_time": calib_time, "drift_times": times,
                                      "chips": chips, "steps": steps, "lr": lr, "seed": seed,
                                      "in_the_loop": in_the_loop, "time_steps": trainer.time_steps}}
    _say(progress, f"ideal student {ideal:.2f}%, ideal after the same calibration {control}")
    later = [t for t in times if t >= calib_time]
    for comp in compensation:
        # only PCM drifts: the other presets are measured at every time as they are
        dev = noise.DeviceModel.preset(preset, t=calib_time, drift_compensation=comp) if preset == "pcm" \
            else noise.DeviceModel.preset(preset)
        entry = {"preset": preset, "drift_compensation": comp, "device": dev.to_dict(), "chips": []}
        res["settings"].append(entry)
        for k in range(chips):
            s = seed + k

            def one_chip():
                chip = noise.program(trainer.student, dev, seed=s)
                acc = lambda m: trainer.evaluate(test_loader, model=m)["student_acc"]  # noqa: E731
                before = {str(t): acc(noise.at(chip, t)) for t in times}
                at_cal = acc(chip)
                if steps > 0:
                    trainer.calibrate(chip, loader(s), steps=steps, mode="online", lr=lr)
                after = {str(t): acc(noise.at(chip, t)) for t in later}
                return {"seed": s, "before_at_calib": at_cal, "after_at_calib": after[str(later[0])]
                        if later and later[0] == calib_time else acc(chip), "before": before, "after": after}
            r = _forked(s, one_chip)
            entry["chips"].append(r)
            _say(progress, f"{preset} compensation={comp} chip {s}: at {calib_time:g} s before "
                           f"{r['before_at_calib']:.2f}% after {r['after_at_calib']:.2f}%")
            if in_the_loop:
                r["in_the_loop"] = _forked(s, lambda: _loop_chip(trainer, dev, s, loader(s), test_loader, steps,
                                                                 lr, in_the_loop, later))
                _say(progress, f"  in the loop ({in_the_loop}): {r['in_the_loop']['before']:.2f}% -> "
                               f"{r['in_the_loop']['after']:.2f}%")
            _finish(entry, ideal, control, n, steps, times, later)
            if callback:
                callback(res)
    res["seconds"] = time.perf_counter() - t0
    return res


def _loop_chip(trainer, dev, seed, calib_loader, test_loader, steps, lr, variant, later):
    chip = loop.SimulatedChip(trainer.student, dev, seed, expose_membrane=variant == "membrane",
                              time_steps=trainer.time_steps)
    before = loop.chip_accuracy(chip, test_loader)["acc"]
    out = loop.calibrate_in_the_loop(trainer, chip, calib_loader, steps=steps, lr=lr, variant=variant)
    after = loop.chip_accuracy(chip, test_loader)["acc"]
    aged = {str(t): loop.chip_accuracy(chip.at(t), test_loader)["acc"] for t in later}
    return {"before": before, "after": after, "after_aged": aged, "runs": out["runs"], "writes": out["writes"]}


def _finish(entry, ideal, control, n, steps, times, later) -> None:
    """Means per drift time, the verdicts at the calibration time, and what calibration keeps later."""
    cs = entry["chips"]
    entry["before_mean"] = {str(t): _mean([c["before"][str(t)] for c in cs]) for t in times}
    entry["after_mean"] = {str(t): _mean([c["after"][str(t)] for c in cs]) for t in later}
    entry["kept"] = {str(t): entry["after_mean"][str(t)] - entry["before_mean"][str(t)] for t in later}
    before = [c["before_at_calib"] for c in cs]
    entry["white_box"] = verdict.verdict(ideal, before, [c["after_at_calib"] for c in cs], n,
                                         target=WHITE_BOX_TARGET, control=control, steps=steps)
    if all("in_the_loop" in c for c in cs):
        entry["in_the_loop"] = verdict.verdict(ideal, [c["in_the_loop"]["before"] for c in cs],
                                               [c["in_the_loop"]["after"] for c in cs], n,
                                               target=IN_THE_LOOP_TARGET, control=control, steps=steps)
        entry["in_the_loop"]["runs_per_chip"] = cs[0]["in_the_loop"]["runs"]
        entry["in_the_loop"]["writes_per_chip"] = cs[0]["in_the_loop"]["writes"]


def _human(t: float) -> str:
    for unit, s in (("d", 86400), ("h", 3600), ("min", 60)):
        if t >= s:
            return f"{t / s:g} {unit}"
    return f"{t:g} s"


def drift_table(res: Dict[str, Any]) -> str:
    cfg = res["config"]
    lines = [f"ideal student {res['ideal_acc']:.2f}% on {res['test_samples']} test images; ideal after the same "
             f"calibration {res['control_acc'] if res['control_acc'] is None else round(res['control_acc'], 2)}%",
             f"preset {cfg['preset']}, calibrated at {_human(cfg['calib_time'])} with {cfg['steps']} online LTL "
             f"steps, {cfg['chips']} chips; accuracy (%) mean over chips"]
    head = f"  {'drift time':>10}  " + "  ".join(
        f"{('comp ' if e['drift_compensation'] else 'no comp ') + k:>17}" for e in res["settings"]
        for k in ("before", "after", "kept"))
    lines += [head, "  " + "-" * (len(head) - 2)]
    for t in cfg["drift_times"]:
        cells = []
        for e in res["settings"]:
            a = e["after_mean"].get(str(t))
            cells += [f"{e['before_mean'][str(t)]:17.2f}", f"{a:17.2f}" if a is not None else f"{'-':>17}",
                      f"{e['kept'][str(t)]:+17.2f}" if a is not None else f"{'-':>17}"]
        lines.append(f"  {_human(t):>10}  " + "  ".join(cells))
    for e in res["settings"]:
        name = "with" if e["drift_compensation"] else "without"
        lines.append(f"white-box, {name} drift compensation: {verdict.describe(e['white_box'])}")
        if "in_the_loop" in e:
            lines.append(f"in the loop ({cfg['in_the_loop']}), {name} drift compensation: "
                         f"{verdict.describe(e['in_the_loop'])}; {e['in_the_loop']['runs_per_chip']} chip runs and "
                         f"{e['in_the_loop']['writes_per_chip']} layer writes per chip")
    return "\n".join(lines)


def drift_plot(res: Dict[str, Any], path) -> Path:
    """Accuracy over drift time (log axis): before / after calibration, with and without compensation."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.axhline(res["ideal_acc"], color="gray", ls="--", label="ideal student")
    for e, color in zip(res["settings"], ("tab:blue", "tab:red")):
        name = "comp." if e["drift_compensation"] else "no comp."
        ts = [float(t) for t in e["before_mean"]]
        ax.plot(ts, list(e["before_mean"].values()), "o:", color=color, label=f"uncalibrated, {name}")
        ta = [float(t) for t in e["after_mean"]]
        ax.plot(ta, list(e["after_mean"].values()), "o-", color=color, label=f"calibrated, {name}")
    ax.axvline(res["config"]["calib_time"], color="k", lw=0.8, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("time since programming (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{res['config']['preset']}: {res['config']['chips']} chips, calibrated at the vertical line")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
