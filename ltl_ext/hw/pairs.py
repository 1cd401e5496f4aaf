"""Differential-pair weights ``w = (G+ - G-) w_max / g_max`` and the PCM statistical model with drift.

A weight ``w`` of a layer is stored on two devices, ``G+`` for its positive part and ``G-`` for its negative
part, in conductances normalised by ``g_max`` (``g = G / g_max``, in [0, 1])::

    g_target = (relu(w), relu(-w)) / w_max                     [2, *w.shape]
    g_prog   = clamp(q(g_target) + s_prog(g_target) eps, 0)    programming noise, eps ~ N(0, 1) fixed per device
    g(t)     = g_prog ((t + t0) / t0)^-nu                       drift, nu fixed per device (PCM only)
    g_read   = g(t) + |g(t)| Q(g_prog) sqrt(ln((t + t0 + t_r) / (2 t_r))) xi,  xi ~ N(0, 1) at every read (PCM)
    g_read   = stuck devices at 0 (off) or 1 (g_max, on)
    w_eff    = (g_read[0] - g_read[1]) w_max  *  a(t)          a(t): global drift compensation (optional)

``q`` quantises each device to ``levels`` uniform levels on [0, 1] (straight-through gradient).

**PCM** (``physics="pcm"``) follows the statistical model of IBM's aihwkit, ``PCMLikeNoiseModel``
(``aihwkit/inference/noise/pcm.py``; docs: "Inference and PCM statistical model", ``docs/source/pcm_inference.rst``),
fitted by Nandakumar et al. (ICECS 2019, "Phase-change memory models for deep learning training and inference")
on one million doped-GST PCM devices of an IBM array (Joshi et al., Nat. Commun. 11, 2473, 2020):

- ``g_max = 25 uS`` (aihwkit ``SinglePairConductanceConverter`` default);
- programming noise std ``s_prog(g) = (0.26348 + 1.9650 g - 1.1731 g^2) uS / 25 uS`` (``prog_coeff``, fitted
  at ``g_max = 25 uS``), times ``prog_noise_scale`` (1);
- drift exponent per device ``nu = |mu + s eps'|`` with ``mu = clip(-0.0155 ln g_t + 0.0244, 0.049, 0.1)`` and
  ``s = clip(-0.0125 ln g_t - 0.0059, 0.008, 0.045)``, ``g_t`` the relative target (clamped >= 1e-7), times
  ``drift_scale`` (1); reference time ``t0 = 20 s`` (``t_0``); ``t`` counts from the end of programming
  (aihwkit's ``t_inference``);
- read (1/f) noise ``Q(g) = min(0.0088 / max(g^0.65, 1e-3), 0.2)``, ``t_read = 250 ns``, times
  ``read_noise_scale`` (1);
- global drift compensation (aihwkit ``GlobalDriftCompensation``): the periphery reads the layer with one-hot
  inputs right after programming and at time t and rescales the outputs by the ratio of the mean absolute
  outputs, ``a(t) = mean|W(0)| / mean|W(t)|``. Here the readouts are taken without read noise (averaged over
  every device of the layer, the read noise is negligible) and ``a`` is a constant of the periphery (no
  gradient), as on the chip.

**Generic pairs** (``physics="generic"``, e.g. the RRAM preset): additive programming variation
``s_prog = programming_sigma`` (in units of ``g_max``), levels, stuck devices; no drift, no read noise.

Modelling choices (said once, here): the programming error of a device is the fixed ``eps`` of that device
(a calibration that writes it again gets the same error for the same target); calibration writes do not restart
a device's drift clock. The noise lives in buffers (``eps``, ``nu``, stuck masks, ``w_max``), so an optimiser
that sees only parameters cannot change it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .analog import _randn

#: aihwkit PCMLikeNoiseModel defaults (see the module docstring for the sources)
PCM_G_MAX_US = 25.0
PCM_PROG_COEFF_US = (0.26348, 1.9650, -1.1731)
PCM_T0 = 20.0
PCM_T_READ = 250e-9
PCM_NU_MEAN = (-0.0155, 0.0244, 0.049, 0.1)      # slope on ln g, intercept, clip low, clip high
PCM_NU_STD = (-0.0125, -0.0059, 0.008, 0.045)
PCM_Q = (0.0088, 0.65, 1e-3, 0.2)               # Q = min(c / max(g^e, floor), cap)
_ZERO_CLIP = 1e-7


class _QuantiseSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g: Tensor, levels: int) -> Tensor:
        return torch.round(g.clamp(0, 1) * (levels - 1)) / (levels - 1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def pcm_programming_sigma(g: Tensor) -> Tensor:
    """Std of the PCM programming noise for relative targets ``g`` (in units of ``g_max``)."""
    c0, c1, c2 = PCM_PROG_COEFF_US
    return (c0 + c1 * g + c2 * g * g) / PCM_G_MAX_US


def pcm_drift_exponents(g_target: Tensor, generator: torch.Generator) -> Tensor:
    """Per-device drift exponents ``nu`` for relative targets ``g_target`` (same shape)."""
    lg = torch.log(g_target.clamp_min(_ZERO_CLIP))
    mu = (PCM_NU_MEAN[0] * lg + PCM_NU_MEAN[1]).clamp(PCM_NU_MEAN[2], PCM_NU_MEAN[3])
    sd = (PCM_NU_STD[0] * lg + PCM_NU_STD[1]).clamp(PCM_NU_STD[2], PCM_NU_STD[3])
    eps = _randn(g_target.shape, generator, g_target.dtype)
    return (mu + sd * eps).abs()


def pcm_read_sigma(g_prog: Tensor, t: float) -> Tensor:
    """Relative std of the accumulated 1/f read noise at time ``t`` (s after programming)."""
    c, e, floor, cap = PCM_Q
    q = (c / g_prog.abs().pow(e).clamp_min(floor)).clamp_max(cap)
    return q * math.sqrt(math.log((t + PCM_T0 + PCM_T_READ) / (2 * PCM_T_READ)))


class PairWeight(nn.Module):
    """Parametrization of one weight tensor on differential pairs (module docstring: the chain, the sources).

    Buffers (the chip's physics, fixed): ``w_max`` (scalar), ``eps`` [2, *w] (programming error per device),
    ``nu`` [2, *w] (drift exponents; empty unless PCM), ``stuck_mask`` / ``stuck_value`` [2, *w] (or empty).
    ``t`` (seconds since programming) is an attribute: :func:`ltl_ext.hw.noise.at` sets it.
    """

    def __init__(self, weight: Tensor, dev, generators):
        super().__init__()
        w = weight.detach()
        self.physics, self.levels, self.sigma = dev.physics, dev.levels, dev.programming_sigma
        self.prog_scale, self.read_scale = dev.prog_noise_scale, dev.read_noise_scale
        self.t, self.compensate, self.read_enabled = float(dev.t), bool(dev.drift_compensation), True
        w_max = w.abs().max().clamp_min(torch.finfo(w.dtype).tiny)
        self.register_buffer("w_max", w_max.clone())
        shape = (2,) + tuple(w.shape)
        self.register_buffer("eps", _randn(shape, generators("vary"), w.dtype).to(w.device))
        if self.physics == "pcm" and dev.drift_scale > 0:
            nu = pcm_drift_exponents(self._targets(w).cpu(), generators("drift")) * dev.drift_scale
        else:
            nu = w.new_zeros(0)
        self.register_buffer("nu", nu.to(w.device))
        n = 2 * w.numel()
        n_off, n_on = dev.stuck_counts(n)
        mask, value = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=w.dtype)
        if n_off + n_on:
            perm = torch.randperm(n, generator=generators("stuck"))
            mask[perm[: n_off + n_on]] = True
            value[perm[n_off: n_off + n_on]] = 1.0
            self.register_buffer("stuck_mask", mask.view(shape).to(w.device))
            self.register_buffer("stuck_value", value.view(shape).to(w.device))
        else:
            self.register_buffer("stuck_mask", torch.zeros(0, dtype=torch.bool, device=w.device))
            self.register_buffer("stuck_value", w.new_zeros(0))

    def _targets(self, w: Tensor) -> Tensor:
        """Relative conductance targets of the pair, [2, *w] in [0, 1] (|w| > w_max saturates at g_max)."""
        g = torch.stack((torch.relu(w), torch.relu(-w))) / self.w_max
        g = g.clamp(0.0, 1.0)
        return _QuantiseSTE.apply(g, self.levels) if self.levels is not None else g

    def programmed(self, w: Tensor) -> Tensor:
        """Conductances right after programming, ``g_prog`` [2, *w]."""
        g = self._targets(w)
        s = pcm_programming_sigma(g) * self.prog_scale if self.physics == "pcm" else self.sigma
        return (g + s * self.eps).clamp_min(0.0)

    def drifted(self, g_prog: Tensor, t: float) -> Tensor:
        if self.nu.numel() == 0 or t <= 0:
            return g_prog
        return g_prog * ((t + PCM_T0) / PCM_T0) ** (-self.nu)

    def _stuck(self, g: Tensor) -> Tensor:
        return torch.where(self.stuck_mask, self.stuck_value, g) if self.stuck_mask.numel() else g

    def compensation(self, w: Tensor) -> Tensor:
        """Global drift compensation factor ``a(t) = mean|W(0)| / mean|W(t)|`` (a constant: no gradient)."""
        with torch.no_grad():
            g0 = self._stuck(self.programmed(w))
            gt = self._stuck(self.drifted(g0, self.t))
            return ((g0[0] - g0[1]).abs().mean() / (gt[0] - gt[1]).abs().mean().clamp_min(1e-12)).detach()

    def forward(self, w: Tensor) -> Tensor:
        g_prog = self.programmed(w)
        g = self.drifted(g_prog, self.t)
        if self.physics == "pcm" and self.read_enabled and self.read_scale > 0 and self.t > 0:
            sigma = pcm_read_sigma(g_prog.detach(), self.t) * self.read_scale
            g = (g + g.abs() * sigma * torch.randn_like(g)).clamp_min(0.0)
        g = self._stuck(g)
        w_eff = (g[0] - g[1]) * self.w_max
        if self.compensate and self.nu.numel() and self.t > 0:
            w_eff = w_eff * self.compensation(w)
        return w_eff

    def extra_repr(self) -> str:
        return (f"physics={self.physics}, t={self.t:g} s, levels={self.levels}, compensation={self.compensate}, "
                f"stuck={int(self.stuck_mask.sum()) if self.stuck_mask.numel() else 0}")
