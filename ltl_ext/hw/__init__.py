"""Floor 6b, the hardware: analog device models, programmed chips, and the robustness study.

- ``noise``: :class:`~ltl_ext.hw.noise.DeviceModel`, ``program`` (a chip: a copy of the student with device
  non-idealities as parametrizations), save/load of chips (also reachable as ``ltl_ext.noise``);
- ``devices``: :class:`DeviceModel` and its presets from published measurements (PCM after aihwkit, RRAM);
- ``pairs``: differential-pair weights and the PCM statistics (programming noise, drift, read noise, compensation);
- ``converters``: DAC/ADC quantisation of a crossbar layer;
- ``loop``: chip in the loop: the driver protocol, a simulated black-box chip, calibration from recordings;
- ``verdict``: the strict recovery ratio and the resolution of the test set and the chips;
- ``robustness``, ``drift_study``: the studies (accuracy of chips before/after LTL calibration, over drift time).
"""
from . import noise  # noqa: F401
