"""Module swapping on the student's copy: what :func:`ltl_ext.convert` replaces, removes and splits, by module name.

- :func:`copy_without_hooks`: the ANN's copy, without the hooks a trainer (or a user) left on it;
- :func:`split_reused`: each extra call of a reused activation module gets its own copy (a neuron has state);
- :func:`drop_dropout`: dropout modules become ``nn.Identity``; :func:`drop_functional_dropout`: ``F.dropout``
  calls are erased;
- :func:`neuron_names` / :func:`to_neurons`: which activations become neurons (those before the readout) and the
  swap itself, each neuron remembering the teacher module (and call) it stands for.
"""
from __future__ import annotations

import copy
import warnings
from typing import Dict, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..nn import ANN_ACTIVATIONS as ACTIVATIONS
from ..nn import LIF
from .activations import WEIGHT_LAYERS, before_readout, refuse, unsupported_module

DROPOUT = (nn.modules.dropout._DropoutNd,)
DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
                     torch.dropout, torch.dropout_, torch.alpha_dropout, torch.feature_dropout}

#: the per-module hook dictionaries a trainer (or a user) may have filled; a converted student starts without them
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``name`` inside ``root`` (replacing what was there)."""
    parent, _, field = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, field, module)


def _weight_hooks():
    """The hook objects through which a module's weight is computed: the hook forms of weight norm, spectral norm
    and pruning (``torch.nn.utils.weight_norm``, ``spectral_norm``, ``prune``), with what to do instead of each."""
    from torch.nn.utils import prune
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm
    return {WeightNorm: "torch.nn.utils.weight_norm (the deprecated hook form): use torch.nn.utils.parametrizations."
                        "weight_norm, or remove it first with torch.nn.utils.remove_weight_norm(layer)",
            SpectralNorm: "torch.nn.utils.spectral_norm (the hook form): use torch.nn.utils.parametrizations."
                          "spectral_norm, or remove it first with torch.nn.utils.remove_spectral_norm(layer)",
            prune.BasePruningMethod: "torch.nn.utils.prune (a hook recomputing weight = weight_orig * mask): make "
                                     "the pruning permanent first with torch.nn.utils.prune.remove(layer, 'weight'), "
                                     "or apply the mask as a parametrization (torch.nn.utils.parametrize)"}


def copy_without_hooks(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` whose modules carry none of ``model``'s forward/backward hooks (the teacher may
    carry a trainer's capture hooks; deep-copying those would copy their closures, the trainer and its teacher).

    A hook that computes a module's weight (weight norm, spectral norm or pruning in their hook forms) is part of
    the layer, not an observer: without it the copy's weight would be a stale tensor that training never reaches.
    Such a model is refused with a ``ValueError`` naming the module and the parametrization form to use."""
    weight_hooks = _weight_hooks()
    for name, m in model.named_modules():
        for hook in m._forward_pre_hooks.values():
            why = next((w for kind, w in weight_hooks.items() if isinstance(hook, kind)), None)
            if why is not None:
                raise ValueError(f"convert: module {name!r} ({type(m).__name__}) computes its weight through {why}")
    memo = {}
    for m in model.modules():
        for attr in _HOOK_DICTS:
            hooks = m.__dict__.get(attr)
            if isinstance(hooks, dict):
                memo[id(hooks)] = type(hooks)()
    return copy.deepcopy(model, memo)


def split_reused(model: nn.Module, graph: fx.Graph, reused: str) -> Dict[str, Tuple[str, int]]:
    """On ``graph`` (edited in place, copies registered on ``model``): each extra call of a reused activation
    module gets its own copy named ``<name>_<k>``; returns ``{copy name: (module name, call index)}``.
    ``reused="error"`` raises a ``ValueError`` naming the reused modules instead."""
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
            set_submodule(model, new, copy.deepcopy(model.get_submodule(name)))
            node.target = new
            split_from[new] = (name, k)
    return split_from


