"""ltl_ext.tandem: pairing by name, teacher hooks, target normalisation, tandem mode for one batch."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltl_ext import tandem
from ltl_ext.ltl.convert import convert
from ltl_ext.nn.zoo import cnn_small, mlp
from ltl_ext.nn import LIF, SpikingModel

NEURON = LIF(beta=1.0, threshold=0.5, reset="soft", surrogate="sigmoid")


def teacher_student(T=4, build=lambda: mlp(in_features=64, hidden=(16, 12))):
    torch.manual_seed(0)
    teacher = build().eval()
    return teacher, SpikingModel(convert(teacher, neuron=NEURON), time_steps=T)


def test_percentile_and_normalise():
    a = torch.arange(1000, dtype=torch.float32).view(10, 100)
    assert float(tandem.percentile(a, 99.9)) == 998.0  # nearest rank: ceil(0.999 * 1000) = 999th value
    assert float(tandem.percentile(a, 100)) == 999.0
    y = tandem.normalise(a, 99.9)
    assert torch.allclose(y, (a / 998.0).clamp(0, 1)) and float(y.max()) == 1.0
    assert torch.equal(tandem.normalise(a, None), a)
    assert torch.equal(tandem.normalise(torch.zeros(3)), torch.zeros(3))  # dead layer: no NaN
    with pytest.raises(ValueError):
        tandem.percentile(a, 0)


def test_sparse_layer_targets_stay_graded():
    """More than 0.1 % zeros above pct_99.9: the percentile is 0, and the scale falls back to the max instead of
    saturating every positive activation to a target of 1 (the old eps clamp did)."""
    a = torch.zeros(10_000)
    a[:5] = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0])
    assert float(tandem.percentile(a, 99.9)) == 0.0
    expected = a / 4.0
    assert torch.equal(tandem.normalise(a, 99.9), expected)
    assert torch.equal(tandem.TargetNormaliser("batch")("l", a), expected)
    running = tandem.TargetNormaliser("running")
    assert torch.equal(running("l", a), expected) and float(running.scales["l"]) == 4.0
    assert torch.equal(tandem.normalise(-a, 99.9), torch.zeros_like(a))  # never positive: all targets 0, no NaN


def test_running_normaliser():
    n = tandem.TargetNormaliser("running", percentile=100, momentum=0.5)
    n("l", torch.tensor([2.0]))
    y = n("l", torch.tensor([4.0]))
    assert float(n.scales["l"]) == pytest.approx(3.0) and float(y) == 1.0
    assert float(n("l", torch.tensor([1.5]), update=False)) == pytest.approx(0.5)
    m = tandem.TargetNormaliser("running")
    m.load_state_dict(n.state_dict())
    assert float(m.scales["l"]) == pytest.approx(3.0)


def test_pair_by_name_and_hooks_capture_teacher_activations():
    teacher, student = teacher_student()
    pairs = tandem.pair(teacher, student)
    assert [p.name for p in pairs] == ["hidden.0.2", "hidden.1.3"]
    for name, t_mod, lif in pairs:
        assert t_mod is teacher.get_submodule(name) and lif is student.model.get_submodule(name)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        teacher(x)
    acts = pairs.activations()
    want = teacher.hidden[0](teacher.flatten(x))
    assert torch.allclose(acts["hidden.0.2"], want) and acts["hidden.1.3"].shape == (5, 12)
    y = pairs.targets(99.9)
    assert all(0 <= float(v.min()) and float(v.max()) <= 1 for v in y.values())
    pairs.remove()
    with torch.no_grad():
        teacher(torch.randn(2, 1, 8, 8))
    assert pairs.activations()["hidden.0.2"].shape[0] == 5  # hooks gone: nothing captured


def test_mismatch_error_names_the_layers():
    teacher, student = teacher_student()
    student.model.hidden[1][3] = nn.ReLU()  # a teacher activation without student LIF
    student.model.extra = LIF()  # a student LIF without teacher module
    with pytest.raises(ValueError) as e:
        tandem.pair(teacher, student)
    assert "hidden.1.3" in str(e.value) and "extra" in str(e.value)
    assert "convert(teacher)" in str(e.value) and "strict=False" in str(e.value)
    with pytest.raises(ValueError, match="extra") as e:
        tandem.pair(teacher, student, strict=False)
    assert "strict=False" not in str(e.value)   # it would not help a student LIF without a teacher module


def test_pairing_a_split_reused_activation_uses_the_kth_call():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 3)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))

    torch.manual_seed(0)
    teacher = Reuse()
    student = SpikingModel(convert(teacher, neuron=NEURON), time_steps=2)
    pairs = tandem.pair(teacher, student)
    assert [p.name for p in pairs] == ["act", "act_1"]
    x = torch.randn(3, 4)
    with torch.no_grad():
        teacher(x)
        first = torch.relu(teacher.fc1(x))
        second = torch.relu(teacher.fc2(first))
    acts = pairs.activations()
    assert torch.allclose(acts["act"], first) and torch.allclose(acts["act_1"], second)


def test_tandem_batch_local_losses_stay_local():
    teacher, student = teacher_student(build=lambda: cnn_small(input_size=8, channels=(4, 6, 6), hidden=10))
    pairs = tandem.pair(teacher, student)
    x, labels = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    with torch.no_grad():
        teacher(x)
    targets = pairs.targets()
    with tandem.tandem_batch(pairs, targets, mode="offline") as run:
        assert tandem.TandemRun.current() is run
        logits = student(x)
    assert tandem.TandemRun.current() is None
    losses = run.losses
    assert list(losses) == [p.name for p in pairs]
    # the loss of layer 2 reaches conv 2 only: spikes between layers are detached
    losses["features.1.2"].backward(retain_graph=True)
    feats = student.model.features
    assert feats[0][0].weight.grad is None and feats[1][0].weight.grad.abs().sum() > 0
    (F.cross_entropy(logits, labels) + run.total()).backward()
    assert feats[0][0].weight.grad is not None and student.model.fc.weight.grad is not None
    with pytest.raises(KeyError):
        tandem.tandem_batch(pairs, {}, mode="offline")
    pairs.remove()
    assert not teacher._forward_hooks and not any(m._forward_hooks for m in teacher.modules())


def test_tandem_link_online_stepwise_gradients_equal_batched():
    """Constant-memory online LTL (step + backward per step) gives the batched online gradients."""
    teacher, student = teacher_student(T=5)
    x = torch.randn(3, 1, 8, 8)
    with tandem.Tandem(teacher, student, percentile=99.0) as link:
        with link.batch(x, mode="online", warmup=2) as run:
            student(x)
        run.total().backward()
        batched = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
        assert len(batched) == 4  # the two hidden layers' weights and biases (the readout has no local loss)
        student.zero_grad()
        student.reset_state()
        with link.batch(x, mode="online", warmup=2, backward=True) as run:
            for t in range(5):
                student.step(x)
        for n, p in student.named_parameters():
            assert (p.grad is None) if n not in batched else torch.allclose(p.grad, batched[n], atol=1e-5)
        assert set(link.state_dict()) == {"normaliser"}
    copy.deepcopy(student)


def test_the_link_leaves_no_hook_on_the_teacher():
    teacher, student = teacher_student(T=3)
    hooks = lambda: sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in teacher.modules())  # noqa
    link = tandem.Tandem(teacher, student)
    assert hooks() == 0
    targets = link.targets(torch.randn(2, 1, 8, 8))
    assert hooks() == 0 and set(targets) == {p.name for p in link.pairs}
    with pytest.raises(RuntimeError, match="no teacher activation"):
        link.pairs.activations()                   # forgotten after the forward: no batch kept alive


def test_targets_run_the_teacher_in_eval_and_leave_its_mode():
    """The teacher's targets come from its eval-mode forward (BN running statistics, no dropout), whatever mode it
    is in; a teacher in training mode gets it back, one in eval stays there."""
    teacher, student = teacher_student(T=3)
    link = tandem.Tandem(teacher, student)
    x = torch.randn(4, 1, 8, 8)
    teacher.eval()
    want = {k: v.clone() for k, v in link.targets(x).items()}
    assert not any(m.training for m in teacher.modules())
    teacher.train()
    got = link.targets(x)
    assert all(m.training for m in teacher.modules())
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_step_finds_lifs_added_before_a_batch():
    """SpikingModel.step reads its LIFs once per batch (reset_state), not at every step: a LIF added to the model
    between batches is stepped after the next reset_state."""
    model = SpikingModel(nn.Sequential(nn.Linear(3, 4), LIF()), time_steps=2)
    model.reset_state()
    model.step(torch.rand(2, 3), steps=2)
    model.model.append(LIF())
    model.reset_state()
    model.step(torch.rand(2, 3), steps=2)
    assert [m.t for _, m in model.lifs()] == [2, 2]


class FunctionalBN(nn.Module):
    """F.relu after a BN: the link pairs through an exposed copy of it (a GraphModule sharing its modules)."""

    def __init__(self):
        super().__init__()
        self.c, self.bn, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.c(x))).mean((2, 3)))


def test_targets_follow_each_teacher_module_mode_not_the_root_flag():
    """An exposed teacher kept the train/eval flag it was built with: a teacher put in train mode afterwards ran
    its BN on batch statistics for the targets and updated its running statistics; and a BN the user froze in
    eval inside a teacher in train mode came back from the link in train mode."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 6, 6)
    teacher = FunctionalBN().eval()
    with torch.no_grad():
        teacher.bn.running_mean.uniform_(-0.5, 0.5)
    link = tandem.Tandem(teacher, SpikingModel(convert(teacher, neuron=NEURON), time_steps=2))
    want = link.targets(x)
    teacher.train()
    stats = teacher.bn.running_mean.clone()
    got = link.targets(x)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert torch.equal(teacher.bn.running_mean, stats) and all(m.training for m in teacher.modules())
    teacher.bn.eval()                                  # frozen BN in a teacher in train mode
    link = tandem.Tandem(teacher, SpikingModel(convert(teacher, neuron=NEURON), time_steps=2))
    assert all(torch.equal(a, b) for a, b in zip(link.targets(x).values(), want.values()))
    assert not teacher.bn.training and teacher.training and teacher.c.training


