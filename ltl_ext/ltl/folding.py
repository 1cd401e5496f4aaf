"""BatchNorm folding: a BN in eval mode merged, exactly, into the conv/linear that feeds it.

::

    W' = W * gamma / sqrt(var + eps)          (per output channel)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta

:func:`fold_batchnorm` folds one pair; :func:`fold_all` finds every BN directly fed by a conv/linear whose output
has no other use, both called once (on the ``torch.fx`` graph, or adjacent ``(layer, bn)`` children of an
``nn.Sequential`` when the model does not trace), folds it and puts ``nn.Identity`` in its place.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from .activations import WEIGHT_LAYERS
from .swap import set_submodule

BN = nn.modules.batchnorm._BatchNorm


@torch.no_grad()
def fold_batchnorm(layer: nn.Module, bn: BN) -> None:
    """Fold ``bn`` (eval-mode statistics) into the conv/linear ``layer`` that feeds it, in place (exact)::

        W' = W * gamma / sqrt(var + eps),   b' = (b - mean) * gamma / sqrt(var + eps) + beta
    """
    # a ConvTranspose's weight is [in, out / groups, ...]: its dim 0 is no output channel, scaling it would be wrong
    if not isinstance(layer, WEIGHT_LAYERS):
        raise TypeError(f"fold_batchnorm folds into a Conv1d/2d/3d or Linear, got {type(layer).__name__}")
    if not bn.track_running_stats or bn.running_mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    if parametrize.is_parametrized(layer):   # weight norm & co: assigning a folded weight would not be exact
        raise ValueError(f"cannot fold a BatchNorm into a {type(layer).__name__} whose parameters are parametrized "
                         f"(weight_norm & co); remove that first: torch.nn.utils.parametrize.remove_parametrizations"
                         f"(layer, 'weight')")
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


def bn_pairs(model: nn.Module, graph: Optional[fx.Graph]) -> List[Tuple[str, str]]:
    """(layer name, bn name) for every BN directly fed by a conv/linear whose output has no other use, each of the
    two modules called once: folding changes the module, so a conv called twice (shared weights) would be folded
    twice, and a BN called twice would be erased at its other call too."""
    pairs = []
    if graph is not None:
        calls: Dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        for node in graph.nodes:
            if node.op != "call_module" or not isinstance(model.get_submodule(node.target), BN):
                continue
            prev = node.args[0] if node.args else None
            if (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                    and isinstance(model.get_submodule(prev.target), WEIGHT_LAYERS)
                    and calls[prev.target] == 1 and calls[node.target] == 1):
                pairs.append((prev.target, node.target))
        return pairs
    for name, m in model.named_modules():  # fallback: adjacent (layer, bn) inside Sequential
        if isinstance(m, nn.Sequential):
            kids = list(m.named_children())
            for (n1, a), (n2, b) in zip(kids, kids[1:]):
                if isinstance(a, WEIGHT_LAYERS) and isinstance(b, BN):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + n1, prefix + n2))
    return pairs


def fold_all(model: nn.Module, graph: Optional[fx.Graph]) -> None:
    """Fold every foldable BN of ``model`` in place (each becomes ``nn.Identity``); warns (at ``convert``'s caller)
    naming those left."""
    folded = set()
    for layer_name, bn_name in bn_pairs(model, graph):
        bn = model.get_submodule(bn_name)
        # a parametrized layer (weight_norm & co) is left, with its BN: removing its parametrization here would also
        # strip the teacher's layer, whose class a deep copy shares
        layer = model.get_submodule(layer_name)
        if bn.track_running_stats and bn.running_mean is not None and not parametrize.is_parametrized(layer):
            fold_batchnorm(layer, bn)
            set_submodule(model, bn_name, nn.Identity())
            folded.add(bn_name)
    left = [n for n, m in model.named_modules() if isinstance(m, BN) and n not in folded]
    if left:
        warnings.warn(f"convert: BatchNorm not folded (no conv/linear directly before it, one of the "
                      f"two called more than once, no running statistics, or a parametrized conv/linear): {left}",
                      stacklevel=3)
