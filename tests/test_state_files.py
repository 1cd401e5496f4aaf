"""What a run leaves behind, read back: trainer checkpoints that resume exactly, teacher files."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ltl_ext.data import DatasetSplits, make_loaders
from ltl_ext.ltl.convert import convert
from ltl_ext.nn import LIF
from ltl_ext.nn.zoo import mlp
from ltl_ext.train import LocalTandemTrainer, load_teacher, save_teacher


def _splits(n_train=64, n_test=32) -> DatasetSplits:
    """4 classes of 8x8 grey images: a random prototype per class plus pixel noise."""
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(4, 1, 8, 8, generator=g)

    def draw(n):
        y = torch.arange(n) % 4
        return ((0.7 * protos[y] + 0.3 * torch.rand(n, 1, 8, 8, generator=g)) * 255).round().to(torch.uint8), y
    (x_tr, y_tr), (x_te, y_te) = draw(n_train), draw(n_test)
    return DatasetSplits("generated", x_tr, y_tr, x_te, y_te, ("0", "1", "2", "3"))


def _student_with_per_neuron_thresholds(teacher, per_neuron: bool):
    student = convert(teacher, neuron=LIF(learnable="threshold"))
    if per_neuron:
        for m in student.modules():
            if isinstance(m, LIF):
                m.threshold = torch.full((16,), 0.6)
    return student


def test_per_neuron_learnable_thresholds_keep_training_after_load(tmp_path):
    """A per-neuron learnable threshold loaded into a student built with a scalar one (LIF accepts it) becomes a new
    Parameter; the optimiser built with the trainer held the old one, so the threshold silently stopped learning and
    the resumed run drifted from the uninterrupted one."""
    splits = _splits()
    train = make_loaders(splits, batch_size=16, seed=0).train
    torch.manual_seed(0)
    teacher = mlp(num_classes=4, in_features=64, hidden=(16,), mean=splits.mean, std=splits.std)
    kw = dict(time_steps=2, lr=1e-2, device="cpu")
    full = LocalTandemTrainer(teacher, _student_with_per_neuron_thresholds(teacher, True), **kw)
    full.fit(train, epochs=1, progress=False)
    full.save(tmp_path / "c.pt")
    resumed = LocalTandemTrainer.load(tmp_path / "c.pt", teacher=copy.deepcopy(teacher),
                                      student=_student_with_per_neuron_thresholds(teacher, False))
    held = {id(p) for group in resumed.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in held for p in resumed.student.parameters())
    full.fit(train, epochs=2, progress=False)
    resumed.fit(train, epochs=2, progress=False)
    for (name, a), b in zip(full.student.state_dict().items(), resumed.student.state_dict().values()):
        assert torch.equal(a, b), name


def test_what_the_safe_loader_cannot_read_is_refused_when_saving(tmp_path):
    """A NumPy number in a teacher's meta was written without a word, and the file then refused as "corrupt" by
    every load; now the save names it and the file already there stays."""
    teacher = mlp(num_classes=4, in_features=64, hidden=(8,))
    path = save_teacher(teacher, teacher.spec, tmp_path / "teacher.pt", {"val_acc": 91.5})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"state\['meta'\]\['val_acc'\] is a numpy.float64"):
        save_teacher(teacher, teacher.spec, path, {"val_acc": np.float64(93.0)})
    assert path.read_bytes() == before and load_teacher(path)[2] == {"val_acc": 91.5}
