"""Edge cases of ltl_ext/ltl (pairing, target normalisation, conversion, balancing) that used to give a wrong
result without an error, or an error that did not say what to do."""
import re
import warnings

import pytest
import torch
from torch import nn

from ltl_ext.ltl import convert, tandem
from ltl_ext.ltl.activations import expose_activations
from ltl_ext.nn import LIF
from ltl_ext.nn.zoo import mlp


def test_float16_all_zero_activation_gives_zero_targets_not_nan():
    """A dead layer (all zeros in the batch) of a float16 teacher (autocast "16-mixed") used to get NaN targets:
    the scale's floor 1e-8 is 0 in float16, and 0 / 0 is NaN; batch and running normalisation alike."""
    a = torch.zeros(4, 8, dtype=torch.float16)
    assert torch.equal(tandem.normalise(a, 99.9), torch.zeros_like(a))
    assert torch.equal(tandem.TargetNormaliser("running")("x", a), torch.zeros_like(a))
    b = torch.tensor([[0.0, 0.5, 1.0, 2.0]], dtype=torch.float16)   # a live layer is unchanged
    assert torch.equal(tandem.normalise(b, 100.0), torch.tensor([[0.0, 0.25, 0.5, 1.0]], dtype=torch.float16))


def test_pair_refuses_a_student_lif_named_like_a_teacher_layer_that_is_no_activation():
    """A hand-built student without an Identity where the teacher's BN was has its indices shifted: its LIF '1'
    used to be paired, silently (strict=False, as the error for the unmatched activation suggests), with the
    teacher's BatchNorm1d '1' (or a Linear), learning the pre-activation as its target."""
    teacher = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    student = nn.Sequential(nn.Linear(4, 8), LIF(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"'1' is a BatchNorm1d, not an activation"):
        tandem.pair(teacher, student, strict=False)
    teacher = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    student = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), LIF(), nn.Linear(8, 8), LIF(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"'2' is a Linear, not an activation"):
        tandem.Tandem(teacher, student, strict=False)
    pairs = tandem.pair(teacher, convert(teacher))     # a converted student still pairs
    assert [type(p.teacher) for p in pairs] == [nn.ReLU, nn.ReLU]
    pairs.remove()


def test_pairs_targets_refuses_running_made_anew_at_each_call():
    """``pairs.targets("running")`` made a new running normaliser at every call, whose EMA starts at the batch's
    own percentile: it silently gave batch-normalised targets. It now asks for one TargetNormaliser kept across
    batches (which does run an EMA)."""
    teacher = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    with tandem.pair(teacher, convert(teacher)) as pairs:
        teacher(x)
        with pytest.raises(ValueError, match="TargetNormaliser"):
            pairs.targets("running")
        norm = tandem.TargetNormaliser("running", momentum=0.1)
        pairs.targets(norm)
        s1 = norm.scales["1"].clone()
        teacher(x * 10)
        pairs.targets(norm)
        assert not torch.allclose(norm.scales["1"], s1)      # the EMA moved: the one normaliser kept its state


def test_hardtanh_with_a_positive_floor_warns_like_a_negative_one():
    """``nn.Hardtanh(0.5, 2)`` (or ``F.hardtanh(x, 0.5, 2)``) became a neuron without a word, although its student
    fires down to 0 (the same clamp written ``x.clamp(0.5, 2)`` is refused): the teacher's floor was lost silently."""
    teacher = nn.Sequential(nn.Linear(4, 8), nn.Hardtanh(0.5, 2.0), nn.Linear(8, 3))
    with pytest.warns(UserWarning, match=r"min_val = 0.5 > 0"):
        convert(teacher)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert(nn.Sequential(nn.Linear(4, 8), nn.ReLU6(), nn.Linear(8, 3)))   # ReLU6 (floor 0): no warning


def test_teacher_init_names_track_running_stats_when_a_bn_cannot_fold():
    """A BN with track_running_stats=False cannot be folded; init='teacher' then blamed "no conv/linear directly
    before it, or a parametrized one", neither of which was the case."""
    teacher = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.ReLU(),
                            nn.Linear(8, 3)).eval()
    with pytest.warns(UserWarning, match="not folded"), pytest.raises(ValueError, match="track_running_stats"):
        convert(teacher, init="teacher", calib_data=torch.randn(16, 4))


