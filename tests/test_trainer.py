"""LocalTandemTrainer end to end on tiny generated data: learning, equivalences, checkpoints and resume."""
from __future__ import annotations

import copy

import pytest
import torch

from ltl_ext.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ltl_ext.ltl.convert import convert
from ltl_ext.data import DatasetSplits, make_loaders
from ltl_ext.nn.zoo import cnn_small, mlp
from ltl_ext.nn import LIF, SpikingModel
from ltl_ext.train import (BPTTTrainer, LocalTandemTrainer, evaluate_ann, load_teacher, save_teacher,
                             train_teacher)

CLASSES, SIZE = 4, 8


def make_splits(n_train=256, n_test=128, seed=0) -> DatasetSplits:
    """4 classes of 8x8 grey images: a fixed random prototype per class plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(CLASSES, 1, SIZE, SIZE, generator=g)

    def draw(n):
        y = torch.arange(n) % CLASSES
        x = protos[y] * 0.7 + 0.3 * torch.rand(n, 1, SIZE, SIZE, generator=g)
        return (x * 255).round().to(torch.uint8), y

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return DatasetSplits("generated", x_tr, y_tr, x_te, y_te, tuple(str(i) for i in range(CLASSES)))


def tiny_teacher(splits=None):
    """A zoo CNN; with ``splits`` it normalises its input with their training statistics (as the CLI builds)."""
    norm = {} if splits is None else {"mean": splits.mean, "std": splits.std}
    return cnn_small(num_classes=CLASSES, in_channels=1, channels=(4, 8, 8), hidden=16, input_size=SIZE,
                     dropout=0.0, **norm)


@pytest.fixture(scope="module")
def data():
    return make_loaders(make_splits(256), batch_size=32, seed=0)


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    model = tiny_teacher(make_splits(256))           # normalises its input with the training statistics
    train_teacher(model, data[0], epochs=8, lr=0.05, progress=False, device="cpu")
    assert evaluate_ann(model, data.test, "cpu") >= 90.0
    return model


@pytest.mark.parametrize("mode,memory", [("offline", "batched"), ("online", "batched"), ("online", "constant")])
def test_fit_raises_accuracy_and_lowers_every_local_loss(teacher, data, mode, memory):
    train, val, test = data
    torch.manual_seed(1)
    trainer = LocalTandemTrainer(teacher, time_steps=4, mode=mode, warmup=2, memory=memory, lr=1e-2,
                                 percentile=99.9 if mode == "offline" else 99.0, device="cpu")
    before_acc = trainer.evaluate(test)["student_acc"]
    before = trainer.local_losses(train)
    history = trainer.fit(train, epochs=4, val_loader=val if mode == "offline" else None, progress=False)
    after = trainer.local_losses(train)
    report = trainer.evaluate(test)
    assert len(history) == 4 and trainer.epoch == 4
    assert report["student_acc"] > before_acc + 20, (before_acc, report["student_acc"])
    assert set(before["local_loss"]) == set(after["local_loss"]) and len(after["local_loss"]) == 4
    for name, loss in after["local_loss"].items():
        assert loss < before["local_loss"][name], (name, before["local_loss"][name], loss)
    assert after["ce"] < before["ce"]
    # the report's shape
    assert len(report["acc_per_step"]) == 4 and report["acc_per_step"][-1] == pytest.approx(report["student_acc"])
    assert all(0.0 <= r <= 1.0 for r in report["firing_rate"].values()) and len(report["firing_rate"]) == 4
    assert report["spikes_per_sample"] > 0
    assert set(history[-1]["local_loss"]) == set(after["local_loss"])
    if mode == "offline":
        assert history[-1]["val_student_acc"] == trainer.evaluate(val)["student_acc"]
        assert "val_teacher_acc" in history[-1] and "student_acc" not in history[-1]     # labelled: validation


def test_constant_memory_gradients_equal_batched_online(teacher, data):
    """With its targets in float32 (``compact_targets=False``) the constant-memory mode gives batched online
    LTL's gradients; by default it holds them in float16, which moves the gradients by about the targets' rounding
    (at most 2^-12 on a target in [0, 1]) and no more."""
    x, y = next(iter(data[0]))
    grads, held = {}, {}
    for name, memory, compact in (("batched", "batched", True), ("exact", "constant", False),
                                  ("compact", "constant", True)):
        torch.manual_seed(3)
        trainer = LocalTandemTrainer(teacher, time_steps=6, mode="online", warmup=3, memory=memory, device="cpu",
                                     compact_targets=compact)
        trainer.optimizer.step = lambda *a, **k: None          # keep the weights: compare the gradients
        runs, batch = [], trainer.link.batch
        trainer.link.batch = lambda *a, **k: runs.append(batch(*a, **k)) or runs[-1]
        trainer.train_step(x, y)
        held[name] = {t.dtype for t in runs[0].targets.values()}
        grads[name] = {n: p.grad.clone() for n, p in trainer.student.named_parameters()}
    assert held == {"batched": {torch.float32}, "exact": {torch.float32}, "compact": {torch.float16}}
    assert grads["batched"].keys() == grads["exact"].keys() == grads["compact"].keys()
    for n in grads["batched"]:
        torch.testing.assert_close(grads["exact"][n], grads["batched"][n], rtol=1e-4, atol=1e-6, msg=n)
        a, b = grads["compact"][n], grads["batched"][n]
        assert float((a - b).norm()) <= 1e-3 * float(b.norm()) + 1e-7, n     # measured: under 1e-4


def _interrupt_after(trainer, n_steps):
    real, calls = trainer.train_step, [0]

    def step(x, y):
        if calls[0] == n_steps:
            raise KeyboardInterrupt
        calls[0] += 1
        return real(x, y)
    trainer.train_step = step


def _same_run(a: LocalTandemTrainer, b: LocalTandemTrainer):
    sa, sb = a.student.state_dict(), b.student.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    def strip(history):
        return [{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")} for e in history]
    assert strip(a.history) == strip(b.history)
    oa, ob = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    for k in oa:
        assert torch.equal(oa[k]["exp_avg"], ob[k]["exp_avg"])


@pytest.mark.parametrize("stop_at", [3, 4], ids=["mid-epoch", "epoch-boundary"])
def test_resume_equals_uninterrupted(teacher, tmp_path, stop_at):
    """4 batches per epoch; a checkpoint every 3 steps and after each epoch; poisson encoding, so the global RNG
    state must be restored too."""
    splits = make_splits(128, 32)
    kw = dict(time_steps=3, mode="offline", lr=3e-3, encoding="poisson", device="cpu")
    loaders = lambda: make_loaders(splits, batch_size=32, seed=5)  # noqa: E731

    torch.manual_seed(11)
    full = LocalTandemTrainer(teacher, **kw)
    full.fit(loaders()[0], epochs=2, progress=False)

    torch.manual_seed(11)
    ckpt = tmp_path / "ckpt.pt"
    broken = LocalTandemTrainer(teacher, **kw)
    _interrupt_after(broken, stop_at)            # dies in step stop_at + 1; the last checkpoint is at step stop_at
    with pytest.raises(KeyboardInterrupt):
        broken.fit(loaders()[0], epochs=2, progress=False, checkpoint=ckpt, checkpoint_every=3)
    torch.manual_seed(999)                       # whatever happens in between must not matter
    torch.rand(7)
    resumed = LocalTandemTrainer.load(ckpt, teacher=copy.deepcopy(teacher))
    assert resumed.global_step == stop_at
    resumed.fit(loaders()[0], epochs=2, progress=False)
    _same_run(full, resumed)


def test_resume_from_the_zoo_without_passing_models(tmp_path):
    splits = make_splits(64, 32)
    train, _, test = make_loaders(splits, batch_size=32, seed=0)
    torch.manual_seed(0)
    teacher = mlp(num_classes=CLASSES, in_features=SIZE * SIZE, hidden=(16,))
    spec = {"arch": "mlp", "kwargs": {"num_classes": CLASSES, "in_features": SIZE * SIZE, "hidden": [16]}}
    trainer = LocalTandemTrainer(teacher, time_steps=2, teacher_spec=spec, device="cpu")
    trainer.fit(train, epochs=1, progress=False, checkpoint=tmp_path / "c.pt")
    again = LocalTandemTrainer.load(tmp_path / "c.pt")
    assert again.epoch == 1 and again.config == trainer.config
    assert again.evaluate(test)["student_acc"] == trainer.evaluate(test)["student_acc"]
    save_teacher(teacher, spec, tmp_path / "t.pt", {"test_acc": 1.0})
    t2, spec2, meta = load_teacher(tmp_path / "t.pt")
    assert spec2 == spec and meta == {"test_acc": 1.0}
    for a, b in zip(t2.state_dict().values(), teacher.state_dict().values()):
        assert torch.equal(a, b)


def test_running_percentile_state_is_checkpointed(teacher, tmp_path):
    train = make_loaders(make_splits(64, 32), batch_size=32, seed=0).train
    trainer = LocalTandemTrainer(teacher, time_steps=2, percentile="running", device="cpu")
    trainer.fit(train, epochs=1, progress=False, checkpoint=tmp_path / "c.pt")
    scales = trainer.link.normaliser.scales
    assert len(scales) == 4
    again = LocalTandemTrainer.load(tmp_path / "c.pt", teacher=teacher)
    assert again.config.percentile == "running"
    assert {k: float(v) for k, v in again.link.normaliser.scales.items()} == {k: float(v) for k, v in scales.items()}


def test_calibration_normalises_targets_as_the_trained_run_did(teacher, monkeypatch):
    """Running normalisation: calibration starts from the trainer's running scales (a fresh normaliser restarted
    them from the first calibration batch's percentile) and leaves the trainer's own scales as they are."""
    from ltl_ext.ltl.tandem import TargetNormaliser
    train = make_loaders(make_splits(64, 32), batch_size=32, seed=0).train
    trainer = LocalTandemTrainer(teacher, time_steps=2, percentile="running", device="cpu")
    trainer.fit(train, epochs=1, progress=False)
    trained = {k: v.clone() for k, v in trainer.link.normaliser.scales.items()}
    started, fork = [], TargetNormaliser.fork

    def recording_fork(self):
        twin = fork(self)
        started.append({k: v.clone() for k, v in twin.scales.items()})
        return twin
    monkeypatch.setattr(TargetNormaliser, "fork", recording_fork)
    trainer.calibrate(copy.deepcopy(trainer.student), train, steps=2, mode="online")
    assert len(started) == 1 and started[0].keys() == trained.keys() and len(trained) == 4
    assert all(torch.equal(started[0][k], trained[k]) for k in trained)
    assert all(torch.equal(trainer.link.normaliser.scales[k], trained[k]) for k in trained)


def test_bad_checkpoints_give_clear_errors(teacher, tmp_path):
    trainer = LocalTandemTrainer(teacher, time_steps=2, device="cpu")
    good = trainer.save(tmp_path / "good.pt")
    raw = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all" * 10)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    for name in ("trunc.pt", "junk.pt"):
        with pytest.raises(CheckpointError, match="corrupt"):
            LocalTandemTrainer.load(tmp_path / name, teacher=teacher)
    with pytest.raises(CheckpointError, match="not a ltl_ext checkpoint"):
        LocalTandemTrainer.load(tmp_path / "other.pt", teacher=teacher)
    with pytest.raises(CheckpointError, match="does not exist"):
        LocalTandemTrainer.load(tmp_path / "missing.pt", teacher=teacher)
    assert LocalTandemTrainer.load(good).epoch == trainer.epoch      # a zoo teacher is rebuilt from its spec
    trainer.teacher_spec = None                                       # as for a user-built teacher
    user_built = trainer.save(tmp_path / "user_built.pt")
    with pytest.raises(CheckpointError, match="user-built"):          # no zoo spec: the teacher must be passed
        LocalTandemTrainer.load(user_built)
    other = cnn_small(num_classes=CLASSES, in_channels=1, channels=(4, 8, 6), hidden=16, input_size=SIZE)
    with pytest.raises(CheckpointError, match="does not match"):
        LocalTandemTrainer.load(good, teacher=other)
    save_teacher(teacher, None, tmp_path / "teacher.pt")
    with pytest.raises(CheckpointError, match="expected 'ltl_trainer'"):
        LocalTandemTrainer.load(tmp_path / "teacher.pt", teacher=teacher)
    # a pickle that would run code is refused by the weights_only loader
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "x", "evil": Evil()}, f)
    with pytest.raises(CheckpointError, match="corrupt"):
        LocalTandemTrainer.load(tmp_path / "evil.pt", teacher=teacher)


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    path = save_checkpoint({"a": torch.ones(2)}, tmp_path / "x.pt", kind="test")

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")
    with pytest.raises(Exception):
        save_checkpoint({"a": Boom()}, path, kind="test")
    assert torch.equal(load_checkpoint(path, kind="test")["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_calibrate_trains_only_what_it_may(teacher, data):
    train, _, test = data
    torch.manual_seed(2)
    student = convert(teacher, neuron=LIF(learnable="threshold"))     # thresholds are parameters
    trainer = LocalTandemTrainer(teacher, student, time_steps=4, mode="offline", lr=3e-3, device="cpu")
    trainer.fit(train, epochs=1, progress=False)
    chip = copy.deepcopy(trainer.student)
    with torch.no_grad():                             # a "noisy chip": perturb its weights
        for n, p in chip.named_parameters():
            if not n.endswith("threshold"):
                p.mul_(1 + 0.3 * torch.randn_like(p))
    before = {n: p.detach().clone() for n, p in chip.named_parameters()}
    noisy_acc = trainer.evaluate(test, model=chip)["student_acc"]
    probe = [next(iter(test))]                        # one fixed batch: the chip's LTL loss on it, before/after

    def chip_loss():                                  # a step at lr ~ 0 measures the loss without changing much
        return trainer.calibrate(copy.deepcopy(chip), probe, steps=1, mode="offline", lr=1e-12)["loss"]
    loss_before = chip_loss()
    out = trainer.calibrate(chip, train, steps=48, mode="online", lr=3e-3)
    assert out["steps"] == 48 and set(out["local_loss"]) == {n for n, _ in chip.lifs()}
    for n, p in chip.named_parameters():
        if n.endswith("threshold"):                   # thresholds untouched without train_thresholds
            assert torch.equal(p, before[n]) and p.requires_grad, n
        else:
            assert not torch.equal(p, before[n]), n
    # calibration compensates the noise: 0.86-0.91x over seeds and layouts (float32 trajectories differ), 1.0 without
    assert chip_loss() < 0.95 * loss_before, (loss_before, chip_loss())
    assert trainer.evaluate(test, model=chip)["student_acc"] >= noisy_acc - 100 / len(test.dataset)   # <= 1 image
    copy.deepcopy(chip)                               # nothing of the step is left on the modules
    trainer.calibrate(chip, train, steps=4, lr=1e-2, train_thresholds=True)
    assert any(not torch.equal(p, before[n]) for n, p in chip.named_parameters() if n.endswith("threshold"))
    plain = copy.deepcopy(LocalTandemTrainer(teacher, time_steps=2, device="cpu").student)
    with pytest.raises(ValueError, match="thresholds"):
        trainer.calibrate(plain, train, steps=1, train_thresholds=True)


def test_init_teacher_starts_close_to_the_teacher(teacher, data):
    train, _, test = data
    x = torch.cat([x for x, _ in train])[:128]
    trainer = LocalTandemTrainer(teacher, time_steps=8, init="teacher", calib_data=x, device="cpu")
    rand = LocalTandemTrainer(teacher, time_steps=8, init="random", device="cpu")
    assert trainer.evaluate(test)["student_acc"] > rand.evaluate(test)["student_acc"]


def test_bptt_baseline_learns(teacher, data):
    train, _, test = data
    torch.manual_seed(4)
    student = SpikingModel(convert(teacher, neuron=LIF()), time_steps=4)
    bptt = BPTTTrainer(student, time_steps=4, lr=1e-2, device="cpu")
    before = bptt.evaluate(test)["student_acc"]
    bptt.fit(train, epochs=2, progress=False)
    assert bptt.evaluate(test)["student_acc"] > before + 20
    assert len(bptt.history) == 2


def test_bptt_fit_refuses_an_empty_loader_and_bad_epochs(teacher):
    """An empty loader was recorded as a trained epoch with loss 0; epochs=2.5 ran range() into a TypeError."""
    bptt = BPTTTrainer(convert(teacher, neuron=LIF()), time_steps=2, device="cpu")
    with pytest.raises(ValueError, match="yielded no sample in epoch 1"):
        bptt.fit([], epochs=1, progress=False)
    assert bptt.history == []
    with pytest.raises(ValueError, match="epochs must be a non-negative int"):
        bptt.fit([], epochs=2.5, progress=False)


def test_bad_arguments(teacher):
    with pytest.raises(ValueError, match="mode"):
        LocalTandemTrainer(teacher, mode="sideways")
    with pytest.raises(ValueError, match="constant"):
        LocalTandemTrainer(teacher, mode="offline", memory="constant")
    with pytest.raises(ValueError, match="warmup"):
        LocalTandemTrainer(teacher, mode="online", time_steps=4, warmup=4)
    with pytest.raises(TypeError, match="compact_targets"):
        LocalTandemTrainer(teacher, mode="online", memory="constant", compact_targets="yes")
    with pytest.raises(ValueError, match="percentile"):
        LocalTandemTrainer(teacher, percentile=150)
    with pytest.raises(TypeError, match="teacher"):
        LocalTandemTrainer("resnet")
    with pytest.raises(ValueError, match="calib_data"):
        LocalTandemTrainer(teacher, init="teacher")


# ============================================================== issue 10: nothing silently wrong
def _with_train_images(splits: DatasetSplits, x_train: torch.Tensor) -> DatasetSplits:
    """The same test images beside other training images (as in two .npz files)."""
    return DatasetSplits(splits.name, x_train, splits.y_train[:len(x_train)], splits.x_test, splits.y_test,
                         splits.class_names)


def test_normalisation_travels_in_the_checkpoint(teacher, data, tmp_path):
    """The 34.0 % vs 14.9 % trap: one checkpoint, the same test images, different training images beside them.
    The model normalises with the statistics it was trained with (they are in its state), so the report is the
    same whatever else the data hold."""
    trainer = LocalTandemTrainer(teacher, time_steps=4, mode="offline", lr=1e-2, device="cpu")
    trainer.fit(data.train, epochs=1, progress=False)
    loaded = LocalTandemTrainer.load(trainer.save(tmp_path / "c.pt"))
    assert torch.equal(loaded.teacher.input_norm.mean, teacher.input_norm.mean)     # part of the model's state
    splits = make_splits(256)
    bright = _with_train_images(splits, (200 + splits.x_train[:64] // 5).to(torch.uint8))  # other mean and std
    assert abs(bright.mean[0] - splits.mean[0]) > 0.3
    reports = [loaded.evaluate(make_loaders(s, batch_size=32, seed=0).test) for s in (splits, bright)]
    assert reports[0] == reports[1]
    assert reports[0]["student_acc"] == trainer.evaluate(data.test)["student_acc"]


def test_validation_selects_best_and_last_is_saved_before_evaluation(teacher, data, tmp_path):
    torch.manual_seed(5)
    trainer = LocalTandemTrainer(teacher, time_steps=4, mode="offline", lr=1e-2, device="cpu")
    history = trainer.fit(data.train, epochs=3, val_loader=data.val, progress=False, checkpoint=tmp_path / "last.pt",
                          best_checkpoint=tmp_path / "best.pt")
    accs = [h["val_student_acc"] for h in history]
    best_epoch = 1 + accs.index(max(accs))
    assert trainer.best == {"epoch": best_epoch, "val_student_acc": max(accs)}
    best = LocalTandemTrainer.load(tmp_path / "best.pt")
    assert best.epoch == best_epoch and best.evaluate(data.val)["student_acc"] == max(accs)
    assert LocalTandemTrainer.load(tmp_path / "last.pt").epoch == 3

    class Broken:                                     # a validation set whose evaluation fails
        def __iter__(self):
            raise RuntimeError("evaluation failed")
    fresh = LocalTandemTrainer(teacher, time_steps=4, mode="offline", lr=1e-2, device="cpu")
    with pytest.raises(RuntimeError, match="evaluation failed"):
        fresh.fit(data.train, epochs=1, val_loader=Broken(), progress=False, checkpoint=tmp_path / "e.pt")
    saved = LocalTandemTrainer.load(tmp_path / "e.pt")
    assert saved.global_step == len(data.train) and saved.epoch == 0       # the epoch's training was kept
    saved.fit(data.train, epochs=1, val_loader=data.val, progress=False)   # resumes: evaluates, no step again
    assert saved.epoch == 1 and saved.global_step == len(data.train) and "val_student_acc" in saved.history[0]


def test_empty_loader_raises(teacher):
    trainer = LocalTandemTrainer(teacher, time_steps=2, device="cpu")
    with pytest.raises(ValueError, match="no batch"):
        trainer.fit([], epochs=1, progress=False)
    assert trainer.history == [] and trainer.epoch == 0


def test_nan_loss_raises_naming_layer_and_step_and_keeps_the_checkpoint(teacher, data, tmp_path):
    trainer = LocalTandemTrainer(teacher, time_steps=2, lr=1e-2, device="cpu")
    trainer.fit(data.train, epochs=1, progress=False, checkpoint=tmp_path / "c.pt")
    good = (tmp_path / "c.pt").read_bytes()
    with torch.no_grad():
        trainer.student.model.fc.weight[0, 0] = float("nan")         # the readout diverged
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 1 .*readout cross-entropy nan"):
        trainer.fit(data.train, epochs=2, progress=False, checkpoint=tmp_path / "c.pt", checkpoint_every=1)
    assert (tmp_path / "c.pt").read_bytes() == good                 # the last good checkpoint is kept
    with pytest.raises(FloatingPointError, match=r"layer 'features.1.2' local loss inf"):
        trainer._check_finite({"loss": float("inf"), "ce": 0.5, "local/features.1.2": float("inf")})


def test_labels_outside_the_classes_are_named(teacher, data):
    trainer = LocalTandemTrainer(teacher, time_steps=2, device="cpu")
    x, y = next(iter(data.train))
    bad = [(x, torch.where(y == 3, torch.full_like(y, 7), y))]        # a 4-class model, label 7
    with pytest.raises(ValueError, match=r"labels \[7\] lie outside the model's 4 classes"):
        trainer.fit(bad, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"labels \[-1\]"):
        trainer.evaluate([(x, y - 1)])


def test_one_set_of_defaults_for_api_and_cli(teacher):
    from ltl_ext.cli import build_parser
    from ltl_ext.cli.common import _percentile
    from ltl_ext.train.config import DEFAULT_LR, DEFAULT_PERCENTILE
    args = build_parser().parse_args(["train"])
    for mode in ("offline", "online"):
        api = LocalTandemTrainer(teacher, time_steps=4, mode=mode, warmup=2, device="cpu").config
        assert api.lr == DEFAULT_LR == args.lr
        assert api.percentile == DEFAULT_PERCENTILE[mode] == _percentile(None, mode)
    assert DEFAULT_PERCENTILE == {"offline": 99.9, "online": 99.0}


def test_teacher_training_selects_on_validation(data):
    torch.manual_seed(0)
    model = tiny_teacher(make_splits(256))
    history = train_teacher(model, data.train, epochs=3, lr=0.2, progress=False, device="cpu",
                            val_loader=data.val)
    accs = [h["val_acc"] for h in history]
    assert [h["selected"] for h in history] == [a == max(accs) and accs.index(a) == i for i, a in enumerate(accs)]
    assert evaluate_ann(model, data.val, "cpu") == max(accs)        # the model ends at its best epoch
    assert all("test_acc" not in h for h in history)


def test_checkpoints_from_before_models_carried_their_normalisation_are_refused(tmp_path):
    torch.save({"format": "ltl_ext-checkpoint-v1", "kind": "ltl_trainer"}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="did not carry their input normalisation"):
        LocalTandemTrainer.load(tmp_path / "old.pt")


def test_fit_to_epochs_already_done_warns_and_trains_nothing(teacher, data):
    """``epochs`` counts the run's epochs in total (resume continues where it stopped), so a second
    ``fit(epochs=1)`` trains nothing: it says so (at the caller's line), and ``epochs=2`` trains one more."""
    for trainer in (LocalTandemTrainer(teacher, time_steps=2, device="cpu"),
                    BPTTTrainer(convert(teacher, neuron=LIF()), time_steps=2, device="cpu")):
        trainer.fit(data.train, epochs=1, progress=False)
        before = [p.detach().clone() for p in trainer.student.parameters()]
        with pytest.warns(UserWarning, match=r"nothing to train: this trainer has done 1 epoch\(s\).*epochs=1 \+ n"
                          ) as w:
            trainer.fit(data.train, epochs=1, progress=False)
        assert w[0].filename == __file__
        assert all(torch.equal(a, b) for a, b in zip(before, trainer.student.parameters()))
        trainer.fit(data.train, epochs=2, progress=False)
        assert len(trainer.history) == 2
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.student.parameters()))


