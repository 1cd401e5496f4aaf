"""Device models: what is wrong with an analog substrate (:class:`DeviceModel`) and presets from published
measurements (:data:`PRESETS`). Re-exported by :mod:`ltl_ext.hw.noise` (``noise.DeviceModel.preset("pcm", t=3600)``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

from ..ops.params import is_finite_number

MODES = ("multiplicative", "additive")
PHYSICS = ("generic", "pcm")


# --------------------------------------------------------------------------------------------------- device model
@dataclass(frozen=True)
class DeviceModel:
    """What is wrong with the analog substrate. All defaults but ``programming_sigma`` mean "ideal".

    - ``programming_sigma``: std of the fixed per-device programming variation (relative to ``w`` when
      ``mode="multiplicative"``, to the layer's ``w_max`` when ``"additive"``);
    - ``read_sigma``: std of the read noise, redrawn at every forward, same ``mode``;
    - ``stuck_off`` / ``stuck_on``: fraction of devices stuck at 0 / at ``+-w_max`` (exact counts per layer);
    - ``levels``: number of conductance levels per layer (``None``: analog, continuous);
    - ``threshold_sigma`` / ``beta_sigma``: relative std of the per-neuron mismatch of the LIF threshold / leak.
    """

    programming_sigma: float = 0.2
    mode: str = "multiplicative"
    read_sigma: float = 0.0
    stuck_off: float = 0.0
    stuck_on: float = 0.0
    levels: Optional[int] = None
    threshold_sigma: float = 0.0
    beta_sigma: float = 0.0
    physics: str = "generic"
    differential: bool = False
    t: float = 0.0
    drift_compensation: bool = False
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    dac_bits: Optional[int] = None
    adc_bits: Optional[int] = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for f in ("programming_sigma", "read_sigma", "threshold_sigma", "beta_sigma", "stuck_off", "stuck_on"):
            v = getattr(self, f)
            if not is_finite_number(v) or v < 0:
                raise ValueError(f"{f} must be a finite float >= 0, got {v!r}")
            object.__setattr__(self, f, float(v))
        if self.stuck_off + self.stuck_on > 1:
            raise ValueError(f"stuck_off + stuck_on must be <= 1, got {self.stuck_off} + {self.stuck_on}")
        if self.levels is not None:
            if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2:
                raise ValueError(f"levels must be None (analog) or an int >= 2, got {self.levels!r}")
        for f in ("differential", "drift_compensation"):
            v = getattr(self, f)
            if not isinstance(v, bool):   # drift_compensation="false" is truthy: it would switch compensation on
                raise TypeError(f"{f} must be True or False, got {v!r}")
        if self.physics not in PHYSICS:
            raise ValueError(f"physics must be one of {PHYSICS}, got {self.physics!r}")
        for f in ("t", "prog_noise_scale", "read_noise_scale", "drift_scale"):
            v = getattr(self, f)
            if not is_finite_number(v) or v < 0:
                raise ValueError(f"{f} must be a finite float >= 0, got {v!r}")
            object.__setattr__(self, f, float(v))
        for f in ("dac_bits", "adc_bits"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 24):
                raise ValueError(f"{f} must be None (ideal converter) or an int in [2, 24], got {v!r}")
        if self.physics == "pcm":
            object.__setattr__(self, "differential", True)     # PCM weights are always G+ - G- pairs
            if self.programming_sigma or self.read_sigma or self.mode != "multiplicative":
                raise ValueError("physics='pcm' has its own programming and read noise (prog_noise_scale, "
                                 "read_noise_scale); leave programming_sigma and read_sigma at 0")
        elif self.t or self.drift_compensation:
            raise ValueError("only physics='pcm' drifts: t and drift_compensation need physics='pcm'")
        elif (self.prog_noise_scale, self.read_noise_scale, self.drift_scale) != (1.0, 1.0, 1.0):
            # scales of the PCM statistics, read by nothing else: preset("rram", prog_noise_scale=2) gave the
            # unscaled chip without a word (generic devices take programming_sigma / read_sigma)
            raise ValueError("prog_noise_scale, read_noise_scale and drift_scale scale the PCM model: they need "
                             "physics='pcm' (generic devices: programming_sigma, read_sigma)")
        if self.differential and self.physics == "generic" and (self.mode != "additive" or self.read_sigma):
            raise ValueError("generic differential pairs take an additive programming_sigma (in units of "
                             "g_max) and no read_sigma: pass mode='additive', read_sigma=0")

    @property
    def ideal(self) -> bool:
        return (self.physics == "generic" and self.programming_sigma == 0 and self.read_sigma == 0
                and self.stuck_off == 0 and self.stuck_on == 0 and self.levels is None and self.threshold_sigma == 0
                and self.beta_sigma == 0 and self.dac_bits is None and self.adc_bits is None)

    def stuck_counts(self, n: int) -> tuple:
        """``(off, on)``: how many of ``n`` devices are stuck at 0 and at the top, each fraction rounded. Both
        rounded up can ask for one device more than there are (3 devices, 0.5 + 0.5: 2 + 2): ``on`` takes what
        ``off`` leaves."""
        off = int(round(self.stuck_off * n))
        return off, min(int(round(self.stuck_on * n)), n - off)

    @property
    def random(self) -> bool:
        """Whether two seeds give two different chips (levels or converters alone are deterministic)."""
        return (self.physics == "pcm" or self.programming_sigma > 0 or self.read_sigma > 0 or self.stuck_off > 0
                or self.stuck_on > 0 or self.threshold_sigma > 0 or self.beta_sigma > 0)

    @classmethod
    def preset(cls, name: str, **overrides) -> "DeviceModel":
        """A device model from published measurements: ``"pcm"`` or ``"rram"`` (see :data:`PRESETS` for the
        values and their sources); keyword arguments override fields, e.g. ``preset("pcm", t=3600)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls(**dict(PRESETS[name], **overrides))

    def at(self, t: float) -> "DeviceModel":
        """The same device model ``t`` seconds after programming (only PCM drifts: others come back as they are)."""
        if not is_finite_number(t) or t < 0:
            raise ValueError(f"t must be a finite number of seconds >= 0, got {t!r}")
        return DeviceModel.from_dict(dict(self.to_dict(), t=t)) if self.physics == "pcm" else self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceModel":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown DeviceModel fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)

    def describe(self) -> str:
        if self.physics == "pcm":
            parts = [f"PCM pairs (aihwkit PCMLikeNoiseModel) t={self.t:g} s, "
                     f"{'with' if self.drift_compensation else 'no'} drift compensation"]
        else:
            parts = [("differential " if self.differential else "") + f"{self.mode} sigma={self.programming_sigma:g}"]
        if self.read_sigma:
            parts.append(f"read={self.read_sigma:g}")
        if self.stuck_off or self.stuck_on:
            parts.append(f"stuck off/on={self.stuck_off:g}/{self.stuck_on:g}")
        if self.levels:
            parts.append(f"{self.levels} levels")
        if self.threshold_sigma or self.beta_sigma:
            parts.append(f"mismatch theta/beta={self.threshold_sigma:g}/{self.beta_sigma:g}")
        if self.dac_bits or self.adc_bits:
            parts.append(f"DAC/ADC bits={self.dac_bits}/{self.adc_bits}")
        return ", ".join(parts)


#: Device presets from published measurements (``DeviceModel.preset(name, **overrides)``).
#:
#: - ``"pcm"``: phase-change memory on differential pairs, the statistical model of IBM's aihwkit
#:   ``PCMLikeNoiseModel`` (programming-noise polynomial, per-device drift exponents, 1/f read noise, g_max = 25 uS,
#:   t0 = 20 s), fitted on one million PCM devices (Nandakumar et al., ICECS 2019); every coefficient and its source
#:   is in :mod:`ltl_ext.hw.pairs`. With aihwkit's ``GlobalDriftCompensation``; ``t`` = seconds after programming.
#: - ``"rram"``: resistive RAM on differential pairs with 8 conductance levels per device (3-bit multi-level cells
#:   programmed with write-verify, as in the 1T1R TaOx/HfOx arrays of Yao et al., Nature 577, 641 (2020)), a
#:   residual additive variation of 3 % of g_max per device after write-verify (an order of magnitude read off that
#:   work's programming results, not a fit), and stuck devices at the fractions measured on a 4 Mb RRAM chip by
#:   Chen et al., IEEE Trans. Computers 64(1), 180 (2015): 1.75 % stuck at the low-conductance state (off) and
#:   9.04 % at the high-conductance state (on). No drift is modelled for RRAM.
PRESETS = {
    "pcm": dict(physics="pcm", programming_sigma=0.0, drift_compensation=True),
    "rram": dict(physics="generic", differential=True, mode="additive", programming_sigma=0.03, levels=8,
                 stuck_off=0.0175, stuck_on=0.0904),
}
