"""NIR import: a ``nir.NIRGraph`` (or a file ``nir.write`` wrote) as a :class:`~ltl_ext.nn.SpikingModel`
(:func:`import_nir`; conventions: :mod:`.nir`).

The graph's nodes are visited in topological order and each becomes a module of a ``torch.fx.GraphModule``
(:func:`_torch_module`), named after the node; a node with several inputs sums them.
"""
from __future__ import annotations

import copy
import keyword
import math
import operator
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..nn import LIF, SpikingModel
from ..nn.encoding import ENCODINGS
from .nir_format import DEFAULT_DT, _fix_grouped_conv_types, _nir, _safe, _time_steps, _unique


def import_nir(graph_or_path, *, dt: Optional[float] = None, time_steps: Optional[int] = None) -> SpikingModel:
    """A NIR graph (a ``nir.NIRGraph`` or a file written by ``nir.write``) as a :class:`SpikingModel`.

    ``dt`` (seconds per step) defaults to the graph's ``metadata["dt"]``, else :data:`DEFAULT_DT`; ``time_steps`` to
    ``metadata["time_steps"]``, else the SpikingModel default (16). The inverse of :func:`export_nir`: NIR LIF/IF
    become :class:`~ltl_ext.nn.LIF` with a hard reset (``beta = 1 - dt/tau``, ``alpha = dt*r/tau``; IF: ``beta = 1``,
    ``alpha = dt*r``), Affine/Linear -> ``nn.Linear``, Conv -> ``nn.Conv1d/2d``, AvgPool2d -> ``nn.AvgPool2d``,
    SumPool2d -> ``nn.AvgPool2d(divisor_override=1)``, Flatten -> ``nn.Flatten``; a node with several inputs sums
    them. The model is a ``torch.fx.GraphModule`` whose submodules are named after the NIR nodes (``_1`` added
    where a name is taken, e.g. ``forward``).

    Its dtype is the weights': float64 when every Affine/Linear/Conv weight array is float64 (a float64 student's
    export, or a graph built with numpy's default float; ``model.float()`` makes it float32), else float32.
    """
    nir = _nir()
    if isinstance(graph_or_path, (str, Path)):
        graph = nir.read(str(graph_or_path), type_check=False)
        _fix_grouped_conv_types(graph.nodes.values())   # (nir.read's own check fails on them)
        graph.infer_types()
    else:
        graph = graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"import_nir takes a nir.NIRGraph or a path to a NIR file, got {type(graph).__name__}")
    if graph is graph_or_path:
        # the checks a file gets from nir.read, on a copy (the caller's graph stays as it is): a graph built with
        # type_check=False would sum a duplicate edge twice, and an Affine fed an image act on its last dim
        checked = copy.deepcopy(graph)
        _fix_grouped_conv_types(checked.nodes.values())
        checked.infer_types()
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    dt = float(dt if dt is not None else meta.get("dt", DEFAULT_DT))
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"import_nir needs one Input and one Output node, the graph has {len(graph.inputs)} and "
                         f"{len(graph.outputs)}")
    preds: Dict[str, List[str]] = defaultdict(list)
    for a, b in graph.edges:
        preds[b].append(a)
    dtype = _dtype(nir, graph.nodes.values())
    fx_graph, root, values, out = fx.Graph(), nn.Module(), {}, None
    # a node named after one of the model's own attributes (forward, graph, code, training, ...) would replace it,
    # one named after a Python keyword ("if": an IF layer) breaks the generated code (self.if(x))
    taken = set(dir(fx.GraphModule(nn.Module(), fx.Graph()))) | set(keyword.kwlist)
    for name in _topological(graph):
        node = graph.nodes[name]
        if isinstance(node, nir.Input):
            values[name] = fx_graph.placeholder("x")
            continue
        if not preds[name]:
            raise ValueError(f"NIR node {name!r} ({type(node).__name__}) has no input")
        x = values[preds[name][0]]
        for p in preds[name][1:]:       # NIR sums the inputs of a node
            x = fx_graph.call_function(operator.add, (x, values[p]))
        if isinstance(node, nir.Output):
            out = x
            continue
        attr = _unique(_safe(name), taken)
        taken.add(attr)
        root.add_module(attr, _torch_module(nir, name, node, dt, dtype))
        values[name] = fx_graph.call_module(attr, (x,))
    fx_graph.output(out)
    model = fx.GraphModule(root, fx_graph, class_name="NIRModel").to(dtype)   # (pooling, Normalize: no arrays)
    T = time_steps if time_steps is not None else meta.get("time_steps")
    encoding = str(meta.get("encoding", "direct"))     # export_nir records the student's input encoding
    if encoding not in ENCODINGS:
        raise ValueError(f"the NIR graph's metadata['encoding'] is {encoding!r}; ltl_ext knows {ENCODINGS}")
    return SpikingModel(model, encoding=encoding) if T is None else \
        SpikingModel(model, time_steps=_time_steps(T), encoding=encoding)