def test_teacher_init_with_an_unbatched_calib_sample_says_what_to_do():
    """A single image without its batch dim as calib_data failed deep in torch ("mat1 and mat2 shapes cannot be
    multiplied"), with no word of calib_data."""
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.rand(8, 1, 8, 8)
    with pytest.raises(ValueError, match=r"calib_data batch of shape \(1, 8, 8\).*x\[None\]"):
        convert(teacher, init="teacher", calib_data=x[0])
    convert(teacher, init="teacher", calib_data=x[0][None])


class _Untraceable(nn.Module):
    """Data-dependent control flow (no torch.fx graph), its readout defined first and its last activation last."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(8, 3)
        self.fc1, self.act1, self.fc2, self.act2 = nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU()

    def forward(self, x):
        if x.sum() > -1e9:
            x = self.act1(self.fc1(x))
        return self.out(self.act2(self.fc2(x)))


def test_untraceable_model_warns_naming_activations_left_analog_after_its_last_defined_layer():
    """Without a graph the readout is the conv/linear defined last (here 'fc2', not the real readout 'out'): the
    student kept 'act2' as an analog ReLU (LTL's locality broken, no target for it), and Tandem paired the rest
    without a word; only the generic "not traceable" warning was given."""
    with warnings.catch_warnings(record=True) as caught:   # (the "not traceable" warning comes too)
        warnings.simplefilter("always")
        student = convert(_Untraceable())
    assert any(re.search(r"'fc2'.*not neurons: \['act2'\]", str(w.message)) for w in caught)
    assert isinstance(student.act1, LIF) and isinstance(student.act2, nn.ReLU)   # (documented: module order)


class _InPlace(nn.Module):
    """``h.relu_()`` / ``F.relu(h, inplace=True)`` whose result is not used: the layer after reads h, changed."""

    def __init__(self, how: str):
        super().__init__()
        self.fc1, self.fc2, self.how = nn.Linear(4, 8), nn.Linear(8, 3), how

    def forward(self, x):
        h = self.fc1(x)
        if self.how == "method":
            h.relu_()
        else:
            torch.nn.functional.relu(h, inplace=True)
        return self.fc2(h)


@pytest.mark.parametrize("how", ["method", "function"])
def test_in_place_functional_activation_whose_result_is_unused_still_feeds_the_next_layer(how):
    """The functional activation became a module whose output went nowhere: the next layer read the pre-activation,
    so the exposed teacher computed another function (wrong targets) and the student's neuron fed nothing."""
    teacher = _InPlace(how).eval()
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    exposed = expose_activations(teacher)
    assert torch.allclose(exposed(x), teacher(x))
    student = convert(teacher)
    fc2 = next(n for n in student.graph.nodes if n.target == "fc2")
    assert isinstance(student.get_submodule(fc2.args[0].target), LIF)


class _InPlaceModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc1(x)
        self.act(h)          # in place: h holds the activation
        return self.fc2(h)


def test_in_place_activation_module_called_as_a_statement_feeds_its_neuron_to_the_next_layer():
    """``self.act(h)`` with ``nn.ReLU(inplace=True)`` and its result unused: the LIF put in its place writes nothing
    in place, so the student's next layer read the raw pre-activation (a linear student there) while the LIF still
    got a target and a local loss."""
    student = convert(_InPlaceModule().eval())
    fc2 = next(n for n in student.graph.nodes if n.target == "fc2")
    assert isinstance(student.get_submodule(fc2.args[0].target), LIF)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    teacher = _InPlaceModule().eval()
    assert torch.allclose(convert(teacher, neuron=False)(x), teacher(x))   # activations kept: the same function


def test_tandem_takes_batch_by_name_as_target_normaliser_does():
    """``Tandem(percentile="batch")`` raised, where ``TargetNormaliser("batch")`` and ``Pairs.targets("batch")`` take
    the name; it is the batch percentile at its default p, as a float p gives it."""
    torch.manual_seed(0)
    teacher = mlp(num_classes=3, in_features=8, hidden=(6,), dropout=0.0).eval()
    student = convert(teacher)
    by_name, by_value = (tandem.Tandem(teacher, student, percentile=p) for p in ("batch", 99.9))
    assert (by_name.normaliser.mode, by_name.normaliser.percentile) == ("batch", 99.9)
    x = torch.rand(5, 8)
    a, b = by_name.targets(x), by_value.targets(x)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
