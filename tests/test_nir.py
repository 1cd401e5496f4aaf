"""NIR export and import (ltl_ext.interop.nir): round trips bit for bit, NIR's own checks, SpikingJelly reads it."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

import ltl_ext
from ltl_ext.cli import main
from ltl_ext.nn import LIF, SpikingModel

nir = pytest.importorskip("nir", reason="the optional extra is not installed: pip install 'ltl_ext[nir]'")

DT = ltl_ext.interop.DEFAULT_DT


def _student(arch: str, T: int = 6, **kw) -> SpikingModel:
    torch.manual_seed(0)
    teacher = getattr(ltl_ext.models, arch)(num_classes=10, **kw).eval()
    return SpikingModel(ltl_ext.convert(teacher), time_steps=T).eval()


class _Block(nn.Module):
    """Residual add, an IF layer with per-neuron thresholds, sum and adaptive average pooling."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.lif1 = LIF(beta=0.8, threshold=0.3, v_reset=-0.1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.skip = nn.Conv2d(2, 4, 1)
        self.lif2 = LIF(beta=1.0, threshold=torch.rand(4, 16, 16) + 0.2, alpha=0.7)
        self.sum = nn.AvgPool2d(2, divisor_override=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.lif3 = LIF(beta=torch.full((4, 2, 2), 0.5), threshold=0.5)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        y = self.lif2(self.conv2(self.lif1(self.conv1(x))) + self.skip(x))
        return self.fc(torch.flatten(self.lif3(self.pool(self.sum(y))), 1))


def _spikes(model: SpikingModel, x):
    """Logits and every LIF's spikes, in module order."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.clone())) for _, m in model.lifs()]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return logits, seen


@pytest.mark.parametrize("arch,shape", [("cnn_small", (1, 28, 28)), ("mlp", (1, 28, 28)), ("block", (2, 16, 16))])
def test_export_import_is_bit_exact(arch, shape, tmp_path):
    if arch == "block":
        torch.manual_seed(0)
        student = SpikingModel(_Block(), time_steps=5).eval()
    else:
        student = _student(arch, channels=(8, 8, 8), hidden=32) if arch == "cnn_small" else _student(arch)
    graph = ltl_ext.export_nir(student, input_shape=shape)
    path = tmp_path / "student.nir"
    nir.write(str(path), graph)
    back = ltl_ext.import_nir(path).eval()
    assert back.time_steps == student.time_steps
    assert len(back.lifs()) == len(student.lifs())
    for (_, a), (_, b) in zip(student.lifs(), back.lifs()):   # the discrete parameters come back exactly
        for p in ("beta", "alpha", "threshold"):
            assert torch.equal(*torch.broadcast_tensors(getattr(a, p), getattr(b, p))), p
        assert (a.reset, a.v_reset) == (b.reset, b.v_reset)
    torch.manual_seed(1)
    x = torch.randn(5, *shape) * 2
    logits_a, spikes_a = _spikes(student, x)
    logits_b, spikes_b = _spikes(back, x)
    assert sum(float(s.sum()) for s in spikes_a) > 0, "a test without spikes proves nothing"
    assert torch.equal(logits_a, logits_b)
    for sa, sb in zip(spikes_a, spikes_b):
        assert torch.equal(sa, sb)


def test_grouped_and_depthwise_convolutions_round_trip(tmp_path):
    """nir 1.0 types a conv's input with in_channels / groups channels, so a grouped or depthwise conv failed its
    type check, on export and on reading the file; both now work and come back bit-exact."""
    torch.manual_seed(0)
    student = SpikingModel(nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), LIF(beta=0.8, threshold=0.3),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), LIF(beta=0.9, threshold=0.3),      # depthwise
        nn.Conv2d(8, 4, 1, groups=2), LIF(beta=0.9, threshold=0.2),                 # grouped
        nn.Flatten(), nn.Linear(4 * 6 * 6, 3)), time_steps=4).eval()
    path = tmp_path / "grouped.nir"
    nir.write(str(path), ltl_ext.export_nir(student, input_shape=(2, 6, 6)))
    back = ltl_ext.import_nir(path).eval()
    assert [m.groups for m in back.modules() if isinstance(m, nn.Conv2d)] == [1, 8, 2]
    x = torch.randn(5, 2, 6, 6) * 2
    (logits_a, spikes_a), (logits_b, spikes_b) = _spikes(student, x), _spikes(back, x)
    assert sum(float(s.sum()) for s in spikes_a[1:]) > 0, "a test without spikes proves nothing"
    assert torch.equal(logits_a, logits_b) and all(torch.equal(a, b) for a, b in zip(spikes_a, spikes_b))


def test_file_passes_nir_reading_and_type_checks(tmp_path):
    student = _student("mlp", T=4)
    graph = ltl_ext.export_nir(student)                 # a Linear first layer: the input shape is known
    path = tmp_path / "s.nir"
    nir.write(str(path), graph)
    read = nir.read(str(path), type_check=True)
    read.check_types()
    assert set(read.inputs) == {"input"} and set(read.outputs) == {"output"}
    assert list(read.inputs["input"].input_type["input"]) == [784]
    assert read.metadata["time_steps"] == 4 and read.metadata["dt"] == DT
    assert "surrogate" in read.metadata["notes"]
    lif_nodes = [n for n in read.nodes.values() if isinstance(n, nir.LIF)]
    assert len(lif_nodes) == 2
    beta = math.exp(-1 / 10)                            # LIF's default, as float32
    beta32 = float(torch.tensor(beta, dtype=torch.float32))
    np.testing.assert_allclose(lif_nodes[0].tau, DT / (1 - beta32), rtol=1e-12)       # tau = dt / (1 - beta)
    np.testing.assert_allclose(lif_nodes[0].r, 1 / (1 - beta32), rtol=1e-12)          # r = alpha / (1 - beta)
    np.testing.assert_array_equal(lif_nodes[0].v_leak, 0.0)
    np.testing.assert_allclose(lif_nodes[0].v_threshold, 0.6, rtol=1e-7)


def test_normalization_is_an_affine_node_in_front():
    mean, std = (0.25,), (0.5,)
    for arch, shape, kind in (("mlp", (784,), nir.Affine), ("cnn_small", (1, 28, 28), nir.Conv2d)):
        student = _student(arch, T=4, **({"channels": (8, 8, 8), "hidden": 16} if arch == "cnn_small" else {}))
        graph = ltl_ext.export_nir(student, input_shape=shape, normalization=(mean, std))
        assert isinstance(graph.nodes["normalize"], kind) and ("input", "normalize") in graph.edges
        back = ltl_ext.import_nir(graph).eval()
        torch.manual_seed(2)
        raw = torch.rand(8, *shape)
        with torch.no_grad():
            expected = student((raw - 0.25) / 0.5)
            got = back(raw)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_model_carrying_its_normalisation_round_trips_exactly(tmp_path):
    if not hasattr(ltl_ext.models, "Normalize"):
        pytest.skip("this version's zoo models do not carry their input normalisation")
    torch.manual_seed(0)
    teacher = ltl_ext.models.cnn_small(num_classes=10, channels=(8, 8, 8), hidden=16, mean=[0.3], std=[0.4]).eval()
    student = SpikingModel(ltl_ext.convert(teacher), time_steps=4).eval()
    graph = ltl_ext.export_nir(student, input_shape=(1, 28, 28))
    assert isinstance(graph.nodes["input_norm"], nir.Conv2d)        # what other tools read: x / std - mean / std
    nir.write(str(tmp_path / "s.nir"), graph)
    back = ltl_ext.import_nir(tmp_path / "s.nir").eval()
    x = torch.rand(6, 1, 28, 28)
    assert torch.equal(_spikes(back, x)[0], _spikes(student, x)[0])
    # normalization= on top of the model's own normalised the raw input twice, with no error
    with pytest.raises(ValueError, match="normalises its input already .*input_norm"):
        ltl_ext.export_nir(student, input_shape=(1, 28, 28), normalization=([0.3], [0.4]))


@pytest.mark.parametrize("bad,needle", [
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), LIF(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 13 * 13, 3)),
     "max pooling"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(9, 4), LIF(reset="soft"), nn.Linear(4, 2)), "soft-reset"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(9, 4), nn.ReLU(), nn.Linear(4, 2)), "no"),
])
def test_what_nir_cannot_express_is_a_clear_error(bad, needle):
    with pytest.raises(ValueError, match=needle):
        ltl_ext.export_nir(bad(), input_shape=(1, 3, 3) if needle != "max pooling" else (1, 28, 28))


def test_without_nir_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)
    with pytest.raises(ImportError, match=r"pip install 'ltl_ext\[nir\]'"):
        ltl_ext.export_nir(_student("mlp", T=2))


def test_cli_export_writes_a_readable_file(tmp_path, capsys):
    torch.manual_seed(0)
    teacher = ltl_ext.models.mlp(num_classes=10, hidden=[16], dropout=0.0)
    trainer = ltl_ext.LocalTandemTrainer(teacher, time_steps=3, distributed=False)
    ckpt = trainer.save(tmp_path / "ckpt.pt")
    out = tmp_path / "student.nir"
    assert main(["export", str(ckpt), "--out", str(out), "--mean", "0.5", "--std", "0.25"]) == 0
    assert "student.nir" in capsys.readouterr().out
    back = ltl_ext.import_nir(out).eval()
    assert back.time_steps == 3
    x = torch.rand(4, 784)                              # an mlp's NIR input: the flat vector (its spec's in_features)
    with torch.no_grad():
        torch.testing.assert_close(back(x), trainer.student.eval()((x - 0.5) / 0.25), rtol=1e-4, atol=1e-4)
    assert main(["export", str(ckpt), "--out", str(out), "--mean", "0.5"]) == 2     # one line, no traceback
    assert "--mean and --std" in capsys.readouterr().err


def test_spikingjelly_runs_the_export_with_the_same_predictions():
    try:
        from spikingjelly.activation_based.nir_exchange import import_from_nir
    except ImportError as e:   # spikingjelly 2.0 (pip install --no-deps spikingjelly nirtorch loguru)
        pytest.skip(f"SpikingJelly's NIR import is not installed ({e})")
    T = 6
    student = _student("cnn_small", T=T, channels=(8, 8, 8), hidden=32)
    graph = ltl_ext.export_nir(student, input_shape=(1, 28, 28))
    sj = import_from_nir(graph, dt=graph.metadata["dt"], step_mode="m")
    torch.manual_seed(3)
    x = torch.randn(32, 1, 28, 28) * 2
    with torch.no_grad():
        ours = student(x)
        current, _ = sj(x.unsqueeze(0).expand(T, *x.shape).contiguous(), None)    # direct encoding
    theirs = current.mean(0)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    assert torch.equal(theirs.argmax(1), ours.argmax(1))


def test_the_input_encoding_travels_with_the_graph(tmp_path):
    """A Poisson student exported as "direct" came back (and ran elsewhere) on the raw input at every step."""
    torch.manual_seed(0)
    student = SpikingModel(nn.Sequential(nn.Linear(4, 8), LIF(threshold=0.3), nn.Linear(8, 2)), time_steps=5,
                           encoding="poisson")
    graph = ltl_ext.export_nir(student)
    assert graph.metadata["encoding"] == "poisson"
    nir.write(str(tmp_path / "p.nir"), graph)
    assert ltl_ext.import_nir(tmp_path / "p.nir").encoding == "poisson"


def test_a_bare_student_without_time_steps_writes_and_reads(tmp_path):
    student = nn.Sequential(nn.Linear(4, 3), LIF(), nn.Linear(3, 2))     # no SpikingModel: T unknown
    graph = ltl_ext.export_nir(student)
    assert "time_steps" not in graph.metadata
    nir.write(str(tmp_path / "b.nir"), graph)                              # None in the metadata failed here
    assert ltl_ext.import_nir(tmp_path / "b.nir", time_steps=3).time_steps == 3


class _ViewFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.lif, self.fc = nn.Conv2d(1, 2, 3), LIF(threshold=0.3), nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        y = self.lif(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


def test_view_by_size_flattens():
    torch.manual_seed(0)
    student = SpikingModel(_ViewFlatten(), time_steps=4).eval()
    back = ltl_ext.import_nir(ltl_ext.export_nir(student, input_shape=(1, 6, 6))).eval()
    x = torch.rand(3, 1, 6, 6) * 3
    logits_a, spikes_a = _spikes(student, x)
    assert sum(float(s.sum()) for s in spikes_a) > 0
    assert torch.equal(logits_a, _spikes(back, x)[0])


def test_a_chip_exports_what_it_computes_or_refuses():
    """Neuron mismatch (per-neuron thresholds) exports bit for bit; DAC/ADC converters (forward hooks) and read noise
    (a new weight at every read) have no NIR form and used to be dropped / sampled once, silently."""
    from ltl_ext import noise
    torch.manual_seed(0)
    student = SpikingModel(nn.Sequential(nn.Flatten(), nn.Linear(12, 16), LIF(threshold=0.4), nn.Linear(16, 3)),
                           time_steps=5).eval()
    x = torch.rand(6, 12) * 2
    chip = noise.program(student, noise.DeviceModel(programming_sigma=0.2, threshold_sigma=0.2), seed=3).eval()
    back = ltl_ext.import_nir(ltl_ext.export_nir(chip)).eval()
    assert back.lifs()[0][1].threshold.shape == (16,)
    logits, spikes = _spikes(chip, x)
    assert sum(float(s.sum()) for s in spikes) > 0 and torch.equal(logits, _spikes(back, x)[0])
    quantised = noise.program(student, noise.DeviceModel(programming_sigma=0.2, dac_bits=4, adc_bits=4), seed=3)
    with pytest.raises(ValueError, match="DAC/ADC"):
        ltl_ext.export_nir(quantised)
    noisy = noise.program(student, noise.DeviceModel(programming_sigma=0.2, read_sigma=0.1), seed=3)
    with pytest.raises(ValueError, match="read noise"):
        ltl_ext.export_nir(noisy)
    with noise.read_noise(noisy, False):
        back = ltl_ext.import_nir(ltl_ext.export_nir(noisy)).eval()
        assert torch.equal(_spikes(noisy, x)[0], _spikes(back, x)[0])


def test_time_steps_must_be_whole_numbers(tmp_path):
    """import_nir(time_steps=2.5) ran T = 2 (int() of it) and time_steps=True T = 1, without a word; export_nir
    refused a numpy integer T (what nir.read gives back as metadata["time_steps"])."""
    student = SpikingModel(nn.Sequential(nn.Linear(4, 3), LIF(), nn.Linear(3, 2)), time_steps=4)
    graph = ltl_ext.export_nir(student)
    for bad in (2.5, True, 0, "3"):
        with pytest.raises(ValueError, match="time_steps must be a positive int"):
            ltl_ext.import_nir(graph, time_steps=bad)
    nir.write(str(tmp_path / "s.nir"), graph)
    read_back = nir.read(str(tmp_path / "s.nir")).metadata["time_steps"]
    assert ltl_ext.export_nir(student, time_steps=read_back).metadata["time_steps"] == 4
    assert ltl_ext.import_nir(tmp_path / "s.nir").time_steps == 4
