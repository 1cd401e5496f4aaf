"""Chips: a spiking student programmed onto an analog substrate, and back.

:func:`program` deep-copies the student and puts the device physics of :mod:`.analog` (or a differential pair,
:mod:`.pairs`, and converters, :mod:`.converters`) on every Linear/Conv weight and, for neuron mismatch, on each
LIF's threshold and leak; the copy remembers its device model and seed (``chip_info``). :func:`at` is the same chip
later in time (drift), :func:`unprogram` the clean model holding the programmed values, :func:`save_chip` /
:func:`load_chip` a chip on disk (device model, seed, programmed weights and every noise buffer). The traversal
helpers say which parts of a model are on the chip (``analog_layers``, ``lif_layers``) and what calibration may
touch (``programmed_parameters``) or must not (``noise_buffers``).
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..data.loaders import check_seed
from .analog import _PURPOSE, AnalogWeight, NeuronMismatch, _generator
from .converters import Converters, attach_converters, detach_converters
from .devices import DeviceModel
from .pairs import PairWeight

CHIP_FORMAT = "ltl_ext.chip/1"


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
    was (``"parameter"``, ``"buffer"``, ``"float"``) so that :func:`unprogram` can restore it.

    A threshold that was not a parameter becomes a *frozen* parameter: calibration may choose to train the
    programmed threshold (``train_thresholds=True``), which it cannot do to a buffer (the LIF keeps a non-learnable
    threshold in a buffer, so without this ``train_thresholds`` would refuse every chip of a default student)."""
    value = getattr(lif, name)
    if isinstance(value, nn.Parameter):
        return "parameter"
    kind = "buffer" if torch.is_tensor(value) and name in lif._buffers else "float"
    if kind == "buffer" and name != "threshold":
        return kind
    t = value.detach().clone() if torch.is_tensor(value) else torch.tensor(float(value))
    if name in lif.__dict__:
        del lif.__dict__[name]
    elif name in lif._buffers:
        del lif._buffers[name]
    if name == "threshold":
        lif.register_parameter(name, nn.Parameter(t, requires_grad=False))
    else:
        lif.register_buffer(name, t)
    return kind


def _restore_nominal(m: nn.Module, name: str, value, kind: Optional[str], requires_grad: bool) -> None:
    """Give ``m.<name>`` back the form the student had (``kind``, see :func:`_nominal_tensor`), holding ``value``."""
    m._parameters.pop(name, None)
    m._buffers.pop(name, None)
    if kind == "float":
        setattr(m, name, float(value))
    elif kind == "parameter":
        p = value if isinstance(value, nn.Parameter) else nn.Parameter(value.detach())
        m.register_parameter(name, p.requires_grad_(requires_grad))   # program froze it for the chip only
    else:
        m.register_buffer(name, value.detach())
    if hasattr(m, "_refresh_scalar"):
        # the LIF caches a 0-d buffer as a float; the cache of the student's value (copied with the chip) would
        # otherwise win over a calibrated threshold
        m._refresh_scalar(name)


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
    # the dry forward draws read noise (and Poisson input spikes) from the global generators: forked, so that a
    # chip made with an example input gives the same results after torch.manual_seed as one made without
    device = getattr(example_input, "device", torch.device("cpu"))
    accel = [] if device.type == "cpu" else [device]
    try:
        model.eval()
        with torch.random.fork_rng(devices=accel, device_type=device.type), torch.no_grad():
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


def _warn_zero_layers(layers: List[Tuple[str, nn.Module]]) -> None:
    """Warn about layers whose weights are all zero. Why: each layer's device range ``w_max`` is its largest
    programmed weight, so such a layer stays (about) 0 under every device model, quantisation and additive noise
    included, and the chip looks robust; almost always an untrained or wrongly loaded model."""
    zero = [name for name, m in layers if not bool(m.weight.detach().any())]
    if zero:
        warnings.warn(f"program: the weights of layer(s) {zero} are all zero, so on the chip they stay 0 whatever "
                      f"the device noise (each layer's range is its largest weight): an untrained or wrongly loaded "
                      f"model? (warnings.filterwarnings('ignore', 'program: the weights') if it is on purpose)",
                      stacklevel=3)


