"""NIR export: a spiking student as a ``nir.NIRGraph`` (:func:`export_nir`; conventions: :mod:`.nir`).

The student's wiring is traced with ``torch.fx`` (every LIF, the input normalisation and every built-in layer one
call), every value's shape is read from one run on zeros, and each call becomes a NIR node (:func:`_module_node`,
:func:`_lif_node`, :func:`_normalizer`) or, for residual adds, two edges into one node.
"""
from __future__ import annotations

import contextlib
import io
import math
import operator
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from ..nn import LIF, SpikingModel, lifs
from .nir_format import DEFAULT_DT, _fix_grouped_conv_types, _is_normalize, _nir, _safe, _time_steps, _unique

_PASS_MODULES = (nn.Identity, nn.modules.dropout._DropoutNd)
_ADDS = {operator.add, operator.iadd, torch.add}
_NO_NIR_POOL = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd)


class _LeafTracer(fx.Tracer):
    """Traces the student's wiring; every LIF, the input normalisation and every built-in layer is one call."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LIF) or _is_normalize(m) or super().is_leaf_module(m, qualname)


def export_nir(model: nn.Module, *, input_shape: Optional[Sequence[int]] = None, time_steps: Optional[int] = None,
               dt: float = DEFAULT_DT, normalization: Optional[Tuple[Sequence[float], Sequence[float]]] = None):
    """A spiking student as a ``nir.NIRGraph`` (:mod:`ltl_ext.interop.nir` has the time convention and the nodes).

    Args:
        model: a :class:`~ltl_ext.nn.SpikingModel` or the bare student inside one (a module with LIF layers).
        input_shape: one sample's shape without batch, e.g. ``(1, 28, 28)``; may be omitted when the first
            weight layer is a Linear (then ``(in_features,)``).
        time_steps: T recorded in ``metadata["time_steps"]`` (NIR graphs have no T); default the model's.
        dt: seconds per step in the NIR time constants.
        normalization: ``(mean, std)`` per channel (or per feature) applied to the raw input before the student
            (``x' = (x - mean) / std``); put in front of the graph as an affine node. ``None``: the graph takes
            the input the student takes (raw when the student has its own ``Normalize``, which is exported; a
            student with one refuses ``normalization``: it would normalise twice).

    Returns: ``nir.NIRGraph`` with one ``Input`` and one ``Output`` node, type-checked by NIR.
    """
    nir = _nir()
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    student = model.model if isinstance(model, SpikingModel) else model
    if not isinstance(student, nn.Module):
        raise TypeError(f"export_nir takes a spiking student (nn.Module), got {type(model).__name__}")
    # fx traces the student's forward, not its call: a hook on it (or on the SpikingModel) would vanish silently
    if isinstance(model, SpikingModel):
        _refuse_hooks("the SpikingModel", model)
    _refuse_hooks("the student", student)
    neurons = lifs(student)
    if not neurons:
        raise ValueError("export_nir takes a spiking student (a model with ltl_ext.nn.LIF layers); this model has "
                         "none (convert an ANN first: ltl_ext.convert)")
    inner = next((name for name, m in student.named_modules() if _is_normalize(m)), None)
    if normalization is not None and inner is not None:
        raise ValueError(f"normalization=: the student normalises its input already (its module {inner!r}), so the "
                         f"graph would normalise twice; drop normalization= (the graph takes raw input as it is)")
    T = time_steps if time_steps is not None else (model.time_steps if isinstance(model, SpikingModel)
                                                   else neurons[0][1].time_steps)
    T = None if T is None else _time_steps(T)     # None: not recorded
    input_shape = _input_shape(student, input_shape)
    gm = fx.GraphModule(student, _LeafTracer().trace(student))
    shapes = _shapes(gm, student, input_shape)

    nodes: Dict[str, object] = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    edges: List[Tuple[str, str]] = []
    value: Dict[fx.Node, List[str]] = {}     # fx value -> NIR nodes whose outputs sum to it
    notes = set()

    def add(name: str, node, sources: List[str]) -> List[str]:
        name = _unique(_safe(name), nodes)
        nodes[name] = node
        if len(set(sources)) != len(sources):
            raise ValueError(f"{name}: the same value is summed twice (x + x); NIR edges cannot express it")
        edges.extend((s, name) for s in sources)
        return [name]

    for n in gm.graph.nodes:
        if n.op == "placeholder":
            value[n] = ["input"]
            if normalization is not None:
                value[n] = add("normalize", _normalizer(nir, normalization, input_shape), ["input"])
        elif n.op == "output":
            out = n.args[0]
            if not isinstance(out, fx.Node):
                raise ValueError("export_nir: the student must return one tensor (the readout current)")
            nodes["output"] = nir.Output(output_type={"output": np.array(shapes[out])})
            edges.extend((s, "output") for s in value[out])
        elif n.op == "get_attr":
            raise ValueError(f"export_nir: {n.target!r} uses a tensor attribute directly; NIR has no constant node")
        else:
            src = n.args[0] if n.args else None
            if not isinstance(src, fx.Node):
                raise ValueError(f"export_nir: cannot express {n.format_node()} in NIR")
            if n.op == "call_module":
                m = gm.get_submodule(n.target)
                _refuse_hooks(n.target, m)
                if isinstance(m, _PASS_MODULES):
                    value[n] = value[src]
                    continue
                node = _module_node(nir, n.target, m, shapes[src], shapes[n], dt, notes)
                value[n] = add(n.target, node, value[src])
            elif n.op == "call_function" and n.target in _ADDS and len(n.args) == 2 and not n.kwargs \
                    and all(isinstance(a, fx.Node) for a in n.args):
                value[n] = value[n.args[0]] + value[n.args[1]]
            elif _is_flatten(n, shapes):
                value[n] = add(n.name, nir.Flatten(input_type={"input": np.array(shapes[src])}, start_dim=0,
                                                   end_dim=-1), value[src])
            elif n.op == "call_method" and n.target == "contiguous":
                value[n] = value[src]
            elif _only_sizes_a_flatten(n, shapes):
                continue        # x.size(0) of x.view(x.size(0), -1): read by the flatten, no value of its own
            else:
                raise ValueError(f"export_nir: cannot express {n.format_node()} in NIR (supported: Linear, "
                                 f"Conv1d/2d, AvgPool2d, sum pooling, Flatten, LIF/IF, residual adds)")
    # the encoding is the SpikingModel's (import_nir rebuilds it): a Poisson student recorded as "direct" would come
    # back, and run elsewhere, on the raw image at every step
    metadata = {"producer": f"ltl_ext {_version()}", "dt": float(dt),
                "encoding": model.encoding if isinstance(model, SpikingModel) else "direct",
                "readout": "output current of the last layer at every step; logits = its mean over time_steps",
                "input": "raw (normalised in the graph)" if normalization is not None or inner is not None
                else "as the student takes it (no normalisation)",
                "notes": "; ".join(sorted(notes))}
    if T is not None:   # unknown T is left out: nir.write cannot store None
        metadata["time_steps"] = T
    _fix_grouped_conv_types(nodes.values())
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=True)


def _refuse_hooks(name: str, m: nn.Module) -> None:
    """A forward (pre-)hook changes what a layer computes (a chip's DAC/ADC converters quantise a layer's input and
    output through hooks), and a NIR node cannot carry it: exporting without it would be another network."""
    from ..hw.chip import _materialise_hook   # the chip's neuron mismatch: draws its shape once, computes nothing
    hooks = [h for h in (*m._forward_pre_hooks.values(), *m._forward_hooks.values()) if h is not _materialise_hook]
    if hooks:
        names = ", ".join(getattr(h, "__name__", type(h).__name__) for h in hooks)
        raise ValueError(f"{name}: has forward hooks ({names}) that NIR cannot express; remove them before export (a "
                         f"chip's DAC/ADC converters are hooks: export a chip programmed without dac_bits/adc_bits, or "
                         f"noise.unprogram(chip))")


def _version() -> str:
    from .._version import __version__
    return __version__


def _input_shape(student: nn.Module, given) -> Tuple[int, ...]:
    if given is not None:
        shape = tuple(int(s) for s in given)
        if not shape or min(shape) < 1:
            raise ValueError(f"input_shape must be positive sizes without the batch, got {given!r}")
        return shape
    first = next((m for m in student.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ValueError("export_nir needs input_shape (one sample's shape without batch, e.g. (1, 28, 28)) for a "
                     "model that does not start with a Linear layer")


@torch.no_grad()
def _shapes(gm: fx.GraphModule, student: nn.Module, input_shape) -> Dict[fx.Node, Tuple[int, ...]]:
    """Every traced value's shape for one sample (batch and time dropped), from a run on zeros."""
    from torch.fx.passes.shape_prop import ShapeProp
    neurons = [m for _, m in lifs(student)]
    unset = [m for m in neurons if m.time_steps is None]     # a bare student's LIFs: one step reads the shapes
    for m in unset:
        m.time_steps = 1
    steps = 1 if neurons[0].stepwise else neurons[0].time_steps
    p = next(student.parameters(), None)
    x = torch.zeros(steps, *input_shape, device=p.device if p is not None else None,
                    dtype=p.dtype if p is not None else None)
    try:
        with contextlib.redirect_stderr(io.StringIO()):     # ShapeProp prints the whole traceback before raising
            ShapeProp(gm).propagate(x)
    except Exception as e:
        cause = e.__cause__ or e    # ShapeProp's own error only names the node; its cause says what went wrong
        raise ValueError(f"export_nir: the student does not run on an input of shape {tuple(input_shape)} "
                         f"({type(cause).__name__}: {str(cause).splitlines()[0][:200]})") from None
    finally:
        for m in neurons:
            m.reset_state()
        for m in unset:
            m.time_steps = None
    return {n: tuple(meta.shape[1:]) for n in gm.graph.nodes
            if hasattr(meta := n.meta.get("tensor_meta"), "shape")}


def _is_flatten(n: fx.Node, shapes) -> bool:
    """``torch.flatten(x, 1)``, ``x.flatten(1)``, ``x.view(x.size(0), -1)``: one sample becomes a vector."""
    flattening = (n.op == "call_function" and n.target is torch.flatten) or \
                 (n.op == "call_method" and n.target in ("flatten", "view", "reshape"))
    return flattening and n in shapes and len(shapes[n]) == 1 and math.prod(shapes[n]) == \
        math.prod(shapes[n.args[0]])


def _is_size(n: fx.Node) -> bool:
    """``x.size()``, ``x.size(0)``, ``x.shape``, ``x.shape[0]``: sizes, not values."""
    if n.op == "call_method" and n.target == "size":
        return True
    if n.op == "call_function" and n.target is getattr and n.args[1:] == ("shape",):
        return True
    return n.op == "call_function" and n.target is operator.getitem and isinstance(n.args[0], fx.Node) \
        and _is_size(n.args[0])


def _only_sizes_a_flatten(n: fx.Node, shapes) -> bool:
    """A size read only by flattens: ``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], -1)``."""
    return _is_size(n) and all(_is_flatten(u, shapes) or _only_sizes_a_flatten(u, shapes) for u in n.users)


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _module_node(nir, name: str, m: nn.Module, shape_in, shape_out, dt: float, notes: set):
    """The NIR node for one student module (shapes of one sample, without batch)."""
    def arr(t):   # float64 stays float64 (import_nir gives it back as such), any other float is written as float32
        return t.detach().to("cpu", torch.float64 if t.dtype == torch.float64 else torch.float32).numpy().copy()

    if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and parametrize.is_parametrized(m, "weight") \
            and not torch.equal(m.weight, m.weight):
        # a chip's read noise redraws the weight at every read: NIR would hold one random draw of it
        raise ValueError(f"{name}: its weight changes from read to read (a chip's read noise); export the chip with "
                         f"the noise off: `with ltl_ext.noise.read_noise(chip, False): export_nir(chip, ...)`")

    if isinstance(m, LIF):
        return _lif_node(nir, name, m, shape_out, dt, notes)
    if _is_normalize(m):
        return _normalizer(nir, (m.mean.tolist(), m.std.tolist()), shape_in)
    if isinstance(m, nn.Linear):
        return nir.Affine(weight=arr(m.weight), bias=arr(m.bias)) if m.bias is not None else \
            nir.Linear(weight=arr(m.weight))
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if m.padding_mode != "zeros":
            raise ValueError(f"{name}: NIR convolutions pad with zeros, this one pads with {m.padding_mode!r}")
        bias = arr(m.bias) if m.bias is not None else np.zeros(m.out_channels, arr(m.weight).dtype)
        if isinstance(m, nn.Conv1d):
            return nir.Conv1d(input_shape=int(shape_in[-1]), weight=arr(m.weight), stride=m.stride[0],
                              padding=m.padding if isinstance(m.padding, str) else m.padding[0],
                              dilation=m.dilation[0], groups=m.groups, bias=bias)
        return nir.Conv2d(input_shape=tuple(shape_in[-2:]), weight=arr(m.weight), stride=m.stride,
                          padding=m.padding, dilation=m.dilation, groups=m.groups, bias=bias)
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode or (not m.count_include_pad and _pair(m.padding).any()):
            raise ValueError(f"{name}: NIR's AvgPool2d has no ceil_mode and counts the padding")
        kind = {None: nir.AvgPool2d, 1: nir.SumPool2d}.get(m.divisor_override)
        if kind is None:
            raise ValueError(f"{name}: divisor_override={m.divisor_override} is neither an average nor a sum")
        return kind(kernel_size=_pair(m.kernel_size), stride=_pair(m.stride if m.stride is not None
                                                                    else m.kernel_size), padding=_pair(m.padding))
    if isinstance(m, nn.AdaptiveAvgPool2d):
        (h, w), (oh, ow) = shape_in[-2:], shape_out[-2:]
        if h % oh or w % ow:
            raise ValueError(f"{name}: AdaptiveAvgPool2d from {h}x{w} to {oh}x{ow} is not a fixed pooling window")
        k = np.array([h // oh, w // ow], dtype=np.int64)
        return nir.AvgPool2d(kernel_size=k, stride=k.copy(), padding=np.zeros(2, np.int64))
    if isinstance(m, nn.Flatten):
        def nir_dim(d):   # NIR counts dimensions without the batch
            return d - 1 if d >= 0 else d
        return nir.Flatten(input_type={"input": np.array(shape_in)}, start_dim=nir_dim(m.start_dim),
                           end_dim=nir_dim(m.end_dim))
    if isinstance(m, _NO_NIR_POOL):
        raise ValueError(f"{name}: NIR has no max pooling node ({type(m).__name__}); use AvgPool2d or a strided "
                         f"convolution in the student")
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"{name}: fold BatchNorm into the preceding layer before export "
                         f"(ltl_ext.ltl.convert.fold_batchnorm; convert() does it)")
    raise ValueError(f"{name}: NIR export does not know {type(m).__name__} (supported: Linear, Conv1d, Conv2d, "
                     f"AvgPool2d, AdaptiveAvgPool2d, Flatten, LIF, Identity, Dropout)")


def _lif_node(nir, name: str, m: LIF, shape, dt: float, notes: set):
    """LIF -> nir.LIF (beta < 1) or nir.IF (beta = 1), per-neuron float64 arrays of the neuron shape."""
    if m.reset != "hard":
        raise ValueError(f"{name}: NIR 1.0 resets a neuron to v_reset after a spike (hard reset); it has no "
                         f"subtracting reset, so this soft-reset LIF cannot be exported (train with reset='hard')")
    kw = m.lif_kwargs()

    def full(v):
        v = v.detach().to("cpu", torch.float64).numpy() if isinstance(v, torch.Tensor) else np.float64(v)
        return np.broadcast_to(v, shape).astype(np.float64)

    beta, alpha, threshold = full(kw["beta"]), full(kw["alpha"]), full(kw["threshold"])
    v_reset = np.full(shape, m.v_reset, np.float64)
    notes.add(f"surrogate gradients ({m.surrogate}) and detach_reset are training-only and were dropped")
    if (beta == 1.0).all():
        return nir.IF(r=alpha / dt, v_threshold=threshold, v_reset=v_reset)
    if (beta == 1.0).any() or (beta < 0).any():
        raise ValueError(f"{name}: mixes beta = 1 (IF) and beta < 1 (LIF) neurons; NIR needs one kind per node")
    tau = dt / (1.0 - beta)
    return nir.LIF(tau=tau, r=alpha / (1.0 - beta), v_leak=np.zeros(shape), v_threshold=threshold,
                   v_reset=v_reset)


def _normalizer(nir, normalization, input_shape):
    """``x' = (x - mean) / std`` as ``nir.Affine`` (flat input) or a 1x1 ``nir.Conv2d`` (per channel, images)."""
    try:
        mean, std = (np.asarray(v, np.float64).reshape(-1) for v in normalization)
    except (TypeError, ValueError):
        raise ValueError(f"normalization must be (mean, std) sequences, got {normalization!r}") from None
    # (a NaN mean or an infinite std wrote a graph whose every input is NaN or 0, without a word)
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()) or mean.size != std.size:
        raise ValueError(f"normalization needs finite means, finite stds > 0 and as many means as stds, got "
                         f"{normalization!r}")
    c = input_shape[0]
    if mean.size not in (1, c):
        raise ValueError(f"normalization has {mean.size} values; the input has {c} channels/features")
    scale = np.broadcast_to(1.0 / std, (c,)).astype(np.float32)
    shift = np.broadcast_to(-mean / std, (c,)).astype(np.float32)
    # the metadata lets import_nir rebuild the exact (x - mean) / std; other tools read the affine map
    meta = {"ltl_ext_normalize_mean": np.broadcast_to(mean, (c,)).copy(),
            "ltl_ext_normalize_std": np.broadcast_to(std, (c,)).copy()}
    if len(input_shape) == 1:
        return nir.Affine(weight=np.diag(scale), bias=shift, metadata=meta)
    if len(input_shape) == 3:
        return nir.Conv2d(input_shape=tuple(input_shape[1:]), weight=np.diag(scale)[:, :, None, None], stride=1,
                          padding=0, dilation=1, groups=1, bias=shift, metadata=meta)
    raise ValueError(f"normalization in NIR needs a flat or [C, H, W] input, got shape {tuple(input_shape)}")
