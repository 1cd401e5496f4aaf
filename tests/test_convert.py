"""ltl_ext.convert: BN folding, dropout removal, activation replacement, reused activations, threshold balancing."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from ltl_ext import tandem
from ltl_ext.ltl.convert import TARGET_PERCENTILE, convert, expose_activations, fold_batchnorm
from ltl_ext.ltl.tandem import percentile as pct
from ltl_ext.nn.zoo import cnn_small, mlp, resnet
from ltl_ext.nn import LIF, ClampReLU, SpikingModel, lifs

IF = LIF(beta=1.0, threshold=1.0, reset="soft")


def with_bn_stats(model, x, steps=3):
    """Give every BN non-trivial running statistics and affine parameters, then eval mode."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(x)
    return model.eval()


class TorchvisionBlock(nn.Module):
    """torchvision's BasicBlock pattern: ONE ReLU instance used twice, BN, residual add."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class TorchvisionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(TorchvisionBlock(8), TorchvisionBlock(8))
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(8 * 4 * 4, 6))

    def forward(self, x):
        x = F.avg_pool2d(self.layer1(self.stem(x)), 2)
        return self.head(torch.flatten(x, 1))  # functional flatten


def test_fold_batchnorm_exact_in_eval():
    torch.manual_seed(0)
    x = torch.randn(8, 1, 8, 8)
    for ann in (with_bn_stats(cnn_small(input_size=8), x), with_bn_stats(resnet(in_channels=1), x),
                with_bn_stats(mlp(in_features=64), x), with_bn_stats(TorchvisionNet(), x)):
        folded = convert(ann, neuron=False)  # activations kept: BN folded, dropout removed
        assert not any(isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)) for m in folded.modules())
        assert torch.allclose(folded(x), ann(x), atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_without_bias_or_affine():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4, affine=False)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 6, 6)
    want = bn.eval()(conv(x))
    fold_batchnorm(conv, bn)
    assert torch.allclose(conv(x), want, atol=1e-5)


def test_names_kept_and_readout_stays_linear():
    ann = cnn_small()
    student = convert(ann, neuron=IF)
    act_names = [n for n, m in ann.named_modules() if isinstance(m, ClampReLU)]
    assert [n for n, _ in lifs(student)] == act_names
    assert isinstance(student.fc, nn.Linear) and not isinstance(ann.fc, LIF)
    assert all(l is not IF for _, l in lifs(student))  # copies of the template
    assert isinstance(ann.features[0][2], ClampReLU)  # the ANN is untouched


def test_init_random_vs_teacher():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 28, 28)
    ann = with_bn_stats(cnn_small(), x)
    rnd = convert(ann, neuron=IF, init="random")
    assert not torch.allclose(rnd.features[0][0].weight, ann.features[0][0].weight)
    folded = convert(ann, neuron=False)
    neuron = LIF()                              # the paper's: threshold 0.6, rect surrogate of half-width 0.2
    tea = convert(ann, neuron=neuron, init="teacher", calib_data=x)
    # the user's neuron is kept; the first layer (input unit 1) takes the scale theta / lambda_0 in its weights
    assert all(float(l.threshold) == pytest.approx(0.6) and float(l.alpha) == 1.0 for _, l in lifs(tea))
    assert all((l.surrogate, l.surrogate_alpha) == (neuron.surrogate, neuron.surrogate_alpha) for _, l in lifs(tea))
    ratio = tea.features[0][0].weight / folded.features[0][0].weight
    lam0 = float(pct(ann.features[0][2](ann.features[0][1](ann.features[0][0](x))), 99.9))
    assert torch.allclose(ratio, torch.full_like(ratio, 0.6 / lam0), rtol=1e-4)
    assert torch.allclose(tea.features[0][0].bias, folded.features[0][0].bias * 0.6 / lam0, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="calib_data"):
        convert(ann, neuron=IF, init="teacher")
    for q in ann.parameters():  # a frozen teacher (as in LTL) still gives a trainable student
        q.requires_grad_(False)
    assert all(q.requires_grad for q in convert(ann, neuron=IF).parameters())


@pytest.mark.parametrize("build", [lambda: mlp(in_features=64, hidden=(32, 32)),
                                   lambda: resnet(in_channels=1, widths=(8, 16), blocks=(2, 1)),
                                   TorchvisionNet])
@pytest.mark.parametrize("neuron", [IF, LIF(beta=1.0, threshold=0.6, alpha=0.5, reset="soft")], ids=["IF", "IF_0.6"])
def test_teacher_init_student_approximates_the_ann(build, neuron):
    """IF + soft reset + balanced layers: the spiking logits approach the ANN's as T grows (rate limit), and the
    user's neuron is kept (its threshold always; its input gain except behind a residual add of spikes)."""
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    ann = with_bn_stats(build(), x)
    student = convert(ann, neuron=neuron, init="teacher", calib_data=x, percentile=100.0)
    assert all(torch.equal(l.threshold, neuron.threshold) for _, l in lifs(student))
    with torch.no_grad():
        want = ann(x)
        got = SpikingModel(student, time_steps=200).eval()(x)
    err = (got - want).norm() / want.norm()
    assert err < 0.15, float(err)
    assert (got.argmax(1) == want.argmax(1)).float().mean() > 0.8


