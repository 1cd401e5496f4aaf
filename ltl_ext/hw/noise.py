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
calibrating thresholds changes the programmed value and never the mismatch. On a chip that original is frozen
(a buffer, or a parameter with ``requires_grad=False``) until calibration asks for it. The neuron shape is
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
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .converters import Converters, attach_converters, detach_converters
from .devices import MODES, PHYSICS, PRESETS, DeviceModel  # noqa: F401 (ltl_ext.noise names)
from .pairs import PairWeight

__all__ = ["DeviceModel", "PRESETS", "AnalogWeight", "PairWeight", "NeuronMismatch", "program", "at", "unprogram",
           "save_chip", "load_chip",
           "chip_info", "noise_aware", "analog_layers", "lif_layers", "noise_buffers", "programmed_parameters"]

CHIP_FORMAT = "ltl_ext.chip/1"


# ------------------------------------------------------------------------------------------------ random streams
def _generator(seed: int, *tags: int) -> torch.Generator:
    """A CPU generator for one (chip seed, layer, purpose): draws are independent of layer order and device."""
    h = int(seed) & 0xFFFFFFFF
    for t in tags:
        h = (h * 1_000_003 + 0x9E3779B9 + int(t)) % (2 ** 63 - 1)
    return torch.Generator().manual_seed(h)


_PURPOSE = {"vary": 1, "stuck": 2, "threshold": 3, "beta": 4, "drift": 5}


# -------------------------------------------------------------------------------------------------- weight devices
class _QuantiseSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor, w_max: Tensor, levels: int) -> Tensor:
        step = 2 * w_max / (levels - 1)
        idx = torch.round((w.clamp(-w_max, w_max) + w_max) / step)
        return idx * step - w_max

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, None, None


def quantise(w: Tensor, w_max: Tensor, levels: int) -> Tensor:
    """``levels`` uniformly spaced values on ``[-w_max, w_max]`` (both ends included); straight-through gradient."""
    return _QuantiseSTE.apply(w, w_max, levels)


class AnalogWeight(nn.Module):
    """The parametrization of one programmed weight tensor (see the module docstring for the chain).

    Buffers (the chip's fixed physics, never trained): ``w_max`` (scalar), ``eps`` (programming variation,
    weight-shaped, or empty when ``sigma == 0``), ``stuck_mask`` (bool) and ``stuck_value``.
    """

    def __init__(self, weight: Tensor, dev: DeviceModel, seed: int, layer_index: int):
        super().__init__()
        w = weight.detach()
        self.mode = dev.mode
        self.sigma = dev.programming_sigma
        self.read_sigma = dev.read_sigma
        self.levels = dev.levels
        self.read_enabled = True
        self.register_buffer("w_max", w.abs().max().clamp_min(torch.finfo(w.dtype).tiny).clone())
        if self.sigma > 0:
            eps = torch.randn(w.shape, generator=_generator(seed, layer_index, _PURPOSE["vary"]), dtype=w.dtype)
        else:
            eps = w.new_zeros(0)
        self.register_buffer("eps", eps.to(w.device))
        n = w.numel()
        n_off, n_on = int(round(dev.stuck_off * n)), int(round(dev.stuck_on * n))
        if n_off + n_on > 0:
            g = _generator(seed, layer_index, _PURPOSE["stuck"])
            perm = torch.randperm(n, generator=g)
            mask = torch.zeros(n, dtype=torch.bool)
            mask[perm[: n_off + n_on]] = True
            value = torch.zeros(n, dtype=w.dtype)
            sign = torch.randint(0, 2, (n_on,), generator=g).to(w.dtype) * 2 - 1
            value[perm[n_off: n_off + n_on]] = sign * float(self.w_max)
            self.register_buffer("stuck_mask", mask.view(w.shape).to(w.device))
            self.register_buffer("stuck_value", value.view(w.shape).to(w.device))
        else:
            self.register_buffer("stuck_mask", torch.zeros(0, dtype=torch.bool, device=w.device))
            self.register_buffer("stuck_value", w.new_zeros(0))

    def _noise(self, w: Tensor, sigma: float, eps: Tensor) -> Tensor:
        if self.mode == "multiplicative":
            return w * (1 + sigma * eps)
        return w + (sigma * self.w_max) * eps

    def forward(self, w: Tensor) -> Tensor:
        if self.levels is not None:
            w = quantise(w, self.w_max, self.levels)
        if self.sigma > 0:
            w = self._noise(w, self.sigma, self.eps)
        if self.read_sigma > 0 and self.read_enabled:
            w = self._noise(w, self.read_sigma, torch.randn_like(w))
        if self.stuck_mask.numel():
            w = torch.where(self.stuck_mask, self.stuck_value, w)
        return w

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, sigma={self.sigma:g}, read_sigma={self.read_sigma:g}, levels={self.levels}, "
                f"stuck={int(self.stuck_mask.sum()) if self.stuck_mask.numel() else 0}")


