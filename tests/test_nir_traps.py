"""NIR export/import traps (ltl_ext.interop): what used to give another network without a word, or fail unhelpfully."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ltl_ext
from ltl_ext.nn import LIF, SpikingModel

nir = pytest.importorskip("nir", reason="the optional extra is not installed: pip install 'ltl_ext[nir]'")
from test_nir import _ViewFlatten  # noqa: E402 (after the skip: test_nir needs nir too)


def _mlp() -> SpikingModel:
    torch.manual_seed(0)
    return SpikingModel(nn.Sequential(nn.Linear(4, 6), LIF(threshold=0.3), nn.Linear(6, 2)), time_steps=3).eval()


def test_hooks_on_the_student_or_its_spiking_model_are_refused():
    """fx traces the student's forward, not its call: a hook on the student itself (or on the SpikingModel) was
    dropped, and the graph computed what the student computes without it."""
    for owner in ("student", "spiking model"):
        s = _mlp()
        target = s.model if owner == "student" else s
        target.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
        with pytest.raises(ValueError, match="has forward hooks"):
            ltl_ext.export_nir(s)
    ltl_ext.export_nir(_mlp())      # without hooks it exports


def _affine_graph(edges, input_shape):
    f = np.float32
    nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)}),
             "fc": nir.Affine(weight=np.ones((3, 4), f), bias=np.zeros(3, f)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_an_in_memory_graph_is_checked_like_a_file(tmp_path):
    """A graph built with type_check=False skipped the checks nir.read gives a file: an Affine fed a [1, 4, 4] image
    became nn.Linear acting on its last dim (logits [B, 1, 4, 3]), a duplicate edge summed a value twice."""
    wrong_type = _affine_graph([("input", "fc"), ("fc", "output")], [1, 4, 4])
    with pytest.raises(ValueError, match="type mismatch"):
        ltl_ext.import_nir(wrong_type, time_steps=2)
    twice = _affine_graph([("input", "fc"), ("fc", "output"), ("fc", "output")], [4])
    with pytest.raises(ValueError, match="Duplicate edge"):
        ltl_ext.import_nir(twice, time_steps=2)
    good = _affine_graph([("input", "fc"), ("fc", "output")], [4])
    assert ltl_ext.import_nir(good, time_steps=2)(torch.ones(1, 4)).tolist() == [[4.0, 4.0, 4.0]]


def test_a_student_that_does_not_run_on_input_shape_says_why(capsys):
    """The error named only the failing node (ShapeProp's own message) and torch printed a traceback first."""
    with pytest.raises(ValueError, match="mat1 and mat2 shapes cannot be multiplied"):
        ltl_ext.export_nir(_mlp(), input_shape=(5,))
    assert "Traceback" not in capsys.readouterr().err


class _ShapeFlatten(_ViewFlatten):
    """test_nir's model, flattened with reshape(y.shape[0], -1) instead of view(y.size(0), -1)."""

    def forward(self, x):
        y = self.lif(self.conv(x))
        return self.fc(y.reshape(y.shape[0], -1))


def test_reshape_by_shape_flattens():
    """``y.reshape(y.shape[0], -1)`` was refused (``getattr`` has no NIR node); ``y.view(y.size(0), -1)`` passed."""
    torch.manual_seed(0)
    student = SpikingModel(_ShapeFlatten(), time_steps=4).eval()
    back = ltl_ext.import_nir(ltl_ext.export_nir(student, input_shape=(1, 6, 6))).eval()
    x = torch.rand(3, 1, 6, 6) * 3
    with torch.no_grad():
        assert torch.equal(student(x), back(x))


def test_node_names_that_are_model_attributes_import():
    """A NIR node named forward, training, graph, code, ... replaced that attribute of the imported GraphModule (a
    KeyError, a TypeError, or a model calling its own code string); one named "if" gave a SyntaxError."""
    f = np.float32
    for name in ("forward", "training", "graph", "code", "recompile", "if", "lambda"):
        nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
                 name: nir.Affine(weight=np.ones((2, 3), f), bias=np.zeros(2, f)),
                 "output": nir.Output(output_type={"output": np.array([2])})}
        model = ltl_ext.import_nir(nir.NIRGraph(nodes=nodes, edges=[("input", name), (name, "output")]),
                                   time_steps=2)
        assert model(torch.ones(1, 3)).tolist() == [[3.0, 3.0]], name


def test_normalization_must_be_finite():
    """A NaN mean or an infinite std passed (std > 0 holds for inf) and wrote a graph whose inputs are all NaN or 0."""
    for bad in (([float("nan")], [1.0]), ([0.0], [float("inf")])):
        with pytest.raises(ValueError, match="finite"):
            ltl_ext.export_nir(_mlp(), normalization=bad)
