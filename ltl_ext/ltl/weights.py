"""Writing a conv/linear's parameters, also where they are computed.

A parametrized tensor (``torch.nn.utils.parametrize``: ``parametrizations.weight_norm``, ``orthogonal``, a user's
own) is computed anew at every read, so an in-place write into it (``layer.weight.mul_(...)``,
``layer.reset_parameters()``) lands in that fresh copy and changes nothing: the layer keeps its old values without
a word. :func:`assign` writes through the parametrization's ``right_inverse`` instead, and :func:`reinitialise`
re-initialises a layer through it.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["assign", "reinitialise"]


@torch.no_grad()
def assign(layer: nn.Module, name: str, value: Tensor) -> None:
    """Set ``layer.<name>`` to ``value`` in place: a plain parameter is copied into, a parametrized one is set
    through its parametrizations' ``right_inverse`` (``ValueError`` naming the layer's class when one has none)."""
    if not parametrize.is_parametrized(layer, name):
        getattr(layer, name).copy_(value)
        return
    try:
        setattr(layer, name, value.detach())    # (a Parameter value would be registered as a new parameter)
    except RuntimeError as e:             # parametrize's "does not implement right_inverse"
        chain = ", ".join(type(p).__name__ for p in layer.parametrizations[name])
        raise ValueError(f"cannot set the {name} of a {type(layer).__name__} parametrized by {chain}: {e} Give the "
                         f"parametrization a right_inverse, or remove it first (torch.nn.utils.parametrize."
                         f"remove_parametrizations)") from e


@torch.no_grad()
def reinitialise(layer: nn.Module) -> None:
    """``layer.reset_parameters()``, which for a parametrized layer re-initialises a plain copy of it and assigns
    the copy's values (:func:`assign`): the parametrizations stay, their tensors get the fresh values."""
    if not parametrize.is_parametrized(layer):
        layer.reset_parameters()
        return
    # a plain copy: the layer's own class, its parametrized tensors as parameters. (Not remove_parametrizations on
    # a deep copy: it deletes the tensor's property from the parametrized class, which the copy shares with layer.)
    values = {name: getattr(layer, name).detach().clone() for name in layer.parametrizations}
    plain = copy.deepcopy(layer)
    plain.__class__ = parametrize.type_before_parametrizations(layer)
    del plain._modules["parametrizations"]
    for name, value in values.items():
        plain.register_parameter(name, nn.Parameter(value))
    plain.reset_parameters()
    for name, value in plain.named_parameters(recurse=False):
        assign(layer, name, value)
