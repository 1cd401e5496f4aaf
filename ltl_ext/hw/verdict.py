"""The verdict on a recovery claim: the strict ratio, and the resolution the test set and the chips allow.

For one setting (k chips, each measured on the same n test images, before and after calibration)::

    cost   = ideal - mean(before)                      points of accuracy the noise cost
    gain   = mean(after) - mean(before)
    extra  = control - ideal                            what the same calibration gives an *ideal* chip
    strict = (gain - extra) / cost                      1 = the chips end where a calibrated ideal chip ends

The cost is a difference of two measured accuracies. Its standard error comes from the test set's binomial
error on each (``100 sqrt(p (1 - p) / n)`` points for an accuracy p on n images) and from the spread of the
chips (``sd(before) / sqrt(k)``)::

    se(cost)   = sqrt(se_binom(ideal)^2 + se_binom(mean before)^2 + sd(before)^2 / k)
    resolution = 2 se(cost)

A cost below the resolution is "not measurable": there is no cost to recover, and no ratio is reported. Else
the claim "holds" when ``strict >= target`` and "fails" otherwise; a protocol that was not followed (fewer
chips or more steps than the claim allows) "fails" whatever the numbers.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence


def binomial_se(acc: float, n: int) -> float:
    """Standard error (points) of an accuracy ``acc`` (%) measured on ``n`` test samples."""
    if n < 1:
        raise ValueError(f"n must be >= 1 test samples, got {n}")
    p = min(max(acc / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1 - p) / n)


def _accuracies(name: str, values: Sequence[float]) -> list:
    """``values`` as a list of finite floats: a NaN accuracy made every comparison false, so the claim came out
    "not measurable" instead of an error (tensors and generators are taken too)."""
    out = [float(v) for v in values]
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{name} must be finite accuracies (%), got {bad}: a chip or its evaluation failed")
    return out


def _check_percent(values: Sequence[float]) -> None:
    """Accuracies are in percent. Why: fractions (0.93 for 93 %) gave a cost a hundred times too small for the
    binomial resolution, so every claim came out "not measurable" without an error. All of them at or below 1
    (and not all 0) are taken for fractions: no model worth a recovery claim is that bad in percent. The range
    allows 1e-6 points of rounding (``correct * (100 / n)`` gives 100.00000000000001 for 11 of 11)."""
    out = [v for v in values if not -1e-6 <= v <= 100.0 + 1e-6]
    if out:
        raise ValueError(f"accuracies must be in percent, 0 to 100, got {out}")
    if 0.0 < max(values, default=0.0) <= 1.0:
        raise ValueError(f"accuracies must be in percent (93.0 for 93 %), got only values <= 1 ({list(values)}): "
                         f"fractions? multiply them by 100")


def _mean_sd(values: Sequence[float]) -> tuple:
    k = len(values)
    m = sum(values) / k
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (k - 1)) if k > 1 else 0.0)


def cost_resolution(ideal: float, before: Sequence[float], n: int) -> float:
    """Twice the standard error of ``ideal - mean(before)`` (module docstring), in points."""
    before = _accuracies("before", before)
    if not before:
        raise ValueError("no chip measured")
    _check_percent([_accuracies("ideal", [ideal])[0]] + before)
    m, sd = _mean_sd(before)
    return 2 * math.sqrt(binomial_se(ideal, n) ** 2 + binomial_se(m, n) ** 2 + sd ** 2 / len(before))


def verdict(ideal: float, before: Sequence[float], after: Sequence[float], n: int, *, target: float,
            control: Optional[float] = None, min_chips: int = 3, steps: Optional[int] = None,
            max_steps: int = 300) -> Dict[str, Any]:
    """The claim "calibration recovers >= ``target`` of the accuracy the noise cost" on one setting.

    ``before`` / ``after``: accuracy (%) of each chip; ``ideal``: the ideal student's; ``control``: the ideal
    student after the same calibration (``None``: taken as ``ideal``, i.e. no extra training); ``n``: test
    samples. Accuracies are in percent, 0 to 100 (what ``evaluate`` reports): a ``ValueError`` refuses others,
    and also a set of accuracies all at or below 1 (not all 0), which are fractions in all likelihood. Returns
    ``status`` (``"holds"``, ``"fails"``, ``"not measurable"``), ``strict``, ``recovered`` (without the control),
    ``cost``, ``resolution``, ``gain``, ``reason``.
    """
    before, after = _accuracies("before", before), _accuracies("after", after)
    ideal = _accuracies("ideal", [ideal])[0]
    if control is not None:
        control = _accuracies("control", [control])[0]
    if len(before) != len(after) or not before:
        raise ValueError(f"need one 'after' per 'before' chip, got {len(before)} and {len(after)}")
    _check_percent([ideal] + before + after + ([] if control is None else [control]))
    if not 0 < target <= 1:
        raise ValueError(f"target must be a fraction in (0, 1], got {target}")
    k = len(before)
    mb, sdb = _mean_sd(before)
    ma, _ = _mean_sd(after)
    cost, gain = ideal - mb, ma - mb
    extra = 0.0 if control is None else control - ideal
    resolution = cost_resolution(ideal, before, n)
    measurable = cost > resolution
    out = {"target": target, "chips": k, "test_samples": n, "ideal": ideal, "before_mean": mb, "before_sd": sdb,
           "after_mean": ma, "control": control, "cost": cost, "gain": gain, "resolution": resolution,
           "recovered": gain / cost if measurable else None,
           "strict": (gain - extra) / cost if measurable else None}
    if k < min_chips or (steps is not None and steps > max_steps):
        status, reason = "fails", f"protocol: needs >= {min_chips} chips and <= {max_steps} steps"
    elif not measurable:
        status, reason = "not measurable", (f"the cost {cost:.2f} pts is inside the {resolution:.2f}-pt "
                                            f"resolution of {n} test images and {k} chips")
    elif out["strict"] >= target:
        status, reason = "holds", f"strict {out['strict']:.0%} >= {target:.0%}"
    else:
        status, reason = "fails", f"strict {out['strict']:.0%} < {target:.0%}"
    out.update(status=status, reason=reason, holds=status == "holds")
    return out


def describe(v: Dict[str, Any]) -> str:
    """One line for a table or the console."""
    ratio = "" if v["strict"] is None else f", strict {v['strict']:.0%} (plain {v['recovered']:.0%})"
    return (f"{v['status']}: cost {v['cost']:.2f} +- {v['resolution'] / 2:.2f} pts, gain {v['gain']:+.2f} pts"
            f"{ratio}, target {v['target']:.0%} over {v['chips']} chips ({v['reason']})")
