"""What NIR export and import share: the optional ``nir`` package, the time step, node names, the zoo's input
normalisation (conventions: :mod:`.nir`)."""
from __future__ import annotations

import re

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
