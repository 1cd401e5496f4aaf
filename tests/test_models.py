"""ltl_ext.models: shapes through every zoo model, as ANN teacher and as converted spiking student."""
import pytest
import torch
from torch import nn

from ltl_ext import models
from ltl_ext.ltl.convert import convert
from ltl_ext.nn import LIF, ClampReLU, SpikingModel, lifs

ZOO = [  # (builder, input shape, number of activations)
    (lambda: models.vgg11(10, 3), (2, 3, 32, 32), 10),
    (lambda: models.vgg16(10, 3), (1, 3, 32, 32), 15),
    (lambda: models.cnn_small(10, 1), (2, 1, 28, 28), 4),
    (lambda: models.mlp(10, 784), (2, 1, 28, 28), 2),
    (lambda: models.resnet(10, 1, widths=(8, 16), blocks=(2, 2)), (2, 1, 28, 28), 9),
]


@pytest.mark.parametrize("build,shape,n_act", ZOO, ids=["vgg11", "vgg16", "cnn_small", "mlp", "resnet"])
def test_zoo_shapes_teacher_and_student(build, shape, n_act):
    torch.manual_seed(0)
    ann = build().eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        assert ann(x).shape == (shape[0], 10)
    acts = [m for m in ann.modules() if isinstance(m, ClampReLU)]
    assert len(acts) == n_act and len({id(a) for a in acts}) == n_act  # one instance per position
    assert acts[0].max == 2.0
    student = SpikingModel(convert(ann, neuron=LIF()), time_steps=2)
    assert len(student.lifs()) == n_act
    with torch.no_grad():
        assert student(x).shape == (shape[0], 10)
        assert student(x, return_steps=True)[1].shape == (2, shape[0], 10)


def test_vgg_layouts_follow_the_ltl_code():
    strides = [m.stride[0] for m in models.vgg11().modules() if isinstance(m, nn.Conv2d)]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 2]
    widths = [m.out_channels for m in models.vgg16().modules() if isinstance(m, nn.Conv2d)]
    assert widths == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    fcs = [m for m in models.vgg11().modules() if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(2048, 512), (512, 512), (512, 10)]


def test_student_layout_and_spiking_activation_directly():
    m = models.cnn_small(activation=LIF(beta=1.0, reset="soft"), batch_norm=False, dropout=0.0)
    assert not any(isinstance(x, (nn.BatchNorm2d, nn.Dropout)) for x in m.modules())
    assert len(lifs(m)) == 4 and all(c.bias is not None for c in m.modules() if isinstance(c, nn.Conv2d))
    out = SpikingModel(m, time_steps=3)(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_resnet_has_projection_and_identity_shortcuts():
    r = models.resnet(10, 3, widths=(8, 16), blocks=(2, 1))
    assert isinstance(r.layers[0][0].shortcut, nn.Identity)
    assert isinstance(r.layers[1][0].shortcut, nn.Sequential)
    assert r(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_zoo_models_record_a_spec_that_rebuilds_them():
    from ltl_ext.nn.zoo import MODELS, cnn_small
    from ltl_ext.nn import ClampReLU
    m = cnn_small(num_classes=7, in_channels=1, channels=(4, 8, 6), hidden=16)
    assert m.spec["arch"] == "cnn_small" and m.spec["kwargs"]["channels"] == [4, 8, 6]
    rebuilt = MODELS[m.spec["arch"]](**m.spec["kwargs"])
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    assert not hasattr(cnn_small(activation=ClampReLU(1.0)), "spec")   # a module argument is not plain data


@pytest.mark.parametrize("build,shape,n_act", ZOO, ids=["vgg11", "vgg16", "cnn_small", "mlp", "resnet"])
def test_zoo_teacher_init_keeps_the_users_neuron(build, shape, n_act):
    """Issue 10: teacher initialisation moves the scale into the weights, never into the neuron's threshold."""
    torch.manual_seed(0)
    ann = build().eval()
    x = torch.randn(*shape)
    student = SpikingModel(convert(ann, neuron=LIF(), init="teacher", calib_data=x), time_steps=2)
    assert len(student.lifs()) == n_act
    assert all(float(l.threshold) == pytest.approx(0.6) and l.surrogate == "rect" for _, l in student.lifs())
    with torch.no_grad():
        assert torch.isfinite(student(x)).all()
