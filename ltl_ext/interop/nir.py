"""NIR (the Neuromorphic Intermediate Representation): :func:`export_nir` and :func:`import_nir`.

A student leaves ltl_ext as a ``nir.NIRGraph`` (``nir.write(path, graph)`` stores it) and runs in SpikingJelly,
snnTorch, Norse, Lava or on chips that read NIR; a NIR graph comes in as a :class:`~ltl_ext.nn.SpikingModel`.
``nir`` is an optional extra: ``pip install 'ltl_ext[nir]'`` (or ``pip install nir``).

**Time.** NIR neurons are continuous-time ODEs; ltl_ext's LIF is their forward-Euler step with step ``dt`` (default
1e-4 s, the value SpikingJelly, snnTorch and Norse use for NIR exchange). NIR's LIF::

    tau * dv/dt = (v_leak - v) + r * I     ->  v[t] = (1 - dt/tau) * v[t-1] + (dt * r / tau) * I[t]   (v_leak = 0)

is ltl_ext's ``H[t] = beta * V[t-1] + alpha * X[t]`` with::

    beta = 1 - dt / tau      alpha = dt * r / tau        <=>     tau = dt / (1 - beta)      r = alpha / (1 - beta)

``beta = 1`` (no leak) is NIR's ``IF`` (``dv/dt = r * I``, so ``r = alpha / dt``). The reset is NIR's hard reset
``v <- v_reset`` after a spike (ltl_ext ``reset="hard"``, the LTL default); NIR 1.0 has no subtracting (soft)
reset, so a soft-reset LIF raises a ``ValueError`` naming the layer. NIR writes the spike condition as
``v > v_threshold``; ltl_ext, SpikingJelly and snnTorch fire at ``>=`` (they differ only when ``v`` lands exactly
on the threshold). The surrogate gradient and ``detach_reset`` only shape training and are dropped (listed in the
graph's ``metadata["notes"]``).

**Graph.** Linear (``nir.Affine`` / ``nir.Linear``), Conv1d/Conv2d, AvgPool2d (``AdaptiveAvgPool2d`` when the
size divides), sum pooling (``nn.AvgPool2d(..., divisor_override=1)`` <-> ``nir.SumPool2d``), Flatten, LIF and IF;
Identity/Dropout vanish; residual adds become two edges into one node (NIR sums a node's inputs). Max pooling
has no NIR node and raises. The input normalisation ``x' = (x - mean) / std`` of the data pipeline can go in
front as an affine node: ``nir.Affine`` with a diagonal weight for flat inputs, its per-channel form (a 1x1
``nir.Conv2d``) for images, since NIR's Affine acts on vectors and NIR has no reshape. The readout is the last
weight layer's output current at every step (an ``Output`` node); ltl_ext's logits are its mean over the
``metadata["time_steps"]`` steps of direct encoding (the same input at every step).
"""
from __future__ import annotations

import math
import operator
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..nn import LIF, SpikingModel, lifs

__all__ = ["export_nir", "import_nir", "DEFAULT_DT"]

#: seconds per time step in the exported ODEs: SpikingJelly's, snnTorch's and Norse's default for NIR
DEFAULT_DT = 1e-4

_PASS_MODULES = (nn.Identity, nn.modules.dropout._DropoutNd)
_ADDS = {operator.add, operator.iadd, torch.add}
_NO_NIR_POOL = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd)


def _nir():
    try:
        import nir
    except ImportError:
        raise ImportError("NIR export/import needs the `nir` package: pip install 'ltl_ext[nir]' "
                          "(or: pip install nir)") from None
    return nir


