"""NIR (the Neuromorphic Intermediate Representation): :func:`export_nir` and :func:`import_nir`.

A student leaves ltl_ext as a ``nir.NIRGraph`` (``nir.write(path, graph)`` stores it) and runs in SpikingJelly,
snnTorch, Norse, Lava or on chips that read NIR; a NIR graph comes in as a :class:`~ltl_ext.nn.SpikingModel`.
``nir`` is an optional extra: ``pip install 'ltl_ext[nir]'`` (or ``pip install nir``).

**Time.** NIR neurons are continuous-time ODEs; ltl_ext's LIF is their forward-Euler step with step ``dt`` (default
1e-4 s, the value SpikingJelly, snnTorch and Norse use for NIR exchange). NIR's LIF::

    tau * dv/dt = (v_leak - v) + r * I     ->  v[t] = (1 - dt/tau) * v[t-1] + (dt * r / tau) * I[t]   (v_leak = 0)

is ltl_ext's ``H[t] = beta * V[t-1] + alpha * X[t]`` with::

    beta = 1 - dt / tau      alpha = dt * r / tau        <=>     tau = dt / (1 - beta)      r = alpha / (1 - beta)

``beta = 1`` (no leak) is NIR's ``IF`` (``dv/dt = r * I``, so ``r = alpha / dt``). The reset is NIR's hard reset
``v <- v_reset`` after a spike (ltl_ext ``reset="hard"``, the LTL default); NIR 1.0 has no subtracting (soft)
reset, so a soft-reset LIF raises a ``ValueError`` naming the layer. NIR writes the spike condition as
``v > v_threshold``; ltl_ext, SpikingJelly and snnTorch fire at ``>=``. They differ only when ``v`` lands exactly
on the threshold: rare with trained float weights, but in integer-valued graphs (weights, inputs and threshold
whole numbers, as hardware toolchains make them) it happens at every such step (an IF with weight 1, threshold 1
and input 1 fires every step here, every other step under ``>``); the files carry the threshold as it is, and a
tool reading them fires by its own rule. The surrogate gradient and ``detach_reset`` only shape training and are dropped (listed in the
graph's ``metadata["notes"]``).

**Graph.** Linear (``nir.Affine`` / ``nir.Linear``), Conv1d/Conv2d, AvgPool2d (``AdaptiveAvgPool2d`` when the
size divides), sum pooling (``nn.AvgPool2d(..., divisor_override=1)`` <-> ``nir.SumPool2d``), Flatten, LIF and IF;
Identity/Dropout vanish; residual adds become two edges into one node (NIR sums a node's inputs). Max pooling
has no NIR node and raises. The input normalisation ``x' = (x - mean) / std`` of the data pipeline can go in
front as an affine node: ``nir.Affine`` with a diagonal weight for flat inputs, its per-channel form (a 1x1
``nir.Conv2d``) for images, since NIR's Affine acts on vectors and NIR has no reshape. The readout is the last
weight layer's output current at every step (an ``Output`` node); ltl_ext's logits are its mean over the
``metadata["time_steps"]`` steps of direct encoding (the same input at every step).

The two directions live in :mod:`.nir_export` and :mod:`.nir_import`; what they share (the optional package, the
default ``dt``, node names) in :mod:`.nir_format`.
"""
from __future__ import annotations

from .nir_export import export_nir
from .nir_format import DEFAULT_DT, _is_normalize, _nir  # noqa: F401 (cli/export.py uses them from here)
from .nir_import import import_nir

__all__ = ["export_nir", "import_nir", "DEFAULT_DT"]
