"""Traps in conversion (BN folding, in-place activations on views) and NIR import, each silent before its fix."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ltl_ext
from ltl_ext.ltl.convert import convert, expose_activations
from ltl_ext.nn import LIF, SpikingModel


def _bn_stats(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Running statistics and affine parameters far from the identity, so a wrong fold shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) * 2 - 1)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.rand(bn.num_features, generator=g) - 0.5)


class _LinearOnTokens(nn.Module):
    """A Linear on [B, L, F] then BatchNorm1d, which normalises dim 1 (L), not the Linear's features; out_features
    == L lets the fold pass the feature count check. ``traced=False``: data-dependent control flow, the pair inside
    an nn.Sequential (the fallback without a graph)."""

    def __init__(self, out_features: int = 5, traced: bool = True):
        super().__init__()
        self.traced = traced
        self.body = nn.Sequential(nn.Linear(3, out_features), nn.BatchNorm1d(5))
        self.act, self.out = nn.ReLU(), nn.Linear(out_features, 2)
        _bn_stats(self.body[1])

    def forward(self, x):
        if not self.traced and x.sum() > 1e9:
            x = -x
        return self.out(self.act(self.body(x)).mean(1))


@pytest.mark.parametrize("traced", [True, False])
def test_a_bn_after_a_linear_on_a_3d_input_is_refused_not_folded_over_the_wrong_dim(traced):
    """The BN's running statistics per token were folded into the Linear's rows (per feature): the folded model
    computed another function, without a word."""
    torch.manual_seed(0)
    teacher = _LinearOnTokens(traced=traced).eval()
    x = torch.randn(6, 5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # (the untraceable model's warnings)
        folded = convert(teacher, neuron=False)
    with pytest.raises(ValueError, match=r"BatchNorm 'body.1' into Linear 'body.0'.*3-D.*fold_bn=False"):
        folded(x)
    if traced:   # init='teacher' meets it on calib_data, and says so, not that calib_data has the wrong shape
        with pytest.raises(ValueError, match=r"^convert folded BatchNorm 'body.1'"):
            convert(teacher, init="teacher", calib_data=x)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).eval()
    _bn_stats(mlp[1])
    x2 = torch.randn(6, 3)
    assert torch.allclose(convert(mlp, neuron=False)(x2), mlp(x2), atol=1e-6)   # a 2-D input folds as before


def test_a_bn_over_another_dim_than_a_linear_s_outputs_stays():
    """BatchNorm1d(L) after a Linear on [B, L, F] (out_features != L) is a valid teacher; convert raised "BatchNorm
    has 5 features but the layer has 4 outputs" from the fold instead of leaving the BN."""
    teacher = _LinearOnTokens(out_features=4).eval()
    with pytest.warns(UserWarning, match=r"not folded.*\['body.1'\]"):
        folded = convert(teacher, neuron=False)
    x = torch.randn(6, 5, 3)
    assert isinstance(folded.body[1], nn.BatchNorm1d) and torch.allclose(folded(x), teacher(x))


class _CallsInAnotherOrder(nn.Sequential):
    """(conv, bn) as children, but its forward runs the BN first: the children's order is not the call order."""

    def forward(self, x):
        return self[0](self[1](x))


