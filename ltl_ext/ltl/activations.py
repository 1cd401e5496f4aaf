"""Functional activations made visible: the ``F.relu`` & co in a model's ``forward`` as modules.

A teacher may call its activations as functions (``F.relu``, ``torch.relu``, ``F.relu6``, ``F.hardtanh``,
``F.leaky_relu``, ``torch.clamp(x, 0, m)``, ``clamp_min(x, 0)``) or methods (``x.relu()``, ``x.clamp(min=0)``).
:func:`ltl_ext.convert` must turn each into a spiking neuron, and the pairing must hook the teacher at the same
place, so both rewrite the ``torch.fx`` graph the same way: each such call becomes a ``call_module`` node of the
equivalent activation module, named after the node (``relu``, ``relu_1``, ``clamp``, ...; deterministic for one
model structure)::

    F.relu, torch.relu, x.relu()              -> nn.ReLU()
    torch.clamp(x, 0) / x.clamp(min=0) / clamp_min(x, 0) -> nn.ReLU()
    torch.clamp(x, 0, m), m > 0               -> ClampReLU(m)
    F.relu6                                   -> nn.ReLU6()
    F.hardtanh(x, lo, hi)                     -> nn.Hardtanh(lo, hi)
    F.leaky_relu(x, s)                        -> nn.LeakyReLU(s)

A nonlinearity no spiking neuron can stand for (GELU, SiLU, sigmoid, tanh, ELU, a clamp whose lower bound is not 0
or whose bounds are tensors, ...) *before the readout* is refused with a ``ValueError`` naming each one: left analog
in the student it would pass the next layer's local loss back into the layer before it, and LTL's gradients would
no longer stay inside each layer.
"""
from __future__ import annotations

import operator
import warnings
from typing import Dict, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..nn import ANN_ACTIVATIONS as ACTIVATIONS
from ..nn import LIF, ClampReLU
from ..nn.zoo import Normalize

__all__ = ["before_readout", "expose_activations", "modularise", "readout_position", "rewire_in_place", "trace",
           "WEIGHT_LAYERS"]

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

# functional activations (step 1): target -> kind
_FUNCTIONAL = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", "relu": "relu", "relu_": "relu",
               F.relu6: "relu6", F.hardtanh: "hardtanh", F.hardtanh_: "hardtanh",
               F.leaky_relu: "leaky_relu", F.leaky_relu_: "leaky_relu",
               torch.clamp: "clamp", torch.clip: "clamp", torch.clamp_: "clamp", "clamp": "clamp", "clamp_": "clamp",
               "clip": "clamp", "clip_": "clamp",
               torch.clamp_min: "clamp_min", torch.clamp_min_: "clamp_min", "clamp_min": "clamp_min",
               "clamp_min_": "clamp_min"}
#: in-place forms: their input holds the activation afterwards (by target; or by the index of ``inplace``)
_IN_PLACE = {torch.relu_, "relu_", F.hardtanh_, F.leaky_relu_, torch.clamp_, "clamp_", "clip_", torch.clamp_min_,
             "clamp_min_"}
_INPLACE_ARG = {F.relu: 1, F.relu6: 1, F.hardtanh: 3, F.leaky_relu: 2}
#: calls whose output may share memory with their first argument: an in-place write into one changes the other
_VIEW_FUNCTIONS = {operator.getitem, torch.narrow, torch.select, torch.transpose, torch.permute, torch.squeeze,
                   torch.unsqueeze, torch.flatten, torch.reshape, torch.chunk, torch.split, torch.tensor_split,
                   torch.unbind, torch.t, torch.movedim, torch.swapaxes, torch.swapdims, torch.diagonal,
                   torch.as_strided, torch.unflatten, operator.iadd, operator.isub, operator.imul, operator.itruediv}
_VIEW_METHODS = {"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "transpose", "permute",
                 "squeeze", "unsqueeze", "narrow", "select", "chunk", "split", "tensor_split", "unbind", "t",
                 "expand", "expand_as", "movedim", "swapaxes", "swapdims", "diagonal", "unfold", "as_strided",
                 "contiguous", "detach", "__getitem__"}