def test_resume_at_the_step_limit_trains_no_extra_step(teacher, tmp_path):
    """fit(max_steps=3) interrupted in evaluation, right after its pre-evaluation save at step 3: the resumed run
    must not train a 4th step in that epoch (it equals the uninterrupted run)."""
    splits = make_splits(128, 32)
    kw = dict(time_steps=2, mode="offline", lr=3e-3, device="cpu")
    loaders = lambda: make_loaders(splits, batch_size=16, seed=1)  # noqa: E731  (7 batches per epoch)
    torch.manual_seed(3)
    full = LocalTandemTrainer(copy.deepcopy(teacher), **kw)
    full.fit(loaders().train, epochs=2, val_loader=loaders().val, progress=False, max_steps=3)

    torch.manual_seed(3)
    broken = LocalTandemTrainer(copy.deepcopy(teacher), **kw)

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash
    broken.evaluate = crash
    with pytest.raises(Crash):
        broken.fit(loaders().train, epochs=2, val_loader=loaders().val, progress=False, max_steps=3,
                   checkpoint=tmp_path / "last.pt")
    resumed = LocalTandemTrainer.load(tmp_path / "last.pt", teacher=copy.deepcopy(teacher))
    assert (resumed.epoch, resumed.step_in_epoch) == (0, 3)
    resumed.fit(loaders().train, epochs=2, val_loader=loaders().val, progress=False, max_steps=3)
    assert resumed.global_step == full.global_step == 6
    assert [h["samples"] for h in resumed.history] == [48, 48]
    _same_run(full, resumed)