def _topological(graph) -> List[str]:
    indegree = {n: 0 for n in graph.nodes}
    succ: Dict[str, List[str]] = defaultdict(list)
    for a, b in graph.edges:
        if a not in indegree or b not in indegree:
            raise ValueError(f"NIR edge {a!r} -> {b!r} names a node the graph does not have")
        indegree[b] += 1
        succ[a].append(b)
    ready = [n for n, d in indegree.items() if d == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for s in succ[n]:
            indegree[s] -= 1
            if indegree[s] == 0:
                ready.append(s)
    if len(order) != len(indegree):
        raise ValueError("the NIR graph is recurrent (has a cycle); ltl_ext imports feed-forward graphs only")
    return order


def _dtype(nir, nodes) -> torch.dtype:
    """The imported model's dtype: float64 when every weight array (Affine, Linear, Conv) is float64, else float32.
    The neurons' arrays do not count: NIR holds time constants, which export_nir writes in float64 for any model."""
    weights = [np.asarray(n.weight).dtype for n in nodes
               if isinstance(n, (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d)) and not _is_normalizer(n)]
    return torch.float64 if weights and all(d == np.float64 for d in weights) else torch.float32


def _is_normalizer(node) -> bool:
    """A node export_nir wrote for the input normalisation (it comes back as the zoo's Normalize)."""
    meta = node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}
    return "ltl_ext_normalize_mean" in meta and "ltl_ext_normalize_std" in meta


def _scalar_or_tensor(a, name: str, what: str, dtype: torch.dtype) -> torch.Tensor:
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"NIR node {name!r}: {what} must be finite")
    u = np.unique(a)
    return torch.tensor(u[0], dtype=dtype) if u.size == 1 else torch.from_numpy(a).to(dtype)


def _torch_module(nir, name: str, node, dt: float, dtype: torch.dtype) -> nn.Module:
    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(dtype)

    if _is_normalizer(node):
        from ..nn import zoo
        if hasattr(zoo, "Normalize"):
            return zoo.Normalize(np.asarray(node.metadata["ltl_ext_normalize_mean"]).tolist(),
                                 np.asarray(node.metadata["ltl_ext_normalize_std"]).tolist())

    if isinstance(node, (nir.LIF, nir.IF)):
        v_reset = np.unique(np.asarray(node.v_reset, np.float64))
        if v_reset.size != 1:
            raise ValueError(f"NIR node {name!r}: v_reset differs between neurons; ltl_ext's LIF has one v_reset")
        if isinstance(node, nir.IF):
            beta, alpha = 1.0, np.asarray(node.r, np.float64) * dt
        else:
            if np.any(np.asarray(node.v_leak) != 0):
                raise ValueError(f"NIR node {name!r}: v_leak != 0; ltl_ext's LIF leaks towards 0")
            tau = np.asarray(node.tau, np.float64)
            if not (tau >= dt).all():
                raise ValueError(f"NIR node {name!r}: tau < dt ({dt:g} s) is unstable in discrete time")
            beta, alpha = 1.0 - dt / tau, np.asarray(node.r, np.float64) * dt / tau
        return LIF(beta=_scalar_or_tensor(beta, name, "tau", dtype), alpha=_scalar_or_tensor(alpha, name, "r", dtype),
                   threshold=_scalar_or_tensor(node.v_threshold, name, "v_threshold", dtype), reset="hard",
                   v_reset=float(v_reset[0]))
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise ValueError(f"NIR node {name!r}: only 2-D {type(node).__name__} weights map to nn.Linear")
        m = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine), dtype=dtype)
        with torch.no_grad():
            m.weight.copy_(t(w))
            if m.bias is not None:
                m.bias.copy_(t(node.bias))
        return m
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        w = np.asarray(node.weight)
        cls = nn.Conv1d if isinstance(node, nir.Conv1d) else nn.Conv2d

        def plain(v):
            return v if isinstance(v, str) else tuple(int(i) for i in np.atleast_1d(v))
        m = cls(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), stride=plain(node.stride),
                padding=plain(node.padding), dilation=plain(node.dilation), groups=int(node.groups), bias=True,
                dtype=dtype)
        with torch.no_grad():
            m.weight.copy_(t(w))
            m.bias.copy_(t(node.bias))
        return m
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        def pair(v):
            return tuple(int(i) for i in np.broadcast_to(np.asarray(v), (2,)))
        return nn.AvgPool2d(pair(node.kernel_size), pair(node.stride), pair(node.padding),
                            divisor_override=1 if isinstance(node, nir.SumPool2d) else None)
    if isinstance(node, nir.Flatten):
        def torch_dim(d):   # torch counts the batch
            return int(d) + 1 if d >= 0 else int(d)
        return nn.Flatten(torch_dim(node.start_dim), torch_dim(node.end_dim))
    raise ValueError(f"NIR node {name!r} is a {type(node).__name__}, which ltl_ext cannot import (it imports "
                     f"Affine, Linear, Conv1d, Conv2d, AvgPool2d, SumPool2d, Flatten, LIF, IF)")
