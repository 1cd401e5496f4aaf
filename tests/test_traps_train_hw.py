"""Traps of the training and hardware floors found by review: each test names what used to go wrong, silently or
deep in torch."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from ltl_ext import LocalTandemTrainer
from ltl_ext.hw import loop, noise, verdict
from ltl_ext.nn import LIF, SpikingModel
from ltl_ext.nn.zoo import mlp
from ltl_ext.train import BPTTTrainer
from ltl_ext.train.callbacks import Callback


def _data(n=32, features=5, classes=3):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, features, generator=g)
    y = torch.arange(n) % classes
    return [(x[i:i + 8], y[i:i + 8]) for i in range(0, n, 8)]


def _trainer(**kw):
    torch.manual_seed(0)
    teacher = mlp(num_classes=3, in_features=5, hidden=[8], dropout=0.0)
    return LocalTandemTrainer(teacher, time_steps=3, lr=1e-2, device="cpu", distributed=False, **kw)


# ---------------------------------------------------------------------------------------------- training
def test_a_closed_trainer_refuses_work_saying_it_is_closed():
    """close() took the time-average hook of encoding="none" off the teacher; a fit after it failed deep in torch
    (the teacher's first layer fed a sequence [T, B, ...]). close() ends the trainer, as its docstring says."""
    trainer = _trainer(encoding="none")
    x, y = torch.rand(3, 4, 5), torch.arange(4) % 3          # time-major [T, B, features]
    trainer.fit([(x, y)], epochs=1, progress=False)
    trainer.close()
    trainer.close()                                           # a second close does nothing
    with pytest.raises(ValueError, match="fit: this LocalTandemTrainer is closed"):
        trainer.fit([(x, y)], epochs=2, progress=False)
    with pytest.raises(ValueError, match="evaluate: this LocalTandemTrainer is closed"):
        trainer.evaluate([(x, y)])
    with pytest.raises(ValueError, match="train_step: this LocalTandemTrainer is closed"):
        trainer.train_step(x, y)
    assert trainer.epoch == 1


class _Boom(Callback):
    def on_epoch_end(self, trainer, entry):
        raise RuntimeError("boom")


def _boom(entry):
    raise RuntimeError("boom")


def test_trainers_of_one_sequence_teacher_share_one_time_average():
    """Each trainer with encoding="none" put its own time-average hook on the teacher: with two trainers (or a hook
    the user had registered, as time_average's docstring shows) the teacher averaged the batch away too and failed
    deep in a layer (IndexError). One shared hook now, taken off with its last trainer; the user's stays theirs."""
    from ltl_ext.nn.encoding import time_average
    x, y = torch.rand(3, 4, 5), torch.arange(4) % 3          # time-major [T, B, features]
    first = _trainer(encoding="none")
    teacher = first.teacher
    second = LocalTandemTrainer(teacher, time_steps=3, encoding="none", device="cpu", distributed=False)
    assert sum(h is time_average for h in teacher._forward_pre_hooks.values()) == 1
    second.train_step(x, y)
    first.close()                                             # the other trainer still needs the hook
    second.train_step(x, y)
    second.close()
    assert not teacher._forward_pre_hooks
    own = teacher.register_forward_pre_hook(time_average)     # the user's own hook: used, never removed here
    third = LocalTandemTrainer(teacher, time_steps=3, encoding="none", device="cpu", distributed=False)
    third.train_step(x, y)
    third.close()
    assert list(teacher._forward_pre_hooks.values()) == [time_average]
    own.remove()


@pytest.mark.parametrize("how", ["Callback", "callback="])
def test_a_callback_that_raises_leaves_best_and_the_files_in_agreement(tmp_path, how):
    """The callbacks ran before the epoch's files were written: one raising in on_epoch_end left trainer.best
    naming epoch 1, whose best.pt was never written, and a last.pt from before the epoch's evaluation."""
    trainer = _trainer(callbacks=[_Boom()] if how == "Callback" else None)
    data = _data()
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(data, epochs=2, val_loader=data[:1], progress=False, checkpoint=last, best_checkpoint=best,
                    metrics_path=tmp_path / "history.json", callback=_boom if how == "callback=" else None)
    assert trainer.best is not None and trainer.best["epoch"] == 1
    assert best.exists(), "trainer.best names epoch 1 but best.pt was not written"
    from_best = LocalTandemTrainer.load(best, teacher=trainer.teacher, device="cpu", distributed=False)
    assert from_best.epoch == 1 and from_best.best == trainer.best
    from_last = LocalTandemTrainer.load(last, teacher=trainer.teacher, device="cpu", distributed=False)
    assert from_last.epoch == 1 and from_last.best == trainer.best
    assert (tmp_path / "history.json").exists()


def test_bptt_names_its_validation_accuracy_as_ltl_does():
    """BPTT recorded validation accuracy as "student_acc", LTL as "val_student_acc": plot_accuracy (which reads
    val_student_acc) drew nothing for BPTT, and a comparison read a key one of the two histories lacks."""
    from ltl_ext.ltl.convert import convert
    torch.manual_seed(0)
    bptt = BPTTTrainer(convert(mlp(num_classes=3, in_features=5, hidden=[8], dropout=0.0), neuron=LIF()),
                       time_steps=3, device="cpu")
    data = _data()
    history = bptt.fit(data, epochs=1, val_loader=data[:1], progress=False)
    assert "val_student_acc" in history[-1] and "student_acc" not in history[-1]
    assert history[-1]["val_student_acc"] == bptt.evaluate(data[:1])["student_acc"]


# ---------------------------------------------------------------------------------------------- hardware
class _Tracked(torch.Tensor):
    """A tensor that records where ``.to`` moves it (the devices of a GPU run, checked on a CPU)."""

    moves: list = []

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        _Tracked.moves.append(device)
        return torch.Tensor.to(self.as_subclass(torch.Tensor), *args, **kwargs)


def _chip_student():
    torch.manual_seed(0)
    return SpikingModel(nn.Sequential(nn.Linear(5, 8), LIF(), nn.Linear(8, 3)), time_steps=3)


def test_chip_accuracy_moves_the_labels_to_the_predictions_device():
    """chip_accuracy compared predictions moved to the CPU with the labels where they were: labels on a GPU
    failed with a device mismatch. Checked here by the device the labels are moved to."""
    chip = loop.SimulatedChip(_chip_student(), noise.DeviceModel(0.1), seed=0)
    x, y = _data()[0]
    _Tracked.moves = []
    acc = loop.chip_accuracy(chip, [(x, y.as_subclass(_Tracked))])
    assert torch.device("cpu") in _Tracked.moves, "the labels were not moved to the predictions' device"
    assert acc == loop.chip_accuracy(chip, [(x, y)]) and acc["samples"] == 8       # no read noise: the same runs


def test_the_simulated_chip_takes_a_batch_from_any_device():
    """SimulatedChip.run fed the batch as it came: a chip simulated on a GPU and a loader's CPU batch (as
    chip_accuracy gives it) failed in the first layer. Checked here by the device the inputs are moved to."""
    chip = loop.SimulatedChip(_chip_student(), noise.DeviceModel(0.1), seed=0)
    x = _data()[0][0]
    _Tracked.moves = []
    chip.run(x.as_subclass(_Tracked))
    assert _Tracked.moves == [torch.device("cpu")], "the inputs were not moved to the chip's device"


class _HostDriver:
    """A driver whose recordings are its own tensors (a real chip's come back on the host): every tensor of a
    recording records where the host moves it."""

    def __init__(self, chip):
        self.chip, self.layers, self.time_steps = chip, chip.layers, chip.time_steps
        self.exposes_membrane = chip.exposes_membrane

    def program(self, layer, weight, bias=None):
        self.chip.program(layer, weight, bias)

    def run(self, inputs):
        rec = self.chip.run(inputs)
        track = lambda d: None if d is None else {k: v.as_subclass(_Tracked) for k, v in d.items()}  # noqa: E731
        return loop.Recording(track(rec.spikes), rec.output.as_subclass(_Tracked), track(rec.membrane))


def test_calibration_in_the_loop_moves_the_recordings_to_the_shadows_device():
    """The host step used the chip's recordings where the driver left them: a driver recording on the host and a
    shadow on a GPU failed with a device mismatch. Checked here by the devices the recordings are moved to."""
    student = _chip_student()
    teacher = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    trainer = LocalTandemTrainer(teacher, student=student, time_steps=3, warmup=1, device="cpu", distributed=False)
    chip = loop.SimulatedChip(trainer.student, noise.DeviceModel(0.1), seed=0, expose_membrane=True)
    _Tracked.moves = []
    loop.calibrate_in_the_loop(trainer, _HostDriver(chip), _data()[:1], steps=1, variant="membrane")
    # per LIF layer: its spikes into the next layer and into the error, its membrane; and the readout
    assert _Tracked.moves == [torch.device("cpu")] * 4, _Tracked.moves


def test_verdict_refuses_accuracies_given_as_fractions():
    """verdict takes percent: accuracies given as fractions (0.93 for 93 %) gave a cost a hundred times too small
    for the resolution, and the claim came out "not measurable" without a word."""
    with pytest.raises(ValueError, match="percent.*multiply them by 100"):
        verdict.verdict(0.93, [0.60, 0.62, 0.61], [0.90, 0.91, 0.92], 1000, target=0.7)
    with pytest.raises(ValueError, match="percent.*multiply them by 100"):
        verdict.cost_resolution(0.93, [0.60, 0.62, 0.61], 1000)
    with pytest.raises(ValueError, match="0 to 100"):
        verdict.verdict(93.0, [60.0, 62.0, 610.0], [90.0, 91.0, 92.0], 1000, target=0.7)
    # percent, as evaluate reports it (11 of 11 right is 100.00000000000001), and chips that all read 0: taken
    assert verdict.verdict(93.0, [60.0, 62.0, 61.0], [90.0, 91.0, 92.0], 1000, target=0.7)["status"] == "holds"
    assert verdict.verdict(11 * (100.0 / 11), [0.0] * 3, [90.0] * 3, 11, target=0.7)["status"] == "holds"
    assert verdict.verdict(0.0, [0.0] * 3, [0.0] * 3, 1000, target=0.7)["status"] == "not measurable"


def test_programming_an_all_zero_layer_warns_naming_it(tmp_path):
    """An all-zero layer's range w_max is ~0, so it stays 0 under quantisation, additive noise and every other
    device model: the chip looked perfectly robust, and nothing said the model was untrained or badly loaded."""
    student = _chip_student()
    with torch.no_grad():
        student.model[2].weight.zero_()
    dev = noise.DeviceModel(0.2, mode="additive", levels=9)
    with pytest.warns(UserWarning, match=r"weights of layer\(s\) \['model.2'\] are all zero"):
        chip = noise.program(student, dev, seed=0)
    assert float(chip.model[2].weight.detach().abs().max()) < 1e-30     # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        noise.program(_chip_student(), dev, seed=0)                  # a trained layer: no warning
        noise.save_chip(chip, str(tmp_path / "chip.pt"))
        noise.load_chip(str(tmp_path / "chip.pt"), student)          # the student gives only the architecture


def test_a_teacher_batch_of_one_sample_gets_an_error_saying_so():
    """A last batch of one image (len(data) % batch_size == 1) failed in BatchNorm1d with torch's bare "Expected
    more than 1 value per channel when training"."""
    from ltl_ext import train_teacher
    torch.manual_seed(0)
    teacher = mlp(num_classes=3, in_features=5, hidden=[8], dropout=0.0)       # BatchNorm1d after the hidden layer
    x, y = torch.rand(9, 5), torch.arange(9) % 3
    with pytest.raises(ValueError, match="batch of one sample"):
        train_teacher(teacher, [(x[:8], y[:8]), (x[8:], y[8:])], epochs=1, progress=False)