# ------------------------------------------------------------------------------------------------ neuron mismatch
class NeuronMismatch(nn.Module):
    """Parametrization of a LIF's threshold or leak: nominal (programmed) value -> per-neuron value.

    ``eps`` (buffer) has the neuron shape; it is drawn from the seed when the shape becomes known (``materialise``,
    called by :func:`program` with an example input, or by a forward pre-hook at the chip's first forward).
    Until then the nominal value passes through unchanged.
    """

    def __init__(self, kind: str, sigma: float, seed: int, layer_index: int):
        super().__init__()
        if kind not in ("threshold", "beta"):
            raise ValueError(kind)
        self.kind, self.sigma, self.seed, self.layer_index = kind, float(sigma), int(seed), int(layer_index)
        self.original_kind, self.original_value = "parameter", None
        self.register_buffer("eps", torch.zeros(0))

    @property
    def materialised(self) -> bool:
        return self.eps.numel() > 0

    def materialise(self, neuron_shape, device=None, dtype=torch.float32) -> None:
        neuron_shape = tuple(neuron_shape)
        if self.materialised and tuple(self.eps.shape) == neuron_shape:
            return
        g = _generator(self.seed, self.layer_index, _PURPOSE[self.kind])
        self.eps = torch.randn(neuron_shape, generator=g, dtype=dtype).to(device or self.eps.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "eps"
        if key in state_dict and tuple(state_dict[key].shape) != tuple(self.eps.shape):
            self.eps = torch.empty_like(state_dict[key], device=self.eps.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, nominal: Tensor) -> Tensor:
        if not self.materialised:
            return nominal
        eps = self.eps.to(nominal.dtype) if torch.is_tensor(nominal) else self.eps
        value = nominal * (1 + self.sigma * eps)
        if self.kind == "beta":
            return value.clamp(0.0, 1.0)
        return value.clamp_min(1e-3 * nominal.detach().abs().clamp_min(1e-6))

    def extra_repr(self) -> str:
        return f"{self.kind}, sigma={self.sigma:g}, shape={tuple(self.eps.shape) if self.materialised else 'lazy'}"


# ---------------------------------------------------------------------------------------------- model traversal
def _lif_class():
    try:
        from ..nn import LIF  # noqa: WPS433 (floor 5; imported lazily so this module stands without it)
        return LIF
    except Exception:  # pragma: no cover - nn.py not importable
        return None


def _is_lif(m: nn.Module) -> bool:
    cls = _lif_class()
    if cls is not None and isinstance(m, cls):
        return True
    return type(m).__name__ == "LIF" and hasattr(m, "threshold") and hasattr(m, "beta")


def analog_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The layers whose weights live in analog crossbars: every Linear and Conv (the readout included)."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and
            (parametrize.is_parametrized(m, "weight") or isinstance(getattr(m, "weight", None), nn.Parameter))]


def lif_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if _is_lif(m)]


