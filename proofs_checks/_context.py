r"""The run context of a check: backend, dtype, tolerances, randomness and sizes.

This is the one module of :mod:`proofs_checks` that knows backend names. A
check receives a :class:`Context` and computes with ``ctx.xp`` (an array-API
namespace) in ``ctx.dtype``; it moves data in with :meth:`Context.asarray` and
out, to NumPy float64 for the dense references, with :meth:`Context.to_numpy`.
"""

from __future__ import annotations

import contextlib
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import lowrank_ggn as lg
from lowrank_ggn.backends import BACKEND_NAMES, library_by_name, namespace_from_module, to_numpy

__all__ = ["BACKENDS", "DTYPES", "Context", "make_context"]

BACKENDS = BACKEND_NAMES
DTYPES = ("float64", "float32")


def _load_module(name: str) -> Any:
    """Import the library module users pass as ``xp`` for a backend name."""
    if name not in BACKENDS:
        msg = f"unknown backend {name!r}; choose one of {BACKENDS}"
        raise ValueError(msg)
    try:
        return library_by_name(name)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc


@dataclass(frozen=True)
class Context:
    """Everything a check needs to know about the run.

    Attributes
    ----------
    backend : str
        Backend name (one of :data:`BACKENDS`).
    dtype_name : str
        ``"float64"`` or ``"float32"``: the precision the library is run in.
    quick : bool
        Smaller problems and fewer steps (the whole run in well under a minute).
    seed : int
        Seed of the run; each check draws from its own stream derived from it.
    module : module
        The library module (``numpy``, ``jax.numpy``, ``torch``, ...).
    xp : module
        Its array-API namespace.
    """

    backend: str
    dtype_name: str
    quick: bool
    seed: int
    module: Any
    xp: Any
    key: str = ""
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    # -- per-check copy -------------------------------------------------------------------
    def for_check(self, key: str) -> Context:
        """Return a copy whose random stream depends only on the seed and the check's key."""
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode())])
        return replace(self, key=key, rng=rng)

    # -- dtypes and tolerances ------------------------------------------------------------
    @property
    def dtype(self) -> Any:
        """The real floating dtype of the namespace."""
        return getattr(self.xp, self.dtype_name)

    @property
    def complex_dtype(self) -> Any:
        """The complex dtype with the same precision (for complex-step derivatives)."""
        return self.xp.complex128 if self.dtype_name == "float64" else self.xp.complex64

    @property
    def np_dtype(self) -> np.dtype:
        """The NumPy dtype of the same precision."""
        return np.dtype(self.dtype_name)

    @property
    def eps(self) -> float:
        """Machine epsilon of the run's dtype."""
        return float(np.finfo(self.np_dtype).eps)

    @property
    def is_float64(self) -> bool:
        """True when the run's dtype is float64."""
        return self.dtype_name == "float64"

    def tol(self, factor: float) -> float:
        """``factor`` units of the dtype's machine epsilon."""
        return factor * self.eps

    def size(self, quick: Any, full: Any) -> Any:
        """Choose a problem size by mode."""
        return quick if self.quick else full

    # -- data movement --------------------------------------------------------------------
    def asarray(self, x: Any, *, complex_: bool = False) -> Any:
        """Copy a NumPy array (or scalar) to the backend, in the run's (real or complex) dtype."""
        target = np.result_type(self.np_dtype, np.complex64) if complex_ else self.np_dtype
        arr = np.array(x, dtype=target, order="C", copy=True)
        return self._put(arr)

    def _put(self, arr: np.ndarray) -> Any:
        """Move a fresh, contiguous NumPy array to the backend without a copy where possible."""
        if self.backend == "torch":
            import torch

            return torch.from_numpy(arr)
        if self.backend == "jax":
            import jax

            return jax.device_put(arr)  # unlike jnp.asarray, compiles nothing per shape
        return self.xp.asarray(arr)

    def asarray_int(self, x: Any) -> Any:
        """Copy an integer NumPy array (indices, labels) to the backend as int64."""
        return self._put(np.array(x, dtype=np.int64, order="C", copy=True))

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy a backend array to NumPy, widened to float64 (complex128 for complex input)."""
        out = np.asarray(to_numpy(x))
        if out.dtype.kind == "c":
            return out.astype(np.complex128)
        return out.astype(np.float64) if out.dtype.kind == "f" else out

    def scalar(self, x: Any) -> float:
        """Return a 0-d backend array as a Python float."""
        return float(self.to_numpy(x))

    # -- compilation and timing -----------------------------------------------------------
    def jit(self, fn: Callable[..., Any], static_argnames: tuple[str, ...] = ()) -> Callable[..., Any]:
        """``jax.jit(fn)`` on JAX, memoised per function; ``fn`` unchanged elsewhere.

        Eager JAX compiles every primitive for every new shape (and every ``lax.cond`` at every call),
        so on JAX all repeated work goes through compiled functions.
        """
        if self.backend != "jax":
            return fn
        import jax

        try:
            per_fn = _JIT_CACHE.setdefault(fn, {})
        except TypeError:  # not weak-referenceable: compile without memoising
            return jax.jit(fn, static_argnames=static_argnames)
        if static_argnames not in per_fn:
            per_fn[static_argnames] = jax.jit(fn, static_argnames=static_argnames)
        return per_fn[static_argnames]

    @property
    def lg(self) -> _Library:
        """The library's public functions, compiled on JAX (see :meth:`jit`); the plain module elsewhere."""
        return _Library(self)

    def synchronize(self, out: Any) -> None:
        """Wait until the computation that produced ``out`` has finished (asynchronous backends)."""
        if self.backend == "jax":
            import jax

            jax.block_until_ready(out)
        elif self.backend == "cupy":
            self.module.cuda.Device().synchronize()
        elif self.backend == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()

    def single_thread(self) -> contextlib.AbstractContextManager[None]:
        """Return a context in which host BLAS (via threadpoolctl, when installed) and PyTorch use one thread."""
        return _single_thread(self.backend)

    def best_time(self, fn: Callable[[], Any], repeats: int) -> float:
        """Return the shortest of ``repeats`` wall-clock timings of ``fn()`` (after one warm-up call).

        Host BLAS and PyTorch run single-threaded while timing, so that the timings measure how the
        work grows rather than when a thread pool switches on (or waits for busy cores).
        """
        with _single_thread(self.backend):
            self.synchronize(fn())
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                self.synchronize(fn())
                best = min(best, time.perf_counter() - t0)
        return best


