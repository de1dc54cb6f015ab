"""Argument checks shared by the public functions.

Every check raises ``ValueError`` (bad value or shape) or ``TypeError`` (bad
type or dtype) with a message that names the offending argument. Checks of
array *values* (finiteness, sign) are only run on concrete values: inside a
JAX transformation the value is unknown and the check is skipped; the
functions that take traced values document their behaviour for bad values.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn.backends import (
    array_namespace,
    is_array,
    is_low_precision_float,
    is_real_floating,
    is_traced,
    same_device,
)

__all__ = [
    "GINGER_FIELDS",
    "PRODUCT_FIELDS",
    "PROTOCOL",
    "QNG_FIELDS",
    "cast_like",
    "check_approximation",
    "check_damping",
    "check_decay",
    "check_dim_rank",
    "check_ginger_state",
    "check_like",
    "check_lowrank",
    "check_plain",
    "check_product_state",
    "check_qng_state",
    "check_scalar",
    "concrete_float",
    "has_fields",
    "nan_if",
    "reject_if",
    "traced_out_of_range",
]


def has_fields(state: object, fields: tuple[str, ...]) -> bool:
    """Return True when ``state`` is a tuple (NamedTuple) with all of ``fields``."""
    return isinstance(state, tuple) and all(hasattr(state, f) for f in fields)


def concrete_float(value: Any, name: str) -> float | None:
    """Return ``value`` as a Python float, or ``None`` when it is traced.

    Raises
    ------
    TypeError
        If ``value`` is not a real scalar (Python number or 0-d real array).
    """
    if isinstance(value, bool):
        msg = f"{name} must be a real number, got bool"
        raise TypeError(msg)
    if isinstance(value, numbers.Real):
        return float(value)
    if is_array(value):
        if getattr(value, "ndim", None) != 0:
            msg = f"{name} must be a scalar, got an array of shape {tuple(value.shape)}"
            raise ValueError(msg)
        xp = array_namespace(value)
        if not xp.isdtype(value.dtype, "real floating"):
            msg = f"{name} must be a real floating scalar, got dtype {value.dtype}"
            raise TypeError(msg)
        if is_traced(value):
            return None
        return float(value)
    msg = f"{name} must be a real number, got {type(value).__name__}"
    raise TypeError(msg)


def check_scalar(value: Any, name: str) -> None:
    """Check that ``value`` is a real scalar (value checks skipped when traced)."""
    concrete_float(value, name)


def check_decay(decay: Any, name: str = "decay", *, like: Array | None = None) -> None:
    """Check ``decay`` ∈ (0, 1), also after rounding to the dtype of ``like``.

    A decay within ``eps/4`` of 1 rounds to exactly 1 in the computation's
    dtype (float32: ``decay > 1 − 3e-8``), so that ``1 − α = 0`` and the EMA
    would silently never change; one below the smallest normal number rounds
    to 0 or a subnormal. Both are rejected when ``like`` is given.

    Raises
    ------
    ValueError
        If the (concrete) value is not in the open interval (0, 1), NaN
        included, or rounds to 0 or 1 in the dtype of ``like``.
    """
    value = concrete_float(decay, name)
    if value is None:
        return
    if not (0.0 < value < 1.0):
        msg = f"{name} must lie in the open interval (0, 1), got {value!r}"
        raise ValueError(msg)
    if like is not None:
        info = array_namespace(like).finfo(like.dtype)
        if 1.0 - value <= float(info.eps) / 4:
            msg = (
                f"{name}={value!r} rounds to 1 in {like.dtype}, so 1 - {name} = 0 and the EMA would never "
                f"change; the largest usable value in {like.dtype} is 1 - eps/2 = {1.0 - float(info.eps) / 2!r}"
            )
            raise ValueError(msg)
        if value < float(info.smallest_normal):
            msg = (
                f"{name}={value!r} is below the smallest normal {like.dtype} number "
                f"({float(info.smallest_normal)!r}) and would round to 0 or a subnormal"
            )
            raise ValueError(msg)


def check_damping(damping: Any, name: str = "damping", *, like: Array | None = None, squared: bool = False) -> None:
    """Check ``damping`` > 0 and finite, also after rounding to the dtype of ``like``.

    A damping below the smallest normal number of the computation's dtype
    (float32: 1.2e-38) rounds to 0 or a subnormal, and ``1/γ`` overflows: the
    queries would return NaN. One above the largest number rounds to inf.
    Both are rejected when ``like`` is given. With ``squared=True`` (for
    formulas that use γ², such as Eq 16 and Eq 18) the range is the square root
    of the normal range (float32: [1.1e-19, 1.8e19]).

    Raises
    ------
    ValueError
        If the (concrete) value is not a finite positive number, or is outside
        the (square root of the) normal range of the dtype of ``like``.
    """
    value = concrete_float(damping, name)
    if value is None:
        return
    if not (math.isfinite(value) and value > 0.0):
        msg = f"{name} must be positive and finite, got {value!r}"
        raise ValueError(msg)
    if like is not None:
        info = array_namespace(like).finfo(like.dtype)
        power = 0.5 if squared else 1.0
        low, high = float(info.smallest_normal) ** power, float(info.max) ** power
        if not low <= value <= high:
            what = "the square root of the normal range" if squared else "the normal range"
            msg = f"{name}={value!r} is outside {what} of {like.dtype}: [{low:.3g}, {high:.3g}]"
            raise ValueError(msg)


def traced_out_of_range(
    xp: ArrayNamespace, like: Array, *, decay: Any = None, damping: Any = None, squared: bool = False
) -> Array | None:
    """Under a JAX transformation: a 0-d bool, True when a traced ``decay`` or ``damping`` is out of range.

    The ranges are those of :func:`check_decay` and :func:`check_damping`
    (after rounding to the dtype of ``like``; NaN and ±inf are out of range).
    Concrete values are not looked at (their checks raise instead); ``None``
    when no given value is traced. The callers turn a True into a rejected
    update (counted in ``num_nonfinite``) or a NaN query.
    """
    info = xp.finfo(like.dtype)
    bad = None
    if decay is not None and is_traced(decay):
        a = xp.astype(xp.asarray(decay), like.dtype)
        bad = ~((a >= info.smallest_normal) & (a < 1))
    if damping is not None and is_traced(damping):
        power = 0.5 if squared else 1.0
        low, high = float(info.smallest_normal) ** power, float(info.max) ** power
        g = xp.astype(xp.asarray(damping), like.dtype)
        out = ~((g >= low) & (g <= high))
        bad = out if bad is None else bad | out
    return bad


def reject_if(xp: ArrayNamespace, bad: Array | None, d: Array) -> Array:
    """``d``, or NaN everywhere when the 0-d ``bad`` is True: the update then rejects it and counts it."""
    return d if bad is None else xp.where(bad, xp.full_like(d, xp.nan), d)


def nan_if(xp: ArrayNamespace, bad: Array | None, damping: Any, like: Array) -> Any:
    """``damping``, or NaN when the 0-d ``bad`` is True (the query is then NaN)."""
    if bad is None:
        return damping
    return xp.where(bad, xp.asarray(xp.nan, dtype=like.dtype), xp.asarray(damping, dtype=like.dtype))


def check_dim_rank(dim: Any, rank: Any) -> tuple[int, int]:
    """Check 1 ≤ ``rank`` < ``dim`` (both Python integers) and return them.

    Raises
    ------
    TypeError
        If ``dim`` or ``rank`` is not an integer.
    ValueError
        If ``rank < 1`` or ``rank >= dim``.
    """
    for value, name in ((dim, "dim"), (rank, "rank")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            msg = f"{name} must be an integer, got {type(value).__name__}"
            raise TypeError(msg)
    dim, rank = int(dim), int(rank)
    if rank < 1:
        msg = f"rank must be at least 1, got {rank}"
        raise ValueError(msg)
    if rank >= dim:
        msg = f"rank must be smaller than dim (rank={rank}, dim={dim})"
        raise ValueError(msg)
    return dim, rank


def check_plain(x: Any, name: str) -> None:
    """Refuse arrays whose storage the kernels cannot read as a plain dense array.

    NumPy masked arrays (their mask would be ignored by some operations and
    not others) and sparse or otherwise non-strided PyTorch tensors.

    Raises
    ------
    TypeError
        Naming the argument and saying how to convert it.
    """
    if type(x).__module__.startswith("numpy.ma"):
        msg = f"{name} is a NumPy masked array; pass a plain array (np.ma.filled(x, value) or x.data)"
        raise TypeError(msg)
    layout = getattr(x, "layout", None)
    if layout is not None and type(x).__module__.startswith("torch") and str(layout) != "torch.strided":
        msg = f"{name} is a {str(layout).removeprefix('torch.')} PyTorch tensor; pass a dense one (x.to_dense())"
        raise TypeError(msg)


def check_like(
    x: Any,
    name: str,
    like: Array,
    *,
    shapes: tuple[tuple[int, ...], ...],
    promote: bool = False,
) -> ArrayNamespace:
    """Check that ``x`` is an array compatible with ``like``.

    Compatible means: a plain dense array (see :func:`check_plain`), same
    namespace, same dtype, same device, and a shape among ``shapes`` (``-1``
    matches any length). With ``promote=True`` a real floating ``x`` of lower
    precision than ``like`` is also accepted — float16 or bfloat16 into a
    float32 or float64 state, float32 into float64 —, because the caller
    promotes it exactly with :func:`cast_like`; a higher precision (float64
    into float32) would be rounded and is refused.

    Returns
    -------
    module
        The common namespace.

    Raises
    ------
    TypeError
        If ``x`` is not an array, comes from another namespace, or has another
        dtype than ``like`` (integer and complex arrays included).
    ValueError
        If the shape is not one of ``shapes`` or the device differs.
    """
    if not is_array(x):
        msg = f"{name} must be an array, got {type(x).__name__}"
        raise TypeError(msg)
    check_plain(x, name)
    try:
        xp = array_namespace(x, like)
    except TypeError as err:
        msg = (
            f"{name} is a {type(x).__module__}.{type(x).__name__} but the state holds "
            f"{type(like).__module__}.{type(like).__name__} arrays; use one namespace"
        )
        raise TypeError(msg) from err
    if not is_real_floating(xp, x.dtype):
        msg = f"{name} must have a real floating dtype, got {x.dtype}"
        raise TypeError(msg)
    if x.dtype != like.dtype and not (promote and _promotes_exactly(xp, x.dtype, like.dtype)):
        hint = "cast it first" if promote else "cast it first (this argument is not promoted)"
        msg = f"{name} has dtype {x.dtype} but the state has dtype {like.dtype}; {hint}"
        raise TypeError(msg)
    shape = tuple(x.shape)
    if not any(_shape_matches(shape, s) for s in shapes):
        expected = " or ".join(str(tuple("*" if n < 0 else n for n in s)) for s in shapes)
        msg = f"{name} must have shape {expected}, got {shape}"
        raise ValueError(msg)
    if not same_device(x, like):
        msg = f"{name} is on a different device than the state; move it first"
        raise ValueError(msg)
    return xp


def _promotes_exactly(xp: ArrayNamespace, dtype: Any, target: Any) -> bool:
    """Whether every value of the real floating ``dtype`` is exactly representable in ``target``."""
    if is_low_precision_float(xp, dtype):
        return True
    return int(xp.finfo(dtype).bits) < int(xp.finfo(target).bits)


def _shape_matches(shape: tuple[int, ...], pattern: tuple[int, ...]) -> bool:
    return len(shape) == len(pattern) and all(p < 0 or p == n for n, p in zip(shape, pattern, strict=True))


def cast_like(xp: ArrayNamespace, x: Array, like: Array) -> Array:
    """Return ``x`` in the dtype of ``like`` (a no-op when they already agree).

    Used for the lower-precision vectors accepted by ``check_like(..., promote=True)``:
    the conversion is exact.
    """
    return x if x.dtype == like.dtype else xp.astype(x, like.dtype)


def check_lowrank(basis: Array, eigvals: Array) -> ArrayNamespace:
    """Check ``basis`` (dim × rank, real floating) and ``eigvals`` (rank,) alike; return their namespace."""
    if not is_array(basis):
        msg = f"basis must be an array, got {type(basis).__name__}"
        raise TypeError(msg)
    check_plain(basis, "basis")
    if basis.ndim != 2:
        msg = f"basis must be a 2-d array (dim, rank), got shape {tuple(basis.shape)}"
        raise ValueError(msg)
    xp = array_namespace(basis)
    if not xp.isdtype(basis.dtype, "real floating"):
        msg = f"basis must have a real floating dtype, got {basis.dtype}"
        raise TypeError(msg)
    check_like(eigvals, "eigvals", basis, shapes=((basis.shape[1],),))
    return xp


GINGER_FIELDS = ("basis", "eigvals", "discarded", "escaped", "step", "num_nonfinite")
"""The fields of :class:`lowrank_ggn.GingerState`."""
QNG_FIELDS = ("factors", "betas", "scales", "sqnorms", "step", "num_nonfinite")
"""The fields of :class:`lowrank_ggn.QNGState`."""
PRODUCT_FIELDS = ("columns", "coords", "count", "eigvals", "discarded", "escaped", "step", "num_nonfinite")
"""The fields of :class:`lowrank_ggn.GingerProductState`."""


def _floating_2d(x: Any, name: str, layout: str) -> ArrayNamespace:
    if not is_array(x) or x.ndim != 2:
        msg = f"{name} must be a 2-d array ({layout})"
        raise TypeError(msg)
    check_plain(x, name)
    xp = array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        msg = f"{name} must have a real floating dtype, got {x.dtype}"
        raise TypeError(msg)
    return xp


def check_ginger_state(state: Any) -> ArrayNamespace:
    """Check the structure of a Ginger state (shapes, namespace, dtype); return its namespace."""
    if not has_fields(state, GINGER_FIELDS):
        msg = f"state must be a GingerState, got {type(state).__name__}"
        raise TypeError(msg)
    basis = state.basis
    xp = _floating_2d(basis, "state.basis", "dim, rank")
    check_like(state.eigvals, "state.eigvals", basis, shapes=((basis.shape[1],),))
    check_like(state.discarded, "state.discarded", basis, shapes=((),))
    check_like(state.escaped, "state.escaped", basis, shapes=((),))
    return xp


def check_qng_state(state: Any) -> ArrayNamespace:
    """Check the structure of a QNG state; return its namespace."""
    if not has_fields(state, QNG_FIELDS):
        msg = f"state must be a QNGState, got {type(state).__name__}"
        raise TypeError(msg)
    factors = state.factors
    xp = _floating_2d(factors, "state.factors", "rank, dim")
    rank = factors.shape[0]
    for name in ("betas", "scales", "sqnorms"):
        check_like(getattr(state, name), f"state.{name}", factors, shapes=((rank,),))
    return xp


def check_product_state(state: Any) -> ArrayNamespace:
    """Check the structure of a product-form Ginger state; return its namespace."""
    if not has_fields(state, PRODUCT_FIELDS):
        msg = f"state must be a GingerProductState, got {type(state).__name__}"
        raise TypeError(msg)
    columns = state.columns
    xp = _floating_2d(columns, "state.columns", "capacity, dim")
    capacity = columns.shape[0]
    coords = state.coords
    if not is_array(coords) or coords.ndim != 2 or coords.shape[0] != capacity:
        msg = f"state.coords must be a 2-d array with {capacity} rows"
        raise ValueError(msg)
    check_like(coords, "state.coords", columns, shapes=((capacity, coords.shape[1]),))
    check_like(state.eigvals, "state.eigvals", columns, shapes=((coords.shape[1],),))
    check_like(state.discarded, "state.discarded", columns, shapes=((),))
    check_like(state.escaped, "state.escaped", columns, shapes=((),))
    if not is_traced(state.count) and not coords.shape[1] <= int(state.count) < capacity:
        msg = f"state.count must satisfy rank <= count < capacity, got {int(state.count)}"
        raise ValueError(msg)
    return xp


PROTOCOL = (
    "rank",
    "decay",
    "init",
    "fold",
    "fold_precondition",
    "solve",
    "with_rank",
    "needs_damping",
    "shardable",
    "state_type",
)
"""The attributes every object of the approximation protocol has (see :mod:`lowrank_ggn._approximation`)."""


def check_approximation(approximation: Any) -> None:
    """Check that ``approximation`` follows the approximation protocol (``lg.ginger(...)`` and friends).

    Raises
    ------
    TypeError
        Naming the argument and what it got.
    """
    if not all(hasattr(approximation, a) for a in PROTOCOL):
        msg = (
            "approximation must follow the approximation protocol (lg.ginger(...), lg.qng(...), "
            f"lg.ginger_product(...)), got {type(approximation).__name__}"
        )
        raise TypeError(msg)
