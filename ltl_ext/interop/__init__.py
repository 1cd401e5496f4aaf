"""Floor 5b, the neighbours: moving students to and from other SNN tools.

- ``nir``: :func:`export_nir` / :func:`import_nir`, the Neuromorphic Intermediate Representation (optional extra
  ``pip install 'ltl_ext[nir]'``; the ``nir`` package is imported only when one of them is called): the face and
  the conventions; ``nir_export`` and ``nir_import`` the two directions, ``nir_format`` what they share.
"""
from .nir import DEFAULT_DT, export_nir, import_nir  # noqa: F401

__all__ = ["export_nir", "import_nir", "DEFAULT_DT"]
