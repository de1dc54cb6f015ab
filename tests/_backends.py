"""Backend descriptions for the test-suite: namespace, dtype, converters, tolerances."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from lowrank_ggn.backends import BACKEND_NAMES, library_by_name, namespace_from_module, to_numpy

__all__ = ["BACKEND_NAMES", "Backend", "make_backend"]


@dataclass(frozen=True)
class Backend:
    """One backend under test in one dtype."""

    name: str
    module: Any  # the library module users pass as ``xp``
    ns: Any  # the array-API namespace the library computes with
    dtype_name: str

    @property
    def dtype(self) -> Any:
        return getattr(self.ns, self.dtype_name)

    @property
    def np_dtype(self) -> Any:
        return np.dtype(self.dtype_name)

    @property
    def eps(self) -> float:
        return float(np.finfo(self.np_dtype).eps)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Convert a NumPy array (or scalar) to this backend in its dtype."""
        arr = np.asarray(x, dtype=self.np_dtype if dtype is None else dtype)
        if self.name == "torch":
            import torch

            return torch.from_numpy(np.array(arr, order="C", copy=True))
        return self.ns.asarray(arr)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Copy back to NumPy float64 for comparison with the dense references."""
        out = np.asarray(to_numpy(x))
        return out.astype(np.float64) if out.dtype.kind == "f" else out

    def maybe_jit(self, fn: Any, static_argnames: tuple[str, ...] = ()) -> Any:
        """``jax.jit(fn)`` on JAX (eager JAX dispatch is slow), ``fn`` elsewhere."""
        if self.name == "jax":
            import jax

            return jax.jit(fn, static_argnames=static_argnames)
        return fn

    def tol(self, factor: float = 1.0) -> float:
        """A tolerance of ``factor`` units of dtype epsilon, floored at 1e-13 in float64."""
        return factor * self.eps

    def __repr__(self) -> str:
        return f"Backend({self.name}, {self.dtype_name})"


def make_backend(name: str, dtype: str) -> Backend:
    """Import a backend, or skip the test when it is unavailable."""
    if name not in BACKEND_NAMES:  # pragma: no cover - guarded by conftest
        msg = f"unknown backend {name}"
        raise ValueError(msg)
    try:
        module = library_by_name(name)
    except ValueError as exc:  # not installed, or CuPy without a visible CUDA device
        pytest.skip(str(exc))
    return Backend(name=name, module=module, ns=namespace_from_module(module), dtype_name=dtype)
