"""Teacher initialisation (``convert(init="teacher")``): the folded ANN's weights, rescaled so that the user's
neuron fires at the LTL target rates.

Balancing (``init="teacher"``) keeps the neuron the user chose. On ``calib_data`` the ANN's activation a_l at each
neuron position gets a robust scale ``lambda_l = pct_p(a_l)`` (its max where pct_p is 0; p = ``percentile``: by
default the trainer's target percentile for ``mode``, so the initial rates approximate the LTL targets
y_l = clamp(a_l / lambda_l, 0, 1)).
Every tensor in the student carries a *unit* u (ANN value = u * student value): the input has u = 1, spikes of
layer l have u = lambda_l. A neuron with input gain alpha and threshold theta fires, in the rate limit (IF, soft
reset), at ``rate = clamp(alpha * x / theta, 0, 1)``; for rate_l = a_l / lambda_l its input current x = a_l / u
needs the unit

    u_l = alpha * lambda_l / theta.

The scale goes into the weights and biases of the layer that feeds the neuron: with input unit u_in and output
unit u_out, ``W' = W * u_in / u_out`` and ``b' = b / u_out`` (u_out = u_l before a neuron, 1 for the readout, so
the logits are in ANN units). A LIF with reset to 0 is positively homogeneous (scaling its input and threshold
by c > 0 leaves its spikes unchanged), so this is the same student as one with threshold lambda_l / u, but its
threshold, surrogate window (half-width relative to the threshold) and reset stay the user's. Only where the
input's unit is fixed by a residual add of spikes (identity shortcut) does the scale go into the neuron's input
gain instead, ``alpha' = alpha * u / u_l`` (threshold and surrogate still the user's). Adds and concatenations of
spikes of two layers with different units are refused with the node name. Max-pooling of spikes over-estimates
rates (avoid it in students).

:func:`activation_scales` measures the lambda_l on ``calib_data``; :func:`balance` propagates the units over the
model's ``torch.fx`` graph (:class:`_Units`) and rescales the weights (and input gains) in place.
"""
from __future__ import annotations

import math
import operator
import warnings
from typing import Dict, Iterable, List, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import LIF
from ..nn.zoo import Normalize
from .activations import WEIGHT_LAYERS, readout_position
from .activations import trace as _trace
from .folding import BN as _BN
from .folding import FoldError
from .swap import DROPOUT as _DROPOUT
from .tandem import target_scale
from .weights import assign

#: modules whose output is a positive-homogeneous function of one input: f(u x) = u f(x) for u > 0.
_UNIT_PRESERVING = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.pooling._AvgPoolNd,
                    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._MaxPoolNd,
                    nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample, nn.ReLU, nn.modules.padding._ConstantPadNd,
                    nn.ZeroPad2d, Normalize) + _DROPOUT   # Normalize: the input's unit is the normalised input
_PASS_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute,
                   torch.mean, torch.sum, operator.getitem, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                   F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.max_pool1d, F.max_pool2d,
                   F.max_pool3d, F.adaptive_max_pool2d, F.dropout, F.relu, torch.relu, F.pad, F.interpolate,
                   torch.chunk, torch.split}
_PASS_METHODS = {"flatten", "view", "reshape", "permute", "transpose", "contiguous", "squeeze", "unsqueeze", "mean",
                 "sum", "chunk", "split", "relu", "clone", "expand", "repeat", "to", "float", "type_as"}
_SHAPE_METHODS = {"size", "dim", "numel"}
_ADD_TARGETS = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub, "add", "add_",
                "sub", "sub_"}
_SCALE_TARGETS = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div, "mul",
                  "mul_", "div", "div_"}
_CAT_TARGETS = {torch.cat, torch.stack, torch.concat}


# ------------------------------------------------------------------------------------------------ calibration
def _batches(calib_data) -> Iterable[Tensor]:
    """Tensors from a tensor [N, ...] (in chunks of 256) or an iterable of tensors / (x, y, ...) tuples; a
    ``TypeError`` for anything else (a dict batch, a numpy array), a ``ValueError`` when it holds no input."""
    if isinstance(calib_data, Tensor):
        batches = calib_data.split(256)
    elif isinstance(calib_data, Iterable) and not hasattr(calib_data, "__array__"):   # a numpy array: refused
        batches = (b[0] if isinstance(b, (tuple, list)) and b else b for b in calib_data)
    else:
        batches = [calib_data]
    empty = True
    for x in batches:
        if not isinstance(x, Tensor):
            raise TypeError(f"init='teacher': calib_data must be a tensor [N, ...] or an iterable of tensors or "
                            f"(x, y) batches of them; got a batch of type {type(x).__name__}")
        if x.numel():
            empty = False
            yield x
    if empty:   # else each scale would be measured on nothing
        raise ValueError("init='teacher': calib_data holds no input (an empty tensor or loader)")


