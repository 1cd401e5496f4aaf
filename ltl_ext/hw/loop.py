"""Chip in the loop: LTL calibration of a chip the host cannot differentiate through.

The host talks to the chip through a small protocol a chip driver can implement (:class:`ChipDriver`):

- ``layers``: names of the programmable layers (every Linear/Conv, as in the host's model), ``time_steps``;
- ``program(layer, weight, bias=None)``: write a layer's weights (and its digital bias);
- ``run(inputs) -> Recording``: one inference of a batch ``[B, ...]`` over T steps, recording the spikes of every
  LIF layer ``[T, B, *neuron]``, the readout current ``[T, B, classes]`` and, when the chip exposes them
  (``exposes_membrane``), the pre-spike membrane potentials ``H[t]`` of every LIF layer ``[T, B, *neuron]``.

Each calibration step (:func:`calibrate_in_the_loop`) is one ``run`` on a batch and one ``program`` per layer.
The host keeps a *shadow* of what it programmed (a copy of the student) and computes each layer's online LTL
update (ltl-method.md §4) from the chip's observables and the teacher's targets ``y_l``. With the online local
loss ``L_l = sum_{t >= w} mean((C[t] / (t+1) - y_l)^2)``, ``C[t] = C[t-1].detach() + S[t]`` and
``H[t] = beta V[t-1].detach() + alpha X[t]`` (no gradient through time), the gradient is exactly::

    dL_l/dW_l = sum_t  g[t] * psi(H[t] - theta) * alpha * dX[t]/dW_l,   g[t] = 2 (C[t]/(t+1) - y_l) / ((t+1) N)

for t >= w (0 before), ``N`` the number of elements of ``y_l``, ``psi`` the model's surrogate. ``C`` (hence ``g``)
comes from the chip's recorded spikes; ``X[t] = W_l s_{l-1}[t] + b_l`` is recomputed by the host from the chip's
recorded input spikes with the shadow weights (``dX/dW`` = those spikes, exact for a linear crossbar); ``H``
is the chip's membrane when exposed (the ``"membrane"`` variant: the exact online LTL gradient of the chip's own
dynamics, up to the unknown device transfer ``dW_eff/dW_prog``), else the host's estimate from its shadow LIF
driven by ``X`` (the ``"spikes"`` variant: the error from the chip, the Jacobian from the host's model, as in
hardware-in-the-loop training, Schmitt et al., IJCNN 2017). The readout learns from the chip's readout current
with the readout CE of the trainer's recipe. No gradient crosses layers: each layer's input is a recorded spike
train.

:class:`SimulatedChip` implements the protocol over a chip made by :func:`ltl_ext.hw.noise.program`; its noise is
private (the host only sees recordings), which the tests use as a black box.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

from .. import functional
from ..ltl import tandem
from ..nn import LIF, SpikingModel, lifs
from . import noise

__all__ = ["Recording", "ChipDriver", "SimulatedChip", "membrane_trace", "calibrate_in_the_loop", "chip_accuracy"]


@dataclass
class Recording:
    """What one chip run gives back (names: the LIF layers of the model)."""

    spikes: Dict[str, Tensor]                      # [T, B, *neuron] in {0, 1}
    output: Tensor                                 # [T, B, classes] readout current per step
    membrane: Optional[Dict[str, Tensor]] = None   # [T, B, *neuron] pre-spike membrane H[t], if exposed


@runtime_checkable
class ChipDriver(Protocol):
    layers: Sequence[str]
    time_steps: int
    exposes_membrane: bool

    def program(self, layer: str, weight: Tensor, bias: Optional[Tensor] = None) -> None: ...

    def run(self, inputs: Tensor) -> Recording: ...


def membrane_trace(x: Tensor, lif: LIF) -> tuple:
    """Spikes and pre-spike membrane of ``lif`` driven by currents ``x`` [T, *]: ``(S, H)``, both [T, *], no grad.

    ``H[t] = beta V[t-1] + alpha X[t]`` with ``V`` the op's post-reset state (ltl_ext.functional.lif, one step at
    a time); ``S[t] = (H[t] >= threshold)``.
    """
    kw = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in lif.lif_kwargs().items()}
    v, spikes, trace = None, [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            prev = torch.zeros_like(x[t]) if v is None else v
            trace.append(kw["beta"] * prev + kw["alpha"] * x[t])
            s, v = functional.lif(x[t:t + 1], v0=v, return_v=True, **kw)
            spikes.append(s[0])
    return torch.stack(spikes), torch.stack(trace)


@contextlib.contextmanager
def _recording(model: nn.Module, currents: bool):
    """Record every LIF's output spikes (and input currents) in one forward: yields ``(spikes, currents)`` dicts
    of [T*B, *] tensors."""
    spikes, inputs, handles = {}, {}, []
    for name, m in lifs(model):
        handles.append(m.register_forward_hook(lambda mod, a, out, _n=name: spikes.__setitem__(_n, out.detach())))
        if currents:
            handles.append(m.register_forward_pre_hook(
                lambda mod, a, _n=name: inputs.__setitem__(_n, a[0].detach())))
    try:
        yield spikes, inputs
    finally:
        for h in handles:
            h.remove()


class SimulatedChip:
    """A black-box chip: ``noise.program(student, device, seed)`` behind the :class:`ChipDriver` protocol.

    The programmed chip is private; the host sees only :class:`Recording` s. ``runs`` / ``writes`` count the chip
    operations (what calibration costs on hardware). ``at(t)`` ages the simulated devices (the simulation can,
    a driver cannot).
    """

    def __init__(self, student: nn.Module, device: "noise.DeviceModel", seed: int = 0, *,
                 expose_membrane: bool = False, time_steps: Optional[int] = None):
        chip = noise.program(student, device, seed)
        if not isinstance(chip, SpikingModel):
            chip = SpikingModel(chip, time_steps=time_steps or 16)
        elif time_steps is not None:
            chip.time_steps = time_steps
        self.__chip = chip.eval()
        self.layers = [n for n, _ in noise.analog_layers(self.__chip.model)]
        self.time_steps = self.__chip.time_steps
        self.exposes_membrane = bool(expose_membrane)
        self.runs = self.writes = 0

    def at(self, t: float) -> "SimulatedChip":
        """The same simulated chip ``t`` seconds after programming (a copy)."""
        other = copy.copy(self)
        other.__chip = noise.at(self.__chip, t)
        return other

    def program(self, layer: str, weight: Tensor, bias: Optional[Tensor] = None) -> None:
        m = dict(noise.analog_layers(self.__chip.model)).get(layer)
        if m is None:
            raise KeyError(f"no programmable layer {layer!r}; the chip has {self.layers}")
        target = m.parametrizations.weight.original
        if tuple(weight.shape) != tuple(target.shape):
            raise ValueError(f"layer {layer!r} takes weights of shape {tuple(target.shape)}, got "
                             f"{tuple(weight.shape)}")
        if bias is not None:
            # checked like the weight: copy_ would broadcast a [1] bias into every neuron without a word
            if m.bias is None:
                raise ValueError(f"layer {layer!r} has no bias to program")
            if tuple(bias.shape) != tuple(m.bias.shape):
                raise ValueError(f"layer {layer!r} takes a bias of shape {tuple(m.bias.shape)}, got "
                                 f"{tuple(bias.shape)}")
        with torch.no_grad():
            target.copy_(weight)
            if bias is not None:
                m.bias.copy_(bias)
        self.writes += 1

    @torch.no_grad()
    def run(self, inputs: Tensor) -> Recording:
        # a driver takes the host's batch wherever it lies: a chip simulated on a GPU fed a loader's CPU batch
        # (chip_accuracy) failed with a device mismatch in its first layer
        inputs = inputs.to(_device_of(self.__chip))
        T, B = self.time_steps, inputs.shape[0]
        with _recording(self.__chip.model, self.exposes_membrane) as (spikes, currents):
            _, steps = self.__chip(inputs, return_steps=True)
        self.runs += 1
        shaped = {n: s.reshape(T, B, *s.shape[1:]) for n, s in spikes.items()}
        membrane = None
        if self.exposes_membrane:
            named = dict(lifs(self.__chip.model))
            membrane = {n: membrane_trace(c.reshape(T, B, *c.shape[1:]), named[n])[1] for n, c in currents.items()}
        return Recording(shaped, steps.detach(), membrane)


def _device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s tensors lie (its first parameter or buffer; the CPU for a model without any)."""
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return torch.device("cpu") if t is None else t.device