class _Untraceable(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        conv, bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        _bn_stats(bn)
        self.kind = kind
        self.seq = _CallsInAnotherOrder(conv, bn) if kind == "order" else nn.Sequential(conv, bn)
        if kind == "shared":
            self.conv = conv      # the same conv, called again outside the Sequential

    def forward(self, x):
        if x.sum() > 1e9:         # not torch.fx-traceable
            x = -x
        y = self.seq(x)
        return y + self.conv(x) if self.kind == "shared" else y


@pytest.mark.parametrize("kind", ["order", "shared"])
def test_an_untraceable_model_folds_no_bn_whose_call_order_is_not_the_sequential_s(kind):
    """Without a graph every adjacent (conv, bn) of a Sequential was folded: one whose forward calls the BN first,
    or whose conv is called elsewhere too, then computed another function, silently."""
    torch.manual_seed(0)
    teacher = _Untraceable(kind).eval()
    x = torch.randn(2, 4, 3, 3)
    with pytest.warns(UserWarning, match=r"not folded.*\['seq.1'\]"):
        folded = convert(teacher, neuron=False)
    with torch.no_grad():
        assert torch.allclose(folded(x), teacher(x), atol=1e-6)


def test_an_untraceable_model_warns_which_bns_it_folded_on_the_order_assumption():
    """Whether the BN runs on the conv's output is not checked without a graph: the folds made on that assumption
    are named (there was no word of it)."""
    teacher = _Untraceable("plain").eval()
    with pytest.warns(UserWarning, match=r"does not trace.*\[\('seq.0', 'seq.1'\)\].*fold_bn=False"):
        folded = convert(teacher, neuron=False)
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        assert torch.allclose(folded(x), teacher(x), atol=1e-6)


class _ActivatesAPart(nn.Module):
    """An in-place activation of a view, its result unused: the next layer reads h, changed through the view."""

    def __init__(self, how: str):
        super().__init__()
        self.fc1, self.act, self.fc2, self.how = nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 3), how

    def forward(self, x):
        h = self.fc1(x)
        if self.how == "method":
            h[:, :4].relu_()
        elif self.how == "function":
            F.relu(h[:, :4], inplace=True)
        elif self.how == "module":
            self.act(h[:, :4])
        else:                     # "part": reads another part of h, which may or may not overlap
            return self.fc2(torch.cat([h[:, :4].relu_(), h[:, 4:]], 1))
        return self.fc2(h)


@pytest.mark.parametrize("how", ["method", "function", "module"])
def test_an_in_place_activation_of_a_view_is_refused(how):
    """Only reads of the view were rewired: the student's fc2 read h raw (the neuron's spikes went nowhere) and the
    exposed teacher computed another function, silently."""
    teacher = _ActivatesAPart(how).eval()
    with pytest.raises(ValueError, match=r"writes into 'getitem'.*'fc2' reads 'fc1'.*out of place"):
        convert(teacher)
    if how != "module":           # (a module is hooked where it is: nothing to expose)
        with pytest.raises(ValueError, match="'fc2' reads 'fc1'"):
            expose_activations(teacher)


def test_an_in_place_activation_of_a_view_whose_tensor_is_read_in_part_warns():
    teacher = _ActivatesAPart("part").eval()
    with pytest.warns(UserWarning, match=r"'getitem_1' reads 'fc1'.*may see"):
        convert(teacher)


def test_nir_keeps_a_float64_student_float64(tmp_path):
    """export_nir wrote float32 weights and import_nir built float32 modules: a float64 student came back float32
    (rounded weights, a dtype error on its float64 input)."""
    nir = pytest.importorskip("nir", reason="the optional extra is not installed: pip install 'ltl_ext[nir]'")
    torch.manual_seed(0)
    teacher = ltl_ext.models.mlp(num_classes=3, in_features=6, hidden=(5,)).eval()
    student = SpikingModel(convert(teacher), time_steps=4).eval().double()
    lif = next(m for m in student.modules() if isinstance(m, LIF))
    lif.threshold = torch.tensor(0.3, dtype=torch.float64)      # not a float32 number
    x = torch.rand(4, 6, dtype=torch.float64) * 3
    nir.write(tmp_path / "s.nir", ltl_ext.export_nir(student))
    for again in (ltl_ext.import_nir(ltl_ext.export_nir(student)), ltl_ext.import_nir(tmp_path / "s.nir")):
        assert {t.dtype for t in list(again.parameters()) + list(again.buffers())} == {torch.float64}
        with torch.no_grad():
            assert torch.equal(again(x), student(x))