def _analog_param(m: nn.Module) -> Optional[AnalogWeight]:
    if not parametrize.is_parametrized(m, "weight"):
        return None
    for p in m.parametrizations.weight:
        if isinstance(p, (AnalogWeight, PairWeight)):
            return p
    return None


def noise_buffers(chip: nn.Module) -> Dict[str, Tensor]:
    """Every buffer that encodes the chip's physics (variation, stuck masks, w_max, mismatch), cloned."""
    out = {}
    for name, m in chip.named_modules():
        if isinstance(m, (AnalogWeight, PairWeight, NeuronMismatch, Converters)):
            for b, t in m.named_buffers(recurse=False):
                out[f"{name}.{b}"] = t.detach().clone()
    return out


def programmed_parameters(chip: nn.Module) -> Dict[str, nn.Parameter]:
    """The chip's programmed weights (what calibration trains), by name."""
    return {n: p for n, p in chip.named_parameters() if n.endswith("parametrizations.weight.original")}


# ------------------------------------------------------------------------------------------------ LIF plumbing
def _nominal_tensor(lif: nn.Module, name: str) -> str:
    """Make ``lif.<name>`` a tensor attribute (parameter or buffer) that parametrize can wrap; returns what it
    was (``"parameter"``, ``"buffer"``, ``"float"``) so that :func:`unprogram` can restore it."""
    value = getattr(lif, name)
    if isinstance(value, nn.Parameter):
        return "parameter"
    if torch.is_tensor(value) and name in lif._buffers:
        return "buffer"
    t = value.detach().clone() if torch.is_tensor(value) else torch.tensor(float(value))
    if name in lif.__dict__:
        del lif.__dict__[name]
    elif name in lif._parameters:
        del lif._parameters[name]
    elif name in lif._buffers:
        del lif._buffers[name]
    if name == "threshold":
        # a frozen parameter: calibration may choose to train the programmed threshold (train_thresholds=True)
        lif.register_parameter(name, nn.Parameter(t, requires_grad=False))
    else:
        lif.register_buffer(name, t)
    return "float" if not torch.is_tensor(value) else "buffer"


def _materialise_hook(lif: nn.Module, args):
    x = args[0] if args else None
    if not torch.is_tensor(x) or x.dim() < 2:
        return None
    shape = tuple(x.shape[1:])
    for name in ("threshold", "beta"):
        if parametrize.is_parametrized(lif, name):
            for p in getattr(lif.parametrizations, name):
                if isinstance(p, NeuronMismatch) and not p.materialised:
                    p.materialise(shape, device=x.device)
    return None


