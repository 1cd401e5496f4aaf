"""The device physics of one tensor, as ``torch.nn.utils.parametrize`` parametrizations: the programmed value in,
the value the chip computes with out.

- :class:`AnalogWeight`: a weight on one device per weight::

      w_eff = stuck( read( vary( quantise( w_prog ) ) ) )

  ``quantise``: ``levels`` uniformly spaced conductance levels on ``[-w_max, w_max]`` (straight-through
  gradient); ``vary``: the fixed programming variation of this chip instance, ``w (1 + sigma eps)``
  (multiplicative) or ``w + sigma w_max eps`` (additive); ``read``: a fresh draw at every forward; ``stuck``: devices
  that read 0 or ``+-w_max`` whatever was programmed. (Differential pairs and PCM drift: :mod:`.pairs`.)
- :class:`NeuronMismatch`: a LIF's threshold or leak, nominal value -> per-neuron value
  ``theta (1 + sigma_theta eps)`` / ``clamp(beta (1 + sigma_beta eps), 0, 1)``, drawn once the neuron shape is known.

The noise lives in buffers, drawn from per-(chip seed, layer, purpose) generators (:func:`_generator`), so a chip
is reproducible from its seed and calibration, which trains parameters only, cannot change it. :mod:`.chip` puts
these on a model.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .devices import DeviceModel


def _generator(seed: int, *tags: int) -> torch.Generator:
    """A CPU generator for one (chip seed, layer, purpose): draws are independent of layer order and device."""
    # the whole seed, not its low 32 bits (seeds 0 and 2**32 were the same chip); unchanged for 0 <= seed < 2**32
    h = int(seed) % (2 ** 63 - 1)
    for t in tags:
        h = (h * 1_000_003 + 0x9E3779B9 + int(t)) % (2 ** 63 - 1)
    return torch.Generator().manual_seed(h)


_PURPOSE = {"vary": 1, "stuck": 2, "threshold": 3, "beta": 4, "drift": 5}


def _randn(shape, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal draws made in float32 and cast: the same seed is the same chip whatever the model's dtype
    (drawn in float64 directly, a model on which ``.double()`` was called got other devices)."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype)


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
            eps = _randn(w.shape, _generator(seed, layer_index, _PURPOSE["vary"]), w.dtype)
        else:
            eps = w.new_zeros(0)
        self.register_buffer("eps", eps.to(w.device))
        n = w.numel()
        n_off, n_on = dev.stuck_counts(n)
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
        # what the nominal value was on the student (set by program, used by unprogram to give it back)
        self.original_kind, self.original_value, self.original_requires_grad = "parameter", None, False
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