def test_best_checkpoint_needs_a_validation_loader(teacher, data, tmp_path):
    """best.pt is chosen on validation: asked for without a val_loader it used to be silently never written."""
    trainer = LocalTandemTrainer(teacher, time_steps=2, device="cpu")
    with pytest.raises(ValueError, match="best_checkpoint needs a val_loader"):
        trainer.fit(data.train, epochs=1, progress=False, best_checkpoint=tmp_path / "best.pt")
    assert trainer.epoch == 0 and not (tmp_path / "best.pt").exists()


def test_epoch_losses_are_means_over_samples(teacher, tmp_path):
    """The epoch's loss is the mean over its samples: a last batch of 4 counts for 4 samples, not for a full batch."""
    from ltl_ext.train.callbacks import Callback
    splits = make_splits(40, 8)
    train = make_loaders(splits, batch_size=16, val_fraction=0.0, seed=0).train      # batches of 16, 16, 8
    steps = []

    class Steps(Callback):
        def on_step_end(self, trainer, step, stats):
            steps.append(dict(stats))
    trainer = LocalTandemTrainer(teacher, time_steps=2, lr=1e-2, device="cpu", callbacks=[Steps()])
    entry = trainer.fit(train, epochs=1, progress=False)[0]
    sizes = [16, 16, 8]
    assert entry["samples"] == 40 and len(steps) == 3
    for key in ("loss", "ce"):
        assert entry[key] == pytest.approx(sum(s[key] * n for s, n in zip(steps, sizes)) / 40, rel=1e-9)
    for name, value in entry["local_loss"].items():
        assert value == pytest.approx(sum(s[f"local/{name}"] * n for s, n in zip(steps, sizes)) / 40, rel=1e-9)


