"""Spikes stored as spikes: 1 byte per neuron-step for the spike tensors autograd keeps for a weight gradient.

A layer fed with spikes (a Conv or Linear after a :class:`~ltl_ext.nn.LIF`) saves its input for the backward
(dW = gY^T S). Those spikes are exactly 0 or 1, so a float32 spends 4 bytes on one bit. :class:`SpikeStore` is a
``torch.autograd.graph.saved_tensors_hooks`` pair: a saved tensor that the LIFs marked as spikes
(:meth:`SpikeStore.mark`, also through views of it) is kept as ``torch.bool`` (1 byte) and restored exactly when
the backward needs it; every other saved tensor passes through untouched.

Why a byte and not a bit: packing 8 spikes to a byte and back costs about 3x the time of the bool cast on these
CPUs (measured: 20 ms vs 6 ms for 3.2 M spikes, one thread), which on a small network is a quarter of a training
step; and the saved spikes are never the largest tensor alive at the layer-wise engine's peak (the layer's input
current, its spikes and their gradient are; see docs/results/train_memory.json), so 1/8 more would not move it.

    store = SpikeStore()
    with store:                       # around the forward (and any backward run inside it)
        s = store.mark(lif(x))        # the LIF's output, marked as spikes
        y = conv(s)                   # conv saves s: stored as bool, 1 byte per spike
"""
from __future__ import annotations

import weakref
from typing import Tuple

import torch
from torch import Tensor

__all__ = ["pack_spikes", "unpack_spikes", "SpikeStore"]


def pack_spikes(s: Tensor) -> Tuple[Tensor, torch.dtype]:
    """Spikes (values exactly 0 or 1, any shape) -> ``(bool tensor of the same shape, dtype)``. Values other than 0
    and 1 are not spikes: the caller guarantees them (only tensors a LIF produced are packed)."""
    return s.to(torch.bool), s.dtype


def unpack_spikes(packed: Tensor, dtype: torch.dtype) -> Tensor:
    """Inverse of :func:`pack_spikes`: the same 0/1 values in ``dtype``."""
    return packed.to(dtype)


class SpikeStore:
    """``saved_tensors_hooks`` that keep marked spike tensors as bits (see the module docstring).

    :meth:`mark` registers a spike tensor (weakly: it is forgotten when freed); a saved tensor is packed when it
    or the tensor it is a view of was marked, and it is dense (contiguous, or channels-last; a strided view is kept
    as it is). Use it as a context manager around the forward; nesting is allowed (PyTorch stacks the hooks).
    ``packed`` counts the tensors it packed.

    Spikes changed in place after :meth:`mark` are not packed: the tensor's version counter tells. An edit through
    ``s.data`` (``s.data.add_(x)``, ``s.data[...] = v``) does not move that counter (``.data`` is a tensor with a
    counter of its own; autograd cannot see such edits either), so values other than 0 and 1 written that way are
    packed, and come back from the bits as 1 where the float spikes were freed before the backward. Edit marked
    spikes in place only as ``s`` or ``s.detach()`` (which share the counter), or out of place. Checking the values
    at each pack instead would cost a pass over every saved tensor and, on a GPU, a device sync.
    """

    def __init__(self) -> None:
        self._spikes: "weakref.WeakValueDictionary[int, Tensor]" = weakref.WeakValueDictionary()
        self._versions: "dict[int, int]" = {}        # id -> the tensor's version when marked
        self._hooks = None
        self.packed = 0

    def mark(self, s: Tensor) -> Tensor:
        """Remember ``s`` (a LIF's output) as spikes; returns it."""
        if s.is_inference():   # made under torch.inference_mode: no graph will save it, and it has no version
            return s           # counter to read (local losses computed for validation raised a RuntimeError here)
        root = s if s._base is None else s._base
        self._spikes[id(root)] = root
        self._versions[id(root)] = root._version
        return s

    def is_spikes(self, t: Tensor) -> bool:
        """Whether ``t`` (or the tensor it views) was marked and still holds the spikes: an in-place update since
        (``out += identity`` on spikes, SEW-ResNet style) makes values other than 0 and 1, which bits would lose."""
        root = t if t._base is None else t._base
        return self._spikes.get(id(root)) is root and root._version == self._versions[id(root)]

    def _pack(self, t: Tensor):
        dense = t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))
        if t.requires_grad or not dense or not self.is_spikes(t):
            return t
        self.packed += 1
        return (weakref.ref(t), t._version) + pack_spikes(t)

    @staticmethod
    def _unpack(saved):
        if isinstance(saved, Tensor):
            return saved
        original, version, packed, dtype = saved
        live = original()
        # The float spikes are often still alive when the backward runs (the layer-wise engine's input to the layer
        # being trained): hand them back unchanged rather than a second float copy; the bits serve once they died.
        if live is not None and live._version == version:
            return live
        return unpack_spikes(packed, dtype)

    def __enter__(self) -> "SpikeStore":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        hooks, self._hooks = self._hooks, None
        hooks.__exit__(*exc)
