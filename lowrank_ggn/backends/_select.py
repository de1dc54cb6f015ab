"""Choosing a backend by name, and the few backend-specific operations that studies need.

Used by :mod:`lowrank_ggn.studies` (its ``--backend`` option): import a
namespace from its name, compile a function where compiling pays (JAX), wait
for asynchronous work before reading a clock (NumPy data moves in with the standard ``xp.asarray``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from lowrank_ggn._typing import ArrayNamespace
from lowrank_ggn.backends._compat import (
    is_jax_array,
    is_jax_namespace,
    is_torch_array,
    namespace_from_module,
)

__all__ = ["BACKEND_NAMES", "block_until_ready", "jit", "namespace_by_name"]

BACKEND_NAMES = ("numpy", "jax", "torch", "cupy", "array_api_strict")
"""Names accepted by :func:`namespace_by_name`."""


def namespace_by_name(name: str, *, float64: bool = True) -> ArrayNamespace:
    """Import a backend by name and return its array-API namespace.

    Parameters
    ----------
    name : str
        One of :data:`BACKEND_NAMES`.
    float64 : bool
        For JAX, turn on ``jax_enable_x64`` (a process-wide setting) so that
        float64 arrays can be created.

    Returns
    -------
    module

    Raises
    ------
    ValueError
        If ``name`` is unknown, the library is not installed, or (CuPy) no
        CUDA device is visible.
    """
    if name not in BACKEND_NAMES:
        msg = f"backend must be one of {BACKEND_NAMES}, got {name!r}"
        raise ValueError(msg)
    module_name = {"jax": "jax.numpy"}.get(name, name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"backend {name!r} is not installed ({exc})"
        raise ValueError(msg) from exc
    if name == "jax" and float64:
        import jax

        jax.config.update("jax_enable_x64", True)  # noqa: FBT003
    if name == "cupy" and not module.cuda.is_available():
        msg = "backend 'cupy' needs a visible CUDA device"
        raise ValueError(msg)
    return namespace_from_module(module)


def jit(fn: Callable[..., Any], xp: ArrayNamespace, *, static_argnames: tuple[str, ...] = ()) -> Callable[..., Any]:
    """Return ``jax.jit(fn)`` on JAX (eager JAX dispatch is slow) and ``fn`` elsewhere."""
    if is_jax_namespace(xp):
        import jax

        return jax.jit(fn, static_argnames=static_argnames)
    return fn


def block_until_ready(x: Any) -> Any:
    """Wait until the computation of ``x`` (an array or a tuple of arrays) has finished; return ``x``.

    JAX and GPU backends run asynchronously: a clock read without waiting
    measures only the dispatch.
    """
    leaves = x if isinstance(x, tuple) else (x,)
    for leaf in leaves:
        if is_jax_array(leaf):
            leaf.block_until_ready()
        elif is_torch_array(leaf) and leaf.is_cuda:
            import torch

            torch.cuda.synchronize(leaf.device)
        elif type(leaf).__module__.startswith("cupy"):
            leaf.device.synchronize()
    return x
