"""BatchNorm folding: a BN in eval mode merged, exactly, into the conv/linear that feeds it.

::

    W' = W * gamma / sqrt(var + eps)          (per output channel)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta

:func:`fold_batchnorm` folds one pair; :func:`fold_all` finds every BN directly fed by a conv/linear whose output
has no other use, both called once (on the ``torch.fx`` graph, or adjacent ``(layer, bn)`` children of an
``nn.Sequential`` when the model does not trace), folds it and puts ``nn.Identity`` in its place.

Two things the weights alone do not tell:

- A BN normalises dim 1 of its input. After a conv that is the conv's output channels; after a Linear only when
  the Linear's output is 2-D ``[N, features]``: on ``[N, L, features]`` ``BatchNorm1d`` normalises L, which no
  Linear weight can take. So a BN folded into a Linear leaves :class:`FoldedIntoLinear` in its place, an identity
  that raises a ``ValueError`` naming both layers on an input that is not 2-D (nothing here sees the input).
- Without a graph (a model ``torch.fx`` cannot trace), the pairs are adjacent children of an ``nn.Sequential``
  whose ``forward`` is ``nn.Sequential``'s own, each module found once in the model; that the BN then runs on the
  layer's output, once, is *assumed* (a ``forward`` may call ``seq[0]`` on its own): no input is at hand to check it
  on, so :func:`fold_all` warns naming the pairs folded on that assumption.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .activations import WEIGHT_LAYERS
from .swap import set_submodule

BN = nn.modules.batchnorm._BatchNorm


@torch.no_grad()
def fold_batchnorm(layer: nn.Module, bn: BN) -> None:
    """Fold ``bn`` (eval-mode statistics) into the conv/linear ``layer`` that feeds it, in place (exact)::

        W' = W * gamma / sqrt(var + eps),   b' = (b - mean) * gamma / sqrt(var + eps) + beta

    Exact only where the BN normalises the layer's outputs: for a Linear, a 2-D output ``[N, features]`` (see the
    module docstring; :func:`fold_all` guards that at run time, this function cannot see the input).
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
    # fallback: adjacent (layer, bn) children of a Sequential that runs its children in order (its forward is
    # Sequential's own), neither module found twice in the model (shared: it may be called elsewhere too)
    seen: Dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        seen[id(m)] = seen.get(id(m), 0) + 1
    for name, m in model.named_modules():
        if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
            kids = list(m.named_children())
            for (n1, a), (n2, b) in zip(kids, kids[1:]):
                if isinstance(a, WEIGHT_LAYERS) and isinstance(b, BN) and seen[id(a)] == seen[id(b)] == 1:
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + n1, prefix + n2))
    return pairs


class FoldError(ValueError):
    """A folded BN met an input on which its fold is not exact (:class:`FoldedIntoLinear`)."""


class FoldedIntoLinear(nn.Identity):
    """What a BN folded into a Linear leaves in its place: the identity on a 2-D input ``[N, features]``. On any
    other input the BN normalised dim 1, not the Linear's features, so the folded model computes another function
    than the teacher: a :class:`FoldError` (a ``ValueError``) naming both layers instead of that function."""

    def __init__(self, layer: str, bn: str):
        super().__init__()
        self.layer, self.bn = layer, bn

    def forward(self, x: Tensor) -> Tensor:
        # (traced by torch.fx, x is a Proxy: nothing to check, the graph passes x on)
        if isinstance(x, Tensor) and x.dim() != 2:
            raise FoldError(f"convert folded BatchNorm {self.bn!r} into Linear {self.layer!r}, which is exact for "
                            f"a 2-D input [N, features] only; here the Linear's output is {x.dim()}-D, and the BN "
                            f"normalised its dim 1, not the Linear's features, so the folded model differs from the "
                            f"teacher. Convert with fold_bn=False, or normalise the features (e.g. BatchNorm1d on "
                            f"x.transpose(1, 2), or LayerNorm)")
        return x

    def extra_repr(self) -> str:
        return f"folded into {self.layer!r}"


def fold_all(model: nn.Module, graph: Optional[fx.Graph]) -> None:
    """Fold every foldable BN of ``model`` in place (each becomes ``nn.Identity``, or :class:`FoldedIntoLinear`
    after a Linear); warns (at ``convert``'s caller) naming those left and, without a graph, those folded on the
    assumption that the BN runs on the layer's output (module docstring)."""
    folded = {}
    for layer_name, bn_name in bn_pairs(model, graph):
        bn = model.get_submodule(bn_name)
        # a parametrized layer (weight_norm & co) is left, with its BN: removing its parametrization here would also
        # strip the teacher's layer, whose class a deep copy shares; a BN over another dim than the layer's outputs
        # (as many features as a Linear's input has rows, say) stays too
        layer = model.get_submodule(layer_name)
        if (bn.track_running_stats and bn.running_mean is not None and not parametrize.is_parametrized(layer)
                and layer.weight.shape[0] == bn.num_features):
            fold_batchnorm(layer, bn)
            kept = FoldedIntoLinear(layer_name, bn_name) if isinstance(layer, nn.Linear) else nn.Identity()
            set_submodule(model, bn_name, kept)
            folded[bn_name] = layer_name
    left = [n for n, m in model.named_modules() if isinstance(m, BN) and n not in folded]
    if left:
        warnings.warn(f"convert: BatchNorm not folded (no conv/linear directly before it, one of the "
                      f"two called more than once, no running statistics, a parametrized conv/linear, or other "
                      f"features than the layer's outputs): {left}", stacklevel=3)
    if graph is None and folded:
        pairs = [(layer, bn) for bn, layer in folded.items()]
        warnings.warn(f"convert: the model does not trace, so BatchNorm folding took each BN to run right after the "
                      f"conv/linear before it in its nn.Sequential, on its output, once: folded (layer, bn) {pairs}. "
                      f"If forward calls them otherwise (one of them on its own, or twice), the student computes "
                      f"another function: convert with fold_bn=False", stacklevel=3)
