"""ltl_ext.convert: BN folding, dropout removal, activation replacement, reused activations, threshold balancing."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from ltl_ext.ltl.convert import convert, fold_batchnorm
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
    tea = convert(ann, neuron=IF, init="teacher", calib_data=x)
    assert torch.allclose(tea.features[0][0].weight, folded.features[0][0].weight)  # first layer: unit 1
    assert all(float(l.threshold) > 0 for _, l in lifs(tea))
    with pytest.raises(ValueError, match="calib_data"):
        convert(ann, neuron=IF, init="teacher")
    for q in ann.parameters():  # a frozen teacher (as in LTL) still gives a trainable student
        q.requires_grad_(False)
    assert all(q.requires_grad for q in convert(ann, neuron=IF).parameters())


@pytest.mark.parametrize("build", [lambda: mlp(in_features=64, hidden=(32, 32)),
                                   lambda: resnet(in_channels=1, widths=(8, 16), blocks=(2, 1)),
                                   TorchvisionNet])
def test_teacher_init_student_approximates_the_ann(build):
    """IF + soft reset + balanced thresholds: the spiking logits approach the ANN's as T grows (rate limit)."""
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    ann = with_bn_stats(build(), x)
    student = convert(ann, neuron=IF, init="teacher", calib_data=x, percentile=100.0)
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
