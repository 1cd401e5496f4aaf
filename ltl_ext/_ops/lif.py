"""Fused multi-step LIF op. TEMPORARY: routes to the reference until the compiled kernels land (issue 2)."""
from ..reference import lif_reference


def lif(x, **kwargs):
    return lif_reference(x, **kwargs)
