"""Edges of the hardware package (ltl_ext.hw) found by a new user's pass: each test names what used to go wrong."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ltl_ext.hw import noise, verdict
from ltl_ext.nn import LIF, SpikingModel


def _student():
    torch.manual_seed(0)
    return SpikingModel(nn.Sequential(nn.Linear(8, 32), LIF(), nn.Linear(32, 3)), time_steps=4)


def test_stuck_fractions_that_both_round_up_fit_the_layer():
    """3 weights with stuck_off = stuck_on = 0.5 asked for 2 + 2 stuck devices: program crashed deep in torch
    ("shape mismatch: value tensor of shape [2] ..."). Now every device is stuck, at 0 or +-w_max."""
    student = nn.Sequential(nn.Linear(3, 1, bias=False))
    chip = noise.program(student, noise.DeviceModel(programming_sigma=0.0, stuck_off=0.5, stuck_on=0.5), seed=0)
    p = chip[0].parametrizations.weight[0]
    assert int(p.stuck_mask.sum()) == 3
    w_max = float(p.w_max)
    assert all(abs(v) in (0.0, w_max) for v in chip[0].weight.detach().flatten().tolist())


def test_example_input_does_not_consume_the_global_rng():
    """The dry forward of ``example_input`` drew read noise from the global generator: after the same
    ``torch.manual_seed`` a chip made with an example input gave other outputs than the same chip made without."""
    student, x = _student(), torch.rand(4, 8)
    dev = noise.DeviceModel(programming_sigma=0.1, read_sigma=0.1, threshold_sigma=0.1)
    outs = []
    for example in (None, x):
        torch.manual_seed(0)
        chip = noise.program(student, dev, 1, example_input=example)
        with torch.no_grad():
            outs.append(chip(x))
    assert torch.equal(outs[0], outs[1])


def test_verdict_refuses_nan_accuracies_and_takes_tensors():
    """A NaN accuracy made every comparison false: the claim came out "not measurable" instead of an error; a
    tensor of accuracies failed with "Boolean value of Tensor ... is ambiguous"."""
    with pytest.raises(ValueError, match="finite"):
        verdict.verdict(95.0, [float("nan")] * 3, [94.0] * 3, 1000, target=0.7)
    with pytest.raises(ValueError, match="finite"):
        verdict.verdict(95.0, [80.0] * 3, [94.0] * 3, 1000, target=0.7, control=float("nan"))
    v = verdict.verdict(95.0, torch.tensor([80.0, 81.0, 82.0]), torch.tensor([94.0, 93.0, 92.0]), 1000, target=0.7)
    assert v["status"] == "holds" and v == verdict.verdict(95.0, [80.0, 81.0, 82.0], [94.0, 93.0, 92.0], 1000,
                                                           target=0.7)


def test_read_noise_refuses_a_non_bool():
    """``read_noise(chip, "off")`` is truthy: the block left the read noise on without a word."""
    chip = noise.program(_student(), noise.DeviceModel(programming_sigma=0.0, read_sigma=0.1), 0)
    with pytest.raises(TypeError, match="True or False"):
        with noise.read_noise(chip, "off"):
            pass
    assert all(m.read_enabled is True for m in chip.modules() if isinstance(m, noise.AnalogWeight))


def test_weight_norm_layers_are_refused_not_skipped():
    """A layer under another parametrization (weight_norm): ``noise_aware`` skipped it as if it were a chip layer
    (it trained without read noise, unnoticed); ``program`` made a chip whose calibration could not train the layer
    (``programmed_parameters`` missed it) and ``unprogram`` of which failed with an AttributeError in parametrize."""
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(4, 4)), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="weight_norm"):
        noise.program(model, noise.DeviceModel(0.2), 0)
    with pytest.raises(ValueError, match="weight_norm"):
        with noise.noise_aware(model, read_sigma=0.1):
            pass
    # the block left the model as it was: the plain readout got its weight back, weight_norm is still there
    assert type(model[1]) is nn.Linear and isinstance(model[1].weight, nn.Parameter)
    assert hasattr(model[0].parametrizations.weight, "original0")
    # a chip layer is still left alone by noise_aware (its own read noise setting)
    chip = noise.program(_student(), noise.DeviceModel(0.2), 0)
    with noise.noise_aware(chip, read_sigma=0.1):
        assert all(len(m.parametrizations.weight) == 1 for _, m in noise.analog_layers(chip))


@pytest.mark.parametrize("kwargs", [dict(chips=2.0), dict(chips=True), dict(steps=True), dict(steps=2.5)])
def test_studies_refuse_non_int_counts_before_any_work(kwargs):
    """``chips=2.0`` passed the ``chips >= 1`` check and failed in ``range()`` only after the ideal student's
    evaluation and the control calibration; ``steps=True`` ran one calibration step. Both are refused up front
    (the trainer is never touched: a placeholder would fail at its first use)."""
    from ltl_ext.hw import drift_study, robustness
    with pytest.raises(ValueError, match="chips must be an int" if "chips" in kwargs else "steps must be"):
        robustness.run_study(object(), [], [], progress=False, **kwargs)
    with pytest.raises(ValueError, match="need ints"):
        drift_study.run_drift_study(object(), [], [], progress=False, **kwargs)


def test_star_import_of_noise_gives_every_documented_name():
    """``read_noise`` (documented next to ``noise_aware``) was missing from ``__all__``: ``from ltl_ext.hw.noise
    import *`` did not give it."""
    ns = {}
    exec("from ltl_ext.hw.noise import *", ns)
    for name in ("read_noise", "noise_aware", "program", "at", "unprogram", "DeviceModel"):
        assert name in ns and ns[name] is getattr(noise, name)