@torch.no_grad()
def activation_scales(model: nn.Module, names: List[str], calib_data, p: float,
                      max_elements: int = 1 << 22) -> Dict[str, float]:
    """lambda_l = pct_p (:func:`target_scale`) of the ANN activation at each named module over all calibration
    data."""
    store: Dict[str, List[Tensor]] = {n: [] for n in names}
    gen = torch.Generator().manual_seed(0)

    def keep(n: str, out: Tensor) -> None:  # a random subsample per batch bounds the memory
        a = out.detach().flatten().float().cpu()
        if a.numel() > max_elements // 4:
            a = a[torch.randint(a.numel(), (max_elements // 4,), generator=gen)]
        store[n].append(a)

    handles = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: keep(n, o)) for n in names]
    device = next((q.device for q in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        for x in _batches(calib_data):
            try:
                model(x.to(device))
            except FoldError:   # (a BN folded over the wrong dim: it says so, calib_data is not the matter)
                raise
            except (RuntimeError, ValueError) as e:   # else a shape/dtype error deep in torch, with no word of calib
                raise ValueError(f"init='teacher': the model fails on a calib_data batch of shape {tuple(x.shape)}, "
                                 f"{x.dtype} ({type(e).__name__}: {e}); give calib_data as a batch [N, ...] of "
                                 f"inputs the model takes (a single sample needs its batch dim: x[None]), or an "
                                 f"iterable of such batches") from e
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    scales = {}
    for n, chunks in store.items():
        if not chunks:
            raise RuntimeError(f"activation {n!r} was never called on the calibration data")
        a = torch.cat(chunks)
        if a.numel() > max_elements:
            a = a[torch.randint(a.numel(), (max_elements,), generator=gen)]
        lam = float(target_scale(a, p))  # the max where pct_p is 0 (a sparse layer), as for the targets
        if not lam > 0:
            warnings.warn(f"activation {n!r} is never positive on the calibration data (max {lam}); using scale 1",
                          stacklevel=3)
            lam = 1.0
        scales[n] = lam
    return scales


# ------------------------------------------------------------------------------------------------ units
class _Group:
    """Outputs of weight layers whose output unit is not chosen yet (merged when they meet at an add)."""

    def __init__(self, layer: str):
        self.layers = [layer]
        self.unit: Optional[float] = None
        self.alias: Optional["_Group"] = None

    def root(self) -> "_Group":
        g = self
        while g.alias is not None:
            g = g.alias
        return g


class _Units:
    """Unit propagation over the FX graph of the converted model (see the module docstring): :meth:`run` chooses
    every weight layer's output unit (u_l before a neuron, 1 at the readout), :meth:`apply` rescales the weights
    (and, where a residual add fixed a neuron's input unit, its input gain)."""

    def __init__(self, model: nn.Module, graph: fx.Graph, scales: Dict[str, float]):
        self.model, self.graph, self.scales = model, graph, scales
        self.in_unit: Dict[str, float] = {}
        self.group_of: Dict[str, _Group] = {}
        self.gains: Dict[str, float] = {}   # LIF name -> factor on its input gain alpha (fixed input units only)
        self.warned = set()
        self.past_readout = False

    def resolve(self, v, where: str) -> float:
        if isinstance(v, _Group):
            g = v.root()
            if g.unit is None:
                g.unit = self.in_unit[g.layers[0]]
            return g.unit
        if v is None:
            raise ValueError(f"init='teacher': cannot tell the unit of the input of {where}")
        return v

    def combine(self, values: list, where: str):
        """Units of tensors that are added / concatenated must agree."""
        fixed = [v.root().unit if isinstance(v, _Group) else v for v in values]
        known = [u for u in fixed if u is not None]
        if known:
            u = known[0]
            for k in known[1:]:
                if not math.isclose(k, u, rel_tol=1e-6):
                    raise ValueError(
                        f"init='teacher': node {where!r} joins (adds or concatenates) tensors with different scales "
                        f"({u:.4g} vs {k:.4g}), e.g. the spikes of two layers; each tensor carries one scale, so put "
                        f"a conv/linear on each path before they meet (its weights take the scale), or use "
                        f"init='random'")
            for v in values:
                if isinstance(v, _Group):
                    v.root().unit = u
            return u
        groups = [v.root() for v in values]
        head = groups[0]
        for g in groups[1:]:
            if g is not head:
                head.layers += g.layers
                g.alias = head
        return head

    def warn(self, key, msg: str) -> None:
        if key not in self.warned and not self.past_readout:   # after the readout, logits are in ANN units
            self.warned.add(key)
            warnings.warn(msg, stacklevel=5)   # at convert's caller

    def run(self) -> None:
        env: Dict[fx.Node, object] = {}

        def val(a):
            return env.get(a) if isinstance(a, fx.Node) else None

        readout = readout_position(self.model, self.graph)
        for i, node in enumerate(self.graph.nodes):
            self.past_readout = i > readout
            tensor_args = [a for a in node.args if isinstance(a, fx.Node)]
            first = val(tensor_args[0]) if tensor_args else None
            out = first
            if node.op in ("placeholder", "get_attr"):
                out = 1.0
            elif node.op == "output":
                for a in _flat_nodes(node.args):
                    v = env.get(a)
                    if isinstance(v, _Group) and v.root().unit is None:
                        v.root().unit = 1.0  # the readout gives logits in ANN units
            elif node.op == "call_module":
                m = self.model.get_submodule(node.target)
                if isinstance(m, LIF):
                    # the unit at which the user's neuron fires at rate a_l / lambda_l: u_l = alpha lambda_l / theta
                    want = float(m.alpha) * self.scales[node.target] / float(m.threshold)
                    if isinstance(first, _Group) and first.root().unit is None:
                        first.root().unit = want            # the feeding layers' weights take the scale
                    else:                                   # input unit fixed (a residual add of spikes)
                        self.gains[node.target] = self.resolve(first, node.target) / want
                    out = self.scales[node.target]
                elif isinstance(m, WEIGHT_LAYERS):
                    u = self.resolve(first, node.target)
                    if node.target in self.in_unit and not math.isclose(self.in_unit[node.target], u):
                        raise ValueError(f"init='teacher': layer {node.target!r} is called on inputs of different "
                                         f"scales; give each use its own module")
                    self.in_unit[node.target] = u
                    g = _Group(node.target)
                    if node.target in self.group_of:
                        g = self.combine([self.group_of[node.target], g], node.target)
                    self.group_of[node.target] = g
                    out = g
                elif isinstance(m, _BN):
                    raise ValueError(f"init='teacher' needs every BatchNorm folded; {node.target!r} could not be "
                                     f"(no conv/linear directly before it, a parametrized one, or no running "
                                     f"statistics: track_running_stats=False)")
                elif not isinstance(m, _UNIT_PRESERVING):
                    self.warn(node.target, f"init='teacher': module {node.target!r} ({type(m).__name__}) is "
                                           f"assumed to preserve the scale of its input")
            elif node.op in ("call_function", "call_method"):
                t = node.target
                if t in _SHAPE_METHODS or (node.op == "call_function" and t is getattr):
                    out = None
                elif t in _ADD_TARGETS:
                    if len(tensor_args) >= 2:
                        out = self.combine([val(a) for a in tensor_args], node.name)
                    elif first is not None and not math.isclose(self.resolve(first, node.name), 1.0):
                        self.warn(node.name, f"init='teacher': {node.name!r} adds a constant to a scaled tensor")
                elif t in _CAT_TARGETS:
                    out = self.combine([env.get(a) for a in _flat_nodes(node.args[0])], node.name)
                elif t in _SCALE_TARGETS:
                    if len(tensor_args) >= 2:
                        self.warn(node.name, f"init='teacher': {node.name!r} multiplies two tensors; scales may "
                                             f"be wrong")
                elif not (t in _PASS_FUNCTIONS or t in _PASS_METHODS):
                    self.warn(t, f"init='teacher': {getattr(t, '__name__', t)!r} is assumed to preserve the "
                                 f"scale of its input")
            env[node] = out

    @torch.no_grad()
    def apply(self) -> None:
        for name, u_in in self.in_unit.items():
            g = self.group_of[name].root()
            u_out = g.unit if g.unit is not None else u_in
            layer = self.model.get_submodule(name)
            # assign: a parametrized weight is computed at every read, an in-place mul_ would scale that copy
            assign(layer, "weight", layer.weight * (u_in / u_out))
            if layer.bias is not None:
                assign(layer, "bias", layer.bias / u_out)
        for name, gain in self.gains.items():
            lif = self.model.get_submodule(name)
            lif.alpha = lif.alpha * gain


def _flat_nodes(a) -> List[fx.Node]:
    out: List[fx.Node] = []
    fx.node.map_arg(a, lambda n: out.append(n) or n)
    return out


def balance(model: nn.Module, scales: Dict[str, float]) -> None:
    """Rescale ``model`` (the student, neurons in place, weights still the folded ANN's) in place so that each
    neuron fires at a_l / lambda_l (``scales``: lambda_l by neuron name); needs a ``torch.fx``-traceable model."""
    graph, why = _trace(model)
    if graph is None:
        raise ValueError(f"init='teacher' needs a torch.fx-traceable model to balance the layers: {why}")
    units = _Units(model, graph, scales)
    units.run()
    units.apply()