#: those of them that may take a part of the tensor (which need not overlap another part written in place)
_PARTIAL_VIEWS = {operator.getitem, torch.narrow, torch.select, torch.chunk, torch.split, torch.tensor_split,
                  torch.unbind, torch.diagonal, torch.as_strided, "__getitem__", "narrow", "select", "chunk", "split",
                  "tensor_split", "unbind", "diagonal", "as_strided", "unfold"}
#: nonlinearities a spiking neuron (rate in [0, 1] x scale) cannot stand for
_UNSUPPORTED_MODULES = (nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish,
                        nn.Hardswish, nn.Hardsigmoid, nn.PReLU, nn.RReLU, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
                        nn.GLU, nn.Threshold, nn.Hardshrink, nn.Softshrink)
_UNSUPPORTED_FUNCTIONS = {F.gelu, F.silu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.elu, F.selu, torch.selu,
                          F.celu, F.softplus, F.mish, F.hardswish, F.hardsigmoid, F.prelu, torch.prelu, F.rrelu,
                          F.logsigmoid, F.softsign, F.glu, F.threshold, F.threshold_, F.hardshrink, F.softshrink,
                          F.tanhshrink, "sigmoid", "tanh", "sigmoid_", "tanh_", "hardshrink"}
_FIX = ("replace it by a module or function convert turns into a spiking neuron (nn.ReLU, ClampReLU(max), "
        "nn.ReLU6, F.relu, torch.clamp(x, 0, max)), or move it after the readout")