def _online_error(S: Tensor, y: Tensor, warmup: int) -> tuple:
    """``g[t] = dL/dS[t]`` of the online local loss from recorded spikes S [T, B, *] and the target y [B, *],
    and the loss value ``sum_{t >= w} mean((C[t]/(t+1) - y)^2)``."""
    T = S.shape[0]
    steps = torch.arange(1, T + 1, dtype=S.dtype, device=S.device).view(T, *([1] * (S.dim() - 1)))
    diff = S.cumsum(0) / steps - y.to(S.dtype)
    learn = (torch.arange(T, device=S.device) >= warmup).to(S.dtype).view_as(steps)
    g = 2 * diff * learn / (steps * y.numel())
    return g, float(((diff ** 2).flatten(1).mean(1) * learn.flatten()).sum())


def _host_step(shadow: SpikingModel, link, rec: Recording, x: Tensor, y: Tensor, config, *, use_membrane: bool):
    """The local losses' surrogate proxies and the readout CE on the shadow, driven by the chip's spikes."""
    from ..train.engine import readout_loss
    T, B = shadow.time_steps, x.shape[0]
    named = dict(lifs(shadow.model))
    currents, handles = {}, []
    for name, m in named.items():
        handles.append(m.register_forward_pre_hook(lambda mod, a, _n=name: currents.__setitem__(_n, a[0])))
        # the next layer gets the chip's spikes, not the shadow's: each layer learns on what it really receives
        handles.append(m.register_forward_hook(
            lambda mod, a, out, _n=name: rec.spikes[_n].reshape(out.shape).to(out.device, out.dtype)))
    try:
        _, steps = shadow(x, return_steps=True)          # steps: [T, B, classes], the readout current per step
    finally:
        for h in handles:
            h.remove()
    targets = link.targets(x)
    total, local = 0.0, {}
    for name, m in named.items():
        X = currents[name].reshape(T, B, *currents[name].shape[1:])
        S = rec.spikes[name].to(X.device, X.dtype)    # a driver may record on the host, the shadow be on a GPU
        H = rec.membrane[name].to(X.device) if use_membrane else membrane_trace(X.detach(), m)[1]
        g, value = _online_error(S, targets[name], config.warmup)
        kw = m.lif_kwargs()
        theta, alpha = kw["threshold"], kw["alpha"]
        theta = theta.detach() if torch.is_tensor(theta) else theta
        alpha = alpha.detach() if torch.is_tensor(alpha) else alpha
        a = m.surrogate_alpha if m.surrogate_alpha is not None else functional_default_alpha(m.surrogate)
        coeff = (g * functional.surrogate_grad(H - theta, m.surrogate, a) * alpha).detach()
        total = total + (coeff * X).sum()       # d/dW of this = the exact online LTL gradient (module docstring)
        local[name] = value
    chip_steps = steps + (rec.output.to(steps.device, steps.dtype) - steps).detach()  # the chip's value, W_out's grad
    ce = readout_loss(chip_steps, y, config)
    return config.ce_weight * ce + total, float(ce.detach()), local


