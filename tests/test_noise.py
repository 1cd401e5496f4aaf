"""Device non-idealities (ltl_ext.noise): chips are reproducible, the device model does what it says, chips
save and load, and on-chip calibration trains only what a chip could (programmed weights, optionally
thresholds), never the noise, and improves a noisy chip."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ltl_ext import noise
from ltl_ext.nn import LIF, ClampReLU, SpikingModel
from ltl_ext.hw import verdict
from ltl_ext.hw.noise import DeviceModel


def _student(seed=0, T=4):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), LIF(), nn.Flatten(), nn.Linear(4 * 6 * 6, 32), LIF(),
                         nn.Linear(32, 5))
    return SpikingModel(body, time_steps=T)


def _x(n=6, seed=1):
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(seed)) * 2


def _eff(chip):
    """Effective weights of every analog layer, in order."""
    return [m.weight.detach().clone() for _, m in noise.analog_layers(chip)]


def _prog(chip):
    return [m.parametrizations.weight.original.detach().clone() for _, m in noise.analog_layers(chip)]


# --------------------------------------------------------------------------------------------- reproducibility
def test_same_seed_same_chip_different_seed_different_chip():
    s = _student()
    dev = DeviceModel(0.2, stuck_off=0.05, stuck_on=0.02, levels=16, threshold_sigma=0.1, beta_sigma=0.05)
    a, b, c = noise.program(s, dev, seed=7), noise.program(s, dev, seed=7), noise.program(s, dev, seed=8)
    x = _x()
    ya, yb, yc = a(x), b(x), c(x)
    assert torch.equal(ya, yb)
    for wa, wb in zip(_eff(a), _eff(b)):
        assert torch.equal(wa, wb)
    na, nb, nc = noise.noise_buffers(a), noise.noise_buffers(b), noise.noise_buffers(c)
    assert na.keys() == nb.keys() == nc.keys() and len(na) > 0
    for k in na:
        assert torch.equal(na[k], nb[k]), k
    assert any(not torch.equal(na[k], nc[k]) for k in na if k.endswith("eps"))
    assert not all(torch.equal(wa, wc) for wa, wc in zip(_eff(a), _eff(c)))


def test_program_leaves_the_student_untouched_and_is_a_chip():
    s = _student()
    before = {k: v.clone() for k, v in s.state_dict().items()}
    classes = [type(m) for m in s.modules()]
    y0 = s(_x())
    chip = noise.program(s, DeviceModel(0.3, threshold_sigma=0.1), seed=1, example_input=_x(2))
    assert [type(m) for m in s.modules()] == classes
    assert not any(parametrize.is_parametrized(m) for m in s.modules())
    assert s.state_dict().keys() == before.keys()
    for k, v in s.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(s(_x()), y0)
    assert noise.chip_info(chip)["seed"] == 1
    with pytest.raises(ValueError, match="already a chip"):
        noise.program(chip, DeviceModel(0.1), seed=2)
    # the chip's programmed weights start as the student's weights
    for w, (_, m) in zip(_prog(chip), noise.analog_layers(s)):
        assert torch.equal(w, m.weight)


# --------------------------------------------------------------------------------------------- the device model
def test_programming_variation_statistics():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(400, 300))
    w = lin[0].weight.detach()
    chip = noise.program(lin, DeviceModel(0.2, mode="multiplicative"), seed=3)
    rel = chip[0].weight.detach() / w - 1
    assert abs(rel.std().item() - 0.2) < 0.01 and abs(rel.mean().item()) < 0.01
    chip = noise.program(lin, DeviceModel(0.1, mode="additive"), seed=3)
    d = (chip[0].weight.detach() - w) / w.abs().max()
    assert abs(d.std().item() - 0.1) < 0.005 and abs(d.mean().item()) < 0.005
    # fixed: every forward sees the same weights
    assert torch.equal(chip[0].weight, chip[0].weight)


def test_read_noise_is_redrawn_every_forward_and_can_be_switched_off():
    lin = nn.Sequential(nn.Linear(50, 40))
    chip = noise.program(lin, DeviceModel(0.1, read_sigma=0.05), seed=0)
    w1, w2 = chip[0].weight.detach(), chip[0].weight.detach()
    assert not torch.equal(w1, w2)
    with noise.read_noise(chip, False):
        assert torch.equal(chip[0].weight, chip[0].weight)
    fixed = noise.program(lin, DeviceModel(0.1), seed=0)[0].weight.detach()
    rel = w1 / fixed - 1
    assert abs(rel.std().item() - 0.05) < 0.01


@pytest.mark.parametrize("levels", [4, 8, 16])
def test_quantisation_yields_the_requested_number_of_levels_per_layer(levels):
    s = _student()
    chip = noise.program(s, DeviceModel(0.0, levels=levels), seed=0)
    for (_, clean), (_, m) in zip(noise.analog_layers(s), noise.analog_layers(chip)):
        w_max = float(clean.weight.detach().abs().max())
        q = m.weight.detach()
        grid = torch.linspace(-w_max, w_max, levels)
        values = torch.unique(q)
        assert values.numel() <= levels
        assert torch.cdist(values[:, None], grid[:, None]).min(1).values.max() < 1e-6  # all on the grid
        if q.numel() >= 100 * levels:   # a layer of any size uses every level
            assert values.numel() == levels
        assert (q - clean.weight).abs().max() <= float(w_max) / (levels - 1) + 1e-6  # nearest level
    # on top of the levels, the programming variation still applies per device
    noisy = noise.program(s, DeviceModel(0.2, levels=levels), seed=0)
    assert torch.unique(_eff(noisy)[1]).numel() > levels


def test_stuck_fractions_are_honoured():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 50), nn.Linear(50, 20))
    dev = DeviceModel(0.0, stuck_off=0.1, stuck_on=0.05)
    chip = noise.program(model, dev, seed=4)
    for (_, clean), (_, m) in zip(noise.analog_layers(model), noise.analog_layers(chip)):
        n, w_max = clean.weight.numel(), clean.weight.abs().max()
        aw = m.parametrizations.weight[0]
        q = m.weight.detach()
        stuck = aw.stuck_mask
        assert int(stuck.sum()) == round(0.1 * n) + round(0.05 * n)
        assert int((q[stuck] == 0).sum()) == round(0.1 * n)
        assert int((q[stuck].abs() == w_max).sum()) == round(0.05 * n)
        assert torch.equal(q[~stuck], clean.weight.detach()[~stuck])
        signs = torch.sign(q[stuck & (q != 0)])
        assert (signs > 0).any() and (signs < 0).any()
        # stuck devices ignore what is programmed
        with torch.no_grad():
            m.parametrizations.weight.original.add_(1.0)
        assert torch.equal(m.weight.detach()[stuck], q[stuck])


def test_neuron_mismatch_per_neuron_thresholds_and_leaks():
    s = _student()
    dev = DeviceModel(0.0, threshold_sigma=0.1, beta_sigma=0.05)
    lazy = noise.program(s, dev, seed=5)
    eager = noise.program(s, dev, seed=5, example_input=_x(2))
    x = _x()
    y_lazy = lazy(x)  # materialises at the first forward
    assert torch.equal(y_lazy, eager(x))
    shapes = [(4, 6, 6), (32,)]
    for (_, lif), shape in zip(noise.lif_layers(eager), shapes):
        th, beta = lif.threshold.detach(), lif.beta.detach()
        assert th.shape == shape and beta.shape == shape
        assert abs(th.mean().item() - 0.6) < 0.05 and 0.02 < th.std().item() < 0.1
        assert float(beta.min()) >= 0 and float(beta.max()) <= 1
    for _, lif in noise.lif_layers(s):  # the student keeps its scalar neurons
        assert lif.threshold.dim() == 0


def test_device_model_validation():
    with pytest.raises(ValueError, match="mode"):
        DeviceModel(0.1, mode="gaussian")
    with pytest.raises(ValueError, match="programming_sigma"):
        DeviceModel(-0.1)
    with pytest.raises(ValueError, match="stuck"):
        DeviceModel(stuck_off=0.7, stuck_on=0.5)
    with pytest.raises(ValueError, match="levels"):
        DeviceModel(levels=1)
    d = DeviceModel(0.2, levels=8)
    assert DeviceModel.from_dict(d.to_dict()) == d
    with pytest.raises(TypeError):
        noise.program(_student(), {"programming_sigma": 0.2}, seed=0)


# --------------------------------------------------------------------------------------------- gradients
def test_gradient_reaches_only_programmed_weights_straight_through_levels_not_stuck_devices():
    s = _student()
    chip = noise.program(s, DeviceModel(0.2, stuck_off=0.1, levels=8), seed=0)
    params = dict(chip.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert {n for n in trainable if "weight" in n} == set(noise.programmed_parameters(chip))
    lin = chip.model[5]
    w = lin.parametrizations.weight.original
    out = torch.nn.functional.linear(torch.randn(3, 32), lin.weight)
    out.sum().backward()
    mask = lin.parametrizations.weight[0].stuck_mask
    assert torch.all(w.grad[mask] == 0)
    assert torch.all(w.grad[~mask] != 0)  # straight through the quantiser


# --------------------------------------------------------------------------------------------- files
def test_save_load_round_trip_and_unprogram(tmp_path):
    s = _student()
    dev = DeviceModel(0.2, read_sigma=0.0, stuck_off=0.02, stuck_on=0.01, levels=16, threshold_sigma=0.1)
    chip = noise.program(s, dev, seed=11)
    x = _x()
    chip(x)
    with torch.no_grad():  # as if calibrated: the programmed weights moved
        for p in noise.programmed_parameters(chip).values():
            p.mul_(1.1)
    y = chip(x)
    path = tmp_path / "chip.pt"
    noise.save_chip(chip, path)
    blob = torch.load(path, weights_only=True)
    assert blob["seed"] == 11 and blob["device"]["levels"] == 16
    loaded = noise.load_chip(path, s)
    assert torch.equal(loaded(x), y)
    for k, v in noise.noise_buffers(chip).items():
        assert torch.equal(noise.noise_buffers(loaded)[k], v)

    clean = noise.unprogram(chip)
    assert not any(parametrize.is_parametrized(m) for m in clean.modules())
    assert isinstance(clean.model[0], nn.Conv2d) and type(clean.model[0]) is nn.Conv2d
    for w, (_, m) in zip(_prog(chip), noise.analog_layers(clean)):
        assert torch.equal(m.weight, w)
    assert clean.model[1].threshold.dim() == 0
    assert torch.equal(chip(x), y)  # unprogram left the chip working
    again = noise.program(clean, dev, seed=11, example_input=x)
    for k, v in noise.noise_buffers(chip).items():
        if k.endswith("eps") or "stuck_mask" in k:
            assert torch.equal(noise.noise_buffers(again)[k], v), k

    (tmp_path / "bad.pt").write_bytes(b"not a chip")
    with pytest.raises(ValueError, match="cannot read"):
        noise.load_chip(tmp_path / "bad.pt", s)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a chip file"):
        noise.load_chip(tmp_path / "other.pt", s)


# --------------------------------------------------------------------------------------------- noise-aware training
def test_noise_aware_training_context():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), ClampReLU(), nn.Linear(10, 3))
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    x = torch.randn(8, 10)
    with noise.noise_aware(model, read_sigma=0.2):
        assert not torch.equal(model(x), model(x))
        before = params[0].detach().clone()
        model(x).pow(2).sum().backward()
        opt.step()
        assert not torch.equal(params[0], before)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert {id(p) for p in model.parameters()} == {id(p) for p in params}  # the same Parameter objects
    assert torch.equal(model(x), model(x))


# --------------------------------------------------------------------------------------------- calibration
def test_calibration_touches_only_programmed_weights_never_the_noise(tiny_trainer):
    trainer, train, _ = tiny_trainer
    dev = DeviceModel(0.3, stuck_off=0.05, levels=16, threshold_sigma=0.1, beta_sigma=0.05)
    chip = noise.program(trainer.student, dev, seed=1, example_input=train[0][0])
    student_state = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    bufs = noise.noise_buffers(chip)
    prog = {k: v.detach().clone() for k, v in noise.programmed_parameters(chip).items()}
    thresholds = {n: l.parametrizations.threshold.original.detach().clone() for n, l in noise.lif_layers(chip)}
    trainer.calibrate(chip, train, steps=5, mode="online")
    for k, v in noise.noise_buffers(chip).items():
        assert torch.equal(v, bufs[k]), f"calibration changed the chip's noise {k}"
    assert any(not torch.equal(p, prog[k]) for k, p in noise.programmed_parameters(chip).items())
    for n, l in noise.lif_layers(chip):
        assert torch.equal(l.parametrizations.threshold.original, thresholds[n])
    for k, v in trainer.student.state_dict().items():   # the host's student is not the chip
        assert torch.equal(v, student_state[k]), k


def test_calibration_improves_a_noisy_chip(tiny_trainer):
    trainer, train, test = tiny_trainer
    ideal = trainer.evaluate(test)["student_acc"]
    chip = noise.program(trainer.student, DeviceModel(0.8), seed=2)
    before = trainer.evaluate(test, model=chip)["student_acc"]
    assert before < ideal - 3, (ideal, before)  # the noise costs accuracy
    trainer.calibrate(chip, train, steps=40, mode="online")
    after = trainer.evaluate(test, model=chip)["student_acc"]
    # the same calibration on an ideal chip: the strict ratio takes out what is plain extra training
    control = noise.program(trainer.student, DeviceModel(0.0), seed=2)
    trainer.calibrate(control, train, steps=40, mode="online")
    v = verdict.verdict(ideal, [before], [after], 300,
                        control=trainer.evaluate(test, model=control)["student_acc"], target=0.5, min_chips=1)
    assert v["status"] == "holds", v
    assert math.isfinite(after)


# --------------------------------------------------------------------------------------------- the study
def test_robustness_study_function_table_plot_and_parser(tiny_trainer, tmp_path):
    import argparse
    import json
    from ltl_ext.cli import robustness as robustness_cli
    from ltl_ext.hw import robustness
    trainer, train, test = tiny_trainer
    student_state = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    res = robustness.run_study(trainer, train, test, sigmas=[0.2, 0.8], chips=2, steps=3,
                               devices=(("4 levels", dict(programming_sigma=0.0, levels=4)),
                                        ("stuck", dict(programming_sigma=0.0, stuck_off=0.05))),
                               progress=False)
    assert [e["sigma"] for e in res["sweep"]] == [0.2, 0.8]
    assert all(len(e["chips"]) == 2 for e in res["sweep"])
    assert len(res["devices"][0]["chips"]) == 1 and len(res["devices"][1]["chips"]) == 2  # levels: deterministic
    assert res["claim"]["chips"] == 2 and res["claim"]["holds"] is False  # fewer than 3 chips never holds
    for e in res["sweep"] + res["devices"]:
        assert {"before_mean", "before_std", "after_mean", "after_std", "recovered", "recovered_strict"} <= set(e)
    json.dumps(res)
    text = robustness.table(res)
    assert "sigma=0.8" in text and "4 levels" in text
    png = robustness.plot(res, tmp_path / "r.png")
    assert png.stat().st_size > 1000
    for k, v in trainer.student.state_dict().items():
        assert torch.equal(v, student_state[k]), k
    p = argparse.ArgumentParser()
    robustness_cli.add_parser(p.add_subparsers())
    args = p.parse_args(["robustness", "--sigmas", "0.1,0.2", "--chips", "4", "--out", str(tmp_path)])
    assert robustness_cli._parse_sigmas(args.sigmas) == [0.1, 0.2] and args.chips == 4 and args.steps == 300
    with pytest.raises(ValueError):
        robustness_cli._parse_sigmas("0.1,x")


def test_a_chip_of_the_study_is_reproducible_on_its_own(tiny_trainer):
    from ltl_ext.hw import robustness
    trainer, train, test = tiny_trainer

    def loader(seed):   # a per-chip batch order, as the CLI does
        g = torch.Generator().manual_seed(seed)
        return [train[i] for i in torch.randperm(len(train), generator=g)]

    dev = DeviceModel(0.5, read_sigma=0.05)
    a = robustness.evaluate_chip(trainer, dev, 3, loader, test, steps=4)
    torch.rand(5)  # whatever ran in between
    b = robustness.evaluate_chip(trainer, dev, 3, loader, test, steps=4)
    assert (a["before"], a["after"], a["rate_error_after"]) == (b["before"], b["after"], b["rate_error_after"])


# --------------------------------------------------------------------------------------------- found by use
def test_unprogram_gives_back_learnable_neuron_parameters_trainable():
    """program freezes a learnable threshold / leak on the chip (calibration asks for it); unprogram used to hand
    them back frozen, so the 'clean' model silently stopped learning them."""
    torch.manual_seed(0)
    s = SpikingModel(nn.Sequential(nn.Linear(8, 16), LIF(learnable="both"), nn.Linear(16, 4)), time_steps=4)
    chip = noise.program(s, DeviceModel(0.1, threshold_sigma=0.1, beta_sigma=0.1), seed=0)
    assert not chip.model[1].parametrizations.threshold.original.requires_grad   # frozen on the chip
    clean = noise.unprogram(chip)
    for name in ("threshold", "beta"):
        p = getattr(clean.model[1], name)
        assert isinstance(p, nn.Parameter) and p.requires_grad, name
    assert s.model[1].threshold.requires_grad      # the student was never touched
    # a default LIF: the nominal threshold the chip holds (as calibration leaves it) is what the clean model uses,
    # not the float the LIF cached from the student
    d = _student()
    chip = noise.program(d, DeviceModel(0.0, threshold_sigma=0.1), seed=0)
    with torch.no_grad():
        chip.model[1].parametrizations.threshold.original.fill_(0.9)
    clean = noise.unprogram(chip)
    d.model[1].threshold = 0.9
    assert "threshold" in clean.model[1]._buffers and torch.equal(clean(_x()), d(_x()))


@pytest.mark.parametrize("mismatch", [0.0, 0.1])
def test_train_thresholds_on_a_chip_of_a_default_student_and_unprogram_keeps_them(tiny_trainer, mismatch):
    """A default LIF keeps its threshold in a buffer: calibration with train_thresholds=True refused every chip of
    such a student; and unprogram must compute with the calibrated threshold, not a float cached from the
    student."""
    trainer, train, _ = tiny_trainer
    chip = noise.program(trainer.student, DeviceModel(0.3, threshold_sigma=mismatch), seed=1,
                         example_input=train[0][0])
    bufs = noise.noise_buffers(chip)

    def nominal(model):
        return [(l.parametrizations.threshold.original if parametrize.is_parametrized(l, "threshold")
                 else l.threshold).detach().clone() for _, l in noise.lif_layers(model)]
    student_thr = nominal(trainer.student)
    trainer.calibrate(chip, train, steps=3, lr=5e-2, train_thresholds=True)
    calibrated = nominal(chip)
    assert all(not torch.equal(a, b) for a, b in zip(calibrated, student_thr))
    for k, v in noise.noise_buffers(chip).items():
        assert torch.equal(v, bufs[k]), k
    assert all(not l.threshold.requires_grad for _, l in noise.lif_layers(chip))   # frozen again afterwards
    clean = noise.unprogram(chip)
    ref = noise._copy_model(trainer.student)        # the student with the calibrated thresholds, set the public way
    for (_, lc), (_, lr), thr in zip(noise.lif_layers(clean), noise.lif_layers(ref), calibrated):
        assert "threshold" in lc._buffers and torch.equal(lc.threshold, thr)     # a buffer again, as on the student
        lr.threshold = thr
    for (_, a), (_, b) in zip(noise.analog_layers(clean), noise.analog_layers(ref)):
        with torch.no_grad():
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    x = train[0][0]
    assert torch.equal(clean(x), ref(x))


def test_seeds_past_32_bits_and_float64_models():
    """Seeds 0 and 2**32 (and -1 and 2**32 - 1) made the same chip; a model on which .double() was called got
    other devices than the same model in float32."""
    lin = nn.Sequential(nn.Linear(6, 5))
    dev = DeviceModel(0.3, stuck_off=0.2, threshold_sigma=0.0)

    def eff(model, seed):
        return noise.program(model, dev, seed=seed)[0].weight.detach()
    assert not torch.equal(eff(lin, 0), eff(lin, 2 ** 32))
    assert not torch.equal(eff(lin, -1), eff(lin, 2 ** 32 - 1))
    assert torch.equal(eff(lin, 5), eff(lin, 5))
    wide = noise._copy_model(lin).double()
    torch.testing.assert_close(eff(wide, 5), eff(lin, 5).double(), rtol=1e-6, atol=1e-7)
    pcm = DeviceModel.preset("pcm", t=3600.0)
    with noise.read_noise(a := noise.program(lin, pcm, seed=2), False), \
            noise.read_noise(b := noise.program(wide, pcm, seed=2), False):
        torch.testing.assert_close(b[0].weight.detach(), a[0].weight.detach().double(), rtol=1e-5, atol=1e-6)


def test_a_checkpoint_written_during_noise_aware_training_loads_into_the_plain_model():
    """Inside noise_aware the state_dict had the parametrization's keys (and its noise buffers): a checkpoint that
    trainer.fit wrote in the block could not be loaded into the student afterwards (nor resumed in the block)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), ClampReLU(), nn.Linear(10, 3))
    plain_keys = set(model.state_dict())
    other = nn.Sequential(nn.Linear(10, 10), ClampReLU(), nn.Linear(10, 3))
    with noise.noise_aware(model, read_sigma=0.2):
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        assert set(saved) == plain_keys
        model.load_state_dict(other.state_dict())        # resume in the block: strict, into the programmed weights
        assert torch.equal(model[0].parametrizations.weight.original, other[0].weight)
        assert model[0].parametrizations.weight[0].read_sigma == 0.2
    model.load_state_dict(saved)                          # and the block's checkpoint into the plain model
    assert set(model.state_dict()) == plain_keys
