"""The training loop with data and settings nobody tuned to: label dtypes, batch layouts, one-shot iterators,
schedules and callbacks that used to fail deep in torch, late in a run, or not at all."""
from __future__ import annotations

import pytest
import torch

from ltl_ext.ltl.convert import convert
from ltl_ext.nn import LIF
from ltl_ext.nn.zoo import mlp
from ltl_ext.train import BPTTTrainer, LocalTandemTrainer

CLASSES, FEATURES, T = 4, 16, 4


def tiny_teacher():
    torch.manual_seed(0)
    return mlp(num_classes=CLASSES, in_features=FEATURES, hidden=(8,), dropout=0.0).eval()


def batches(n=10, batch=4, label_dtype=torch.long):
    """A list of (x, y) batches; the last one smaller."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, FEATURES, generator=g), (torch.arange(n) % CLASSES).to(label_dtype)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def trainer(**kw):
    return LocalTandemTrainer(tiny_teacher(), time_steps=T, device="cpu", distributed=False, seed=0, **kw)


def bptt():
    torch.manual_seed(0)
    return BPTTTrainer(convert(tiny_teacher(), neuron=LIF()), time_steps=T, device="cpu")


def calibrate(loader, **kw):
    chip = convert(tiny_teacher(), neuron=LIF())
    return trainer().calibrate(chip, loader, **kw)


# ------------------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8])
def test_integer_labels_of_any_width_train_like_int64(dtype):
    """int32 labels (numpy's default on some platforms) made every training step fail with the cross-entropy's bare
    "expected target dtype to be Long" although evaluation took them; they now train exactly like int64."""
    want = trainer().fit(batches(), epochs=1, progress=False)[-1]["loss"]
    assert trainer().fit(batches(label_dtype=dtype), epochs=1, progress=False)[-1]["loss"] == want
    torch.manual_seed(1)
    b = bptt()
    b.fit(batches(label_dtype=dtype), epochs=1, progress=False)
    assert len(b.history) == 1
    assert calibrate(batches(label_dtype=dtype), steps=2)["steps"] == 2


def test_one_hot_and_float_labels_are_refused_with_what_to_do():
    """One-hot float labels [B, classes] trained silently as soft targets (offline) while evaluation refuses them;
    float class indices failed deep in the cross-entropy. Both now raise a TypeError that says how to convert."""
    one_hot = [(x, torch.nn.functional.one_hot(y, CLASSES).float()) for x, y in batches()]
    for loader in (one_hot, [(x, y.float()) for x, y in batches()]):
        t = trainer()
        with pytest.raises(TypeError, match="integer class indices.*argmax"):
            t.fit(loader, epochs=1, progress=False)
        assert t.global_step == 0
        with pytest.raises(TypeError, match="integer class indices"):
            bptt().fit(loader, epochs=1, progress=False)
        with pytest.raises(TypeError, match="integer class indices"):
            calibrate(loader, steps=1)


def test_label_column_and_batch_mismatch_are_named():
    """Labels [B, 1] and a labels/inputs batch mismatch failed in the cross-entropy; with encoding='none' an input
    [B, ...] whose B equals T was read as [T, B', ...] and failed with an IndexError deep in the model."""
    with pytest.raises(ValueError, match=r"shape \[B\].*squeeze"):
        trainer().fit([(x, y[:, None]) for x, y in batches()], epochs=1, progress=False)
    with pytest.raises(ValueError, match="3 labels for a batch of 4 inputs"):
        trainer().fit([(x, y[:-1]) for x, y in batches()], epochs=1, progress=False)
    x, y = batches(n=T, batch=T)[0]                 # B == T: not time-major, but looks so
    with pytest.raises(ValueError, match=f"{T} labels for a batch of {FEATURES} inputs.*time-major"):
        trainer(encoding="none").train_step(x, y)


def test_labels_outside_the_classes_are_named_by_bptt_and_calibrate():
    """LTL's fit named labels outside the model's classes; BPTT and calibrate failed with the cross-entropy's bare
    IndexError (a device assert on CUDA)."""
    shifted = [(x, y + CLASSES) for x, y in batches()]
    with pytest.raises(ValueError, match="outside the model's 4 classes"):
        bptt().fit(shifted, epochs=1, progress=False)
    with pytest.raises(ValueError, match="outside the model's 4 classes"):
        calibrate(shifted, steps=1)


def test_integer_images_are_refused_with_a_hint():
    """uint8 images failed in the first layer with a bare dtype mismatch; the error now says how to scale them."""
    loader = [((x * 255).to(torch.uint8), y) for x, y in batches()]
    with pytest.raises(TypeError, match="floating point.*255"):
        trainer().fit(loader, epochs=1, progress=False)


# ------------------------------------------------------------------------------------------ loaders
@pytest.mark.parametrize("shape", ["dict", "triple", "numpy"])
def test_loader_batches_that_are_not_tensor_pairs_say_what_to_yield(shape):
    """A loader yielding dicts failed with "'str' object has no attribute 'to'", triples with an unpacking error,
    numpy arrays with an AttributeError: all now raise a TypeError naming what the loader must yield."""
    make = {"dict": lambda x, y: {"x": x, "y": y}, "triple": lambda x, y: (x, y, y),
            "numpy": lambda x, y: (x.numpy(), y.numpy())}[shape]
    loader = [make(x, y) for x, y in batches()]
    match = "torch tensors" if shape == "numpy" else r"\(inputs, labels\) pairs"
    with pytest.raises(TypeError, match=f"fit: .*{match}"):
        trainer().fit(loader, epochs=1, progress=False)
    with pytest.raises(TypeError, match=f"fit: .*{match}"):
        bptt().fit(loader, epochs=1, progress=False)
    with pytest.raises(TypeError, match=f"calibrate: .*{match}"):
        calibrate(loader, steps=1)


def test_a_one_shot_iterator_is_named_when_it_runs_dry():
    """A generator (or iter(loader)) trained the first epoch, then failed the second as "an empty data set, or a
    batch size larger than the data"; calibrate said "the loader yields no batch" of a loader that had yielded
    three. The errors now name the one-shot iterator."""
    t = trainer()
    with pytest.raises(ValueError, match="epoch 2, after yielding some.*one-shot"):
        t.fit(iter(batches()), epochs=2, progress=False)
    assert t.epoch == 1
    with pytest.raises(ValueError, match="epoch 2, after yielding some.*one-shot"):
        bptt().fit(iter(batches()), epochs=2, progress=False)
    with pytest.raises(ValueError, match="second pass.*one-shot"):
        calibrate(iter(batches()), steps=5)
    with pytest.raises(ValueError, match=r"epoch 1 \(an empty data set"):     # a truly empty loader: as before
        trainer().fit([], epochs=1, progress=False)


# ------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("name", ["constant", "None", " none "])
def test_every_name_of_no_schedule_trains_at_a_constant_lr(name):
    """The config accepts 'constant' (and 'None', any case) as no schedule, but fit then failed before its first
    step with "'NoneType' object is not callable"."""
    history = trainer(schedule=name).fit(batches(), epochs=2, progress=False)
    assert [e["lr"] for e in history] == [1e-3, 1e-3]


def test_a_schedule_factory_that_returns_no_scheduler_is_refused_before_training():
    """A factory returning something else than a scheduler failed with an AttributeError only after the first
    epoch was trained; fit now refuses it before any step (a factory returning None still means no schedule)."""
    t = trainer(schedule=lambda opt: 0.5)
    with pytest.raises(TypeError, match="must return a learning-rate scheduler"):
        t.fit(batches(), epochs=1, progress=False)
    assert t.global_step == 0
    assert len(trainer(schedule=lambda opt: None).fit(batches(), epochs=1, progress=False)) == 1


def test_fit_refuses_a_callback_that_is_not_callable_before_training():
    """fit(callback=obj) with a non-callable failed with "'int' object is not callable" once the first epoch was
    trained and evaluated; it is now refused up front."""
    t = trainer()
    with pytest.raises(TypeError, match="callback must be a function"):
        t.fit(batches(), epochs=1, progress=False, callback=5)
    assert t.global_step == 0


@pytest.mark.parametrize("lr", [0, 0.0, -1e-3, float("nan"), float("inf")])
def test_bptt_refuses_a_learning_rate_that_cannot_train(lr):
    """BPTTTrainer(lr=0) "trained" every epoch without moving a weight (Adam takes lr = 0), and lr = nan or inf
    failed in Adam, or not at all; the LTL trainer already refused them."""
    with pytest.raises(ValueError, match="lr must be a positive number"):
        BPTTTrainer(convert(tiny_teacher(), neuron=LIF()), time_steps=T, lr=lr, device="cpu")


def test_a_student_encoding_otherwise_than_the_trainer_is_refused():
    """A SpikingModel student with encoding='poisson' under the trainer's default 'direct' trained on Poisson spikes
    while the config (and checkpoint) said direct; with 'none' against 'direct' (either way round) it failed deep in
    a layer. The trainer now names both encodings."""
    from ltl_ext.nn import SpikingModel
    for theirs, ours in (("poisson", "direct"), ("none", "direct"), ("direct", "none")):
        student = SpikingModel(convert(tiny_teacher(), neuron=LIF()), time_steps=T, encoding=theirs)
        with pytest.raises(ValueError, match=f"encodes its input as '{theirs}' but encoding='{ours}'"):
            trainer(student=student, encoding=ours)
    student = SpikingModel(convert(tiny_teacher(), neuron=LIF()), time_steps=T, encoding="poisson")
    assert trainer(student=student, encoding="poisson").student.encoding == "poisson"


@pytest.mark.parametrize("arg", ["checkpoint", "best_checkpoint", "metrics_path"])
def test_a_directory_given_as_a_file_path_is_refused_before_training(arg, tmp_path):
    """checkpoint=a directory trained a whole epoch, then failed with an IsADirectoryError at its first save (the
    epoch lost); fit now refuses it before any step."""
    (tmp_path / "run").mkdir()
    t = trainer()
    with pytest.raises(ValueError, match=f"{arg} must be a file path, got the directory"):
        t.fit(batches(), epochs=1, progress=False, val_loader=batches(), **{arg: tmp_path / "run"})
    assert t.global_step == 0


def test_bptt_stops_on_a_nan_input_instead_of_training_nan_weights():
    """One NaN input pixel fires no spike, so BPTT's loss stayed finite, but the first layer's weight gradient was
    NaN: fit "succeeded" with NaN weights and the accuracy at chance. It now raises before the optimiser step,
    with the weights as they were."""
    loader = batches()
    x, y = loader[0]
    x = x.clone()
    x[0, 0] = float("nan")
    loader[0] = (x, y)
    b = bptt()
    before = [p.detach().clone() for p in b.student.parameters()]
    with pytest.raises(FloatingPointError, match="gradient.*input batch holds NaN"):
        b.fit(loader, epochs=1, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(b.student.parameters(), before))


@pytest.mark.parametrize("seed", [1.5, "1", True])
def test_a_seed_that_is_not_an_int_is_refused(seed):
    """``LocalTandemTrainer(seed=1.5)`` seeded with 1 through torch.manual_seed (and "1" failed deep in it): a run
    that reads as seeded by 1.5 could not be repeated from its settings."""
    with pytest.raises(TypeError, match="seed must be an int"):
        LocalTandemTrainer(tiny_teacher(), time_steps=T, device="cpu", distributed=False, seed=seed)
