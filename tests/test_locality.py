"""LTL's promise (ltl-method.md §3): no gradient crosses layers. One layer's local loss, back-propagated alone,
reaches only that layer's weights: the conv/linear layers that feed its neurons directly (two in parallel after a
residual add with a projection shortcut), never a layer before the previous neurons. Checked through the public
API (``LocalTandemTrainer`` and its ``ltl_ext.tandem`` link) on every zoo model and on teachers whose activations
are functions and methods (``F.relu``, ``torch.relu``, ``x.relu()``, ``F.hardtanh``, ``torch.clamp``, ...): a
functional activation left analog in the student would let the next layer's loss into the layer before it.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from ltl_ext import LocalTandemTrainer, models
from ltl_ext.ltl.convert import convert, expose_activations
from ltl_ext.nn import LIF, ClampReLU

WEIGHTS = (nn.Conv2d, nn.Linear)


class FunctionalNet(nn.Module):
    """Every activation a function or a method call: conv -> F.relu -> conv -> torch.clamp(0, 2) -> conv ->
    x.relu() -> fc -> F.hardtanh(0, 2) -> fc -> clamp_min(0) -> fc -> F.relu6 -> readout."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.c3 = nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Conv2d(6, 6, 3, stride=2, padding=1)
        self.f1, self.f2, self.f3 = nn.Linear(6 * 4 * 4, 16), nn.Linear(16, 16), nn.Linear(16, 12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = torch.clamp(self.c2(x), 0, 2)
        x = self.c3(x).relu()
        x = F.hardtanh(self.f1(torch.flatten(x, 1)), 0.0, 2.0)
        x = torch.clamp_min(self.f2(x), 0)
        x = F.relu6(self.f3(x))
        return self.fc(x)


class MixedNet(nn.Module):
    """Module, function and method activations side by side, with a residual add: the torchvision pattern written
    functionally."""

    def __init__(self):
        super().__init__()
        self.stem, self.act = nn.Conv2d(1, 4, 3, padding=1), ClampReLU(2.0)
        self.conv1, self.conv2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        x = self.act(self.stem(x))
        out = torch.relu(self.conv1(x))
        x = (self.conv2(out) + x).clamp(min=0)
        return self.fc(torch.flatten(x, 1))


CASES = {  # name -> (teacher, input [B, ...], number of neuron layers)
    "vgg11": (lambda: models.vgg11(10, 3, input_size=16), (2, 3, 16, 16), 10),
    "vgg16": (lambda: models.vgg16(10, 3, input_size=16), (2, 3, 16, 16), 15),
    "cnn_small": (lambda: models.cnn_small(10, 1, channels=(4, 8, 8), hidden=16), (2, 1, 28, 28), 4),
    "mlp": (lambda: models.mlp(10, 784, hidden=(32, 16)), (2, 1, 28, 28), 2),
    "resnet": (lambda: models.resnet(10, 1, widths=(4, 8), blocks=(2, 1)), (2, 1, 16, 16), 7),
    "functional": (FunctionalNet, (2, 1, 16, 16), 6),
    "mixed": (MixedNet, (2, 1, 8, 8), 3),
}


class _LeafLIF(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, LIF) or super().is_leaf_module(m, qualname)


def weight_ancestors(model: nn.Module) -> dict:
    """Weight layer name -> names of the weight layers upstream of it in the student's data flow."""
    graph = _LeafLIF().trace(model)
    weights = {n for n, m in model.named_modules() if isinstance(m, WEIGHTS)}
    up = {}
    for node in graph.nodes:
        mine = set()
        for a in node.all_input_nodes:
            mine |= up[a]
            if a.op == "call_module" and a.target in weights:
                mine.add(a.target)
        up[node] = mine
    return {n.target: up[n] for n in graph.nodes if n.op == "call_module" and n.target in weights}


def local_losses(trainer: LocalTandemTrainer, x: torch.Tensor, mode: str) -> dict:
    """Layer name -> that layer's local loss for one batch in tandem ``mode`` (the trainer's link)."""
    with trainer.link.batch(x, mode=mode, warmup=1 if mode == "online" else 0) as run:
        trainer.student(x)
    return run.losses


@pytest.mark.parametrize("mode", ["offline", "online"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_local_loss_reaches_only_its_own_layer(case, mode):
    build, shape, n_layers = CASES[case]
    torch.manual_seed(0)
    teacher = build().eval()
    x = torch.randn(*shape)
    # the student is converted from the teacher as the user wrote it; the pairing hooks the teacher's functional
    # activations through expose_activations (same function, same parameters, a module where each neuron learns)
    trainer = LocalTandemTrainer(expose_activations(teacher), convert(teacher), time_steps=2, device="cpu",
                                 distributed=False)
    student = trainer.student.model
    weights = {n: m for n, m in student.named_modules() if isinstance(m, WEIGHTS)}
    owner = {id(p): n for n, m in weights.items() for p in m.parameters()}
    ancestors = weight_ancestors(student)
    readout = list(ancestors)[-1]

    losses = local_losses(trainer, x, mode)
    assert len(losses) == n_layers == len(trainer.student.lifs())   # every activation became a neuron layer
    reached_by = {}
    for name, loss in losses.items():
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        reached = {owner[id(p)] for p in student.parameters() if p.grad is not None}   # in its graph
        assert reached, f"{case}: the local loss of {name!r} reaches no weight"
        assert readout not in reached, f"{case}: the local loss of {name!r} reaches the readout"
        for a in reached:   # one layer deep: no reached layer feeds another reached layer
            assert not (ancestors[a] & reached), (f"{case}: the local loss of {name!r} crosses layers: it reaches "
                                                   f"{sorted(reached)}, and {sorted(ancestors[a] & reached)} "
                                                   f"feed {a!r}")
        for a in reached:
            reached_by.setdefault(a, []).append(name)
    assert set(reached_by) == set(weights) - {readout}, f"{case}: layers no local loss trains"
    assert all(len(v) == 1 for v in reached_by.values()), f"{case}: layers trained by two losses: {reached_by}"


def test_the_trainer_pairs_a_teacher_with_functional_activations():
    """Issue 10 item 2, end to end: a teacher calling F.relu and x.clamp trains through LocalTandemTrainer (the
    link pairs each student LIF with the exposed activation of the same name), its local losses are named after
    those activations, and the caller's teacher is left as it was (same class, no hooks)."""
    import torch.nn.functional as F
    from torch import nn

    from ltl_ext import LocalTandemTrainer

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(16, 12), nn.Linear(12, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = F.relu(self.fc1(x.flatten(1)))
            return self.fc3(self.fc2(h).clamp(0, 2))

    torch.manual_seed(0)
    teacher = Functional()
    trainer = LocalTandemTrainer(teacher, time_steps=4, device="cpu", distributed=False)
    stats = trainer.train_step(torch.rand(8, 1, 4, 4), torch.randint(0, 2, (8,)))
    assert {k for k in stats if k.startswith("local/")} == {"local/relu", "local/clamp"}
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert type(teacher) is Functional and not teacher._forward_hooks and not teacher._forward_pre_hooks
