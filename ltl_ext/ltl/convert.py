"""Turn any ANN into its spiking student: :func:`convert`.

Steps, on a copy of the ANN without its hooks (the ANN itself is never modified; a layer whose weight a hook
computes, the hook forms of weight norm, spectral norm and pruning, is refused with the parametrization to use):

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
   of the teacher's module. After steps 1-3 the model is a ``torch.fx.GraphModule`` when one changed its graph.
3. **Dropout** modules become ``nn.Identity`` (names kept); functional dropout (``F.dropout`` & co) is erased
   from the graph. The model is traced in eval mode (``self.training`` is baked into a traced graph).
4. **BatchNorm folding** into the preceding conv/linear, exact in eval mode::

       W' = W * gamma / sqrt(var + eps)          (per output channel)
       b' = (b - mean) * gamma / sqrt(var + eps) + beta

   the BN module becomes ``nn.Identity``.
5. **Activations** (``ReLU``, ``ReLU6``, ``Hardtanh``, ``ClampReLU``; ``LeakyReLU`` with a warning) become deep
   copies of ``neuron`` at the same module name. The last weight layer (the readout) stays a non-spiking
   ``Linear``/conv whose output current, averaged over T, is the logits; activations after it are kept.
6. **Initialisation**: ``"random"`` re-initialises every conv/linear (``reset_parameters``, as the paper does; a
   parametrized one through its parametrization, :mod:`.weights`);
   ``"teacher"`` keeps the folded weights and balances the layers (below).

Balancing (``init="teacher"``) keeps the neuron the user chose and moves the scale of each activation into the
weights and biases of the layer that feeds it (:mod:`.balancing` has the units and their propagation).

Functional activations, ``init="teacher"`` and splitting need the model to be traceable by ``torch.fx`` (all zoo
models and torchvision-style models are); BN folding falls back to adjacent ``(conv, bn)`` pairs inside
``nn.Sequential`` when it is not.

The steps live in their own modules: :mod:`.activations` (step 1), :mod:`.swap` (steps 2, 3, 5: module swapping),
:mod:`.folding` (step 4), :mod:`.balancing` (step 6, ``init="teacher"``); this module runs them in order.
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Tuple

import torch.fx as fx
from torch import nn

from ..nn import ANN_ACTIVATIONS as ACTIVATIONS
from ..nn import LIF
from .activations import WEIGHT_LAYERS, expose_activations, modularise, rewire_in_place
from .activations import trace as _trace
from .balancing import activation_scales, balance
from .folding import fold_all, fold_batchnorm
from .swap import copy_without_hooks, drop_functional_dropout, neuron_names, split_reused, to_neurons
from .swap import drop_dropout as _drop_dropout
from .weights import reinitialise

__all__ = ["convert", "expose_activations", "fold_batchnorm", "ACTIVATIONS", "TARGET_PERCENTILE"]

#: the LTL targets' default percentile per mode (the released code: 99.9 offline, 99 online); ``convert``
#: balances thresholds at the same one.
TARGET_PERCENTILE = {"offline": 99.9, "online": 99.0}


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
        drop_dropout: replace dropout modules by identity, erase functional dropout (traceable models).
        calib_data: for ``init="teacher"``: a tensor [N, ...] or an iterable of batches (tensors or (x, y)).
        percentile: p of the robust activation scale lambda_l = pct_p(a_l); default ``TARGET_PERCENTILE[mode]``,
            the percentile of the LTL targets the student will be trained on (99.9 offline, 99 online).
        mode: ``"offline"`` or ``"online"``, the LTL mode the student is for (only sets the default percentile).
        reused: ``"split"`` (each use of a reused activation module gets its own LIF) or ``"error"``.

    Returns: the student model (same module names, plus one per functional activation; a ``torch.fx.GraphModule``
    if a functional activation was replaced, a reused activation split or functional dropout erased), in the
    teacher's train/eval mode, its conv/linear parameters trainable (``requires_grad=True``) even if the teacher's
    were frozen. Wrap it in :class:`ltl_ext.nn.SpikingModel` to run it.
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
    model = copy_without_hooks(ann)
    training = ann.training
    graph, why = _trace(model)

    # 1-2. functional activations -> modules; reused activation modules -> one module per call; (3.) functional
    # dropout erased
    split_from: Dict[str, Tuple[str, int]] = {}
    if graph is not None:
        functional = {} if keep_activations else modularise(model, graph)
        for name, m in functional.items():
            model.add_module(name, m)
        split_from = {} if keep_activations else split_reused(model, graph, reused)
        rewired = not keep_activations and rewire_in_place(model, graph)   # nn.ReLU(inplace=True) as a statement
        dropped = drop_dropout and drop_functional_dropout(graph)
        if functional or split_from or rewired or dropped:
            model = fx.GraphModule(model, graph, class_name=type(ann).__name__)
            graph = model.graph
    elif not keep_activations:
        warnings.warn(f"convert: the model is not torch.fx-traceable ({why}); functional activations (F.relu, ...) "
                      f"and reused activation modules cannot be detected (use one activation module per use)",
                      stacklevel=2)

    # 3. dropout
    if drop_dropout:
        _drop_dropout(model)

    # 4. BN folding
    if fold_bn:
        fold_all(model, graph)

    if keep_activations:
        model.train(training)
        return model

    # 5. activations -> neurons: all those before the readout (the last weight layer); the teacher statistics are
    # taken first, on the folded ANN with its activations still in place
    names = neuron_names(model, graph)
    if not names:   # e.g. activations as torch.maximum(x, 0) or nn.Threshold: the "student" would be a linear ANN
        warnings.warn("convert: found no activation before the readout to turn into a spiking neuron (modules "
                      "nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, ClampReLU, or F.relu & co in forward); the "
                      "student has no neuron", stacklevel=2)
    scales = activation_scales(model, names, calib_data, percentile) if init == "teacher" else {}
    to_neurons(model, names, neuron, split_from)

    # 6. initialisation; the student's weights are trainable even if the teacher's were frozen
    for m in model.modules():
        if isinstance(m, WEIGHT_LAYERS):
            for q in m.parameters(recurse=False):
                q.requires_grad_(True)
    if init == "random":
        for m in model.modules():
            if isinstance(m, WEIGHT_LAYERS):
                reinitialise(m)      # (a parametrized layer's reset_parameters would write into a computed copy)
    else:
        balance(model, scales)
    model.train(training)
    return model