def test_local_losses_are_means_over_samples(teacher):
    """``trainer.local_losses`` weights each batch by its samples, as the training history does: with batches of
    16, 16 and 8 it is the sample-weighted mean of the per-batch losses, not their plain mean."""
    splits = make_splits(40, 8)
    loader = make_loaders(splits, batch_size=16, val_fraction=0.0, seed=0).train       # batches of 16, 16, 8
    trainer = LocalTandemTrainer(teacher, time_steps=2, lr=1e-2, device="cpu")
    batches = list(loader)
    per_batch = [trainer.local_losses([b]) for b in batches]
    sizes = [len(y) for _, y in batches]
    assert sizes == [16, 16, 8]
    whole = trainer.local_losses(batches)
    for key in ("loss", "ce"):
        assert whole[key] == pytest.approx(sum(p[key] * n for p, n in zip(per_batch, sizes)) / 40, rel=1e-9)
    for name, value in whole["local_loss"].items():
        expected = sum(p["local_loss"][name] * n for p, n in zip(per_batch, sizes)) / 40
        assert value == pytest.approx(expected, rel=1e-9)


def test_checkpoint_and_best_checkpoint_must_be_different_files(teacher, data, tmp_path):
    """One file for both: each epoch's last save would overwrite the best epoch's, so load(best) gave the last."""
    trainer = LocalTandemTrainer(teacher, time_steps=2, device="cpu")
    with pytest.raises(ValueError, match="same file"):
        trainer.fit(data.train, epochs=1, val_loader=data.val, progress=False, checkpoint=tmp_path / "c.pt",
                    best_checkpoint=tmp_path / "." / "c.pt")
    assert trainer.global_step == 0


@pytest.mark.parametrize("kw", [dict(checkpoint_every=2), dict(checkpoint_every=2.5, checkpoint="c.pt"),
                                dict(checkpoint_every=0, checkpoint="c.pt"),
                                dict(checkpoint_every="2", checkpoint="c.pt"), dict(max_steps=0), dict(max_steps=-1)])
def test_bad_step_counts_of_fit_are_refused(teacher, data, tmp_path, kw):
    """Each of these used to pass: checkpoint_every without checkpoint= saved nothing, 2.5 saved only at epoch
    ends, "2" failed with a bare TypeError, and max_steps <= 0 still trained a step per epoch."""
    if "checkpoint" in kw:
        kw = dict(kw, checkpoint=tmp_path / kw["checkpoint"])
    trainer = LocalTandemTrainer(teacher, time_steps=2, device="cpu")
    with pytest.raises(ValueError, match="checkpoint_every|max_steps"):
        trainer.fit(data.train, epochs=1, progress=False, **kw)
    assert trainer.global_step == 0 and not (tmp_path / "c.pt").exists()