def test_reused_activation_is_split_or_refused():
    ann = TorchvisionNet()
    student = convert(ann, neuron=IF)
    assert isinstance(student, fx.GraphModule)
    names = [n for n, _ in lifs(student)]
    assert names == ["stem.2", "layer1.0.relu", "layer1.0.relu_1", "layer1.1.relu", "layer1.1.relu_1"]
    split = student.get_submodule("layer1.0.relu_1")
    assert (split.teacher_name, split.teacher_call) == ("layer1.0.relu", 1)
    assert len({id(l) for _, l in lifs(student)}) == 5
    out = SpikingModel(student, time_steps=3)(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 6)
    with pytest.raises(ValueError, match="layer1.0.relu"):
        convert(ann, neuron=IF, reused="error")


def test_leaky_relu_warns_and_untraceable_model_still_converts():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.LeakyReLU(), nn.Linear(8, 3))

        def forward(self, x):
            if x.sum() > 0:  # not traceable by torch.fx
                return self.body(x)
            return self.body(-x)

    ann = DataDependent().eval()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        student = convert(ann, neuron=IF)
    msgs = " ".join(str(m.message) for m in w)
    assert "LeakyReLU" in msgs and "not torch.fx-traceable" in msgs
    assert isinstance(student.body[2], LIF) and isinstance(student.body[1], nn.Identity)  # BN folded (fallback)
    folded = convert(ann, neuron=False)
    x = torch.randn(5, 4)
    assert torch.allclose(folded(x), ann(x), atol=1e-5)


def test_teacher_init_moves_the_scale_into_the_input_gain_only_behind_identity_shortcuts():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    ann = with_bn_stats(resnet(in_channels=1, widths=(4, 8), blocks=(2, 1)), x)
    student = convert(ann, neuron=LIF(), init="teacher", calib_data=x)
    changed = {n for n, l in lifs(student) if float(l.alpha) != 1.0}
    assert changed == {"layers.0.0.act2", "layers.0.1.act2"}      # the blocks with an identity shortcut
    with pytest.raises(ValueError, match="scalar threshold"):
        convert(ann, neuron=LIF(threshold=torch.full((4, 8, 8), 0.6)), init="teacher", calib_data=x)


class JoinedSpikes(nn.Module):
    """The spikes of two layers (different activation scales) joined straight, by a concatenation or an add."""

    def __init__(self, join):
        super().__init__()
        self.join = join
        self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)
        self.out = nn.Linear(12 if join == "cat" else 6, 3)

    def forward(self, x):
        a, b = F.relu(self.a(x)), F.relu(self.b(x))         # two layers: their activation scales differ
        return self.out(torch.cat([a, b], 1) if self.join == "cat" else a + b)


