"""Fused tandem-loss ops. TEMPORARY: routes to the reference until the compiled kernels land (issue 3)."""
from ..reference import tandem_loss_reference, tandem_step_reference


def tandem_loss(x, target, **kwargs):
    return tandem_loss_reference(x, target, **kwargs)


def tandem_step(x_t, target, v, count, t, **kwargs):
    return tandem_step_reference(x_t, target, v, count, t, **kwargs)
