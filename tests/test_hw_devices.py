"""Device presets from published measurements (PCM after aihwkit, RRAM), differential pairs, drift, DAC/ADC."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ltl_ext import noise
from ltl_ext.hw import pairs
from ltl_ext.hw.noise import DeviceModel
from ltl_ext.nn import LIF, SpikingModel


def _student(seed=0, n_in=64, n_hidden=256):
    torch.manual_seed(seed)
    return SpikingModel(nn.Sequential(nn.Linear(n_in, n_hidden), LIF(), nn.Linear(n_hidden, 5)), time_steps=4)


def _pair(chip, i=0) -> pairs.PairWeight:
    m = noise.analog_layers(chip)[i][1]
    return next(p for p in m.parametrizations.weight if isinstance(p, pairs.PairWeight))


def test_preset_values_and_overrides():
    pcm = DeviceModel.preset("pcm", t=3600)
    assert pcm.physics == "pcm" and pcm.differential and pcm.t == 3600 and pcm.drift_compensation
    assert not DeviceModel.preset("pcm", drift_compensation=False).drift_compensation
    rram = DeviceModel.preset("rram")
    assert rram.differential and rram.levels == 8 and rram.stuck_off == 0.0175 and rram.stuck_on == 0.0904
    assert DeviceModel.from_dict(pcm.to_dict()) == pcm
    assert pcm.at(10).t == 10 and pcm.t == 3600
    with pytest.raises(ValueError, match="unknown preset"):
        DeviceModel.preset("flash")
    with pytest.raises(ValueError, match="only physics='pcm' drifts"):
        DeviceModel(0.1, t=5)
    with pytest.raises(ValueError, match="own programming and read noise"):
        DeviceModel(0.1, physics="pcm")
    with pytest.raises(ValueError, match="dac_bits"):
        DeviceModel(0.1, dac_bits=1)
    with pytest.raises(ValueError, match="t must be"):
        DeviceModel.preset("pcm", t=-1)


def test_pcm_programming_noise_follows_the_aihwkit_polynomial():
    """Std of g_prog - g_target, per target bin, matches (c0 + c1 g + c2 g^2) / 25 uS (aihwkit prog_coeff)."""
    s = _student(n_in=256, n_hidden=1024)
    chip = noise.program(s, DeviceModel.preset("pcm", drift_compensation=False), seed=3)
    p = _pair(chip)
    w = noise.analog_layers(chip)[0][1].parametrizations.weight.original.detach()
    with torch.no_grad():
        g_t = p._targets(w)
        dev = p.programmed(w) - g_t
    for lo, hi in ((0.3, 0.5), (0.5, 0.8)):
        sel = (g_t > lo) & (g_t < hi)
        assert sel.sum() > 2000
        expected = pairs.pcm_programming_sigma(g_t[sel]).pow(2).mean().sqrt()
        assert abs(float(dev[sel].std()) / float(expected) - 1) < 0.06, (lo, hi)
    # at t = 0 there is neither drift nor read noise: the chip reads the programmed conductances
    with torch.no_grad():
        w_eff = noise.analog_layers(chip)[0][1].weight
        prog = p.programmed(w)
    torch.testing.assert_close(w_eff, (prog[0] - prog[1]) * p.w_max)


def test_pcm_drift_exponents_and_global_compensation():
    s = _student(n_in=256, n_hidden=512)
    chip = noise.program(s, DeviceModel.preset("pcm", drift_compensation=False), seed=1)
    p = _pair(chip)
    w = noise.analog_layers(chip)[0][1].parametrizations.weight.original.detach()
    g_t = p._targets(w)
    big = g_t > 0.5                     # ln g > -0.69: mu clipped at 0.049, sd at 0.008 (aihwkit fit)
    assert abs(float(p.nu[big].mean()) - 0.049) < 0.002 and abs(float(p.nu[big].std()) - 0.008) < 0.002
    month = 30 * 86400.0
    aged, comp = noise.at(chip, month), noise.at(noise.program(s, DeviceModel.preset("pcm"), seed=1), month)
    with noise.read_noise(aged, False), noise.read_noise(comp, False):
        w0 = noise.analog_layers(chip)[0][1].weight.detach()
        wt = noise.analog_layers(aged)[0][1].weight.detach()
        wc = noise.analog_layers(comp)[0][1].weight.detach()
    shrink = float(wt.abs().mean() / w0.abs().mean())
    assert 0.4 < shrink < 0.7          # ((t + 20) / 20)^-nu with nu ~ 0.05 - 0.1 after a month
    assert abs(float(wc.abs().mean() / w0.abs().mean()) - 1) < 1e-4    # a(t) = mean|W(0)| / mean|W(t)|
    # the same devices: chip.at(t) twice is the same chip, and at() is absolute in time
    a, b = noise.at(noise.at(chip, 10.0), month), noise.at(chip, month)
    with noise.read_noise(a, False), noise.read_noise(b, False):
        assert torch.equal(noise.analog_layers(a)[0][1].weight, noise.analog_layers(b)[0][1].weight)
    assert noise.chip_info(a)["device"]["t"] == month
    for k, v in noise.noise_buffers(a).items():
        assert torch.equal(v, noise.noise_buffers(chip)[k])


def test_pcm_read_noise_grows_with_time():
    s = _student()
    x = torch.randn(1, 64)
    spreads = []
    for t in (1.0, 3600.0 * 24 * 30):
        chip = noise.program(s, DeviceModel.preset("pcm", t=t), seed=0)
        m = noise.analog_layers(chip)[0][1]
        a, b = m.weight.detach(), m.weight.detach()
        spreads.append(float((a - b).std()))
    assert 0 < spreads[0] < spreads[1]
    chip = noise.program(s, DeviceModel.preset("pcm", t=100.0), seed=0)
    with noise.read_noise(chip, False):
        assert torch.equal(chip(x), chip(x))


def test_rram_pairs_levels_and_stuck_devices():
    s = _student(n_in=128, n_hidden=256)
    dev = DeviceModel.preset("rram", programming_sigma=0.0)
    chip = noise.program(s, dev, seed=2)
    p = _pair(chip)
    n = p.eps.numel()
    assert int(p.stuck_mask.sum()) == round(0.0175 * n) + round(0.0904 * n)
    assert set(p.stuck_value[p.stuck_mask].unique().tolist()) == {0.0, 1.0}
    w = noise.analog_layers(chip)[0][1].weight.detach() / p.w_max
    ok = ~(p.stuck_mask[0] | p.stuck_mask[1])
    vals = torch.round(w[ok] * 7).unique()   # G+ - G- of 8-level devices: 15 values on [-1, 1]
    assert torch.allclose(w[ok] * 7, torch.round(w[ok] * 7), atol=1e-5) and len(vals) <= 15


def test_dac_adc_quantise_a_crossbar_layer_and_round_trip(tmp_path):
    s = _student()
    x = torch.randn(6, 64)
    dev = DeviceModel(0.0, dac_bits=3, adc_bits=4)
    chip = noise.program(s, dev, seed=0)
    seen = {}
    layer = noise.analog_layers(chip)[0][1]
    layer.register_forward_hook(lambda m, a, out: seen.update(x=a[0], y=out))
    chip(x)
    r_in, r_out = float(layer.converters.in_range), float(layer.converters.out_range)
    assert len(torch.unique(seen["x"])) <= 2 ** 3 - 1 and len(torch.unique(seen["y"])) <= 2 ** 4 - 1
    assert r_in == pytest.approx(float(x.abs().max()))
    noise.save_chip(chip, tmp_path / "c.pt")
    again = noise.load_chip(tmp_path / "c.pt", s)
    assert torch.equal(again(x), chip(x))
    clean = noise.unprogram(chip)
    assert torch.equal(clean(x), s(x)) and not hasattr(noise.analog_layers(clean)[0][1], "converters")


def test_gradient_reaches_programmed_weights_of_pairs_not_stuck_ones():
    s = _student(n_in=16, n_hidden=32)
    chip = noise.program(s, DeviceModel.preset("pcm", t=3600.0), seed=0)
    m = noise.analog_layers(chip)[0][1]
    m.weight.sum().backward()
    g = m.parametrizations.weight.original.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert math.isfinite(float(_pair(chip).compensation(m.parametrizations.weight.original)))


def test_example_input_does_not_fix_the_converter_ranges():
    """program(..., example_input=x) runs a dry forward to size the neuron mismatch; it used to fix the DAC/ADC
    ranges on that batch too, so the same (student, dev, seed) gave another chip with an example input."""
    s = _student()
    dev = DeviceModel(0.0, dac_bits=4, adc_bits=4, threshold_sigma=0.1)
    x = torch.randn(8, 64) * 3
    lazy = noise.program(s, dev, seed=0)
    eager = noise.program(s, dev, seed=0, example_input=torch.rand(1, 64) * 0.1)
    assert noise.analog_layers(eager)[0][1].converters.in_range.numel() == 0     # not fixed yet
    assert torch.equal(lazy(x), eager(x))
    for k, v in noise.noise_buffers(lazy).items():
        assert torch.equal(v, noise.noise_buffers(eager)[k]), k


def test_device_model_flags_must_be_booleans():
    """drift_compensation="false" is truthy: it used to switch the compensation on without a word."""
    with pytest.raises(TypeError, match="drift_compensation"):
        DeviceModel.preset("pcm", drift_compensation="false")
    with pytest.raises(TypeError, match="differential"):
        DeviceModel(0.1, mode="additive", differential=1)
    assert not DeviceModel.preset("pcm", drift_compensation=False).drift_compensation


def test_converter_ranges_are_not_fixed_on_a_silent_layer():
    """The DAC/ADC ranges are fixed at a chip's first forward. When that forward was one step of a stepwise run
    (trainer.calibrate with time blocks or memory="constant"), a hidden layer that had not spiked yet fixed the
    next layer's DAC range at 1e-12 (and its ADC range at the bias alone): every later spike was flattened and the
    readout gave the same output for every input, without an error."""
    s = SpikingModel(nn.Sequential(nn.Linear(4, 6), LIF(), nn.Linear(6, 3)), time_steps=4)
    with torch.no_grad():
        s.model[0].weight.fill_(0.05)       # X = 0.2 per step: the LIF first fires at the 4th step
        s.model[0].bias.zero_()
    dev = DeviceModel(0.0, dac_bits=4, adc_bits=4)
    x = torch.ones(2, 4)
    chip, ref = noise.program(s, dev, seed=0), noise.program(s, dev, seed=0)
    chip.reset_state()
    chip.step(x)                            # the chip's first forward: one step, no spike reaches the readout
    chip.end_steps()
    readout = noise.analog_layers(chip)[1][1].converters
    assert readout.in_range.numel() == 0 and readout.out_range.numel() == 0     # waiting for a signal
    torch.testing.assert_close(chip(x), ref(x))
    assert float(readout.in_range) == 1.0


def test_pcm_scales_are_refused_on_generic_devices():
    """prog_noise_scale / read_noise_scale / drift_scale scale the PCM statistics only: on the RRAM preset they were
    accepted and ignored, so a "twice the programming noise" sweep measured the same chip every time."""
    for kw in (dict(prog_noise_scale=2.0), dict(read_noise_scale=0.0), dict(drift_scale=0.5)):
        with pytest.raises(ValueError, match="physics='pcm'"):
            DeviceModel.preset("rram", **kw)
        assert getattr(DeviceModel.preset("pcm", **kw), next(iter(kw))) == next(iter(kw.values()))
    DeviceModel.preset("rram", prog_noise_scale=1.0)       # the default is fine everywhere


@pytest.mark.parametrize("dev", [DeviceModel.preset("pcm", t=100.0), DeviceModel(0.1, read_sigma=0.05)],
                         ids=["pcm", "generic"])
def test_a_chip_aged_inside_a_read_noise_off_block_still_reads_with_noise(dev):
    """noise.at copied the chip's temporary read-noise-off switch: a copy made inside read_noise(chip, False) gave
    the same output at every read for ever after, silently."""
    chip, x = noise.program(_student(), dev, seed=0), torch.randn(4, 64)
    with noise.read_noise(chip, False):
        aged = noise.at(chip, 3600.0)
        assert torch.equal(chip(x), chip(x))                # the block itself still holds for the chip
    assert not torch.equal(aged(x), aged(x))
