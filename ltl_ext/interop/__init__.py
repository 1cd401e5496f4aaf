"""Floor 5b, the neighbours: moving students to and from other SNN tools.

- ``nir``: :func:`export_nir` / :func:`import_nir`, the Neuromorphic Intermediate Representation (optional extra
  ``pip install 'ltl_ext[nir]'``; the ``nir`` package is imported only when one of them is called).
"""
from .nir import DEFAULT_DT, export_nir, import_nir  # noqa: F401

__all__ = ["export_nir", "import_nir", "DEFAULT_DT"]
