"""Turn any ANN into its spiking student: :func:`convert`.

Steps, on a copy of the ANN without its hooks (the ANN itself is never modified):

1. **Functional activations** (``F.relu``, ``torch.relu``, ``x.relu()``, ``F.relu6``, ``F.hardtanh``,
   ``F.leaky_relu``, ``torch.clamp(x, 0, m)`` / ``x.clamp(min=0)`` / ``clamp_min(x, 0)``) become activation modules
   (``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh``, ``nn.LeakyReLU``, ``ClampReLU(m)``) named after their ``torch.fx``
   node (``relu``, ``relu_1``, ``clamp``, ...), so that step 5 turns them into neurons like any module. A
   nonlinearity a spiking neuron cannot stand for (``GELU``, ``sigmoid``, a clamp whose lower bound is not 0, ...)
   before the readout is refused with a ``ValueError`` naming each one: left analog it would pass the next layer's
   local loss back into this layer and break LTL's locality. :func:`expose_activations` does step 1 alone on the
   teacher (sharing its parameters), so the pairing can hook the teacher where each student neuron learns.
2. **Reused activations** (one module instance called at several places, e.g. torchvision's ``BasicBlock.relu``):
   each extra call gets its own copy named ``<name>_<k>``, or, with ``reused="error"``, a ``ValueError`` names
   them. The copy remembers ``teacher_name`` / ``teacher_call`` so :func:`ltl_ext.tandem.pair` finds the k-th call
   of the teacher's module. After steps 1-2 the model is a ``torch.fx.GraphModule`` when either changed it.
3. **Dropout** modules become ``nn.Identity`` (names kept).
4. **BatchNorm folding** into the preceding conv/linear, exact in eval mode::

       W' = W * gamma / sqrt(var + eps)          (per output channel)
       b' = (b - mean) * gamma / sqrt(var + eps) + beta

   the BN module becomes ``nn.Identity``.
5. **Activations** (``ReLU``, ``ReLU6``, ``Hardtanh``, ``ClampReLU``; ``LeakyReLU`` with a warning) become deep
   copies of ``neuron`` at the same module name. The last weight layer (the readout) stays a non-spiking
   ``Linear``/conv whose output current, averaged over T, is the logits; activations after it are kept.
6. **Initialisation**: ``"random"`` re-initialises every conv/linear (``reset_parameters``, as the paper does);
   ``"teacher"`` keeps the folded weights and balances the layers (below).

Balancing (``init="teacher"``) keeps the neuron the user chose. On ``calib_data`` the ANN's activation a_l at each
neuron position gets a robust scale ``lambda_l = pct_p(a_l)`` (p = ``percentile``: by default the trainer's target
percentile for ``mode``, so the initial rates approximate the LTL targets y_l = clamp(a_l / lambda_l, 0, 1)).
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
gain instead, ``alpha' = alpha * u / u_l`` (threshold and surrogate still the user's). Adds of spikes of two
layers with different units are refused with the node name. Max-pooling of spikes over-estimates rates (avoid it
in students).

Functional activations, ``init="teacher"`` and splitting need the model to be traceable by ``torch.fx`` (all zoo
models and torchvision-style models are); BN folding falls back to adjacent ``(conv, bn)`` pairs inside
``nn.Sequential`` when it is not.
"""
from __future__ import annotations

import copy
import math
import operator
import warnings
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import ANN_ACTIVATIONS as ACTIVATIONS
from ..nn import LIF
from ..nn.zoo import Normalize
from .activations import WEIGHT_LAYERS, expose_activations, modularise, readout_position
from .activations import trace as _trace
from .tandem import percentile as _percentile

__all__ = ["convert", "expose_activations", "fold_batchnorm", "ACTIVATIONS", "TARGET_PERCENTILE"]

#: the LTL targets' default percentile per mode (the released code: 99.9 offline, 99 online); ``convert``
#: balances thresholds at the same one.
TARGET_PERCENTILE = {"offline": 99.9, "online": 99.0}

_BN = nn.modules.batchnorm._BatchNorm
_DROPOUT = (nn.modules.dropout._DropoutNd,)
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

#: the per-module hook dictionaries a trainer (or a user) may have filled; a converted student starts without them
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, field = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, field, module)


