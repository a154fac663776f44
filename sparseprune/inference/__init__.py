"""Sparse inference: :func:`to_sparse` turns finalized (or masked) layers into sparse layers,
:func:`save` / :func:`load` store models with only their kept weights."""

from .serialize import load, save
from .sparsify import to_sparse

__all__ = ["to_sparse", "save", "load"]