def drop_dropout(model: nn.Module) -> None:
    """Every dropout module of ``model`` becomes ``nn.Identity`` (names kept), in place."""
    for name, m in list(model.named_modules()):
        if name and isinstance(m, DROPOUT):
            set_submodule(model, name, nn.Identity())


def drop_functional_dropout(graph: fx.Graph) -> bool:
    """Functional dropout calls (``F.dropout(x, p, self.training)`` & co) erased from ``graph`` (in place), each
    replaced by its input; whether there was any. Left in, they would drop the student's spikes in train mode, and
    scale the survivors to 1 / (1 - p), which no spike is."""
    found = [n for n in graph.nodes if n.op == "call_function" and n.target in DROPOUT_FUNCTIONS]
    for node in found:
        node.replace_all_uses_with(node.args[0] if node.args else node.kwargs["input"])
        graph.erase_node(node)
    return bool(found)


def neuron_names(model: nn.Module, graph: Optional[fx.Graph]) -> List[str]:
    """The activation modules that become neurons: all those called before the readout (the last weight layer),
    in call order (module order when there is no graph). Raises a ``ValueError`` naming the activation modules no
    neuron can stand for (GELU & co) before it; warns (at ``convert``'s caller) where the neuron cannot follow the
    activation: a LeakyReLU's negative slope, a Hardtanh below 0."""
    order = before_readout(model, graph)
    # (a traced model's were refused by modularise already; an untraceable one's GELU & co stayed analog silently)
    refuse([f"{n!r} ({type(model.get_submodule(n)).__name__})" for n in order
            if unsupported_module(model.get_submodule(n))])
    names: List[str] = []
    for n in order:
        m = model.get_submodule(n)
        if isinstance(m, ACTIVATIONS) and n not in names:
            names.append(n)
            if isinstance(m, nn.LeakyReLU):
                warnings.warn(f"convert: {n!r} is a LeakyReLU; a spiking neuron cannot output negative values, so "
                              f"its negative slope is lost", stacklevel=3)
            elif isinstance(m, nn.Hardtanh) and m.min_val < 0:
                warnings.warn(f"convert: {n!r} is a Hardtanh with min_val = {m.min_val} < 0; a spiking neuron "
                              f"clips at 0", stacklevel=3)
            elif isinstance(m, nn.Hardtanh) and m.min_val > 0:   # (the same clamp written x.clamp(lo, hi) is refused)
                warnings.warn(f"convert: {n!r} is a Hardtanh with min_val = {m.min_val} > 0; a spiking neuron's "
                              f"rate goes down to 0, so the teacher's floor is lost", stacklevel=3)
    if graph is None:   # module order stands in for call order: an activation defined after the readout stayed analog
        kept = [n for n, m in model.named_modules() if isinstance(m, ACTIVATIONS) and n not in names]
        weights = [n for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]
        if kept and weights:
            warnings.warn(f"convert: the model does not trace, so its readout is taken to be the conv/linear defined "
                          f"last, {weights[-1]!r}; the activations defined after it stay as they are, not neurons: "
                          f"{kept}. If one is called before the readout, define the modules in call order or make "
                          f"the model torch.fx-traceable", stacklevel=3)
    return names


def to_neurons(model: nn.Module, names: List[str], neuron: nn.Module,
               split_from: Dict[str, Tuple[str, int]]) -> None:
    """Each named activation becomes a deep copy of ``neuron`` at the same name, in place; a LIF remembers the
    teacher module and call it stands for (``teacher_name``, ``teacher_call``) for the pairing."""
    for n in names:
        lif = copy.deepcopy(neuron)
        if isinstance(lif, LIF):
            lif.teacher_name, lif.teacher_call = split_from.get(n, (n, 0))
        set_submodule(model, n, lif)
    if isinstance(model, fx.GraphModule):
        model.recompile()