def _neuron_shapes(model: nn.Module, example_input, lifs) -> Dict[int, tuple]:
    shapes, handles = {}, []
    for _, lif in lifs:
        def hook(mod, args, _id=id(lif)):
            if args and torch.is_tensor(args[0]) and args[0].dim() >= 2:
                shapes.setdefault(_id, tuple(args[0].shape[1:]))
        handles.append(lif.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return shapes


# ------------------------------------------------------------------------------------------------- chips
def _copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that drops transient graph tensors a forward left on the modules (``local_loss``,
    ``last_step_logits`` ...): they are results, not state, and a non-leaf tensor cannot be deep-copied."""
    memo = {}
    for m in model.modules():
        for v in m.__dict__.values():
            if torch.is_tensor(v) and v.grad_fn is not None:
                memo[id(v)] = None
    return copy.deepcopy(model, memo)


def program(student: nn.Module, dev: DeviceModel, seed: int = 0, *, example_input: Optional[Tensor] = None
            ) -> nn.Module:
    """A reproducible chip instance of ``student`` under device model ``dev`` (a deep copy; the input is untouched).

    Same ``(student, dev, seed)`` -> the same chip; another seed -> another chip. ``example_input`` (a batch the
    model accepts) fixes the neuron shapes for the neuron mismatch at once; without it they are fixed at the
    chip's first forward (same draw).
    """
    if not isinstance(dev, DeviceModel):
        raise TypeError(f"dev must be a noise.DeviceModel, got {type(dev).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if getattr(student, "_ltl_chip", None) is not None or any(
            isinstance(m, (AnalogWeight, PairWeight, NeuronMismatch, Converters)) for m in student.modules()):
        raise ValueError("this model is already a chip; program the clean student (noise.unprogram(chip) gives one)")
    chip = _copy_model(student)
    layers = analog_layers(chip)
    if not layers:
        raise ValueError("the model has no Linear/Conv layer to program onto the chip")
    for i, (_, m) in enumerate(layers):
        if dev.differential:
            def streams(purpose, _i=i):
                return _generator(seed, _i, _PURPOSE[purpose])
            parametrize.register_parametrization(m, "weight", PairWeight(m.weight, dev, streams))
        else:
            parametrize.register_parametrization(m, "weight", AnalogWeight(m.weight, dev, seed, i))
        if dev.dac_bits or dev.adc_bits:
            attach_converters(m, dev.dac_bits, dev.adc_bits)
    lifs = lif_layers(chip)
    if dev.threshold_sigma > 0 or dev.beta_sigma > 0:
        if not lifs:
            raise ValueError("neuron mismatch requested but the model has no LIF layer")
        for j, (_, lif) in enumerate(lifs):
            for name, sigma in (("threshold", dev.threshold_sigma), ("beta", dev.beta_sigma)):
                if sigma > 0:
                    mm = NeuronMismatch(name, sigma, seed, j)
                    value = getattr(lif, name)
                    mm.original_value = None if torch.is_tensor(value) else float(value)
                    mm.original_kind = _nominal_tensor(lif, name)
                    parametrize.register_parametrization(lif, name, mm, unsafe=True)
                    orig = getattr(lif.parametrizations, name).original
                    if isinstance(orig, nn.Parameter):
                        # fixed unless calibration asks for it (trainer.calibrate(train_thresholds=True))
                        orig.requires_grad_(False)
            lif.register_forward_pre_hook(_materialise_hook)
        if example_input is not None:
            shapes = _neuron_shapes(chip, example_input, lifs)  # the pre-hooks materialise during this forward
            missing = [n for n, l in lifs if id(l) not in shapes]
            if missing:
                raise ValueError(f"the example input never reached the LIF layers {missing}")
    chip._ltl_chip = {"format": CHIP_FORMAT, "device": dev.to_dict(), "seed": int(seed)}
    return chip


def chip_info(chip: nn.Module) -> dict:
    """``{"device": DeviceModel dict, "seed": int, ...}`` of a chip made by :func:`program`."""
    info = getattr(chip, "_ltl_chip", None)
    if info is None:
        raise ValueError("not a chip: make one with noise.program(student, dev, seed)")
    return dict(info)


def at(chip: nn.Module, t: float) -> nn.Module:
    """The same chip ``t`` seconds after programming: a copy with the same devices (programming errors, drift
    exponents, stuck devices) and the same programmed weights, drifted to ``t`` (PCM; other physics do not age).
    ``at(at(chip, 10), 3600)`` equals ``at(chip, 3600)``: ``t`` is absolute, counted from programming."""
    info = chip_info(chip)
    dev = DeviceModel.from_dict(info["device"]).at(t)    # validates t
    aged = _copy_model(chip)
    for m in aged.modules():
        if isinstance(m, PairWeight):
            m.t = dev.t
    aged._ltl_chip = dict(info, device=dev.to_dict())
    return aged


def unprogram(chip: nn.Module) -> nn.Module:
    """A clean (ideal) model holding the chip's *programmed* weights and nominal neuron parameters.

    The chip is left untouched. ``program(unprogram(chip), dev, seed)`` has the same noise as ``chip``.
    """
    chip_info(chip)
    clean = _copy_model(chip)
    for _, m in clean.named_modules():
        for k in [k for k, h in m._forward_pre_hooks.items() if h is _materialise_hook]:
            del m._forward_pre_hooks[k]
        detach_converters(m)
        if parametrize.is_parametrized(m):
            _strip(m)
    del clean._ltl_chip
    return clean


def _strip(m: nn.Module) -> None:
    """Undo the parametrizations of one module of a *copy* of a chip, keeping the originals (programmed values).

    ``parametrize.remove_parametrizations`` deletes the property from the module's class, which a deep copy
    shares with the chip it was copied from; this restores the plain class instead and touches no class.
    """
    plist = m._modules["parametrizations"]
    m.__class__ = type(m).__bases__[0]
    del m._modules["parametrizations"]
    for name, pl in plist.items():
        orig = pl.original
        mm = next((p for p in pl if isinstance(p, NeuronMismatch)), None)
        kind = mm.original_kind if mm is not None else None
        if kind == "float":
            value = float(orig)
            if mm.original_value is not None and float(torch.tensor(mm.original_value, dtype=orig.dtype)) == value:
                value = mm.original_value  # unchanged by calibration: give back the exact float
            setattr(m, name, value)
        elif isinstance(orig, nn.Parameter) and kind != "buffer":
            m.register_parameter(name, orig)
        else:
            m.register_buffer(name, orig)


def _atomic_save(obj, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def save_chip(chip: nn.Module, path: str) -> None:
    """Write the chip (device model, seed, programmed weights and every noise buffer); atomic."""
    info = chip_info(chip)
    state = {k: v.detach().cpu() for k, v in chip.state_dict().items()}
    _atomic_save({"format": CHIP_FORMAT, "device": info["device"], "seed": info["seed"], "state_dict": state},
                 path)


def load_chip(path: str, student: nn.Module, map_location=None) -> nn.Module:
    """The chip saved by :func:`save_chip`, rebuilt on the architecture of ``student`` (a clean model of the same
    architecture, e.g. the student it was programmed from; its weights are not used). Loaded with
    ``weights_only=True``."""
    try:
        blob = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read chip file {path!r}: {e}") from e
    if not isinstance(blob, dict) or blob.get("format") != CHIP_FORMAT:
        raise ValueError(f"{path!r} is not a chip file ({CHIP_FORMAT}); save one with noise.save_chip")
    chip = program(student, DeviceModel.from_dict(blob["device"]), int(blob["seed"]))
    try:
        chip.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"chip file {path!r} does not match the architecture of the model given: {e}") from e
    return chip


# -------------------------------------------------------------------------------------- noise-aware training
@contextlib.contextmanager
def noise_aware(model: nn.Module, read_sigma: float = 0.1, mode: str = "multiplicative") -> Iterator[nn.Module]:
    """Read noise on every analog weight of ``model`` *in place* for the duration of the block (noise-aware
    training, or calibration with read noise on). The parameters stay the same objects, so an optimiser built
    before the block keeps working; on exit the model is plain again, holding the trained weights.
    """
    dev = DeviceModel(programming_sigma=0.0, mode=mode, read_sigma=read_sigma)
    done = []
    try:
        for i, (_, m) in enumerate(analog_layers(model)):
            if parametrize.is_parametrized(m, "weight"):
                continue  # already a chip layer: it has its own read noise setting
            parametrize.register_parametrization(m, "weight", AnalogWeight(m.weight, dev, 0, i))
            done.append(m)
        yield model
    finally:
        for m in done:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


@contextlib.contextmanager
def read_noise(chip: nn.Module, enabled: bool) -> Iterator[nn.Module]:
    """Switch a chip's read noise on/off for a block (e.g. ``enabled=False`` to evaluate deterministically)."""
    params = [m for m in chip.modules() if isinstance(m, (AnalogWeight, PairWeight))]
    old = [p.read_enabled for p in params]
    try:
        for p in params:
            p.read_enabled = enabled
        yield chip
    finally:
        for p, o in zip(params, old):
            p.read_enabled = o
