"""Chip in the loop: the protocol, the exactness of the local updates computed from recordings, and calibration of
a black-box chip (its noise hidden from the host)."""
from __future__ import annotations

import copy
from dataclasses import asdict

import pytest
import torch

from ltl_ext.hw import loop
from ltl_ext.hw.noise import DeviceModel


class Driver:
    """Only the protocol: what a real driver offers (the simulated chip stays out of the host's reach)."""

    def __init__(self, chip):
        self._program, self._run = chip.program, chip.run
        self.layers, self.time_steps, self.exposes_membrane = chip.layers, chip.time_steps, chip.exposes_membrane
        self.runs = 0

    def program(self, layer, weight, bias=None):
        self._program(layer, weight, bias)

    def run(self, inputs):
        self.runs += 1
        return self._run(inputs)


def test_simulated_chip_records_what_the_chip_does(tiny_trainer):
    trainer, train, _ = tiny_trainer
    chip = loop.SimulatedChip(trainer.student, DeviceModel(0.3), seed=1, expose_membrane=True, time_steps=8)
    assert isinstance(chip, loop.ChipDriver) and chip.layers == ["0", "2", "4"]
    x = train[0][0]
    rec = chip.run(x)
    assert rec.output.shape == (8, 50, 6) and set(rec.spikes) == set(rec.membrane) == {"1", "3"}
    for name, s in rec.spikes.items():
        assert s.shape == (8, 50, 64) and set(s.unique().tolist()) <= {0.0, 1.0}
    # the membrane and the spikes agree: S[t] = (H[t] >= threshold)
    thr = float(trainer.student.model[1].threshold)
    assert torch.equal(rec.spikes["1"], (rec.membrane["1"] >= thr).to(rec.spikes["1"].dtype))
    # the recorded readout is the chip's, not the ideal student's
    assert not torch.allclose(rec.output.mean(0), trainer.student(x))
    with pytest.raises(ValueError, match="shape"):
        chip.program("0", torch.zeros(3, 3))
    with pytest.raises(KeyError):
        chip.program("9", torch.zeros(3, 3))


@pytest.mark.parametrize("variant", ["membrane", "spikes"])
def test_in_the_loop_update_equals_online_ltl_on_an_ideal_chip(tiny_trainer, variant):
    """On an ideal chip, the update computed from recordings alone is the online LTL gradient of the trainer's
    engine (each layer's local loss and the readout CE), for both variants."""
    from ltl_ext.ltl import tandem
    from ltl_ext.train.config import LTLConfig
    from ltl_ext.train.engine import ltl_step
    trainer, train, _ = tiny_trainer
    x, y = train[1]
    config = LTLConfig(**dict(asdict(trainer.config), mode="online", memory="batched")).check()
    ref = copy.deepcopy(trainer.student)
    link = tandem.Tandem(trainer.teacher, ref, percentile=config.percentile)
    ltl_step(ref, link, torch.optim.SGD(ref.parameters(), lr=0.0), x, y, config)
    link.close()
    want = {n: p.grad.clone() for n, p in ref.named_parameters() if p.grad is not None}

    chip = loop.SimulatedChip(trainer.student, DeviceModel(0.0), seed=0, expose_membrane=True, time_steps=8)
    shadow = copy.deepcopy(trainer.student)
    link = tandem.Tandem(trainer.teacher, shadow, percentile=config.percentile)
    loss, _, _ = loop._host_step(shadow, link, chip.run(x), x, y, config, use_membrane=variant == "membrane")
    loss.backward()
    link.close()
    got = {n: p.grad for n, p in shadow.named_parameters() if p.grad is not None}
    assert set(got) == set(want) and len(want) == 6
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("variant", ["membrane", "spikes"])
def test_calibration_in_the_loop_recovers_a_black_box_chip(tiny_trainer, variant):
    trainer, train, test = tiny_trainer
    ideal = trainer.evaluate(test)["student_acc"]
    sim = loop.SimulatedChip(trainer.student, DeviceModel(0.8), seed=2, expose_membrane=variant == "membrane",
                             time_steps=8)
    driver = Driver(sim)
    before = loop.chip_accuracy(driver, test)["acc"]
    assert before < ideal - 3, (ideal, before)
    student_state = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    out = loop.calibrate_in_the_loop(trainer, driver, train, steps=40, variant="auto")
    after = loop.chip_accuracy(driver, test)["acc"]
    assert out["variant"] == variant and out["runs"] == 40 and sim.writes == out["writes"] == 41 * 3
    assert driver.runs == 40 + 2
    assert after > before + 0.5 * (ideal - before), (ideal, before, after)
    for k, v in trainer.student.state_dict().items():   # the host's student is untouched
        assert torch.equal(v, student_state[k]), k


def test_protocol_errors(tiny_trainer):
    trainer, train, _ = tiny_trainer
    sim = loop.SimulatedChip(trainer.student, DeviceModel(0.1), seed=0, time_steps=8)
    with pytest.raises(ValueError, match="membrane"):
        loop.calibrate_in_the_loop(trainer, sim, train, steps=1, variant="membrane")
    with pytest.raises(TypeError, match="ChipDriver"):
        loop.calibrate_in_the_loop(trainer, object(), train, steps=1)
    with pytest.raises(ValueError, match="variant"):
        loop.calibrate_in_the_loop(trainer, sim, train, steps=1, variant="voltage")


def test_simulated_chip_checks_the_bias_it_is_given():
    """A bias of the wrong shape used to be broadcast into the layer (a [1] bias set every neuron's bias), and a bias
    for a layer without one raised an AttributeError."""
    from torch import nn
    from ltl_ext.nn import LIF, SpikingModel
    torch.manual_seed(0)
    s = SpikingModel(nn.Sequential(nn.Linear(4, 6), LIF(), nn.Linear(6, 3, bias=False)), time_steps=2)
    sim = loop.SimulatedChip(s, DeviceModel(0.1), seed=0)
    with pytest.raises(ValueError, match=r"bias of shape \(6,\)"):
        sim.program("0", torch.zeros(6, 4), torch.ones(1))
    with pytest.raises(ValueError, match="no bias"):
        sim.program("2", torch.zeros(3, 6), torch.ones(3))
    assert sim.writes == 0
    sim.program("0", torch.zeros(6, 4), torch.ones(6))
    assert sim.writes == 1