class _Tracer(fx.Tracer):
    """FX tracer that keeps LIF, ClampReLU and the input Normalize as leaf modules (one call_module node per
    use)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (LIF, ClampReLU, Normalize)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> Tuple[Optional[fx.Graph], Optional[str]]:
    """``(graph, None)`` for an fx-traceable model, else ``(None, why)``.

    Traced in eval mode (each module's mode restored after): tracing bakes Python values into the graph, among
    them ``self.training`` (``F.dropout(x, p, self.training)``, ``if self.training: ...``). A teacher traced in
    train mode gave a student that drops out spikes forever, even in eval, and a pairing teacher whose targets
    were drawn with dropout; LTL runs the teacher in eval mode, and the student is built for that function."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return _Tracer().trace(model), None
    except Exception as e:  # noqa: BLE001 - any tracing failure means "not traceable"
        return None, f"{type(e).__name__}: {e}"
    finally:
        for m, training in modes:
            m.training = training


def _arg(node: fx.Node, i: int, name: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _describe(node: fx.Node) -> str:
    t = node.target
    what = f"x.{t}()" if node.op == "call_method" else getattr(t, "__qualname__", getattr(t, "__name__", str(t)))
    return f"{node.name!r} ({what})"


def _activation_module(node: fx.Node) -> Optional[nn.Module]:
    """The activation module equivalent to a functional call ``node``; ``None`` if it is not an activation.
    Raises ``ValueError`` (with the reason) for a clamp a spiking neuron cannot stand for."""
    kind = _FUNCTIONAL.get(node.target) if node.op in ("call_function", "call_method") else None
    if kind is None:
        return None
    if kind == "relu":
        return nn.ReLU()
    if kind == "relu6":
        return nn.ReLU6()
    if kind == "leaky_relu":
        return nn.LeakyReLU(_arg(node, 1, "negative_slope", 0.01))
    if kind == "hardtanh":
        lo, hi = _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
        if not (_number(lo) and _number(hi)):
            raise ValueError(f"{_describe(node)} has tensor bounds")
        return nn.Hardtanh(lo, hi)
    lo = _arg(node, 1, "min")
    hi = None if kind == "clamp_min" else _arg(node, 2, "max")
    if not (_number(lo) and _number(hi)):
        raise ValueError(f"{_describe(node)} has tensor bounds")
    if lo != 0:
        raise ValueError(f"{_describe(node)} clamps at min = {lo}, not 0 (a spike rate is >= 0)")
    if hi is None:
        return nn.ReLU()
    if not hi > 0:
        raise ValueError(f"{_describe(node)} clamps to [0, {hi}]")
    return ClampReLU(float(hi))


def _in_place(node: fx.Node) -> bool:
    """Whether the functional activation ``node`` writes its result into its input."""
    if node.target in _IN_PLACE:
        return True
    i = _INPLACE_ARG.get(node.target) if node.op == "call_function" else None
    return i is not None and bool(_arg(node, i, "inplace", False))


def _alias_source(node: fx.Node) -> Optional[fx.Node]:
    """The node whose tensor ``node``'s output may share memory with (a view of it, or itself); None if none."""
    first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if node.op == "call_function" and (node.target in _VIEW_FUNCTIONS or node.target in _IN_PLACE):
        return first
    in_place = node.op == "call_method" and node.target.endswith("_") and not node.target.startswith("__")
    if in_place or (node.op == "call_method" and node.target in _VIEW_METHODS):   # in place: x.add_(y) is x
        return first
    return None


def _stale_reads(src: fx.Node, later: set) -> Tuple[List[str], List[str]]:
    """Reads, by nodes in ``later``, of tensors sharing memory with ``src`` (other than ``src``), as
    ``(sure, maybe)``: ``sure`` where a tensor ``src`` is a view of (so holding the written values) is read whole,
    ``maybe`` where only a part of it is read, or another view of it (it may not overlap ``src``)."""
    chain = [src]     # src and the tensors it is a view of
    while _alias_source(chain[-1]) is not None:
        chain.append(_alias_source(chain[-1]))
    aliases, todo = [], [chain[-1]]     # the base tensor and its views (and theirs) made before
    while todo:
        a = todo.pop()
        aliases.append(a)
        todo.extend(u for u in a.users if u not in later and _alias_source(u) is a)
    sure, maybe = [], []
    for a in aliases:
        for u in a.users:
            if a is not src and u in later:
                part = _alias_source(u) is a and u.target in _PARTIAL_VIEWS
                (sure if a in chain and not part else maybe).append(f"{u.name!r} reads {a.name!r}")
    return sure, maybe


def _read_after(call: fx.Node, src: fx.Node) -> None:
    """Every node after ``call`` reading ``src`` reads ``call``'s output instead (``src`` changed in place).

    Only ``src``'s reads can be pointed at ``call``'s output: where a tensor ``src`` is a view of (``h`` in
    ``h[:, :4].relu_()``) is read after ``call``, a ``ValueError`` names the node; where maybe (a part of it, another
    view of it), a warning."""
    after = []
    n = call.next
    while n.op != "root":
        after.append(n)
        n = n.next
    sure, maybe = _stale_reads(src, set(after))
    why = (f"the in-place activation {call.target!r} writes into {src.name!r}, a view of a tensor read after it "
           f"({'; '.join(sure or maybe)}); the module that replaces it (a spiking neuron in the student) writes "
           f"nothing in place, so those reads {'would' if sure else 'may'} see the values from before the activation. "
           f"Write it out of place and use its result, e.g. h = torch.cat([h[:, :4].relu(), h[:, 4:]], 1) for "
           f"h[:, :4].relu_()")
    if sure:
        raise ValueError(f"convert: {why}")
    if maybe:
        warnings.warn(f"convert: {why} (no matter if they read another part of it)", stacklevel=4)
    for n in after:
        if src in n.all_input_nodes:
            n.replace_input_with(src, call)


def rewire_in_place(model: nn.Module, graph: fx.Graph) -> bool:
    """On ``graph`` (edited in place): the nodes reading the input of an in-place activation module
    (``nn.ReLU(inplace=True)``) that becomes a neuron (before the readout) after its call read its output instead;
    whether any did. Why: the neuron that replaces it writes nothing in place, so after ``self.act(h)`` with the
    result unused the next layer read h raw, and the neuron's spikes went nowhere. Raises a ``ValueError`` where
    its input is a view of a tensor read later (``self.act(h[:, :4])``; :func:`_read_after`)."""
    changed = False
    readout = readout_position(model, graph)
    for i, node in enumerate(list(graph.nodes)):
        # (an in-place module that stays, after the readout or no activation, still writes in place)
        if (i < readout and node.op == "call_module" and isinstance(model.get_submodule(node.target), ACTIVATIONS)
                and getattr(model.get_submodule(node.target), "inplace", False) is True
                and node.args and isinstance(node.args[0], fx.Node)):
            src = node.args[0]
            later = len(src.users)
            _read_after(node, src)
            changed = changed or len(src.users) != later
    return changed


def readout_position(model: nn.Module, graph: fx.Graph) -> int:
    """Index in ``graph.nodes`` of the last weight layer's call (the readout); len(nodes) if there is none."""
    nodes = list(graph.nodes)
    last = [i for i, n in enumerate(nodes)
            if n.op == "call_module" and isinstance(model.get_submodule(n.target), WEIGHT_LAYERS)]
    return last[-1] if last else len(nodes)


def before_readout(model: nn.Module, graph: Optional[fx.Graph]) -> List[str]:
    """The modules called before the readout (the last weight layer), in call order with repeats; in module order
    when there is no graph (an untraceable model). The activations among them are those ``convert`` turns into
    neurons."""
    if graph is not None:
        order = [n.target for n in graph.nodes if n.op == "call_module"]
    else:
        order = [n for n, _ in model.named_modules()]
    weights = [i for i, n in enumerate(order) if isinstance(model.get_submodule(n), WEIGHT_LAYERS)]
    return order[:weights[-1]] if weights else order


def modularise(model: nn.Module, graph: fx.Graph) -> Dict[str, nn.Module]:
    """Step 1 on ``graph`` (edited in place): each functional activation becomes a ``call_module`` node of a new
    activation module named after the node; returns ``{name: module}`` (to be registered on the model's root).
    Refuses, naming them all, the nonlinearities before the readout that no spiking neuron can stand for."""
    existing = {n for n, _ in model.named_modules()}
    readout = readout_position(model, graph)
    new: Dict[str, nn.Module] = {}
    refused: List[str] = []
    for i, node in enumerate(list(graph.nodes)):
        try:
            module = _activation_module(node)
        except ValueError as e:
            if i < readout:   # after the readout any clamp is fine (e.g. of the logits): it stays as written
                refused.append(str(e))
            continue
        if module is None:
            if i >= readout:
                continue
            if node.op in ("call_function", "call_method") and node.target in _UNSUPPORTED_FUNCTIONS:
                refused.append(_describe(node))
            elif node.op == "call_module" and unsupported_module(model.get_submodule(node.target)):
                refused.append(f"{node.target!r} ({type(model.get_submodule(node.target)).__name__})")
            continue
        name = node.name
        while name in existing or name in new:
            name += "_"
        new[name] = module
        with graph.inserting_after(node):
            call = graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(call)
        if _in_place(node):   # later reads of its input see the activated value (`h.relu_()`, result unused):
            _read_after(call, node.args[0])   # else the module's output went nowhere and the next layer got h raw
        graph.erase_node(node)
    refuse(refused)
    return new


def refuse(refused: List[str]) -> None:
    """Raise the ``ValueError`` naming the nonlinearities (``refused``, described) no spiking neuron can stand for;
    nothing if there is none."""
    if refused:
        raise ValueError(f"convert: these activations cannot become spiking neurons: {'; '.join(refused)}. "
                         f"Left analog, the next layer's local loss would reach the layer before them (LTL's "
                         f"gradients would no longer stay inside each layer). Fix: {_FIX}.")


def unsupported_module(m: nn.Module) -> bool:
    """Whether ``m`` is an activation module no spiking neuron can stand for (GELU, SiLU, Sigmoid, ...)."""
    return isinstance(m, _UNSUPPORTED_MODULES)


def expose_activations(model: nn.Module) -> nn.Module:
    """``model`` with a hookable module at each functional activation (the modules :func:`convert` turns into
    the student's neurons, same names), for pairing a teacher that calls ``F.relu`` & co with its student.

    Returns ``model`` itself when it has no functional activation (or is not fx-traceable); otherwise a
    ``torch.fx.GraphModule`` that computes the same function with the *same* parameters and buffers (training
    the one trains the other); ``model`` is not modified. Raises like :func:`convert` for activations no
    spiking neuron can stand for.
    """
    graph, _ = trace(model)
    if graph is None:
        return model
    new = modularise(model, graph)
    if not new:
        return model
    root = nn.Module()   # shares model's children, parameters and buffers; only the new modules are its own
    root._modules, root._parameters, root._buffers = dict(model._modules), dict(model._parameters), \
        dict(model._buffers)
    for name, m in new.items():
        root.add_module(name, m)
    gm = fx.GraphModule(root, graph, class_name=type(model).__name__)
    gm.training = model.training   # the root's flag only: .train() would recurse into the user's shared modules
    return gm