@pytest.mark.parametrize("join,node", [("cat", "cat"), ("add", "add")])
def test_teacher_init_refuses_joining_spikes_of_different_scales_by_name(join, node):
    """Each tensor carries one unit; spikes of two layers with different scales cannot be joined under
    init='teacher': a ValueError naming the node and the ways out, while init='random' converts the same model."""
    torch.manual_seed(0)
    ann, x = JoinedSpikes(join).eval(), torch.randn(64, 4)
    with pytest.raises(ValueError, match=rf"node '{node}' joins \(adds or concatenates\) tensors with different "
                                         rf"scales.*conv/linear on each path.*init='random'"):
        convert(ann, init="teacher", calib_data=x)
    assert len(lifs(convert(ann, init="random"))) == 2


def test_teacher_init_balances_at_the_target_percentile_of_the_mode():
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    ann = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3)).eval()   # unclipped: p99 != p99.9
    def first(**kw):
        return convert(ann, init="teacher", calib_data=x, **kw)[0].weight
    assert TARGET_PERCENTILE == {"offline": 99.9, "online": 99.0}
    assert torch.equal(first(mode="online"), first(percentile=99.0))
    assert torch.equal(first(), first(percentile=99.9))
    assert not torch.allclose(first(mode="online"), first(mode="offline"))
    with pytest.raises(ValueError, match="mode"):
        convert(ann, mode="both")