# ------------------------------------------------------------------------------------------------------ export
class _LeafTracer(fx.Tracer):
    """Traces the student's wiring; every LIF, the input normalisation and every built-in layer is one call."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LIF) or _is_normalize(m) or super().is_leaf_module(m, qualname)


def export_nir(model: nn.Module, *, input_shape: Optional[Sequence[int]] = None, time_steps: Optional[int] = None,
               dt: float = DEFAULT_DT, normalization: Optional[Tuple[Sequence[float], Sequence[float]]] = None):
    """A spiking student as a ``nir.NIRGraph`` (see the module doc for the time convention and the node mapping).

    Args:
        model: a :class:`~ltl_ext.nn.SpikingModel` or the bare student inside one (a module with LIF layers).
        input_shape: one sample's shape without batch, e.g. ``(1, 28, 28)``; may be omitted when the first
            weight layer is a Linear (then ``(in_features,)``).
        time_steps: T recorded in ``metadata["time_steps"]`` (NIR graphs have no T); default the model's.
        dt: seconds per step in the NIR time constants.
        normalization: ``(mean, std)`` per channel (or per feature) applied to the raw input before the student
            (``x' = (x - mean) / std``); put in front of the graph as an affine node. ``None``: the graph takes
            inputs already normalised.

    Returns: ``nir.NIRGraph`` with one ``Input`` and one ``Output`` node, type-checked by NIR.
    """
    nir = _nir()
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    student = model.model if isinstance(model, SpikingModel) else model
    if not isinstance(student, nn.Module):
        raise TypeError(f"export_nir takes a spiking student (nn.Module), got {type(model).__name__}")
    neurons = lifs(student)
    if not neurons:
        raise ValueError("export_nir takes a spiking student (a model with ltl_ext.nn.LIF layers); this model has "
                         "none (convert an ANN first: ltl_ext.convert)")
    T = time_steps if time_steps is not None else (model.time_steps if isinstance(model, SpikingModel)
                                                   else neurons[0][1].time_steps)
    if T is not None and (isinstance(T, bool) or not isinstance(T, int) or T < 1):  # None: not recorded
        raise ValueError(f"time_steps must be a positive int, got {T!r}")
    input_shape = _input_shape(student, input_shape)
    gm = fx.GraphModule(student, _LeafTracer().trace(student))
    shapes = _shapes(gm, student, input_shape)

    nodes: Dict[str, object] = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    edges: List[Tuple[str, str]] = []
    value: Dict[fx.Node, List[str]] = {}     # fx value -> NIR nodes whose outputs sum to it
    notes = set()

    def add(name: str, node, sources: List[str]) -> List[str]:
        name = _unique(_safe(name), nodes)
        nodes[name] = node
        if len(set(sources)) != len(sources):
            raise ValueError(f"{name}: the same value is summed twice (x + x); NIR edges cannot express it")
        edges.extend((s, name) for s in sources)
        return [name]

    for n in gm.graph.nodes:
        if n.op == "placeholder":
            value[n] = ["input"]
            if normalization is not None:
                value[n] = add("normalize", _normalizer(nir, normalization, input_shape), ["input"])
        elif n.op == "output":
            out = n.args[0]
            if not isinstance(out, fx.Node):
                raise ValueError("export_nir: the student must return one tensor (the readout current)")
            nodes["output"] = nir.Output(output_type={"output": np.array(shapes[out])})
            edges.extend((s, "output") for s in value[out])
        elif n.op == "get_attr":
            raise ValueError(f"export_nir: {n.target!r} uses a tensor attribute directly; NIR has no constant node")
        else:
            src = n.args[0] if n.args else None
            if not isinstance(src, fx.Node):
                raise ValueError(f"export_nir: cannot express {n.format_node()} in NIR")
            if n.op == "call_module":
                m = gm.get_submodule(n.target)
                if isinstance(m, _PASS_MODULES):
                    value[n] = value[src]
                    continue
                node = _module_node(nir, n.target, m, shapes[src], shapes[n], dt, notes)
                value[n] = add(n.target, node, value[src])
            elif n.op == "call_function" and n.target in _ADDS and len(n.args) == 2 and not n.kwargs \
                    and all(isinstance(a, fx.Node) for a in n.args):
                value[n] = value[n.args[0]] + value[n.args[1]]
            elif _is_flatten(n, shapes):
                value[n] = add(n.name, nir.Flatten(input_type={"input": np.array(shapes[src])}, start_dim=0,
                                                   end_dim=-1), value[src])
            elif n.op == "call_method" and n.target == "contiguous":
                value[n] = value[src]
            else:
                raise ValueError(f"export_nir: cannot express {n.format_node()} in NIR (supported: Linear, "
                                 f"Conv1d/2d, AvgPool2d, sum pooling, Flatten, LIF/IF, residual adds)")
    metadata = {"producer": f"ltl_ext {_version()}", "time_steps": T, "dt": float(dt), "encoding": "direct",
                "readout": "output current of the last layer at every step; logits = its mean over time_steps",
                "input": "raw (normalised in the graph)" if normalization is not None or any(
                    _is_normalize(m) for m in student.modules()) else "as the student takes it (no normalisation)",
                "notes": "; ".join(sorted(notes))}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=True)


def _version() -> str:
    from .._version import __version__
    return __version__


def _input_shape(student: nn.Module, given) -> Tuple[int, ...]:
    if given is not None:
        shape = tuple(int(s) for s in given)
        if not shape or min(shape) < 1:
            raise ValueError(f"input_shape must be positive sizes without the batch, got {given!r}")
        return shape
    first = next((m for m in student.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ValueError("export_nir needs input_shape (one sample's shape without batch, e.g. (1, 28, 28)) for a "
                     "model that does not start with a Linear layer")


@torch.no_grad()
def _shapes(gm: fx.GraphModule, student: nn.Module, input_shape) -> Dict[fx.Node, Tuple[int, ...]]:
    """Every traced value's shape for one sample (batch and time dropped), from a run on zeros."""
    from torch.fx.passes.shape_prop import ShapeProp
    neurons = [m for _, m in lifs(student)]
    unset = [m for m in neurons if m.time_steps is None]     # a bare student's LIFs: one step reads the shapes
    for m in unset:
        m.time_steps = 1
    steps = 1 if neurons[0].stepwise else neurons[0].time_steps
    p = next(student.parameters(), None)
    x = torch.zeros(steps, *input_shape, device=p.device if p is not None else None,
                    dtype=p.dtype if p is not None else None)
    try:
        ShapeProp(gm).propagate(x)
    except Exception as e:
        raise ValueError(f"export_nir: the student does not run on an input of shape {tuple(input_shape)} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    finally:
        for m in neurons:
            m.reset_state()
        for m in unset:
            m.time_steps = None
    return {n: tuple(meta.shape[1:]) for n in gm.graph.nodes
            if hasattr(meta := n.meta.get("tensor_meta"), "shape")}


def _is_flatten(n: fx.Node, shapes) -> bool:
    """``torch.flatten(x, 1)``, ``x.flatten(1)``, ``x.view(x.size(0), -1)``: one sample becomes a vector."""
    flattening = (n.op == "call_function" and n.target is torch.flatten) or \
                 (n.op == "call_method" and n.target in ("flatten", "view", "reshape"))
    return flattening and n in shapes and len(shapes[n]) == 1 and math.prod(shapes[n]) == \
        math.prod(shapes[n.args[0]])


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _module_node(nir, name: str, m: nn.Module, shape_in, shape_out, dt: float, notes: set):
    """The NIR node for one student module (shapes of one sample, without batch)."""
    def arr(t):
        return t.detach().to("cpu", torch.float32).numpy().copy()

    if isinstance(m, LIF):
        return _lif_node(nir, name, m, shape_out, dt, notes)
    if _is_normalize(m):
        return _normalizer(nir, (m.mean.tolist(), m.std.tolist()), shape_in)
    if isinstance(m, nn.Linear):
        return nir.Affine(weight=arr(m.weight), bias=arr(m.bias)) if m.bias is not None else \
            nir.Linear(weight=arr(m.weight))
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if m.padding_mode != "zeros":
            raise ValueError(f"{name}: NIR convolutions pad with zeros, this one pads with {m.padding_mode!r}")
        bias = arr(m.bias) if m.bias is not None else np.zeros(m.out_channels, np.float32)
        if isinstance(m, nn.Conv1d):
            return nir.Conv1d(input_shape=int(shape_in[-1]), weight=arr(m.weight), stride=m.stride[0],
                              padding=m.padding if isinstance(m.padding, str) else m.padding[0],
                              dilation=m.dilation[0], groups=m.groups, bias=bias)
        return nir.Conv2d(input_shape=tuple(shape_in[-2:]), weight=arr(m.weight), stride=m.stride,
                          padding=m.padding, dilation=m.dilation, groups=m.groups, bias=bias)
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or (not m.count_include_pad and _pair(m.padding).any()):
            raise ValueError(f"{name}: NIR's AvgPool2d has no ceil_mode and counts the padding")
        kind = {None: nir.AvgPool2d, 1: nir.SumPool2d}.get(m.divisor_override)
        if kind is None:
            raise ValueError(f"{name}: divisor_override={m.divisor_override} is neither an average nor a sum")
        return kind(kernel_size=_pair(m.kernel_size), stride=_pair(m.stride if m.stride is not None
                                                                    else m.kernel_size), padding=_pair(m.padding))
    if isinstance(m, nn.AdaptiveAvgPool2d):
        (h, w), (oh, ow) = shape_in[-2:], shape_out[-2:]
        if h % oh or w % ow:
            raise ValueError(f"{name}: AdaptiveAvgPool2d from {h}x{w} to {oh}x{ow} is not a fixed pooling window")
        k = np.array([h // oh, w // ow], dtype=np.int64)
        return nir.AvgPool2d(kernel_size=k, stride=k.copy(), padding=np.zeros(2, np.int64))
    if isinstance(m, nn.Flatten):
        def nir_dim(d):   # NIR counts dimensions without the batch
            return d - 1 if d >= 0 else d
        return nir.Flatten(input_type={"input": np.array(shape_in)}, start_dim=nir_dim(m.start_dim),
                           end_dim=nir_dim(m.end_dim))
    if isinstance(m, _NO_NIR_POOL):
        raise ValueError(f"{name}: NIR has no max pooling node ({type(m).__name__}); use AvgPool2d or a strided "
                         f"convolution in the student")
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"{name}: fold BatchNorm into the preceding layer before export "
                         f"(ltl_ext.ltl.convert.fold_batchnorm; convert() does it)")
    raise ValueError(f"{name}: NIR export does not know {type(m).__name__} (supported: Linear, Conv1d, Conv2d, "
                     f"AvgPool2d, AdaptiveAvgPool2d, Flatten, LIF, Identity, Dropout)")


def _lif_node(nir, name: str, m: LIF, shape, dt: float, notes: set):
    """LIF -> nir.LIF (beta < 1) or nir.IF (beta = 1), per-neuron float64 arrays of the neuron shape."""
    if m.reset != "hard":
        raise ValueError(f"{name}: NIR 1.0 resets a neuron to v_reset after a spike (hard reset); it has no "
                         f"subtracting reset, so this soft-reset LIF cannot be exported (train with reset='hard')")
    kw = m.lif_kwargs()

    def full(v):
        v = v.detach().to("cpu", torch.float64).numpy() if isinstance(v, torch.Tensor) else np.float64(v)
        return np.broadcast_to(v, shape).astype(np.float64)

    beta, alpha, threshold = full(kw["beta"]), full(kw["alpha"]), full(kw["threshold"])
    v_reset = np.full(shape, m.v_reset, np.float64)
    notes.add(f"surrogate gradients ({m.surrogate}) and detach_reset are training-only and were dropped")
    if (beta == 1.0).all():
        return nir.IF(r=alpha / dt, v_threshold=threshold, v_reset=v_reset)
    if (beta == 1.0).any() or (beta < 0).any():
        raise ValueError(f"{name}: mixes beta = 1 (IF) and beta < 1 (LIF) neurons; NIR needs one kind per node")
    tau = dt / (1.0 - beta)
    return nir.LIF(tau=tau, r=alpha / (1.0 - beta), v_leak=np.zeros(shape), v_threshold=threshold,
                   v_reset=v_reset)


def _is_normalize(m: nn.Module) -> bool:
    """The zoo's input normalisation module (``ltl_ext.models.Normalize``: buffers ``mean``, ``std``)."""
    from ..nn import zoo
    kind = getattr(zoo, "Normalize", None)
    return kind is not None and isinstance(m, kind)


def _normalizer(nir, normalization, input_shape):
    """``x' = (x - mean) / std`` as ``nir.Affine`` (flat input) or a 1x1 ``nir.Conv2d`` (per channel, images)."""
    try:
        mean, std = (np.asarray(v, np.float64).reshape(-1) for v in normalization)
    except (TypeError, ValueError):
        raise ValueError(f"normalization must be (mean, std) sequences, got {normalization!r}") from None
    if not (std > 0).all() or mean.size != std.size:
        raise ValueError(f"normalization needs std > 0 and as many means as stds, got {normalization!r}")
    c = input_shape[0]
    if mean.size not in (1, c):
        raise ValueError(f"normalization has {mean.size} values; the input has {c} channels/features")
    scale = np.broadcast_to(1.0 / std, (c,)).astype(np.float32)
    shift = np.broadcast_to(-mean / std, (c,)).astype(np.float32)
    # the metadata lets import_nir rebuild the exact (x - mean) / std; other tools read the affine map
    meta = {"ltl_ext_normalize_mean": np.broadcast_to(mean, (c,)).copy(),
            "ltl_ext_normalize_std": np.broadcast_to(std, (c,)).copy()}
    if len(input_shape) == 1:
        return nir.Affine(weight=np.diag(scale), bias=shift, metadata=meta)
    if len(input_shape) == 3:
        return nir.Conv2d(input_shape=tuple(input_shape[1:]), weight=np.diag(scale)[:, :, None, None], stride=1,
                          padding=0, dilation=1, groups=1, bias=shift, metadata=meta)
    raise ValueError(f"normalization in NIR needs a flat or [C, H, W] input, got shape {tuple(input_shape)}")


def _safe(name: str) -> str:
    name = re.sub(r"\W", "_", str(name))
    return name if name and not name[0].isdigit() else f"n_{name}"


def _unique(name: str, taken) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    return out


# ------------------------------------------------------------------------------------------------------ import
def import_nir(graph_or_path, *, dt: Optional[float] = None, time_steps: Optional[int] = None) -> SpikingModel:
    """A NIR graph (a ``nir.NIRGraph`` or a file written by ``nir.write``) as a :class:`SpikingModel`.

    ``dt`` (seconds per step) defaults to the graph's ``metadata["dt"]``, else :data:`DEFAULT_DT`; ``time_steps`` to
    ``metadata["time_steps"]``, else the SpikingModel default (16). The inverse of :func:`export_nir`: NIR LIF/IF
    become :class:`~ltl_ext.nn.LIF` with a hard reset (``beta = 1 - dt/tau``, ``alpha = dt*r/tau``; IF: ``beta = 1``,
    ``alpha = dt*r``), Affine/Linear -> ``nn.Linear``, Conv -> ``nn.Conv1d/2d``, AvgPool2d -> ``nn.AvgPool2d``,
    SumPool2d -> ``nn.AvgPool2d(divisor_override=1)``, Flatten -> ``nn.Flatten``; a node with several inputs sums
    them. The model is a ``torch.fx.GraphModule`` whose submodules are named after the NIR nodes.
    """
    nir = _nir()
    graph = nir.read(str(graph_or_path)) if isinstance(graph_or_path, (str, Path)) else graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"import_nir takes a nir.NIRGraph or a path to a NIR file, got {type(graph).__name__}")
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
    fx_graph, root, values, out = fx.Graph(), nn.Module(), {}, None
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
        attr = _unique(_safe(name), root._modules)
        root.add_module(attr, _torch_module(nir, name, node, dt))
        values[name] = fx_graph.call_module(attr, (x,))
    fx_graph.output(out)
    model = fx.GraphModule(root, fx_graph, class_name="NIRModel")
    T = time_steps if time_steps is not None else meta.get("time_steps")
    return SpikingModel(model) if T is None else SpikingModel(model, time_steps=int(T))


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


def _scalar_or_tensor(a, name: str, what: str) -> Union[float, torch.Tensor]:
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"NIR node {name!r}: {what} must be finite")
    u = np.unique(a)
    return float(u[0]) if u.size == 1 else torch.from_numpy(a.astype(np.float32))


def _torch_module(nir, name: str, node, dt: float) -> nn.Module:
    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    meta = node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}
    if "ltl_ext_normalize_mean" in meta and "ltl_ext_normalize_std" in meta:
        from ..nn import zoo
        if hasattr(zoo, "Normalize"):
            return zoo.Normalize(np.asarray(meta["ltl_ext_normalize_mean"]).tolist(),
                                 np.asarray(meta["ltl_ext_normalize_std"]).tolist())

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
        return LIF(beta=_scalar_or_tensor(beta, name, "tau"), alpha=_scalar_or_tensor(alpha, name, "r"),
                   threshold=_scalar_or_tensor(node.v_threshold, name, "v_threshold"), reset="hard",
                   v_reset=float(v_reset[0]))
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise ValueError(f"NIR node {name!r}: only 2-D {type(node).__name__} weights map to nn.Linear")
        m = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine))
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
                padding=plain(node.padding), dilation=plain(node.dilation), groups=int(node.groups), bias=True)
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
