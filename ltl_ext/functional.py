"""Public functional API: fused ops and their pure-PyTorch reference twins (same signatures).

- ``lif(x, *, beta, alpha=1.0, threshold=1.0, reset="soft", v_reset=0.0, v0=None, surrogate="sigmoid",
  surrogate_alpha=None, detach_reset=False, return_v=False)`` -> spikes [T, *] (, v_final [*])
- ``tandem_loss(x, target, *, mode="offline"|"online", warmup=0, **lif_kwargs)`` -> (spikes [T, *] detached, loss)
- ``tandem_block(x, target, v, count, t0, *, warmup=0, **lif_kwargs)`` -> (spikes [n, *], loss, v_new, count_new):
  online LTL over the n steps t0 .. t0+n-1 of x [n, *] from a state (None at t0 = 0)
- ``tandem_block_(x, target, v, count, t0, *, warmup=0, **lif_kwargs)`` -> (spikes [n, *], loss): the same with the
  state updated in place (``online_state(x_t, steps)`` makes it: v in the math type, the count in uint8 below 256)
- ``tandem_step(x_t, target, v, count, t, *, warmup=0, **lif_kwargs)`` -> (spikes_t, loss_t, v_new, count_new)
"""
from .ops.lif import lif
from .ops.tandem import online_state, tandem_block, tandem_block_, tandem_loss, tandem_step
from .ops.reference import (lif_reference, surrogate_grad, tandem_block_reference, tandem_block_reference_,
                            tandem_loss_reference, tandem_step_reference)

__all__ = ["lif", "tandem_loss", "tandem_block", "tandem_block_", "online_state", "tandem_step", "lif_reference",
           "tandem_loss_reference", "tandem_block_reference", "tandem_block_reference_", "tandem_step_reference",
           "surrogate_grad"]
