"""Floor 6b, the hardware: analog device models, programmed chips, and the robustness study.

- ``noise``: the face, also reachable as ``ltl_ext.noise``: :class:`~ltl_ext.hw.noise.DeviceModel`, ``program``,
  save/load of chips (re-exported from the modules below), and noise during training (``noise_aware``,
  ``read_noise``);
- ``chip``: a chip, a copy of the student with device non-idealities as parametrizations: ``program``, ``at``,
  ``unprogram``, ``save_chip``/``load_chip``, and which layers are on it;
- ``analog``: the parametrizations of one tensor: a weight on one device (quantise, variation, read noise, stuck
  devices) and neuron mismatch of a LIF's threshold or leak;
- ``devices``: :class:`DeviceModel` and its presets from published measurements (PCM after aihwkit, RRAM);
- ``pairs``: differential-pair weights and the PCM statistics (programming noise, drift, read noise, compensation);
- ``converters``: DAC/ADC quantisation of a crossbar layer;
- ``loop``: chip in the loop: the driver protocol, a simulated black-box chip, calibration from recordings;
- ``verdict``: the strict recovery ratio and the resolution of the test set and the chips;
- ``robustness``, ``drift_study``: the studies (accuracy of chips before/after LTL calibration, over drift time).
"""
from . import noise  # noqa: F401