def functional_default_alpha(kind: str) -> float:
    from ..ops.params import SURROGATES
    return SURROGATES[kind]


def calibrate_in_the_loop(trainer, chip: ChipDriver, loader: Iterable, steps: int = 300, *,
                          lr: Optional[float] = None, variant: str = "auto", warmup: Optional[int] = None
                          ) -> Dict[str, object]:
    """Online LTL calibration of ``chip`` (a :class:`ChipDriver`) against ``trainer``'s teacher.

    The shadow starts from ``trainer.student`` (what was programmed) and is written to the chip first. Each step:
    one ``chip.run`` on a batch of ``loader`` (cycled), the local updates from the recording (module docstring),
    one Adam step on the shadow (``lr`` default: the trainer's), one ``chip.program`` per layer.
    ``variant``: ``"membrane"`` (needs ``chip.exposes_membrane``), ``"spikes"``, or ``"auto"`` (membrane when
    exposed). Returns ``{"steps", "variant", "runs", "writes", "loss", "ce", "local_loss", "shadow"}`` (losses
    averaged over the last 10 % of the steps; ``shadow`` is the host's model of what is now programmed).
    """
    from dataclasses import asdict
    from ..train.calibration import _cycle
    from ..train.config import LTLConfig
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not isinstance(chip, ChipDriver):
        raise TypeError("chip must implement the ChipDriver protocol (layers, time_steps, exposes_membrane, "
                        "program, run)")
    if variant == "auto":
        variant = "membrane" if chip.exposes_membrane else "spikes"
    if variant not in ("membrane", "spikes"):
        raise ValueError(f"variant must be 'membrane', 'spikes' or 'auto', got {variant!r}")
    if variant == "membrane" and not chip.exposes_membrane:
        raise ValueError("variant='membrane' needs a chip that exposes its membrane potentials")
    shadow = noise._copy_model(trainer.student)
    if not isinstance(shadow, SpikingModel):
        shadow = SpikingModel(shadow, time_steps=chip.time_steps)
    shadow.time_steps = chip.time_steps
    shadow = shadow.to(trainer.device).train()
    layers = dict(noise.analog_layers(shadow.model))
    if sorted(layers) != sorted(chip.layers):
        raise ValueError(f"the chip's layers {list(chip.layers)} are not the student's {sorted(layers)}")
    T = chip.time_steps
    if warmup is None:
        warmup = trainer.config.warmup if trainer.config.warmup < T else max(0, (3 * T) // 4)
    config = LTLConfig(**dict(asdict(trainer.config), mode="online", memory="batched", time_steps=T,
                              warmup=warmup, lr=float(lr if lr is not None else trainer.config.lr))).check()
    params = [p for m in layers.values() for p in m.parameters(recurse=False)]
    for p in shadow.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=config.lr)

    def write_all():
        for name, m in layers.items():
            chip.program(name, m.weight.detach(), None if m.bias is None else m.bias.detach())

    write_all()
    link = tandem.Tandem(trainer.teacher, shadow, percentile=trainer.link.normaliser.fork())  # scaled as trained
    tail, sums = max(1, steps // 10), {}
    try:
        it = _cycle(loader)
        for i in range(steps):
            x, y = next(it)
            x, y = x.to(trainer.device), y.to(trainer.device)
            rec = chip.run(x)
            opt.zero_grad(set_to_none=True)
            loss, ce, local = _host_step(shadow, link, rec, x, y, config, use_membrane=variant == "membrane")
            loss.backward()
            opt.step()
            write_all()
            if i >= steps - tail:
                for k, v in [("ce", ce)] + [(f"local/{n}", v) for n, v in local.items()]:
                    sums[k] = sums.get(k, 0.0) + v / tail
    finally:
        link.close()
    shadow.eval()
    return {"steps": steps, "variant": variant, "runs": steps, "writes": steps * len(layers) + len(layers),
            "ce": sums.get("ce"), "local_loss": {k[6:]: v for k, v in sums.items() if k.startswith("local/")},
            "loss": (sums.get("ce", 0.0) * config.ce_weight + sum(v for k, v in sums.items() if k != "ce"))
            if sums else None, "shadow": shadow}


@torch.no_grad()
def chip_accuracy(chip: ChipDriver, loader: Iterable, max_batches: Optional[int] = None) -> Dict[str, float]:
    """Accuracy (%) of the chip's time-averaged readout over ``loader``, measured by chip runs alone."""
    correct = n = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        pred = chip.run(x).output.mean(0).argmax(1)
        # the labels to the predictions' device: labels on a GPU against predictions on the host (or the other way
        # round) failed with a device mismatch
        correct += int((pred == y.to(pred.device)).sum())
        n += len(y)
    if n == 0:
        raise ValueError("the loader yields no batch")
    return {"acc": 100.0 * correct / n, "samples": n}
