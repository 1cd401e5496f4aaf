"""Floor 6b, the hardware: analog device models, programmed chips, and the robustness study.

- ``noise``: :class:`~ltl_ext.hw.noise.DeviceModel`, ``program`` (a chip: a copy of the student with device
  non-idealities as parametrizations), save/load of chips (also reachable as ``ltl_ext.noise``);
- ``robustness``: the study: accuracy of chips before/after LTL calibration.
"""
from . import noise  # noqa: F401