def _copy_without_hooks(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` whose modules carry none of ``model``'s forward/backward hooks (the teacher may
    carry a trainer's capture hooks; deep-copying those would copy their closures, the trainer and its teacher)."""
    memo = {}
    for m in model.modules():
        for attr in _HOOK_DICTS:
            hooks = m.__dict__.get(attr)
            if isinstance(hooks, dict):
                memo[id(hooks)] = type(hooks)()
    return copy.deepcopy(model, memo)


# ------------------------------------------------------------------------------------------------ BN folding
@torch.no_grad()
def fold_batchnorm(layer: nn.Module, bn: _BN) -> None:
    """Fold ``bn`` (eval-mode statistics) into the conv/linear ``layer`` that feeds it, in place (exact)::

        W' = W * gamma / sqrt(var + eps),   b' = (b - mean) * gamma / sqrt(var + eps) + beta
    """
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    w = layer.weight
    if w.shape[0] != bn.num_features:
        raise ValueError(f"BatchNorm has {bn.num_features} features but the layer has {w.shape[0]} outputs")
    dt = torch.float64
    scale = (bn.weight.to(dt) if bn.affine else 1.0) / (bn.running_var.to(dt) + bn.eps).sqrt()
    shift = bn.bias.to(dt) if bn.affine else 0.0
    b = layer.bias.to(dt) if layer.bias is not None else torch.zeros(w.shape[0], dtype=dt, device=w.device)
    new_w = w.to(dt) * scale.reshape(-1, *([1] * (w.dim() - 1)))
    new_b = (b - bn.running_mean.to(dt)) * scale + shift
    layer.weight = nn.Parameter(new_w.to(w.dtype))
    layer.bias = nn.Parameter(new_b.to(w.dtype))


def _bn_pairs(model: nn.Module, graph: Optional[fx.Graph]) -> List[Tuple[str, str]]:
    """(layer name, bn name) for every BN directly fed by a conv/linear whose output has no other use."""
    pairs = []
    if graph is not None:
        for node in graph.nodes:
            if node.op != "call_module" or not isinstance(model.get_submodule(node.target), _BN):
                continue
            prev = node.args[0] if node.args else None
            if (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                    and isinstance(model.get_submodule(prev.target), WEIGHT_LAYERS)):
                pairs.append((prev.target, node.target))
        return pairs
    for name, m in model.named_modules():  # fallback: adjacent (layer, bn) inside Sequential
        if isinstance(m, nn.Sequential):
            kids = list(m.named_children())
            for (n1, a), (n2, b) in zip(kids, kids[1:]):
                if isinstance(a, WEIGHT_LAYERS) and isinstance(b, _BN):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + n1, prefix + n2))
    return pairs


# ------------------------------------------------------------------------------------------------ calibration
def _batches(calib_data) -> Iterable[Tensor]:
    """Tensors from a tensor [N, ...] (in chunks of 256) or an iterable of tensors / (x, y, ...) tuples."""
    if isinstance(calib_data, Tensor):
        yield from calib_data.split(256)
        return
    for batch in calib_data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def _activation_scales(model: nn.Module, names: List[str], calib_data, p: float,
                       max_elements: int = 1 << 22) -> Dict[str, float]:
    """lambda_l = pct_p of the ANN activation at each named module over all calibration data."""
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
            model(x.to(device))
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
        lam = float(_percentile(a, p))
        if not lam > 0:
            warnings.warn(f"activation {n!r} is zero on all calibration data (pct_{p} = {lam}); using scale 1",
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
                        f"init='teacher': node {where!r} adds tensors with different scales ({u:.4g} vs {k:.4g}), "
                        f"e.g. spikes of two layers; give those layers a conv/linear on the path, or use "
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
            warnings.warn(msg, stacklevel=4)

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
                                     f"(it does not directly follow a conv/linear)")
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
            layer.weight.mul_(u_in / u_out)
            if layer.bias is not None:
                layer.bias.div_(u_out)
        for name, gain in self.gains.items():
            lif = self.model.get_submodule(name)
            lif.alpha = lif.alpha * gain


def _flat_nodes(a) -> List[fx.Node]:
    out: List[fx.Node] = []
    fx.node.map_arg(a, lambda n: out.append(n) or n)
    return out


# ------------------------------------------------------------------------------------------------ convert
def _split_reused(model: nn.Module, graph: fx.Graph, reused: str) -> Dict[str, Tuple[str, int]]:
    """Step 2 on ``graph`` (edited in place, copies registered on ``model``): each extra call of a reused
    activation module gets its own copy; returns ``{copy name: (module name, call index)}``."""
    calls: Dict[str, List[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), ACTIVATIONS):
            calls.setdefault(node.target, []).append(node)
    reused_names = {n: nodes for n, nodes in calls.items() if len(nodes) > 1}
    if reused_names and reused == "error":
        listing = ", ".join(f"{n!r} ({len(v)} calls)" for n, v in reused_names.items())
        raise ValueError(f"activation module instances used more than once: {listing}; a spiking neuron has "
                         f"state, so each use needs its own module (or call convert with reused='split')")
    split_from: Dict[str, Tuple[str, int]] = {}
    existing = {n for n, _ in model.named_modules()}
    for name, nodes in reused_names.items():
        for k, node in enumerate(nodes[1:], start=1):
            new = f"{name}_{k}"
            while new in existing:
                new += "_"
            existing.add(new)
            _set_submodule(model, new, copy.deepcopy(model.get_submodule(name)))
            node.target = new
            split_from[new] = (name, k)
    return split_from


def convert(ann: nn.Module, *, neuron: Optional[nn.Module] = None, init: str = "random", fold_bn: bool = True,
            drop_dropout: bool = True, calib_data=None, percentile: Optional[float] = None, mode: str = "offline",
            reused: str = "split") -> nn.Module:
    """The spiking student of ``ann`` (a copy without hooks; ``ann`` is unchanged). See the module docstring.

    Args:
        ann: the teacher ANN (any ``nn.Module``; conv/linear + activation modules or functions).
        neuron: template deep-copied for each activation (default ``LIF()``, the paper's neuron); ``None`` is
            not the default: pass ``neuron=False`` to keep the activations (BN folding / dropout removal only).
        init: ``"random"`` (re-initialise conv/linear) or ``"teacher"`` (folded weights, rescaled so that the
            user's neuron fires at a_l / lambda_l; needs ``calib_data`` and a scalar threshold and alpha).
        fold_bn: fold BatchNorm into the preceding conv/linear (else BN stays; it then sees [T*B, ...]).
        drop_dropout: replace dropout by identity.
        calib_data: for ``init="teacher"``: a tensor [N, ...] or an iterable of batches (tensors or (x, y)).
        percentile: p of the robust activation scale lambda_l = pct_p(a_l); default ``TARGET_PERCENTILE[mode]``,
            the percentile of the LTL targets the student will be trained on (99.9 offline, 99 online).
        mode: ``"offline"`` or ``"online"``, the LTL mode the student is for (only sets the default percentile).
        reused: ``"split"`` (each use of a reused activation module gets its own LIF) or ``"error"``.

    Returns: the student model (same module names, plus one per functional activation; a ``torch.fx.GraphModule``
    if a functional activation was replaced or a reused activation split), in the teacher's train/eval mode, its
    conv/linear parameters trainable (``requires_grad=True``) even if the teacher's were frozen. Wrap it in
    :class:`ltl_ext.nn.SpikingModel` to run it.
    """
    if init not in ("random", "teacher"):
        raise ValueError(f"init must be 'random' or 'teacher', got {init!r}")
    if reused not in ("split", "error"):
        raise ValueError(f"reused must be 'split' or 'error', got {reused!r}")
    if mode not in TARGET_PERCENTILE:
        raise ValueError(f"mode must be one of {tuple(TARGET_PERCENTILE)}, got {mode!r}")
    if percentile is None:
        percentile = TARGET_PERCENTILE[mode]
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}")
    if neuron is None:
        neuron = LIF()
    keep_activations = neuron is False
    if init == "teacher":
        if calib_data is None:
            raise ValueError("init='teacher' needs calib_data (a batch or a loader of training inputs) to balance "
                             "the layers")
        if keep_activations or not isinstance(neuron, LIF):
            raise ValueError("init='teacher' needs neuron to be a LIF")
        if neuron.threshold.dim() != 0 or neuron.alpha.dim() != 0:
            raise ValueError("init='teacher' balances layers for a scalar threshold and alpha; give neuron scalar "
                             "ones (set per-neuron values after converting)")
    model = _copy_without_hooks(ann)
    training = ann.training
    graph, why = _trace(model)

    # 1-2. functional activations -> modules; reused activation modules -> one module per call
    split_from: Dict[str, Tuple[str, int]] = {}
    if graph is not None and not keep_activations:
        functional = modularise(model, graph)
        for name, m in functional.items():
            model.add_module(name, m)
        split_from = _split_reused(model, graph, reused)
        if functional or split_from:
            model = fx.GraphModule(model, graph, class_name=type(ann).__name__)
            graph = model.graph
    elif not keep_activations:
        warnings.warn(f"convert: the model is not torch.fx-traceable ({why}); functional activations (F.relu, ...) "
                      f"and reused activation modules cannot be detected (use one activation module per use)",
                      stacklevel=2)

    # 3. dropout
    if drop_dropout:
        for name, m in list(model.named_modules()):
            if name and isinstance(m, _DROPOUT):
                _set_submodule(model, name, nn.Identity())

    # 4. BN folding
    if fold_bn:
        folded = set()
        for layer_name, bn_name in _bn_pairs(model, graph):
            bn = model.get_submodule(bn_name)
            if bn.track_running_stats and bn.running_mean is not None:
                fold_batchnorm(model.get_submodule(layer_name), bn)
                _set_submodule(model, bn_name, nn.Identity())
                folded.add(bn_name)
        left = [n for n, m in model.named_modules() if isinstance(m, _BN) and n not in folded]
        if left:
            warnings.warn(f"convert: BatchNorm not folded (no conv/linear directly before it, or no running "
                          f"statistics): {left}", stacklevel=2)

    if keep_activations:
        model.train(training)
        return model

    # 5. which activations become neurons: all those before the readout (the last weight layer)
    if graph is not None:
        order = [n.target for n in graph.nodes if n.op == "call_module"]
    else:
        order = [n for n, _ in model.named_modules()]
    weights = [i for i, n in enumerate(order) if isinstance(model.get_submodule(n), WEIGHT_LAYERS)]
    last = weights[-1] if weights else len(order)
    names: List[str] = []
    for n in order[:last]:
        m = model.get_submodule(n)
        if isinstance(m, ACTIVATIONS) and n not in names:
            names.append(n)
            if isinstance(m, nn.LeakyReLU):
                warnings.warn(f"convert: {n!r} is a LeakyReLU; a spiking neuron cannot output negative values, so "
                              f"its negative slope is lost", stacklevel=2)
            elif isinstance(m, nn.Hardtanh) and m.min_val < 0:
                warnings.warn(f"convert: {n!r} is a Hardtanh with min_val = {m.min_val} < 0; a spiking neuron "
                              f"clips at 0", stacklevel=2)

    # teacher statistics (on the folded ANN, activations still in place)
    scales = _activation_scales(model, names, calib_data, percentile) if init == "teacher" else {}

    # activations -> neurons
    for n in names:
        lif = copy.deepcopy(neuron)
        if isinstance(lif, LIF):
            lif.teacher_name, lif.teacher_call = split_from.get(n, (n, 0))
        _set_submodule(model, n, lif)
    if isinstance(model, fx.GraphModule):
        model.recompile()

    # 6. initialisation; the student's weights are trainable even if the teacher's were frozen
    for m in model.modules():
        if isinstance(m, WEIGHT_LAYERS):
            for q in m.parameters(recurse=False):
                q.requires_grad_(True)
    if init == "random":
        for m in model.modules():
            if isinstance(m, WEIGHT_LAYERS):
                m.reset_parameters()
    else:
        graph, why = _trace(model)
        if graph is None:
            raise ValueError(f"init='teacher' needs a torch.fx-traceable model to balance the layers: {why}")
        units = _Units(model, graph, scales)
        units.run()
        units.apply()
    model.train(training)
    return model
