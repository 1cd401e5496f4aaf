"""Mixed precision: bf16 autocast and float16 with GradScaler through the layer-wise engine (issue 14)."""
import pytest
import torch

from ltl_ext import LocalTandemTrainer
from ltl_ext.nn.zoo import cnn_small


def _trainer(precision, mode="offline", memory="batched"):
    torch.manual_seed(0)
    teacher = cnn_small(num_classes=4, in_channels=1, channels=[4, 8, 8], hidden=16, input_size=8)
    return LocalTandemTrainer(teacher, time_steps=4, mode=mode, memory=memory, lr=1e-2, device="cpu",
                              distributed=False, precision=precision)


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    return x, torch.randint(0, 4, (16,), generator=g)


@pytest.mark.parametrize("mode,memory", [("offline", "batched"), ("online", "batched"), ("online", "constant")])
@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_low_precision_step_matches_float32(precision, mode, memory):
    """The same step in bf16 / float16 gives losses and gradients close to float32's (autocast reaches the
    convolutions and the fused ops; GradScaler's scale is divided out before the step)."""
    x, y = _data()
    ref, low = _trainer("32", mode, memory), _trainer(precision, mode, memory)
    seen = []
    lif = dict(low.student.lifs())["features.0.2"]
    lif.register_forward_hook(lambda m, args, out: seen.append(args[0].dtype))
    s_ref, s_low = ref.train_step(x, y), low.train_step(x, y)
    assert set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float16}   # the fused op ran in it
    assert s_low["loss"] == pytest.approx(s_ref["loss"], rel=5e-2)
    # bfloat16 keeps 8 bits of mantissa: currents near a threshold round across it and flip spikes, which the
    # deeper layers see; float16 keeps 11 and follows float32 closely
    tolerance = {"bf16": 0.3, "16-mixed": 0.05}[precision]
    for (name, a), b in zip(ref.student.named_parameters(), low.student.parameters()):
        if a.grad is None:
            continue
        assert b.grad is not None and torch.isfinite(b.grad).all(), name
        rel = float((a.grad - b.grad).norm() / a.grad.norm().clamp_min(1e-12))
        cos = float(torch.nn.functional.cosine_similarity(a.grad.flatten(), b.grad.flatten(), 0))
        assert rel < tolerance and cos > 0.95, (name, rel, cos)


def test_float16_uses_a_grad_scaler_saved_in_checkpoints(tmp_path):
    x, y = _data()
    t = _trainer("16-mixed")
    assert t.scaler is not None and _trainer("bf16").scaler is None
    t.train_step(x, y)
    t.save(tmp_path / "c.pt")
    back = LocalTandemTrainer.load(tmp_path / "c.pt", device="cpu", distributed=False)
    assert back.config.precision == "16-mixed" and back.scaler.get_scale() == t.scaler.get_scale()


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        _trainer("fp8")


def test_calibration_in_float16_scales_its_loss_like_a_training_step(monkeypatch):
    """calibrate under "16-mixed" goes through a GradScaler as train_step does: an input scale alpha = 1e-3 makes
    the LIF's input gradients ~1e-7, which float16 flushes without loss scaling; with it both get the same
    gradients."""
    from torch import nn

    from ltl_ext.nn import LIF, ClampReLU
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 16), ClampReLU(2.0), nn.Linear(16, 3))
    student = nn.Sequential(nn.Linear(6, 16), LIF(alpha=1e-3, threshold=0.3, surrogate="sigmoid"), nn.Linear(16, 3))
    with torch.no_grad():               # the same currents as alpha = 1
        student[0].weight.mul_(3e3)
        student[0].bias.mul_(1e3)
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 3
    grads = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: grads.append(
        [p.grad.clone() for g in self.param_groups for p in g["params"]]))
    trainer = LocalTandemTrainer(teacher, student, time_steps=4, mode="online", precision="16-mixed", device="cpu",
                                 distributed=False)
    trainer.train_step(x, y)
    trainer.calibrate(student, [(x, y)], steps=1)
    assert len(grads) == 2
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=0)


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_firing_rates_are_counted_in_full_precision(precision):
    """Under autocast the spikes are 16-bit: a layer's spike count summed in float16 overflows to inf past 65504
    (here 8 steps x 8 samples x 2047 neurons, all firing), and in bfloat16 it is rounded to 8 bits (to 2^17)."""
    from torch import nn

    from ltl_ext.nn import LIF, ClampReLU
    teacher = nn.Sequential(nn.Linear(6, 2047), ClampReLU(2.0), nn.Linear(2047, 3))
    student = nn.Sequential(nn.Linear(6, 2047), LIF(), nn.Linear(2047, 3))
    with torch.no_grad():               # a current of 1 >= the threshold 0.6: every neuron fires at every step
        student[0].weight.zero_()
        student[0].bias.fill_(1.0)
    trainer = LocalTandemTrainer(teacher, student, time_steps=8, precision=precision, device="cpu",
                                 distributed=False)
    report = trainer.evaluate([(torch.rand(8, 6), torch.arange(8) % 3)])
    assert report["firing_rate"] == {"1": 1.0}
    assert report["spikes_per_sample"] == 8 * 2047
