"""Floor 4, the ops: the fused torch ops and their specification.

- ``library``: loading the compiled ``ltl_ext._C`` (which registers ``torch.ops.ltl_ext.*``), build information,
  device checks;
- ``params``: argument checks and normalisation, shared by the fused ops and the references;
- ``lif`` / ``tandem``: the public fused ops (``lif``, ``tandem_loss``, ``tandem_step``) with their fake and autograd
  registrations;
- ``reference``: the pure-PyTorch twins with the same signatures: the spec the kernels are tested against.

The public face of this floor is :mod:`ltl_ext.functional`.
"""
from .library import HAS_C, HAS_CUDA_KERNELS, ExtensionNotBuiltError, build_info, check_device  # noqa: F401
