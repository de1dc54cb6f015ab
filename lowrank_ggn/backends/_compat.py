"""The one module of the package that imports :mod:`array_api_compat`."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import array_api_compat as _aac

from lowrank_ggn._core.aliases import Array, ArrayNamespace, Device

__all__ = [
    "array_namespace",
    "device_of",
    "is_array",
    "is_cupy_namespace",
    "is_jax_array",
    "is_jax_namespace",
    "is_numpy_namespace",
    "is_torch_array",
    "is_torch_namespace",
    "namespace_from_module",
]

is_jax_array = _aac.is_jax_array
is_torch_array = _aac.is_torch_array
is_jax_namespace = _aac.is_jax_namespace
is_torch_namespace = _aac.is_torch_namespace
is_numpy_namespace = _aac.is_numpy_namespace
is_cupy_namespace = _aac.is_cupy_namespace

# Library modules that are not themselves array-API namespaces, mapped to the
# compat wrapper that is.
_WRAPPED = {
    "numpy": "array_api_compat.numpy",
    "torch": "array_api_compat.torch",
    "cupy": "array_api_compat.cupy",
    "dask.array": "array_api_compat.dask.array",
}


def namespace_from_module(module: Any) -> ArrayNamespace:
    """Return the array-API namespace for a library module.

    Parameters
    ----------
    module : module
        ``numpy``, ``jax.numpy``, ``torch``, ``cupy``, ``array_api_strict``, or
        any module that is already an array-API namespace (has
        ``__array_api_version__``), such as ``array_api_compat.numpy``.

    Returns
    -------
    module
        A namespace implementing the array API standard.

    Raises
    ------
    TypeError
        If ``module`` is not a module, or is neither a known array library nor
        an array-API namespace.
    """
    if not isinstance(module, ModuleType):
        msg = f"xp must be an array namespace or library module, got {type(module).__name__}"
        raise TypeError(msg)
    name = module.__name__
    if name in _WRAPPED:
        return importlib.import_module(_WRAPPED[name])
    if name == "jax":
        return importlib.import_module("jax.numpy")
    if hasattr(module, "__array_api_version__"):
        return module
    msg = f"xp={name!r} is not an array API namespace nor a supported array library"
    raise TypeError(msg)


def is_array(x: Any) -> bool:
    """Return True when ``x`` is an array of a library that the array API supports.

    Parameters
    ----------
    x : object
        Any value.

    Returns
    -------
    bool
        True for arrays of NumPy, JAX, PyTorch, CuPy, array-api-strict and the
        other libraries known to ``array-api-compat``; False for Python
        scalars, lists and everything else.
    """
    return bool(_aac.is_array_api_obj(x))


def array_namespace(*arrays: Array) -> ArrayNamespace:
    """Return the common array-API namespace of ``arrays`` (``None`` entries ignored).

    Parameters
    ----------
    *arrays : array or None
        Arrays of one library.

    Returns
    -------
    module
        The array-API namespace of the arrays (a compatibility wrapper for
        NumPy, PyTorch and CuPy).

    Raises
    ------
    TypeError
        If the arrays come from different libraries or are not arrays.
    """
    return _aac.array_namespace(*[a for a in arrays if a is not None])


def device_of(x: Array) -> Device:
    """Return the device of an array.

    Parameters
    ----------
    x : array
        An array of any supported backend.

    Returns
    -------
    device
        The array's device object (``None`` for a traced JAX value).
    """
    return _aac.device(x)