def test_an_activation_changed_in_place_after_its_capture_is_refused():
    """The hooks keep a view of each activation: a teacher that updates one in place afterwards (``a += h``) used
    to hand the student the updated value as its target, silently. Now a clear error; out of place is fine."""
    class Teacher(nn.Module):
        def __init__(self, in_place: bool):
            super().__init__()
            self.l1, self.act, self.l2, self.in_place = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), in_place

        def forward(self, x):
            a = self.act(self.l1(x))
            if self.in_place:
                a += 1.0
            else:
                a = a + 1.0
            return self.l2(a)
    torch.manual_seed(0)
    x = torch.rand(5, 4)
    for in_place in (False, True):
        teacher = Teacher(in_place).eval()
        link = tandem.Tandem(teacher, SpikingModel(convert(teacher), time_steps=2))
        if in_place:
            with pytest.raises(ValueError, match="in place"):
                link.targets(x)
        else:
            want = torch.relu(teacher.l1(x))
            got = link.targets(x)["act"]
            torch.testing.assert_close(got, (want / tandem.percentile(want, 99.9)).clamp(0, 1))


def test_activations_convert_keeps_after_the_readout_need_no_student_lif():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.Hardtanh(-3, 3)).eval()
    student = convert(teacher, neuron=LIF(beta=1.0, threshold=1.0, reset="soft"))
    assert isinstance(student[3], nn.Hardtanh)   # kept by convert: it acts on the logits
    link = tandem.Tandem(teacher, student)
    assert list(link.targets(torch.randn(5, 6))) == ["1"]
    with pytest.raises(ValueError, match=r"teacher activations with no student LIF: \['1'\]"):
        tandem.Tandem(teacher, nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), LIF()))
