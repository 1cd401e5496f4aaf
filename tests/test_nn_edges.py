"""ltl_ext.nn edge cases a new user runs into: each test names what used to go wrong without its fix."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ltl_ext.functional import lif_reference
from ltl_ext.nn import LIF, SpikingModel, TandemRun, zoo


def test_learnable_set_after_construction_registers_parameters():
    """``lif.learnable = "both"`` used to only change the flag: threshold and beta stayed buffers, an optimiser built
    on ``lif.parameters()`` got nothing and the neuron silently never learnt (and back: False left parameters)."""
    lif = LIF(threshold=torch.full((3,), 0.5), time_steps=2)
    lif.learnable = "both"
    assert {n for n, _ in lif.named_parameters()} == {"beta", "threshold"}
    assert torch.equal(lif.threshold.detach(), torch.full((3,), 0.5))
    x = torch.rand(4, 3, requires_grad=True)
    lif(x).sum().backward()            # (the rect surrogate: gradients reach the new parameters)
    assert lif.threshold.grad is not None and lif.beta.grad is not None
    lif.learnable = True               # the constructor's spelling too
    assert lif.learnable == "both"
    with torch.no_grad():
        lif.beta.fill_(1.02)                 # where training took it (the forward clamps it)
    with pytest.raises(ValueError, match="beta"):
        lif.learnable = False                # a buffer of 1.02 would be refused by the op (CPU) or run unchecked (GPU)
    assert lif.learnable == "both" and isinstance(lif.beta, torch.nn.Parameter)   # nothing changed
    with torch.no_grad():
        lif.beta.fill_(0.9048374)
    lif.learnable = False
    assert list(lif.parameters()) == [] and {"beta", "threshold"} <= set(lif._buffers)
    assert lif._scalar("beta") == pytest.approx(0.9048374)   # a scalar buffer again: the fast path
    with pytest.raises(ValueError, match="learnable"):
        lif.learnable = "alpha"

    class Double(nn.Module):
        def forward(self, t):
            return 2 * t
    parametrize.register_parametrization(lif, "threshold", Double())
    with pytest.raises(ValueError, match="parametrized"):   # (the flag alone would change nothing)
        lif.learnable = "threshold"
    lif.learnable = "beta"                                 # beta is not parametrized
    assert [n for n, _ in lif.named_parameters()] == ["beta"]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_min_threshold_must_be_positive(bad):
    """``min_threshold <= 0`` (or NaN) was accepted: the clamp that keeps a learnt threshold > 0 then did not, and on
    the GPU (where the op never reads the values) a threshold driven below 0 ran without a word."""
    with pytest.raises(ValueError, match="min_threshold"):
        LIF(learnable="threshold", min_threshold=bad)


@pytest.mark.parametrize("name, value", [("threshold", -0.5), ("beta", 1.5), ("alpha", float("nan"))])
def test_load_state_dict_checks_values_like_assignment(name, value):
    """A same-shape ``load_state_dict`` skipped the value check an assignment makes; per-neuron values are never
    read by the op on the GPU, so a bad checkpoint ran silently there. Now it raises at load, on every device."""
    lif = LIF(threshold=torch.full((4,), 0.6), beta=torch.full((4,), 0.9), alpha=torch.ones(4), time_steps=2)
    sd = lif.state_dict()
    sd[name] = torch.full((4,), value)
    with pytest.raises(ValueError, match=name):
        lif.load_state_dict(sd)


def test_load_state_dict_of_learnt_values_out_of_range():
    """Learnt values may leave the range while training (the forward clamps them); loading such per-neuron values
    into a freshly built scalar module (another shape) raised on the values, so the checkpoint could not be loaded."""
    learnt = LIF(threshold=torch.full((4,), 0.6), beta=torch.full((4,), 0.9), learnable="both", time_steps=2)
    with torch.no_grad():   # where training took them
        learnt.threshold.fill_(-0.1)
        learnt.beta.fill_(1.02)
    fresh = LIF(learnable="both", time_steps=2)
    fresh.load_state_dict(learnt.state_dict())
    assert torch.equal(fresh.threshold.detach(), learnt.threshold.detach())
    x = torch.rand(4, 4, dtype=torch.float64)
    ref = lif_reference(x.view(2, 2, 4), beta=1.0, threshold=fresh.min_threshold, reset="hard", surrogate="rect")
    assert torch.equal(fresh.double()(x), ref.view(4, 4))
    assert torch.equal(learnt.double()(x), ref.view(4, 4))


@pytest.mark.parametrize("bad", [0, 2.0, True, -3])
def test_time_steps_assigned_on_lif_is_checked(bad):
    """``lif.time_steps = 0`` failed in the forward with a bare ZeroDivisionError, ``= 2.0`` with a TypeError from
    reshape; the constructor checked it, an assignment did not."""
    lif = LIF(time_steps=2)
    with pytest.raises(ValueError, match="time_steps"):
        lif.time_steps = bad
    lif.time_steps = None
    lif.time_steps = 4
    assert lif(torch.rand(8, 3)).shape == (8, 3)


def test_zoo_refuses_no_classes_and_bad_channel_counts():
    """num_classes=0 built a model with [B, 0] logits; one mean/std value for 3 input channels was silently broadcast
    over all of them; 3 values for 1 channel made a 3-channel input that the first conv refused deep in torch."""
    with pytest.raises(ValueError, match="num_classes"):
        zoo.cnn_small(num_classes=0)
    with pytest.raises(ValueError, match="in_channels"):
        zoo.vgg11(in_channels=0)
    with pytest.raises(ValueError, match="3 input channels"):
        zoo.vgg11(mean=[0.5], std=[0.25])
    with pytest.raises(ValueError, match="3 values"):
        zoo.cnn_small(mean=[0.5] * 3, std=[0.25] * 3)
    with pytest.raises(ValueError, match="3 input channels"):
        zoo.resnet(mean=[0.5], std=[0.25])
    with pytest.raises(ValueError, match="784 input features"):
        zoo.mlp(mean=[0.5] * 3, std=[0.25] * 3)              # (a 3-channel input is not 784 features)
    assert zoo.mlp(mean=[0.5], std=[0.25])(torch.rand(2, 784)).shape == (2, 10)   # flat input: one value, as before
    assert zoo.mlp(in_features=3072, mean=[0.5] * 3, std=[0.25] * 3)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert zoo.vgg11()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert zoo.cnn_small(num_classes=1).fc.out_features == 1


def test_normalize_refuses_nan_mean_and_empty_stats():
    """A NaN mean made every output NaN without a word (a NaN std was refused); a scalar mean raised a TypeError from
    the error message itself."""
    with pytest.raises(ValueError, match="finite"):
        zoo.cnn_small(mean=[float("nan")], std=[0.25])
    with pytest.raises(ValueError, match="Normalize"):
        zoo.Normalize([], [])
    with pytest.raises(ValueError, match="Normalize"):
        zoo.Normalize(0.5, 0.25)


def test_resnet_refuses_widths_and_blocks_that_do_not_pair():
    """``zip(widths, blocks)`` silently dropped the stages one list lacked, and a 0 in blocks still built a block."""
    with pytest.raises(ValueError, match="widths and blocks"):
        zoo.resnet(widths=(32, 64, 128), blocks=(2, 2))
    with pytest.raises(ValueError, match="widths and blocks"):
        zoo.resnet(blocks=(2, 0, 2))
    assert len(zoo.resnet(widths=(8, 16), blocks=(1, 1)).layers) == 2


def test_vgg_refuses_sizes_that_leave_no_layer():
    """input_size=0, channels=[0] or hidden=0 built a model whose first forward failed deep in torch (a Linear of 0
    inputs, a conv of 0 channels, an IndexError in BatchNorm)."""
    with pytest.raises(ValueError, match="input_size"):
        zoo.vgg11(input_size=0)
    with pytest.raises(ValueError, match="channel"):
        zoo.cnn_small(channels=[0])
    with pytest.raises(ValueError, match="channel"):
        zoo.cnn_small(hidden=0)
    assert zoo.cnn_small(channels=[8])(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("bad", [[0.5, 0.6], None, "high"])
def test_lif_parameter_of_wrong_type_says_what_to_give(bad):
    """A list or None as threshold failed inside ``float()`` with a message naming neither the parameter nor what to
    pass ("float() argument must be a string or a real number, not 'list'"), at construction and on assignment."""
    with pytest.raises(TypeError, match="LIF threshold must be a float or a tensor"):
        LIF(threshold=bad)
    lif = LIF()
    with pytest.raises(TypeError, match="LIF threshold must be a float or a tensor"):
        lif.threshold = bad


def test_local_losses_under_inference_mode():
    """Local losses computed without a graph (validation) under ``torch.inference_mode`` raised "Inference tensors do
    not track version counter" from the spike store marking the spikes; under ``torch.no_grad`` they worked."""
    torch.manual_seed(0)
    lif = LIF()
    snn = SpikingModel(nn.Sequential(nn.Linear(4, 3), lif, nn.Linear(3, 2)), time_steps=2)
    x, target = torch.rand(5, 4), torch.rand(5, 3)
    losses = {}
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx(), TandemRun({"1": lif}, {"1": target}, mode="offline") as run:
            snn(x)
        losses[ctx.__name__] = run.losses["1"]
    assert torch.equal(losses["no_grad"], losses["inference_mode"].clone())


@pytest.mark.parametrize("name", ["beta", "threshold", "alpha"])
def test_lif_parameter_given_as_a_bool_is_refused(name):
    """``LIF(beta=True)`` ran with beta = 1 (float(True)), a neuron without leak, where the functional ops refuse a
    bool; a bool tensor was read as 0/1 the same way. Both are refused, at construction and at assignment."""
    with pytest.raises(TypeError, match=f"LIF {name} must be a float"):
        LIF(**{name: True})
    lif = LIF()
    with pytest.raises(TypeError, match=f"LIF {name} must be a float"):
        setattr(lif, name, torch.ones(3, dtype=torch.bool))
