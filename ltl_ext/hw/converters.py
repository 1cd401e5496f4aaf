"""Input (DAC) and output (ADC) quantisation of a crossbar layer.

A crossbar layer ``y = W x + b`` sees its input through a ``dac_bits`` digital-to-analog converter and is read
through an ``adc_bits`` analog-to-digital converter. Both are symmetric uniform quantisers with ``2^bits - 1``
levels on ``[-r, r]`` (zero is a level, so binary spikes pass a DAC of any width unchanged when ``r = 1``)::

    q(v) = round(clamp(v, -r, r) / step) * step,   step = 2 r / (2^bits - 2)      (straight-through gradient)

The ranges ``r`` are fixed once per layer, at the chip's first forward that brings the converter a non-zero
signal, to the largest magnitude seen then (the periphery's gain set on a first batch), and stay in buffers
(``in_range``, ``out_range``), so a saved chip keeps them and calibration cannot change them. The bias is added
digitally after the ADC is modelled as part of the layer output (the ADC reads ``W x + b``; a digital bias would
only shift the range).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class _SymmetricSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, r: Tensor, bits: int) -> Tensor:
        step = 2 * r / (2 ** bits - 2)
        return torch.round(torch.maximum(torch.minimum(v, r), -r) / step) * step

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None, None


class Converters(nn.Module):
    """The DAC and ADC of one layer (``None`` bits: ideal converter). Shapes are kept: ``[N, *] -> [N, *]``."""

    def __init__(self, dac_bits: Optional[int], adc_bits: Optional[int]):
        super().__init__()
        self.dac_bits, self.adc_bits = dac_bits, adc_bits
        self.register_buffer("in_range", torch.zeros(0))
        self.register_buffer("out_range", torch.zeros(0))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("in_range", "out_range"):   # lazily set ranges: take the saved shape
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _quantise(self, v: Tensor, name: str, bits: Optional[int]) -> Tensor:
        if bits is None:
            return v
        r = getattr(self, name)
        if r.numel() == 0:          # first forward: the periphery's range
            peak = v.detach().abs().max().to(torch.float32)
            if peak == 0:
                # no gain can be set on an all-zero signal (a layer that has not spiked yet, e.g. the first step
                # of a stepwise run): fixed here it would be ~0 and flatten every later input to the layer, so
                # zeros (exact at any width) pass and the range waits for a signal
                return v
            r = peak
            setattr(self, name, r)
        return _SymmetricSTE.apply(v, r.to(v.dtype), bits)

    def dac(self, x: Tensor) -> Tensor:
        return self._quantise(x, "in_range", self.dac_bits)

    def adc(self, y: Tensor, x: Optional[Tensor] = None) -> Tensor:
        if self.adc_bits is not None and self.out_range.numel() == 0 and x is not None and not bool(x.any()):
            return y    # an all-zero input ``x`` leaves only the bias at the output: no gain for the signal
        return self._quantise(y, "out_range", self.adc_bits)

    def extra_repr(self) -> str:
        return f"dac_bits={self.dac_bits}, adc_bits={self.adc_bits}"


def _dac_hook(layer: nn.Module, args):
    return (layer.converters.dac(args[0]),) + tuple(args[1:])


def _adc_hook(layer: nn.Module, args, out):
    return layer.converters.adc(out, args[0])


def attach_converters(layer: nn.Module, dac_bits: Optional[int], adc_bits: Optional[int]) -> None:
    """Put a DAC in front of ``layer`` and an ADC behind it (as ``layer.converters`` and two hooks)."""
    layer.converters = Converters(dac_bits, adc_bits)
    layer.register_forward_pre_hook(_dac_hook)
    layer.register_forward_hook(_adc_hook)


def detach_converters(layer: nn.Module) -> None:
    """Undo :func:`attach_converters` (a no-op on a layer without converters)."""
    for hooks, fn in ((layer._forward_pre_hooks, _dac_hook), (layer._forward_hooks, _adc_hook)):
        for k in [k for k, h in hooks.items() if h is fn]:
            del hooks[k]
    if "converters" in layer._modules:
        del layer._modules["converters"]
