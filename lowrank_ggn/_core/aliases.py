"""Typing aliases shared by the whole package.

The array API standard has no runtime base class for arrays, so ``Array`` is an
alias of :class:`typing.Any`; it documents intent in signatures.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, TypeAlias

__all__ = ["Array", "ArrayNamespace", "DType", "Device", "Scalar"]

Array: TypeAlias = Any
"""An array of any array-API-compatible library (NumPy, JAX, PyTorch, CuPy, ...)."""

ArrayNamespace: TypeAlias = ModuleType
"""An array namespace, as returned by ``array_api_compat.array_namespace``."""

DType: TypeAlias = Any
"""A dtype object of some array namespace."""

Device: TypeAlias = Any
"""A device object of some array namespace."""

Scalar: TypeAlias = "float | Array"
"""A Python real number or a 0-d real array (possibly traced under ``jax.jit``)."""