def program(student: nn.Module, dev: DeviceModel, seed: int = 0, *, example_input: Optional[Tensor] = None
            ) -> nn.Module:
    """A reproducible chip instance of ``student`` under device model ``dev`` (a deep copy; the input is untouched).

    Same ``(student, dev, seed)`` -> the same chip; another seed -> another chip. ``example_input`` (a batch the
    model accepts) fixes the neuron shapes for the neuron mismatch at once; without it they are fixed at the
    chip's first forward (same draw). A layer whose weights are all zero is warned about (a ``UserWarning``: it
    would stay 0 under any device noise).
    """
    if not isinstance(dev, DeviceModel):
        raise TypeError(f"dev must be a noise.DeviceModel, got {type(dev).__name__}")
    seed = check_seed(seed)
    if getattr(student, "_ltl_chip", None) is not None or any(
            isinstance(m, (AnalogWeight, PairWeight, NeuronMismatch, Converters)) for m in student.modules()):
        raise ValueError("this model is already a chip; program the clean student (noise.unprogram(chip) gives one)")
    foreign = [n for n, m in analog_layers(student) if parametrize.is_parametrized(m, "weight")]
    if foreign:
        # a weight under another parametrization (e.g. weight_norm) keeps its tensors in original0/1: calibration
        # would train nothing of the layer and unprogram would fail with an AttributeError deep in parametrize
        raise ValueError(f"the weights of {foreign} are already parametrized (e.g. weight_norm): bake them into plain "
                         f"weights first (torch.nn.utils.parametrize.remove_parametrizations(layer, 'weight'))")
    chip = _copy_model(student)
    layers = analog_layers(chip)
    if not layers:
        raise ValueError("the model has no Linear/Conv layer to program onto the chip")
    _warn_zero_layers(layers)
    for i, (_, m) in enumerate(layers):
        if dev.differential:
            def streams(purpose, _i=i):
                return _generator(seed, _i, _PURPOSE[purpose])
            parametrize.register_parametrization(m, "weight", PairWeight(m.weight, dev, streams))
        else:
            parametrize.register_parametrization(m, "weight", AnalogWeight(m.weight, dev, seed, i))
    lifs = lif_layers(chip)
    if (dev.threshold_sigma > 0 or dev.beta_sigma > 0) and not lifs:
        raise ValueError("neuron mismatch requested but the model has no LIF layer")
    thresholds = {}     # what each LIF's threshold was on the student, for unprogram
    for j, (lif_name, lif) in enumerate(lifs):
        thresholds[lif_name] = _nominal_tensor(lif, "threshold")
        for name, sigma in (("threshold", dev.threshold_sigma), ("beta", dev.beta_sigma)):
            if sigma > 0:
                mm = NeuronMismatch(name, sigma, seed, j)
                value = getattr(lif, name)
                mm.original_value = None if torch.is_tensor(value) else float(value)
                mm.original_kind = thresholds[lif_name] if name == "threshold" else _nominal_tensor(lif, name)
                parametrize.register_parametrization(lif, name, mm, unsafe=True)
                orig = getattr(lif.parametrizations, name).original
                if isinstance(orig, nn.Parameter):
                    # fixed unless calibration asks for it (trainer.calibrate(train_thresholds=True));
                    # unprogram gives the student's requires_grad back
                    mm.original_requires_grad = orig.requires_grad if mm.original_kind == "parameter" else False
                    orig.requires_grad_(False)
        if dev.threshold_sigma > 0 or dev.beta_sigma > 0:
            lif.register_forward_pre_hook(_materialise_hook)
    if example_input is not None and (dev.threshold_sigma > 0 or dev.beta_sigma > 0):
        shapes = _neuron_shapes(chip, example_input, lifs)  # the pre-hooks materialise during this forward
        missing = [n for n, l in lifs if id(l) not in shapes]
        if missing:
            raise ValueError(f"the example input never reached the LIF layers {missing}")
    if dev.dac_bits or dev.adc_bits:
        # after the dry forward of example_input: the converters' ranges are fixed at the chip's first *real*
        # forward, so a chip made with an example input is the same chip as one made without
        for _, m in layers:
            attach_converters(m, dev.dac_bits, dev.adc_bits)
    chip._ltl_chip = {"format": CHIP_FORMAT, "device": dev.to_dict(), "seed": int(seed), "thresholds": thresholds}
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
    ``at(at(chip, 10), 3600)`` equals ``at(chip, 3600)``: ``t`` is absolute, counted from programming. The copy
    reads with noise, as every chip does, also when made inside a ``read_noise(chip, False)`` block: that block
    switches off the chip it was given, for its duration, and no copy of it."""
    info = chip_info(chip)
    dev = DeviceModel.from_dict(info["device"]).at(t)    # validates t
    aged = _copy_model(chip)
    for m in aged.modules():
        if isinstance(m, PairWeight):
            m.t = dev.t
        if isinstance(m, (AnalogWeight, PairWeight)):
            m.read_enabled = True     # (else a copy made inside read_noise(chip, False) never had read noise again)
    aged._ltl_chip = dict(info, device=dev.to_dict())
    return aged


def unprogram(chip: nn.Module) -> nn.Module:
    """A clean (ideal) model holding the chip's *programmed* weights and nominal neuron parameters.

    The chip is left untouched. ``program(unprogram(chip), dev, seed)`` is the same chip only while the programmed
    weights are the ones ``chip`` was programmed with (no calibration since): the draws come from the seed, but
    each layer's ``w_max`` (the quantisation levels, the scale of additive noise and of stuck-on devices, a pair's
    conductance scale) and PCM's weight-dependent noise and drift are taken from the weights being programmed, so
    after calibration the new chip's devices differ. Converter ranges (``dac_bits``/``adc_bits``) are set again at
    the new chip's first forward. To keep a calibrated chip, keep it (or ``save_chip`` / ``load_chip``).
    """
    kinds = chip_info(chip).get("thresholds", {})
    clean = _copy_model(chip)
    for name, m in clean.named_modules():
        for k in [k for k, h in m._forward_pre_hooks.items() if h is _materialise_hook]:
            del m._forward_pre_hooks[k]
        detach_converters(m)
        if parametrize.is_parametrized(m):
            _strip(m)
        if kinds.get(name) in ("buffer", "float") and "threshold" in m._parameters:   # frozen by program
            _restore_nominal(m, "threshold", m._parameters["threshold"], kinds[name], False)
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
        if mm is None:        # a weight: its programmed value, as what it was
            if isinstance(orig, nn.Parameter):
                m.register_parameter(name, orig)
            else:
                m.register_buffer(name, orig)
            continue
        value = orig
        if (mm.original_kind == "float" and mm.original_value is not None
                and float(torch.tensor(mm.original_value, dtype=orig.dtype)) == float(orig)):
            value = mm.original_value  # unchanged by calibration: give back the exact float
        _restore_nominal(m, name, value, mm.original_kind, mm.original_requires_grad)


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
    with warnings.catch_warnings():
        # the student gives only the architecture here: its weights (zero or not) are replaced by the file's
        warnings.filterwarnings("ignore", message="program: the weights of layer")
        chip = program(student, DeviceModel.from_dict(blob["device"]), int(blob["seed"]))
    try:
        chip.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"chip file {path!r} does not match the architecture of the model given: {e}") from e
    return chip
