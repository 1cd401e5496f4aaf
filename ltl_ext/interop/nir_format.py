"""What NIR export and import share: the optional ``nir`` package, the time step, node names, the zoo's input
normalisation (conventions: :mod:`.nir`)."""
from __future__ import annotations

import numbers
import re

import numpy as np
from torch import nn

#: seconds per time step in the exported ODEs: SpikingJelly's, snnTorch's and Norse's default for NIR
DEFAULT_DT = 1e-4


def _nir():
    try:
        import nir
    except ImportError:
        raise ImportError("NIR export/import needs the `nir` package: pip install 'ltl_ext[nir]' "
                          "(or: pip install nir)") from None
    return nir


def _time_steps(T) -> int:
    """``T`` as a plain int, refusing what is not a positive whole number (``int(2.5)`` would run T = 2 without a
    word); numpy integers (``nir.read`` gives the metadata's ``time_steps`` back as one) pass."""
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
        raise ValueError(f"time_steps must be a positive int, got {T!r}")
    return int(T)


def _fix_grouped_conv_types(nodes) -> None:
    """nir (1.0.x) types a conv node's input with ``weight.shape[1]`` channels, which is in_channels / groups: a
    grouped or depthwise conv then fails the graph's type check against its producer, on export and in
    ``nir.read``. Sets such a node's input channels to ``weight.shape[1] * groups`` (in place)."""
    nir = _nir()
    for node in nodes:
        if isinstance(node, (nir.Conv1d, nir.Conv2d)) and int(node.groups) > 1 \
                and node.input_type.get("input") is not None:
            channels = np.array(node.input_type["input"]).copy()
            channels[0] = node.weight.shape[1] * int(node.groups)
            node.input_type = {"input": channels}


def _is_normalize(m: nn.Module) -> bool:
    """The zoo's input normalisation module (``ltl_ext.models.Normalize``: buffers ``mean``, ``std``)."""
    from ..nn import zoo
    kind = getattr(zoo, "Normalize", None)
    return kind is not None and isinstance(m, kind)


def _safe(name: str) -> str:
    name = re.sub(r"\W", "_", str(name))
    return name if name and not name[0].isdigit() else f"n_{name}"


def _unique(name: str, taken) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    return out
