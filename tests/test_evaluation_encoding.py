"""Evaluation of students and teachers (ltl_ext.train.evaluation) and the input encodings (ltl_ext.nn.encoding) as a
user calls them: answers that were wrong without an error, and bad input that was accepted."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ltl_ext.nn import LIF, SpikingModel, encode
from ltl_ext.nn.zoo import mlp
from ltl_ext.train import LocalTandemTrainer, evaluate_ann, evaluate_spiking


def _student(T: int = 4) -> SpikingModel:
    torch.manual_seed(0)
    return SpikingModel(nn.Sequential(nn.Linear(5, 16), LIF(threshold=0.3), nn.Linear(16, 3)), time_steps=T)


def _batch(n: int = 10):
    torch.manual_seed(1)
    return torch.rand(n, 5) * 2, torch.randint(0, 3, (n,))


class _Readout(nn.Module):
    """A "model" that returns a given per-step readout [T, B, classes] (what evaluate_spiking reads)."""

    def __init__(self, steps: torch.Tensor):
        super().__init__()
        self.steps, self.time_steps = steps, steps.shape[0]

    def forward(self, x, return_steps=False):
        return (self.steps.mean(0), self.steps) if return_steps else self.steps.mean(0)


def test_labels_that_are_not_class_indices_are_refused():
    """Labels [B, 1] broadcast against the predictions [B]: evaluate_ann counted every matching pair (200 % here),
    evaluate_spiking failed in its per-step count; 1-based labels silently counted as wrong answers."""
    x, y = _batch()
    ann = nn.Sequential(nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"y.squeeze\(1\)"):
        evaluate_ann(ann, [(x, y[:, None])], "cpu")
    with pytest.raises(ValueError, match=r"y.squeeze\(1\)"):
        evaluate_spiking(_student(), [(x, y[:, None])], device="cpu")
    with pytest.raises(ValueError, match="outside the model's 3 classes"):
        evaluate_spiking(_student(), [(x, y + 1)], device="cpu")
    assert 0 <= evaluate_ann(ann, [(x, y)], "cpu") <= 100


def test_the_teacher_is_scored_in_eval_mode_and_left_as_it_was():
    """A teacher in training mode was scored with dropout on (a different teacher_acc at every call) and its
    BatchNorm statistics moved to the evaluation data."""
    x, y = _batch(32)
    torch.manual_seed(2)
    teacher = nn.Sequential(nn.Linear(5, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.9), nn.Linear(32, 3))
    teacher.train()
    stats = teacher[1].running_mean.clone()
    accs = {evaluate_spiking(_student(), [(x, y)], teacher=teacher, device="cpu")["teacher_acc"] for _ in range(5)}
    assert teacher.training and torch.equal(teacher[1].running_mean, stats)
    assert accs == {evaluate_ann(teacher, [(x, y)], "cpu")}


def test_per_step_accuracy_of_a_float16_readout():
    """Under float16 autocast the readout's running sum over T steps overflowed to inf: acc_per_step fell to 0 at
    the late steps while student_acc (a float32 mean) was 100 %."""
    T, B = 64, 6
    torch.manual_seed(0)
    steps = torch.randn(T, B, 3) * 300 + 1500
    steps[:, :, 1] += 200                                  # class 1 leads at every step
    y = torch.ones(B, dtype=torch.long)
    report = evaluate_spiking(_Readout(steps.half()), [(torch.zeros(B, 1), y)], device="cpu")
    assert report["student_acc"] == 100.0
    assert report["acc_per_step"][-1] == 100.0


def test_local_losses_of_no_sample_raise():
    """An empty loader (or max_batches=0) gave loss 0.0 and ce 0.0: a perfect student, measured on nothing."""
    torch.manual_seed(0)
    with LocalTandemTrainer(mlp(num_classes=3, in_features=5, hidden=[8], dropout=0.0), time_steps=2,
                            distributed=False, device="cpu") as trainer:
        x, y = _batch(4)
        assert trainer.local_losses([(x, y)])["loss"] > 0
        for loader, max_batches in (([], None), ([(x, y)], 0)):
            with pytest.raises(ValueError, match="no sample"):
                trainer.local_losses(loader, max_batches=max_batches)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_poisson_rates_of_half_precision_intensities(dtype):
    """The uniform draws were made in x's dtype, whose coarse values near 0 fired a rate of 1e-4 about 3.5 times
    as often (float16; more in bfloat16)."""
    torch.manual_seed(0)
    x = torch.full((20000,), 1e-4, dtype=dtype)
    s = encode(x, 20, "poisson")
    assert s.dtype == dtype
    assert float(s.double().mean()) == pytest.approx(float(x[0]), abs=6e-5)   # 400k draws: std 1.6e-5


def test_encode_refuses_time_steps_that_are_not_positive_ints():
    """T = 0 gave an empty batch, a negative or a float T an error from deep inside torch."""
    x = torch.rand(2, 3)
    for T in (0, -1, 2.5, True):
        for encoding in ("direct", "poisson"):
            with pytest.raises(ValueError, match="time_steps must be a positive int"):
                encode(x, T, encoding)


def test_poisson_encodes_an_empty_batch():
    """The range check of an empty batch failed in torch.aminmax; direct encoding took it."""
    assert encode(torch.rand(0, 3), 4, "poisson").shape == encode(torch.rand(0, 3), 4, "direct").shape == (0, 3)