class Functional(nn.Module):
    """Activations as functions and methods only, a BN and a residual add."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.c2, self.c3 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.f1, self.f2 = nn.Linear(64, 16), nn.Linear(16, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))                   # function
        y = torch.clamp(self.c2(x), 0, 2)                # function with bounds
        x = (self.c3(y) + x).relu()                       # method after a residual add
        x = F.avg_pool2d(x, 2)
        x = F.hardtanh(self.f1(torch.flatten(x, 1)), 0.0, 2.0)
        x = F.relu6(self.f2(x).clamp(min=0))             # two in a row: both become neurons
        return torch.sigmoid(self.fc(x))                 # after the readout: kept


def test_functional_activations_become_neurons():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    ann = with_bn_stats(Functional(), x)
    student = convert(ann, neuron=IF)
    assert isinstance(student, fx.GraphModule)
    assert [n for n, _ in lifs(student)] == ["relu", "clamp", "relu_1", "hardtanh", "clamp_1", "relu6"]
    assert not any(n.op == "call_function" and n.target in (F.relu, torch.clamp, F.hardtanh, F.relu6)
                   for n in student.graph.nodes)
    assert SpikingModel(student, time_steps=3)(x).shape == (16, 5)
    assert not isinstance(ann, fx.GraphModule) and not hasattr(ann, "relu")     # the ANN is untouched
    # the teacher side: the same names, hookable, the same function and the same parameters
    exposed = expose_activations(ann)
    assert [n for n, m in exposed.named_modules() if isinstance(m, (nn.ReLU, nn.Hardtanh, ClampReLU))] == \
        [n for n, _ in lifs(student)]
    assert exposed.c1.weight is ann.c1.weight and exposed.b1 is ann.b1
    with torch.no_grad():
        assert torch.equal(exposed(x), ann(x))
    plain = cnn_small()
    assert expose_activations(plain) is plain                     # nothing to expose: the model itself
    # teacher init through functional activations and the residual add: the rate limit still holds
    tea = convert(ann, neuron=IF, init="teacher", calib_data=x, percentile=100.0)
    with torch.no_grad():
        want, got = ann(x), SpikingModel(tea, time_steps=200).eval()(x)
    assert (got - want).norm() / want.norm() < 0.15


@pytest.mark.parametrize("act,name", [(lambda x: F.gelu(x), "gelu"), (lambda x: torch.sigmoid(x), "sigmoid"),
                                      (lambda x: x.tanh(), "tanh"), (lambda x: torch.clamp(x, -1, 1), "clamp"),
                                      (lambda x: x.clamp(min=0.5), "clamp"), (nn.GELU(), "act"),
                                      (nn.Threshold(0.0, 0.0), "act"), (lambda x: F.hardshrink(x), "hardshrink")])
def test_activations_no_neuron_can_stand_for_are_refused_by_name(act, name):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
            self.act = act if isinstance(act, nn.Module) else nn.Identity()

        def forward(self, x):
            x = F.relu(self.l1(x))
            x = self.act(self.l2(x)) if isinstance(act, nn.Module) else act(self.l2(x))
            return self.l3(x)

    with pytest.raises(ValueError, match=rf"'{name}'.*Fix: replace it"):
        convert(Net())
    with pytest.raises(ValueError, match=rf"'{name}'"):
        expose_activations(Net())
    convert(Net(), neuron=False)                          # no neurons wanted: nothing to refuse


def test_convert_never_copies_hooks():
    ann = cnn_small(channels=(4, 4, 4), hidden=8).eval()
    calls = []
    handles = [ann.register_forward_hook(lambda m, i, o: calls.append("root")),
               ann.register_forward_pre_hook(lambda m, i: calls.append("pre")),
               ann.features[0][0].register_forward_hook(lambda m, i, o: calls.append("conv"), with_kwargs=False),
               ann.features[0][2].register_forward_hook(lambda m, i, o: calls.append("act")),
               ann.fc.register_full_backward_hook(lambda m, gi, go: calls.append("bwd"))]
    for student in (convert(ann), convert(ann, neuron=False), convert(ann, init="teacher",
                                                                      calib_data=torch.randn(8, 1, 28, 28))):
        assert not any(getattr(m, d) for m in student.modules()
                       for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"))
        calls.clear()
        SpikingModel(student, time_steps=2)(torch.randn(2, 1, 28, 28)).sum().backward()
        assert calls == []
    calls.clear()                                         # the ANN keeps its own hooks
    ann(torch.randn(2, 1, 28, 28)).sum().backward()
    assert sorted(calls) == ["act", "bwd", "conv", "pre", "root"]
    for h in handles:
        h.remove()


class FunctionalDropout(nn.Module):
    """Dropout as a function of ``self.training``; ``fn`` picks F.relu or the nn.ReLU modules."""

    def __init__(self, functional_relu):
        super().__init__()
        self.l1, self.l2, self.fc = nn.Linear(4, 32), nn.Linear(32, 32), nn.Linear(32, 3)
        self.r1, self.r2 = nn.ReLU(), nn.ReLU()
        self.functional_relu = functional_relu

    def forward(self, x):
        act = (lambda h, _: F.relu(h)) if self.functional_relu else (lambda h, r: r(h))
        x = F.dropout(act(self.l1(x), self.r1), 0.5, self.training)
        x = F.dropout(act(self.l2(x), self.r2), 0.5, self.training)
        return self.fc(x)


@pytest.mark.parametrize("functional_relu", [True, False])
def test_functional_dropout_of_a_teacher_in_train_mode_is_dropped_from_the_student(functional_relu):
    """A teacher converted in train mode (right after training): tracing baked ``training=True`` into its
    F.dropout calls, so the student dropped (and scaled by 2) its spikes even in eval; without a graph rewrite the
    student kept a live F.dropout in train mode. The pairing teacher drew its targets with dropout."""
    torch.manual_seed(0)
    ann = FunctionalDropout(functional_relu).train()
    x = torch.rand(8, 4)
    with torch.no_grad():
        want = ann.eval()(x)
        ann.train()
        kept = convert(ann, neuron=False)                 # activations kept: the student is the ANN without dropout
        assert kept.training and torch.equal(kept(x), want) and torch.equal(kept.eval()(x), want)
        student = convert(ann, neuron=LIF(beta=1.0, threshold=0.1, reset="soft"))
        assert not any(n.op == "call_function" and "dropout" in str(n.target) for n in student.graph.nodes)
        snn = SpikingModel(student, time_steps=4)
        assert torch.equal(snn(x), snn(x)) and torch.equal(snn.eval()(x), snn(x))
        assert ann.training and all(m.training for m in ann.modules())     # the teacher's mode is left as it was
        link = tandem.Tandem(ann, snn)
        assert all(torch.equal(a, b) for a, b in zip(link.targets(x).values(), link.targets(x).values()))


class SharedBN(nn.Module):
    """One BN after a conv and again on the raw input; one conv (shared weights) feeding two BNs."""

    def __init__(self):
        super().__init__()
        self.c, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)
        self.shared, self.bn1, self.bn2 = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        a = F.relu(self.bn(self.c(x))) + F.relu(self.bn(x))
        b = F.relu(self.bn1(self.shared(x)) + self.bn2(self.shared(2 * x)))
        return self.fc((a + b).mean((2, 3)))


def test_bn_folding_leaves_modules_called_twice_alone():
    """Folding edits the modules: the BN called twice was folded into the conv before one call and erased at both,
    the conv shared by two BNs was folded twice; the 'folded' ANN computed another function, without a word."""
    torch.manual_seed(0)
    x = torch.rand(4, 2, 3, 3)
    ann = with_bn_stats(SharedBN(), x)
    with pytest.warns(UserWarning, match=r"not folded.*\['bn', 'bn1', 'bn2'\]"):
        folded = convert(ann, neuron=False)
    with torch.no_grad():
        assert torch.allclose(folded(x), ann(x), atol=1e-6)
    assert isinstance(folded.bn, nn.BatchNorm2d) and torch.equal(folded.shared.weight, ann.shared.weight)


def test_an_untraceable_model_with_gelu_is_refused_and_one_without_activations_warns():
    """An untraceable model's GELU stayed analog in the student (only 'not traceable' was said); a model whose
    activations convert does not know gave a student without a single neuron, silently."""
    class DataDependent(nn.Module):
        def __init__(self, act):
            super().__init__()
            self.l1, self.act, self.fc = nn.Linear(4, 8), act, nn.Linear(8, 2)

        def forward(self, x):
            if x.sum() > 0:                               # control flow on data: torch.fx cannot trace it
                x = -x
            return self.fc(self.act(self.l1(x)))

    with pytest.warns(UserWarning, match="not torch.fx-traceable"), \
            pytest.raises(ValueError, match=r"'act' \(GELU\).*Fix: replace it"):
        convert(DataDependent(nn.GELU()))
    with pytest.warns(UserWarning, match="not torch.fx-traceable"):
        assert isinstance(convert(DataDependent(nn.GELU()), neuron=False).act, nn.GELU)   # no neurons wanted
        assert isinstance(convert(DataDependent(nn.ReLU())).act, LIF)
    with pytest.warns(UserWarning, match="no activation before the readout"):
        convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)))


def test_teacher_init_scale_of_a_sparse_activation_is_its_max_not_a_warning():
    """pct_99.9 of an activation that is positive on fewer than 0.1 % of its values is 0: the scale is then its max
    (as for the LTL targets), not the arbitrary scale 1 with a warning that the activation is always zero."""
    from ltl_ext.ltl.balancing import activation_scales
    a = torch.zeros(4096, 4)
    a[0, 0], a[1, 2] = 3.0, 5.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert activation_scales(nn.Sequential(nn.ReLU()), ["0"], a, 99.9) == {"0": 5.0}
    with pytest.warns(UserWarning, match="never positive"):
        assert activation_scales(nn.Sequential(nn.ReLU()), ["0"], -a, 99.9) == {"0": 1.0}


class ClampedLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x))).clamp(-5, 5)  # a clamp after the readout, not an activation


def test_a_clamp_after_the_readout_is_kept_not_refused():
    ann = ClampedLogits().eval()
    student = convert(ann, neuron=IF)
    assert [n for n, _ in lifs(student)] == ["relu"]
    x = torch.randn(4, 6) * 100
    assert SpikingModel(student, time_steps=2)(x).abs().max() <= 5


def test_bad_calibration_data_is_refused_clearly():
    ann = mlp(in_features=8, hidden=(6,)).eval()
    for empty in (torch.zeros(0, 8), []):
        with pytest.raises(ValueError, match="calib_data holds no input"):
            convert(ann, neuron=IF, init="teacher", calib_data=empty)
    for wrong in ([{"x": torch.rand(4, 8)}], torch.rand(4, 8).numpy()):
        with pytest.raises(TypeError, match="calib_data must be a tensor"):
            convert(ann, neuron=IF, init="teacher", calib_data=wrong)


def test_fold_batchnorm_refuses_a_conv_transpose():
    conv, bn = nn.ConvTranspose2d(4, 4, 3), nn.BatchNorm2d(4).eval()  # dim 0 of its weight is its input channels
    with pytest.raises(TypeError, match="ConvTranspose2d"):
        fold_batchnorm(conv, bn)


def test_a_weight_normed_conv_keeps_its_bn_and_the_function():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 6, 6)
    ann = with_bn_stats(nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3)), nn.BatchNorm2d(4),
                                      nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)), x)
    with pytest.warns(UserWarning, match="BatchNorm not folded"):
        folded = convert(ann, neuron=False)
    with torch.no_grad():
        assert torch.allclose(folded(x), ann(x), atol=1e-6)  # and the teacher's own conv still works
    with pytest.raises(ValueError, match="parametrized"):
        fold_batchnorm(folded[0], folded[1])


def _weight_normed_mlp(parametrized: bool):
    """An MLP whose hidden layers are weight-normed (parametrization form), or the same function with plain layers
    (the weight-normed ones' weights copied in)."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    if parametrized:
        for k in (0, 2):
            nn.utils.parametrizations.weight_norm(ann[k])
            with torch.no_grad():
                ann[k].parametrizations.weight.original0.mul_(1.7)    # g away from ||v||: a weight of its own
    return ann


def test_init_random_reinitialises_a_parametrized_layer_as_a_plain_one():
    """reset_parameters() on a parametrized layer writes into a computed copy of its weight: the student kept the
    teacher's weight-normed weights under init="random", silently. It must draw the values a plain layer does."""
    normed, plain = _weight_normed_mlp(True), _weight_normed_mlp(False)
    torch.manual_seed(1)
    a = convert(normed)
    torch.manual_seed(1)
    b = convert(plain)
    for k in (0, 2):
        assert nn.utils.parametrize.is_parametrized(a[k], "weight")       # the parametrization stays
        assert not torch.allclose(a[k].weight, normed[k].weight)
        assert torch.allclose(a[k].weight, b[k].weight, atol=1e-6)
        assert torch.equal(a[k].bias, b[k].bias)


def test_init_teacher_balances_a_parametrized_layer_as_a_plain_one():
    """Balancing scaled the weights in place (weight.mul_): on a parametrized layer that scaled a copy and left the
    layer unbalanced, silently. Assigned through the parametrization, the student is the plain teacher's."""
    normed, plain = _weight_normed_mlp(True), _weight_normed_mlp(False)
    with torch.no_grad():
        for k in (0, 2):
            plain[k].weight.copy_(normed[k].weight)
    x = torch.rand(64, 6)
    a = convert(normed, neuron=IF, init="teacher", calib_data=x)
    b = convert(plain, neuron=IF, init="teacher", calib_data=x)
    assert not torch.allclose(b[2].weight, plain[2].weight)               # balancing did scale this layer
    for k in (0, 2, 4):
        assert torch.allclose(a[k].weight, b[k].weight, rtol=1e-5, atol=1e-6)
        assert torch.allclose(a[k].bias, b[k].bias, rtol=1e-5, atol=1e-6)


def test_assign_through_a_parametrization_without_right_inverse_is_refused_clearly():
    from ltl_ext.ltl.weights import assign

    class Doubled(nn.Module):
        def forward(self, w):
            return 2 * w
    layer = nn.Linear(3, 2)
    nn.utils.parametrize.register_parametrization(layer, "weight", Doubled())
    with pytest.raises(ValueError, match="Doubled.*right_inverse"):
        assign(layer, "weight", torch.zeros(2, 3))


@pytest.mark.parametrize("apply,needle", [
    (lambda m: nn.utils.weight_norm(m), "parametrizations.weight_norm"),
    (lambda m: nn.utils.spectral_norm(m), "parametrizations.spectral_norm"),
    (lambda m: nn.utils.prune.l1_unstructured(m, "weight", amount=0.5), r"prune.remove\(layer, 'weight'\)")],
    ids=["weight_norm", "spectral_norm", "prune"])
def test_hook_forms_of_weight_reparametrisation_are_refused_clearly(apply, needle):
    """Their hooks compute the weight; convert's copy drops every hook (and deep-copying the computed weight
    crashed with an autograd error): the student's weight would be a stale tensor training never reaches."""
    ann = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)                 # weight_norm's deprecation
        apply(ann[0])
    with pytest.raises(ValueError, match=r"module '0' \(Linear\).*" + needle):
        convert(ann)
