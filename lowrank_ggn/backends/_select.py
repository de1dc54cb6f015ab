"""Choosing a backend by name, and the few backend-specific operations that studies need.

Used by :mod:`lowrank_ggn.studies` (its ``--backend`` option): import a
namespace from its name, compile a function where compiling pays (JAX), wait
for asynchronous work before reading a clock (NumPy data moves in with the standard ``xp.asarray``).
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable
from typing import Any

from lowrank_ggn._core.aliases import ArrayNamespace
from lowrank_ggn.backends._compat import (
    is_jax_array,
    is_jax_namespace,
    is_torch_array,
    namespace_from_module,
)

__all__ = ["BACKEND_NAMES", "Backend", "block_until_ready", "jit", "library_by_name", "namespace_by_name"]


class Backend(str, enum.Enum):
    """The backends the library supports: the one table of their names and modules.

    The library (``--backend`` options, checkpoints), the tests, the benchmarks
    and ``proofs_checks`` all take their backend names from here. Each member's
    value is its short name; :attr:`module_name` is the library module users
    pass as ``xp``.
    """

    NUMPY = "numpy"
    ARRAY_API_STRICT = "array_api_strict"
    JAX = "jax"
    TORCH = "torch"
    CUPY = "cupy"

    @property
    def module_name(self) -> str:
        """The importable module users pass as ``xp`` (``jax.numpy`` for JAX)."""
        return "jax.numpy" if self is Backend.JAX else self.value

    @property
    def needs_gpu(self) -> bool:
        """Whether the backend runs only on a visible CUDA device (CuPy)."""
        return self is Backend.CUPY


BACKEND_NAMES = tuple(b.value for b in Backend)
"""Names accepted by :func:`namespace_by_name`, in the order the tests use them."""


def library_by_name(name: str, *, float64: bool = True) -> Any:
    """Import a backend's library module (``numpy``, ``jax.numpy``, ``torch``, ...) by its short name.

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
        The library module (``numpy``, ``jax.numpy``, ``torch``, ``cupy`` or ``array_api_strict``).

    Raises
    ------
    ValueError
        If ``name`` is unknown, the library is not installed, or (CuPy) no
        CUDA device is visible.
    """
    if name not in BACKEND_NAMES:
        msg = f"backend must be one of {BACKEND_NAMES}, got {name!r}"
        raise ValueError(msg)
    backend = Backend(name)
    try:
        module = importlib.import_module(backend.module_name)
    except ImportError as exc:
        msg = f"backend {name!r} is not installed ({exc})"
        raise ValueError(msg) from exc
    if backend is Backend.JAX and float64:
        import jax

        jax.config.update("jax_enable_x64", True)  # noqa: FBT003
    if backend.needs_gpu and not module.cuda.is_available():
        msg = f"backend {name!r} needs a visible CUDA device"
        raise ValueError(msg)
    return module


def namespace_by_name(name: str, *, float64: bool = True) -> ArrayNamespace:
    """Import a backend by name and return its array-API namespace.

    Parameters
    ----------
    name : str
        One of :data:`BACKEND_NAMES`.
    float64 : bool
        For JAX, turn on ``jax_enable_x64`` (see :func:`library_by_name`).

    Returns
    -------
    module
        The array-API namespace of that library.

    Raises
    ------
    ValueError
        As :func:`library_by_name`.
    """
    return namespace_from_module(library_by_name(name, float64=float64))


def jit(fn: Callable[..., Any], xp: ArrayNamespace, *, static_argnames: tuple[str, ...] = ()) -> Callable[..., Any]:
    """Return ``jax.jit(fn)`` on JAX (eager JAX dispatch is slow) and ``fn`` elsewhere.

    Parameters
    ----------
    fn : callable
        The function to compile.
    xp : module
        The array namespace it will run on.
    static_argnames : tuple of str
        Arguments that are Python values (for ``jax.jit``).

    Returns
    -------
    callable
        ``jax.jit(fn, static_argnames=...)`` on JAX, ``fn`` itself elsewhere.
    """
    if is_jax_namespace(xp):
        import jax

        return jax.jit(fn, static_argnames=static_argnames)
    return fn


def block_until_ready(x: Any) -> Any:
    """Wait until the computation of ``x`` has finished.

    JAX and GPU backends run asynchronously: a clock read without waiting
    measures only the dispatch.

    Parameters
    ----------
    x : array or tuple of arrays
        The results to wait for.

    Returns
    -------
    array or tuple of arrays
        ``x`` itself.
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
