"""Analog device non-idealities: device models, chip instances, and what on-chip calibration may touch.

A *chip* is a spiking student programmed onto an analog in-memory-computing substrate (ltl-method.md §7). It is
an ordinary ``nn.Module`` (a deep copy of the student) whose synaptic weights go through a
:mod:`torch.nn.utils.parametrize` parametrization::

    w_eff = stuck( read( vary( quantise( w_prog ) ) ) )

- ``w_prog`` (``<layer>.parametrizations.weight.original``) is the *programmed* weight: the only weight
  parameter of the chip, and the one that calibration (on-chip LTL) updates;
- ``quantise``: ``levels`` uniformly spaced conductance levels on ``[-w_max, w_max]`` per layer
  (``w_max = max |w|`` of the layer when it was programmed), straight-through gradient;
- ``vary``: the fixed programming variation of this chip instance, drawn once from the seed:
  ``w (1 + sigma eps)`` (multiplicative) or ``w + sigma w_max eps`` (additive), ``eps ~ N(0, 1)``;
- ``read``: read noise, a fresh draw at every forward (same ``mode`` as the programming variation);
- ``stuck``: a fraction ``stuck_off`` of the devices reads 0 and ``stuck_on`` reads ``+-w_max`` (random sign),
  whatever was programmed (no gradient reaches them).

Neuron mismatch (``threshold_sigma``, ``beta_sigma``) turns each LIF's scalar threshold / leak into per-neuron
tensors ``theta (1 + sigma_theta eps)``, ``clamp(beta (1 + sigma_beta eps), 0, 1)``, again through a
parametrization over the nominal (programmed) value (``lif.parametrizations.threshold.original``), so
calibrating thresholds changes the programmed value and never the mismatch. On a chip every threshold (with or
without mismatch) is a parameter with ``requires_grad=False`` until calibration asks for it
(``train_thresholds=True``); :func:`unprogram` gives back the form the student had. The neuron shape is
taken from ``example_input`` (a dry forward) or, without one, at
the chip's first forward; the draw depends only on the seed and the layer, so both give the same chip.

All the noise lives in buffers (``eps``, stuck masks, ``w_max``): calibration, whose optimiser sees only
parameters, cannot change it. Biases are left ideal (digital periphery; calibration may retune them like the
programmed weights) and every Linear/Conv layer, the first and the readout included, is on the chip.

Other physics (``DeviceModel(differential=True)`` or ``physics="pcm"``, e.g. ``DeviceModel.preset("pcm",
t=3600)``) put each weight on a differential pair of devices instead (:class:`~ltl_ext.hw.pairs.PairWeight`:
programming noise, PCM drift and read noise, stuck devices, global drift compensation); ``dac_bits`` /
``adc_bits`` add converters to every layer (:mod:`ltl_ext.hw.converters`). ``at(chip, t)`` is the same chip ``t``
seconds after programming.

Typical use::

    dev = DeviceModel(programming_sigma=0.2)
    chip = program(student, dev, seed=7)           # the student is left untouched
    save_chip(chip, "chip7.pt"); chip = load_chip("chip7.pt", student)
    clean = unprogram(chip)                          # the programmed weights in a plain model

    with noise_aware(student, read_sigma=0.1):       # noise-aware training: read noise on in every forward
        trainer.fit(loader, epochs=1)

This module is the face (``ltl_ext.noise``): the names above come from :mod:`.devices` (device models and
presets), :mod:`.analog` (the parametrizations of one weight or neuron parameter), :mod:`.pairs` (differential
pairs) and :mod:`.chip` (programming, ageing, unprogramming, saving a chip); what it holds itself is noise during
training: :func:`noise_aware` and :func:`read_noise`.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn
from torch.nn.utils import parametrize

from .analog import AnalogWeight, NeuronMismatch, quantise  # noqa: F401 (ltl_ext.noise names)
from .chip import (CHIP_FORMAT, _copy_model, analog_layers, at, chip_info, lif_layers, load_chip,  # noqa: F401
                   noise_buffers, program, programmed_parameters, save_chip, unprogram)
from .devices import MODES, PHYSICS, PRESETS, DeviceModel  # noqa: F401 (ltl_ext.noise names)
from .pairs import PairWeight

__all__ = ["DeviceModel", "PRESETS", "AnalogWeight", "PairWeight", "NeuronMismatch", "program", "at", "unprogram",
           "save_chip", "load_chip",
           "chip_info", "noise_aware", "read_noise", "analog_layers", "lif_layers", "noise_buffers",
           "programmed_parameters"]


# -------------------------------------------------------------------------------------- noise-aware training
@contextlib.contextmanager
def noise_aware(model: nn.Module, read_sigma: float = 0.1, mode: str = "multiplicative") -> Iterator[nn.Module]:
    """Read noise on every analog weight of ``model`` *in place* for the duration of the block (noise-aware
    training, or calibration with read noise on). The parameters stay the same objects, so an optimiser built
    before the block keeps working; on exit the model is plain again, holding the trained weights. Its
    ``state_dict`` keeps the plain model's keys inside the block too, so a checkpoint written there (``trainer.fit(
    ..., checkpoint=...)``) loads into the plain model, and back into the block (resume).
    """
    dev = DeviceModel(programming_sigma=0.0, mode=mode, read_sigma=read_sigma)
    done, handles = [], []
    try:
        for i, (name, m) in enumerate(analog_layers(model)):
            if parametrize.is_parametrized(m, "weight"):
                if any(isinstance(p, (AnalogWeight, PairWeight)) for p in m.parametrizations.weight):
                    continue  # already a chip layer: it has its own read noise setting
                # another parametrization (e.g. weight_norm): skipping it trained the layer without noise, unnoticed
                raise ValueError(f"layer {name!r} has a parametrized weight (e.g. weight_norm) that "
                                 f"noise_aware cannot add read noise to: remove the parametrization first "
                                 f"(torch.nn.utils.parametrize.remove_parametrizations(layer, 'weight'))")
            parametrize.register_parametrization(m, "weight", AnalogWeight(m.weight, dev, 0, i))
            done.append(m)
            handles += [m.register_state_dict_post_hook(_plain_keys),
                        m.register_load_state_dict_pre_hook(_parametrized_keys)]
        yield model
    finally:
        for h in handles:
            h.remove()
        for m in done:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


_ORIGINAL, _NOISE = "parametrizations.weight.original", "parametrizations.weight.0."


def _plain_keys(module, state_dict, prefix, local_metadata) -> None:
    """State-dict post-hook of a layer under :func:`noise_aware`: ``weight`` instead of the parametrization's
    ``original``, and none of the read noise's buffers (the block's own state, not the model's)."""
    state_dict[prefix + "weight"] = state_dict.pop(prefix + _ORIGINAL)
    for k in [k for k in state_dict if k.startswith(prefix + _NOISE)]:
        del state_dict[k]


def _parametrized_keys(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook, the inverse of :func:`_plain_keys`: a plain ``weight`` loads into ``original``,
    and the read noise keeps its buffers."""
    if prefix + "weight" in state_dict:
        state_dict[prefix + _ORIGINAL] = state_dict.pop(prefix + "weight")
        for k, v in module.parametrizations.weight[0].state_dict().items():
            state_dict.setdefault(prefix + _NOISE + k, v)


@contextlib.contextmanager
def read_noise(chip: nn.Module, enabled: bool) -> Iterator[nn.Module]:
    """Switch a chip's read noise on/off for a block (e.g. ``enabled=False`` to evaluate deterministically)."""
    if not isinstance(enabled, bool):   # read_noise(chip, "off") is truthy: it left the noise on without a word
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    params = [m for m in chip.modules() if isinstance(m, (AnalogWeight, PairWeight))]
    old = [p.read_enabled for p in params]
    try:
        for p in params:
            p.read_enabled = enabled
        yield chip
    finally:
        for p, o in zip(params, old):
            p.read_enabled = o