_JIT_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()

# Arguments that are static under jax.jit (they select code paths or shapes), per library function.
_STATIC = {
    "ginger_update": ("method", "reorthonormalize_every"),
    "qng_factor_matvec": ("transpose",),
    "qng_factor_solve": ("transpose",),
    "best_rank_k": ("k",),
    "ginger_init": ("dim", "rank", "xp", "dtype", "device"),
    "qng_init": ("dim", "rank", "xp", "dtype", "device"),
}
_NOT_COMPILED = {"GingerState", "QNGState", "RankOneUpdate", "ShermanMorrisonStep"}


class _Library:
    """Attribute access to :mod:`lowrank_ggn`, each function compiled by :meth:`Context.jit`."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        obj = getattr(lg, name)
        if name in _NOT_COMPILED or not callable(obj):
            return obj
        return self._ctx.jit(obj, _STATIC.get(name, ()))


@contextlib.contextmanager
def _single_thread(backend: str) -> Iterator[None]:
    """Limit host BLAS (via threadpoolctl, when installed) and PyTorch to one thread."""
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - optional
            pass
        else:
            stack.enter_context(threadpool_limits(1))
        if backend == "torch":
            import torch

            previous = torch.get_num_threads()
            torch.set_num_threads(1)
            stack.callback(torch.set_num_threads, previous)
        yield


def make_context(backend: str = "numpy", dtype: str = "float64", *, quick: bool = False, seed: int = 0) -> Context:
    """Import a backend and build the run's :class:`Context`.

    Parameters
    ----------
    backend : str
        One of :data:`BACKENDS`.
    dtype : str
        ``"float64"`` or ``"float32"``.
    quick : bool
        Quick mode.
    seed : int
        Seed of the run.

    Returns
    -------
    Context

    Raises
    ------
    ValueError
        If the backend or dtype is unknown.
    RuntimeError
        If CuPy is requested without a CUDA device.
    """
    if dtype not in DTYPES:
        msg = f"unknown dtype {dtype!r}; choose one of {DTYPES}"
        raise ValueError(msg)
    module = _load_module(backend)
    return Context(
        backend=backend,
        dtype_name=dtype,
        quick=quick,
        seed=seed,
        module=module,
        xp=namespace_from_module(module),
    )
