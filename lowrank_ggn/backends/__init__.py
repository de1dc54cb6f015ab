"""Backend resolution, dtype/device helpers and shims for what the array API lacks.

This subpackage is the only place in :mod:`lowrank_ggn` that knows backend names.
Everything else is written against the array API standard and receives an
``xp`` namespace from the helpers below.

Supported namespaces: NumPy (reference), JAX (``jax.numpy``), PyTorch, CuPy and
``array_api_strict``. Library modules are accepted wherever a namespace is:
``numpy`` resolves to ``array_api_compat.numpy``, ``torch`` to
``array_api_compat.torch`` and so on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from lowrank_ggn._core.aliases import Array, ArrayNamespace, Device, DType
from lowrank_ggn.backends._compat import (
    array_namespace,
    device_of,
    is_array,
    is_cupy_namespace,
    is_jax_array,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_array,
    is_torch_namespace,
    namespace_from_module,
)
from lowrank_ggn.backends._host import dtype_name, from_host_exact, to_host_exact
from lowrank_ggn.backends._select import (
    BACKEND_NAMES,
    Backend,
    block_until_ready,
    jit,
    library_by_name,
    namespace_by_name,
)

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "array_namespace",
    "backend_name",
    "block_until_ready",
    "canonical_float_dtype",
    "cond",
    "default_float_dtype",
    "device_of",
    "dtype_name",
    "floating_point_errors_ignored",
    "from_host_exact",
    "is_array",
    "is_jax",
    "is_low_precision_float",
    "is_numpy",
    "is_real_floating",
    "is_torch",
    "is_traced",
    "jit",
    "library_by_name",
    "namespace_by_name",
    "namespace_from_module",
    "resolve_namespace",
    "same_device",
    "to_host_exact",
    "to_numpy",
    "widest_float_dtype",
]


def resolve_namespace(xp: Any | None = None, *arrays: Array) -> ArrayNamespace:
    """Return the array namespace to compute with.

    Parameters
    ----------
    xp : module or None
        An explicit namespace or library module. When ``None``, the namespace
        is inferred from ``arrays``; with no arrays either, NumPy is used.
    *arrays : array
        Arrays whose namespace is inferred when ``xp`` is ``None``.

    Returns
    -------
    module
        An array-API namespace.
    """
    if xp is not None:
        return namespace_from_module(xp)
    present = [a for a in arrays if a is not None]
    if present:
        return array_namespace(*present)
    import numpy as np

    return namespace_from_module(np)


def backend_name(xp: ArrayNamespace) -> str:
    """Return a short name for a namespace: ``numpy``, ``jax``, ``torch``, ``cupy``, ....

    Parameters
    ----------
    xp : module
        An array namespace.

    Returns
    -------
    str
        The backend's short name; for other namespaces, the module's name.
    """
    if is_numpy_namespace(xp):
        return "numpy"
    if is_jax_namespace(xp):
        return "jax"
    if is_torch_namespace(xp):
        return "torch"
    if is_cupy_namespace(xp):
        return "cupy"
    return str(getattr(xp, "__name__", type(xp).__name__))


def default_float_dtype(xp: ArrayNamespace, device: Device | None = None) -> DType:
    """Return the namespace's default real floating dtype (on ``device``).

    Parameters
    ----------
    xp : module
        An array namespace.
    device : device, optional
        The device to ask about; default: the namespace's default device.

    Returns
    -------
    dtype
        For example ``float64`` for NumPy, ``float32`` for PyTorch (unless its
        default dtype was changed) and for JAX without x64.
    """
    info = xp.__array_namespace_info__()
    return info.default_dtypes(device=device)["real floating"]


def canonical_float_dtype(xp: ArrayNamespace, dtype: DType | None, *, name: str = "dtype") -> DType:
    """Validate a requested dtype and return the namespace's own float32/float64 object.

    Parameters
    ----------
    xp : module
        Array namespace.
    dtype : dtype or None
        Requested dtype; ``None`` selects :func:`default_float_dtype`.
    name : str
        Argument name used in error messages.

    Returns
    -------
    dtype
        ``xp.float32`` or ``xp.float64``.

    Raises
    ------
    TypeError
        If ``dtype`` is not float32 or float64 (integer, complex, half
        precision and bfloat16 are rejected).
    """
    if dtype is None:
        dtype = default_float_dtype(xp)
    for candidate in (xp.float32, xp.float64):
        if _equal_dtypes(dtype, candidate):
            _check_available(xp, candidate)
            return candidate
    if is_low_precision_float(xp, dtype):
        msg = (
            f"{name} must be float32 or float64, got {dtype!r}: states are kept in float32 or float64; "
            "float16 and bfloat16 curvature vectors and gradients are accepted by the update and query "
            "functions, which compute in the state's dtype"
        )
        raise TypeError(msg)
    msg = f"{name} must be float32 or float64, got {dtype!r}"
    raise TypeError(msg)


def is_real_floating(xp: ArrayNamespace, dtype: DType) -> bool:
    """Return True when ``dtype`` is a real floating dtype of ``xp``.

    Unlike ``xp.isdtype``, never raises: dtypes that a namespace does not know
    (such as NumPy's extension ``bfloat16`` from ``ml_dtypes``) give False.

    Parameters
    ----------
    xp : module
        An array-API namespace.
    dtype : dtype
        Any object; a dtype of ``xp`` to be True.

    Returns
    -------
    bool
        Whether ``dtype`` is a real floating dtype of ``xp``.
    """
    try:
        return bool(xp.isdtype(dtype, "real floating"))
    except (TypeError, ValueError):
        return False


def is_low_precision_float(xp: ArrayNamespace, dtype: DType) -> bool:
    """Return True for real floating dtypes narrower than float32 (float16, bfloat16).

    The library keeps its states in float32 or float64; vectors in these
    dtypes are promoted to the state's dtype on entry.

    Parameters
    ----------
    xp : module
        An array-API namespace.
    dtype : dtype
        Any object; a dtype of ``xp`` to be True.

    Returns
    -------
    bool
        Whether ``dtype`` is a real floating dtype of ``xp`` with fewer than 32 bits.
    """
    return is_real_floating(xp, dtype) and int(xp.finfo(dtype).bits) < 32


@contextlib.contextmanager
def floating_point_errors_ignored() -> Iterator[None]:
    """Silence NumPy's floating-point warnings inside a function that handles non-finite values itself.

    The Ginger and QNG updates detect an overflowing update and reject it
    (counting it in ``num_nonfinite``); NumPy's ``RuntimeWarning`` about the
    overflow would only repeat that. Other backends do not warn. Usable as a
    decorator.

    Yields
    ------
    None
        Inside the block, NumPy ignores overflow, invalid, divide and underflow.
    """
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        yield


def _equal_dtypes(a: DType, b: DType) -> bool:
    try:
        return bool(a == b)
    except TypeError:  # pragma: no cover - exotic dtype objects
        return False


def _check_available(xp: ArrayNamespace, dtype: DType) -> None:
    """Refuse float64 on JAX when x64 is disabled (JAX would silently give float32)."""
    if is_jax_namespace(xp) and dtype == xp.float64:
        import jax

        if jax.dtypes.canonicalize_dtype(xp.float64) != xp.float64:
            msg = "float64 on JAX needs jax.config.update('jax_enable_x64', True)"
            raise TypeError(msg)


def is_traced(x: Any) -> bool:
    """Return True when ``x`` is an abstract value inside a JAX transformation.

    Traced values have no concrete content: value checks are skipped for them.

    Parameters
    ----------
    x : object
        Any value.

    Returns
    -------
    bool
        Whether ``x`` is a JAX tracer (always False for other backends).
    """
    if is_jax_array(x):
        import jax

        return isinstance(x, jax.core.Tracer)
    return False


def same_device(a: Array, b: Array) -> bool:
    """Return True when ``a`` and ``b`` live on the same device.

    JAX arrays are not compared (JAX places and moves its arrays itself, and
    sharded arrays span several devices).

    Parameters
    ----------
    a, b : array
        Two arrays.

    Returns
    -------
    bool
        True when the devices are equal, or when either array is a JAX array.
    """
    if is_jax_array(a) or is_jax_array(b):
        return True
    return bool(device_of(a) == device_of(b))


def cond(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any], *operands: Any) -> Any:
    """Branch on a scalar boolean, traceably.

    Under a JAX transformation this is ``jax.lax.cond`` (both branches must
    return the same structure); with a concrete predicate (eager JAX and every
    other backend) a Python ``if`` runs only the selected branch.

    Parameters
    ----------
    pred : bool or 0-d array
        The condition.
    true_fn, false_fn : callable
        The two branches, called as ``fn(*operands)``.
    *operands : object
        The arguments of the branches.

    Returns
    -------
    object
        ``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)``.
    """
    if is_traced(pred):
        import jax

        return jax.lax.cond(pred, true_fn, false_fn, *operands)
    return true_fn(*operands) if bool(pred) else false_fn(*operands)


def to_numpy(x: Array) -> Any:
    """Copy an array of any supported backend to a NumPy ``ndarray`` on the host.

    A PyTorch ``bfloat16`` tensor becomes ``float32`` (exactly); see
    :func:`to_host_exact` for a bit-exact copy.

    Parameters
    ----------
    x : array
        An array of NumPy, JAX, PyTorch, CuPy or any library that supports
        DLPack, on any device.

    Returns
    -------
    numpy.ndarray
        The same values, in host memory (a PyTorch tensor is detached first).
    """
    import numpy as np

    if isinstance(x, np.ndarray | np.generic):
        return np.asarray(x)
    if is_torch_array(x):
        t = x.detach().cpu()
        return (t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy()  # NumPy has no bfloat16
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    if is_jax_array(x):
        return np.asarray(x)
    try:
        return np.from_dlpack(x)
    except (TypeError, RuntimeError, BufferError, AttributeError):
        return np.asarray(x)


def widest_float_dtype(xp: ArrayNamespace, like: Array) -> DType:
    """Return float64 when ``xp`` can compute in it on ``like``'s device, else ``like.dtype``.

    Used for small (rank × rank) factorisations of float32 states: LAPACK's
    float32 eigensolvers return eigenvectors orthonormal to only about 1e-6,
    and these errors add up over many updates. float64 is unavailable on JAX
    without ``jax_enable_x64``, on TPUs, on Apple's MPS, and on
    array_api_strict's ``no_float64`` device.

    Parameters
    ----------
    xp : module
        The namespace of ``like``.
    like : array
        An array whose device (and dtype, the fallback) decide.

    Returns
    -------
    dtype
        ``xp.float64`` where available on that device, else ``like.dtype``.
    """
    traced = is_traced(like)
    device = None if traced or is_jax_namespace(xp) else device_of(like)
    try:
        available = xp.__array_namespace_info__().dtypes(kind="real floating", device=device)
    except (TypeError, ValueError, AttributeError):  # pragma: no cover - namespaces without inspection
        return like.dtype
    if "float64" not in available:
        return like.dtype
    if is_torch_namespace(xp) and getattr(device, "type", None) == "mps":
        return like.dtype
    if is_jax_namespace(xp):
        import jax

        if jax.default_backend() == "tpu":
            return like.dtype
    return available["float64"]


def is_numpy(xp: ArrayNamespace) -> bool:
    """Return whether ``xp`` is NumPy's namespace (``numpy`` or its array-api-compat wrapper).

    Parameters
    ----------
    xp : module
        An array namespace.

    Returns
    -------
    bool
        True for NumPy.
    """
    return bool(is_numpy_namespace(xp))


def is_torch(xp: ArrayNamespace) -> bool:
    """Return whether ``xp`` is PyTorch's namespace (``torch`` or its array-api-compat wrapper).

    Parameters
    ----------
    xp : module
        An array namespace.

    Returns
    -------
    bool
        True for PyTorch.
    """
    return bool(is_torch_namespace(xp))


def is_jax(xp: ArrayNamespace) -> bool:
    """Return whether ``xp`` is JAX's namespace (``jax.numpy``).

    Parameters
    ----------
    xp : module
        An array namespace.

    Returns
    -------
    bool
        True for JAX.
    """
    return bool(is_jax_namespace(xp))
