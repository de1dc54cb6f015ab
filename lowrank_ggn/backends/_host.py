"""Bit-exact transfers between any supported backend and NumPy host memory.

Used by :mod:`lowrank_ggn.checkpoint`. ``bfloat16``, which NumPy does not
have, travels as its ``uint16`` bit pattern together with the dtype name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lowrank_ggn._core.aliases import Array, ArrayNamespace, Device
from lowrank_ggn.backends._compat import (
    is_cupy_namespace,
    is_jax_array,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_array,
    is_torch_namespace,
)

__all__ = ["dtype_name", "from_host_exact", "to_host_exact"]


def dtype_name(dtype: Any) -> str:
    """Return the plain name of a dtype of any backend.

    Parameters
    ----------
    dtype : dtype
        A dtype of NumPy, JAX, PyTorch, CuPy or array_api_strict.

    Returns
    -------
    str
        ``"float32"``, ``"bfloat16"``, ``"int32"``, ``"bool"``, ...
    """
    return str(dtype).rsplit(".", 1)[-1]


def to_host_exact(x: Array) -> tuple[np.ndarray, str]:
    """Copy ``x`` to a NumPy array with the same bits.

    Parameters
    ----------
    x : array
        An array of any supported backend, on any device.

    Returns
    -------
    tuple
        ``(host, name)``: the host copy and the dtype name of ``x``. For
        ``bfloat16`` the host copy is the ``uint16`` bit pattern.
    """
    if is_torch_array(x):
        import torch

        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16).copy(), "bfloat16"
        return t.numpy().copy(), dtype_name(t.dtype)
    if isinstance(x, np.ndarray | np.generic) or is_jax_array(x):
        host = np.array(x, copy=True)
    elif hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        host = x.get()
    else:
        from lowrank_ggn.backends import to_numpy

        host = np.array(to_numpy(x), copy=True)
    name = dtype_name(host.dtype)
    if name == "bfloat16":
        return host.view(np.uint16), name
    return host, name


def _bfloat16_numpy_dtype() -> Any:
    try:
        import ml_dtypes
    except ImportError as err:  # pragma: no cover - ml_dtypes ships with JAX
        msg = "restoring bfloat16 arrays into NumPy or JAX needs the ml_dtypes package"
        raise TypeError(msg) from err
    return np.dtype(ml_dtypes.bfloat16)


def from_host_exact(xp: ArrayNamespace, host: np.ndarray, name: str, *, device: Device | None = None) -> Array:
    """Create an array of namespace ``xp`` with the bits of ``host`` (inverse of :func:`to_host_exact`).

    Parameters
    ----------
    xp : module
        Target namespace.
    host : numpy.ndarray
        Host data; for ``name == "bfloat16"`` the ``uint16`` bit pattern.
    name : str
        The dtype name of the result.
    device : device, optional
        Target device (the namespace's default when ``None``).

    Returns
    -------
    array
        An array of ``xp`` with dtype ``name`` and the bits of ``host``.

    Raises
    ------
    TypeError
        If the namespace has no such dtype, or (JAX) float64 is requested
        while ``jax_enable_x64`` is off.
    """
    if name != "bfloat16" and dtype_name(host.dtype) != name:
        msg = f"host data has dtype {host.dtype}, expected {name}"
        raise TypeError(msg)
    if is_torch_namespace(xp):
        return _torch_from_host(host, name, device)
    if is_jax_namespace(xp):
        return _jax_from_host(host, name, device)
    if is_numpy_namespace(xp):
        data = host.view(_bfloat16_numpy_dtype()) if name == "bfloat16" else host
        return np.array(data, copy=True)
    if name == "bfloat16":
        msg = f"namespace {getattr(xp, '__name__', xp)!r} has no bfloat16"
        raise TypeError(msg)
    if is_cupy_namespace(xp):
        import cupy

        if device is None:
            return cupy.asarray(host)
        with cupy.cuda.Device(device):
            return cupy.asarray(host)
    dtype = getattr(xp, name, None)
    if dtype is None:
        msg = f"namespace {getattr(xp, '__name__', xp)!r} has no dtype {name}"
        raise TypeError(msg)
    return xp.asarray(host, dtype=dtype, device=device)


def _torch_from_host(host: np.ndarray, name: str, device: Device | None) -> Array:
    import torch

    if name == "bfloat16":
        t = torch.from_numpy(host.view(np.int16).copy()).view(torch.bfloat16)
    else:
        t = torch.from_numpy(np.array(host, copy=True))
    return t if device is None else t.to(device)


def _jax_from_host(host: np.ndarray, name: str, device: Device | None) -> Array:
    import jax
    import jax.numpy as jnp

    data = host.view(_bfloat16_numpy_dtype()) if name == "bfloat16" else host
    wide = data.dtype.itemsize == (16 if data.dtype.kind == "c" else 8)
    if wide and data.dtype.kind in "fiuc" and not jax.config.read("jax_enable_x64"):
        msg = f"{name} on JAX needs jax.config.update('jax_enable_x64', True)"
        raise TypeError(msg)
    return jax.device_put(data, device) if device is not None else jnp.asarray(data)
