"""Spikes stored as spikes: 1 bit per neuron-step for the spike tensors autograd keeps for a weight gradient.

A layer fed with spikes (a Conv or Linear after a :class:`~ltl_ext.nn.LIF`) saves its input for the backward
(dW = gY^T S). Those spikes are exactly 0 or 1, so 32 of the 33 bits a float32 spends on each are redundant.
:class:`SpikeStore` is a ``torch.autograd.graph.saved_tensors_hooks`` pair: a saved tensor that the LIFs marked
as spikes (:meth:`SpikeStore.mark`, also through views of it) is packed 8 neurons to a byte and restored, bit for
bit, when the backward needs it; every other saved tensor passes through untouched.

    store = SpikeStore()
    with store:                       # around the forward (and any backward run inside it)
        s = store.mark(lif(x))        # the LIF's output, marked as spikes
        y = conv(s)                   # conv saves s: stored as [ceil(numel / 8)] uint8
"""
from __future__ import annotations

import weakref
from typing import Tuple

import torch
from torch import Tensor

__all__ = ["pack_spikes", "unpack_spikes", "SpikeStore"]

_BIT_WEIGHTS = {}   # device -> tensor([1, 2, 4, ..., 128], uint8)


def _weights(device: torch.device) -> Tensor:
    w = _BIT_WEIGHTS.get(device)
    if w is None:
        w = _BIT_WEIGHTS[device] = (2 ** torch.arange(8, device=device)).to(torch.uint8)
    return w


def pack_spikes(s: Tensor) -> Tuple[Tensor, torch.Size, torch.dtype]:
    """Spikes (any shape, values exactly 0 or 1) -> ``(bits [ceil(numel / 8)] uint8, shape, dtype)``.

    Element i of the flattened tensor is bit ``i % 8`` of byte ``i // 8``. Values other than 0 and 1 are not
    spikes: the caller guarantees them (only tensors a LIF produced are packed)."""
    flat = s.reshape(-1)
    pad = (-flat.numel()) % 8
    bits = (flat != 0).to(torch.uint8)
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    packed = (bits.view(-1, 8) * _weights(s.device)).sum(1, dtype=torch.uint8)
    return packed, s.shape, s.dtype


def unpack_spikes(packed: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """Inverse of :func:`pack_spikes`: a contiguous tensor of ``shape`` and ``dtype`` holding the same 0/1."""
    n = shape.numel()
    bits = (packed.unsqueeze(1) & _weights(packed.device)) != 0
    return bits.reshape(-1)[:n].to(dtype).view(shape)


class SpikeStore:
    """``saved_tensors_hooks`` that keep marked spike tensors as bits (see the module docstring).

    :meth:`mark` registers a spike tensor (weakly: it is forgotten when freed); a saved tensor is packed when it
    or the tensor it is a view of was marked, and it is contiguous (a strided view is kept as it is). Use it as
    a context manager around the forward; nesting is allowed (PyTorch stacks the hooks). ``packed`` counts the
    tensors it packed.
    """

    def __init__(self) -> None:
        self._spikes: "weakref.WeakValueDictionary[int, Tensor]" = weakref.WeakValueDictionary()
        self._hooks = None
        self.packed = 0

    def mark(self, s: Tensor) -> Tensor:
        """Remember ``s`` (a LIF's output) as spikes; returns it."""
        root = s if s._base is None else s._base
        self._spikes[id(root)] = root
        return s

    def is_spikes(self, t: Tensor) -> bool:
        root = t if t._base is None else t._base
        return self._spikes.get(id(root)) is root

    def _pack(self, t: Tensor):
        if t.requires_grad or not t.is_contiguous() or not self.is_spikes(t):
            return t
        self.packed += 1
        return pack_spikes(t)

    @staticmethod
    def _unpack(saved):
        return saved if isinstance(saved, Tensor) else unpack_spikes(*saved)

    def __enter__(self) -> "SpikeStore":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        hooks, self._hooks = self._hooks, None
        hooks.__exit__(*exc)
