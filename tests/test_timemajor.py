"""Time-major inputs: sequences [T, B, ...] train and evaluate without re-encoding (encoding="none")."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ltl_ext
from ltl_ext.data.sequences import load_sequences, save_sequences, sequence_loaders, time_averaged
from ltl_ext.nn import LIF, SpikingModel, encode

T, CLASSES, SIDE = 8, 4, 6


def _events(n: int, seed: int):
    """Event-like frames [n, T, 1, SIDE, SIDE] in {0, 1}: each class fires in its own quadrant at rate 0.6, the
    rest of the sensor at 0.1 (background events); the label is only visible through the rates over time."""
    g = np.random.default_rng(seed)
    y = g.integers(0, CLASSES, n)
    rate = np.full((n, 1, 1, SIDE, SIDE), 0.1)
    h = SIDE // 2
    for c in range(CLASSES):
        r, q = divmod(c, 2)
        rate[y == c, :, :, r * h:(r + 1) * h, q * h:(q + 1) * h] = 0.6
    x = (g.random((n, T, 1, SIDE, SIDE)) < rate).astype(np.uint8)
    return x, y


def test_encode_none_folds_the_sequence_and_checks_it():
    x = torch.randn(T, 3, 5)
    assert torch.equal(encode(x, T, "none"), x.reshape(T * 3, 5))
    with pytest.raises(ValueError, match="time-major"):
        encode(torch.randn(3, T, 5), T, "none")


def test_spiking_model_runs_a_sequence_step_by_step():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), LIF(), torch.nn.Linear(7, 2))
    model = SpikingModel(net, time_steps=T, encoding="none")
    x = torch.randn(T, 3, 5)
    logits, steps = model(x, return_steps=True)
    assert logits.shape == (3, 2) and steps.shape == (T, 3, 2)
    model.reset_state()
    stepped = torch.stack([model.step(x[t]) for t in range(T)])      # one frame per step: the same readout
    torch.testing.assert_close(stepped, steps)


def test_npz_layout_round_trips(tmp_path):
    x, y = _events(10, 0)
    path = save_sequences(tmp_path / "ev.npz", x, y, x[:4], y[:4], class_names=list("abcd"))
    splits = load_sequences(path)
    assert splits.time_steps == T and splits.sample_shape == (1, SIDE, SIDE) and splits.class_names == list("abcd")
    xb, yb = next(iter(sequence_loaders(splits, batch_size=3)[1]))
    assert xb.shape == (T, 3, 1, SIDE, SIDE) and torch.equal(xb, torch.from_numpy(x[:3]).float().transpose(0, 1))


def test_trains_on_event_like_data(tmp_path):
    x, y = _events(384, 1)
    xt, yt = _events(128, 2)
    splits = load_sequences(save_sequences(tmp_path / "ev.npz", x, y, xt, yt))
    train, test = sequence_loaders(splits, batch_size=32, seed=0)
    torch.manual_seed(0)
    teacher = ltl_ext.models.mlp(num_classes=CLASSES, in_features=SIDE * SIDE, hidden=[32], dropout=0.0)
    ltl_ext.train_teacher(teacher, time_averaged(train), epochs=3, lr=0.05, progress=False)
    trainer = ltl_ext.LocalTandemTrainer(teacher, time_steps=T, encoding="none", lr=3e-3, distributed=False,
                                         seed=0)
    before = trainer.evaluate(test)["student_acc"]
    trainer.fit(train, epochs=3, progress=False)
    report = trainer.evaluate(test)
    assert report["teacher_acc"] > 90, report            # the teacher saw the time-average of the same batches
    assert report["student_acc"] > 85 and report["student_acc"] > before, (before, report)


@pytest.mark.parametrize("memory,time_block", [("batched", None), ("batched", 3), ("constant", None)],
                         ids=["blocks-of-2", "blocks-of-3", "one-step"])
def test_online_blocks_of_a_sequence_give_the_one_block_gradient(memory, time_block):
    """Online LTL on time-major inputs in blocks (each block reads its own frames) == one block of all T steps."""
    torch.manual_seed(0)
    teacher = ltl_ext.models.mlp(num_classes=CLASSES, in_features=SIDE * SIDE, hidden=[16, 12], dropout=0.0)
    teacher = teacher.double()
    x = torch.from_numpy(_events(6, 3)[0]).double().transpose(0, 1)       # [T, B, 1, SIDE, SIDE]
    y = torch.arange(6) % CLASSES
    grads = []
    for memory_, block in ((memory, time_block), ("batched", T)):
        torch.manual_seed(1)
        trainer = ltl_ext.LocalTandemTrainer(teacher, time_steps=T, mode="online", warmup=3, encoding="none",
                                             memory=memory_, time_block=block, distributed=False)
        trainer.student.double()
        trainer.optimizer = torch.optim.SGD(trainer.student.parameters(), lr=0.0)
        trainer.train_step(x, y)
        grads.append({n: p.grad.clone() for n, p in trainer.student.named_parameters()})
        trainer.close()
    assert all(bool(g.abs().sum() > 0) for n, g in grads[1].items() if n.endswith("weight")), grads[1].keys()
    for n, g in grads[1].items():
        torch.testing.assert_close(grads[0][n], g, rtol=1e-12, atol=1e-14, msg=n)
