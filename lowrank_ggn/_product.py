r"""Ginger in product form: ``U = W Q``, an O(dτ) amortised update (the paper's stated future work).

The direct form rotates the whole basis at every step, ``U' = [U p] V``: O(dτ²)
flops. The product form keeps

.. math:: U = W Q, \qquad W^\top W = I \;(d \times m), \qquad Q^\top Q = I \;(m \times \tau),
   \qquad \tau \le m \le \text{capacity},

and does Brand's update on the small coordinates instead. A curvature vector
is split as ``d = W w + r p`` with ``w = Wᵀd`` and ``p`` the unit residual
orthogonal to *all* of ``W`` (not only to ``U``); in the basis ``[W p]`` the
represented matrix and the new term are

.. math::
   \alpha\,[W\,p] \begin{pmatrix} Q \\ 0 \end{pmatrix} \Sigma
       \begin{pmatrix} Q \\ 0 \end{pmatrix}^{\!\top} [W\,p]^\top
   + (1-\alpha)\,[W\,p]\, x x^\top [W\,p]^\top, \qquad x = \begin{pmatrix} w \\ r \end{pmatrix},

so the rank-one eigen-update (:func:`~lowrank_ggn.lowrank_eigh_update`) runs on
``(Q, σ, x)`` in ``m + 1`` dimensions, giving ``Q'`` and ``σ'``; ``W`` only gains
the column ``p``. When the buffer is full, ``W`` is compressed:
``W ← W Q`` (d×τ), ``Q ← I``. Per step this reads ``W`` twice (the reductions
``Wᵀ[d, g]``, then ``p`` and the query together) and writes one column, and
every ``capacity − τ`` steps the compression costs one product ``W Q``:
O(dτ) amortised time instead of O(dτ²), with the same results as the direct
form (the represented matrix ``W Q Σ Qᵀ Wᵀ`` is the same; only its
factorisation differs) to working precision.

The buffer ``columns`` holds ``Wᵀ`` (capacity × d, one column of ``W`` per row,
so that appending a column writes one contiguous row). Appending is a pure
operation that copies the buffer, unless the caller donates the state
(``donate=True`` on NumPy and PyTorch, ``donate_argnums`` under ``jax.jit``):
then the row is written in place and a step costs O(d) memory traffic on top of
its two reads of ``W``.

The product form runs on one device: unlike the direct form, it has no
variant that completes its sums over rows split across devices. States split
over devices (:mod:`lowrank_ggn.sharding`, :mod:`lowrank_ggn.distributed`) use
the direct form, whose update completes its sums over rows in O(τ) all-reduces.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lowrank_ggn._core import product as core
from lowrank_ggn._core.aliases import Array, Device, DType
from lowrank_ggn._core.checks import (
    cast_like,
    check_damping,
    check_decay,
    check_dim_rank,
    check_ginger_state,
    check_like,
    check_product_state,
    nan_if,
    reject_if,
    traced_out_of_range,
)
from lowrank_ggn._core.operator import as_scalar
from lowrank_ggn._core.options import check_bool
from lowrank_ggn._ginger import GingerState
from lowrank_ggn._operator import damped_dense
from lowrank_ggn.backends import canonical_float_dtype, device_of, floating_point_errors_ignored, resolve_namespace

__all__ = [
    "GingerProductState",
    "ginger_product_compress",
    "ginger_product_dense",
    "ginger_product_from_state",
    "ginger_product_init",
    "ginger_product_precondition",
    "ginger_product_to_state",
    "ginger_product_update",
    "ginger_product_update_precondition",
]


class GingerProductState(NamedTuple):
    r"""Ginger's state in product form: ``U = W Q`` with ``W = columns[:count]ᵀ`` and ``Q = coords[:count]``.

    Represents the same undamped curvature ``U diag(σ) Uᵀ`` as :class:`GingerState`.
    A NamedTuple (a JAX pytree) of arrays of one namespace, dtype and device.

    Parameters
    ----------
    columns, coords, count, eigvals, discarded, escaped, step, num_nonfinite : array
        The fields, in this order (see the attributes below).
    """

    columns: Array
    """Wᵀ, shape (capacity, dim): rows ``0 … count−1`` are orthonormal; later rows are unused."""
    coords: Array
    """Q, shape (capacity, rank): orthonormal columns; rows ``count …`` are zero."""
    count: Array
    """0-d int32: m, the number of columns of W in use (rank ≤ m < capacity)."""
    eigvals: Array
    """Eigenvalues σ, shape (rank,), non-negative and sorted descending."""
    discarded: Array
    """0-d: EMA-weighted curvature dropped by truncation, ``trace(M_t) = sum(σ) + discarded``."""
    escaped: Array
    """0-d: ρ_t, the certified bound ``0 ⪯ M_t − U diag(σ) Uᵀ ⪯ ρ_t I`` (see :class:`GingerState`)."""
    step: Array
    """0-d int32: number of accepted updates."""
    num_nonfinite: Array
    """0-d int32: number of rejected (non-finite) updates."""


def _default_capacity(dim: int, rank: int) -> int:
    return min(dim, 2 * rank) if 2 * rank <= dim else dim


def _check_capacity(capacity: Any, dim: int, rank: int) -> int:
    if capacity is None:
        capacity = _default_capacity(dim, rank)
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        msg = f"capacity must be an integer, got {type(capacity).__name__}"
        raise TypeError(msg)
    if not rank < capacity <= dim:
        msg = f"capacity must satisfy rank < capacity <= dim (rank={rank}, dim={dim}), got {capacity}"
        raise ValueError(msg)
    return capacity


def ginger_product_init(
    dim: int,
    rank: int,
    *,
    capacity: int | None = None,
    xp: Any | None = None,
    dtype: DType | None = None,
    device: Device | None = None,
) -> GingerProductState:
    """Create an empty product-form state (σ = 0, ``W = Q = I``), like :func:`ginger_init`.

    Parameters
    ----------
    dim : int
        Number of parameters d.
    rank : int
        τ, with ``1 ≤ rank < dim``.
    capacity : int, optional
        Columns of the buffer for W, ``rank < capacity ≤ dim``; W is compressed
        every ``capacity − rank`` appended columns. Default ``min(2·rank, dim)``.
    xp : array namespace or module, optional
        As in :func:`ginger_init`.
    dtype : dtype, optional
        As in :func:`ginger_init` (default float32 where available).
    device : device, optional
        As in :func:`ginger_init`.

    Returns
    -------
    GingerProductState
        σ = 0, ``count = rank``, counters at zero.

    Raises
    ------
    TypeError
        If ``dim``, ``rank`` or ``capacity`` is not an integer, or ``dtype`` is not float32/float64.
    ValueError
        If ``rank ∉ [1, dim)`` or ``capacity ∉ (rank, dim]``.
    """
    dim, rank = check_dim_rank(dim, rank)
    capacity = _check_capacity(capacity, dim, rank)
    ns = resolve_namespace(xp)
    dt = canonical_float_dtype(ns, dtype)
    first = ns.eye(rank, dim, dtype=dt, device=device)
    if first.dtype != dt:
        msg = f"dtype {dt} is not available in this namespace (JAX needs jax_enable_x64 for float64)"
        raise TypeError(msg)
    # Rows beyond `count` are kept at zero (the traced update reads them).
    columns = ns.concat([first, ns.zeros((capacity - rank, dim), dtype=dt, device=device)], axis=0)
    return GingerProductState(
        columns=columns,
        coords=ns.eye(capacity, rank, dtype=dt, device=device),
        count=ns.asarray(rank, dtype=ns.int32, device=device),
        eigvals=ns.zeros((rank,), dtype=dt, device=device),
        discarded=ns.zeros((), dtype=dt, device=device),
        escaped=ns.zeros((), dtype=dt, device=device),
        step=ns.zeros((), dtype=ns.int32, device=device),
        num_nonfinite=ns.zeros((), dtype=ns.int32, device=device),
    )


def ginger_product_from_state(state: GingerState, *, capacity: int | None = None) -> GingerProductState:
    """Convert a direct-form :class:`GingerState` to product form (``W = U``, ``Q = I``).

    Parameters
    ----------
    state : GingerState
        The direct-form state to convert.
    capacity : int, optional
        As in :func:`ginger_product_init`.

    Returns
    -------
    GingerProductState
        Representing the same matrix, with the same counters.
    """
    xp = check_ginger_state(state)
    dim, rank = state.basis.shape
    capacity = _check_capacity(capacity, dim, rank)
    dt, dev = state.basis.dtype, device_of(state.basis)
    columns = xp.concat([state.basis.T, xp.zeros((capacity - rank, dim), dtype=dt, device=dev)], axis=0)
    return GingerProductState(
        columns=columns,
        coords=xp.eye(capacity, rank, dtype=dt, device=dev),
        count=xp.asarray(rank, dtype=xp.int32, device=dev),
        eigvals=state.eigvals,
        discarded=state.discarded,
        escaped=state.escaped,
        step=state.step,
        num_nonfinite=state.num_nonfinite,
    )


def ginger_product_to_state(state: GingerProductState) -> GingerState:
    """Convert to the direct form: ``basis = W Q`` (one product, O(d·capacity·τ)).

    Parameters
    ----------
    state : GingerProductState
        The product-form state to convert.

    Returns
    -------
    GingerState
        Representing the same matrix, with the same counters.
    """
    check_product_state(state)
    return GingerState(
        basis=state.columns.T @ state.coords,
        eigvals=state.eigvals,
        discarded=state.discarded,
        escaped=state.escaped,
        step=state.step,
        num_nonfinite=state.num_nonfinite,
    )


def ginger_product_dense(state: GingerProductState, *, damping: Any = 0.0) -> Array:
    """Materialise ``γI + U diag(σ) Uᵀ`` (dim × dim) for tests and studies.

    Parameters
    ----------
    state : GingerProductState
        The curvature ``U diag(σ) Uᵀ`` with ``U = W Q``.
    damping : float, default 0
        γ ≥ 0, added to the diagonal.

    Returns
    -------
    array, shape (dim, dim)
        ``γI + U diag(σ) Uᵀ``.
    """
    direct = ginger_product_to_state(state)
    return damped_dense(direct.basis, direct.eigvals, damping=damping)


def _check_vector(state: GingerProductState, v: Any, name: str, *, batch: bool = False) -> None:
    dim = state.columns.shape[1]
    check_like(v, name, state.columns, shapes=((dim,), (dim, -1)) if batch else ((dim,),), promote=True)


@floating_point_errors_ignored()
def ginger_product_update(
    state: GingerProductState, d: Array, *, decay: Any, donate: bool = False
) -> GingerProductState:
    r"""Fold one curvature vector into a product-form state (Eq 7 truncated to rank τ, O(dτ) amortised).

    The same update as :func:`ginger_update` (eigen path): the best rank-τ
    approximation of ``α U diag(σ) Uᵀ + (1 − α) d dᵀ``, computed in the
    coordinates of ``[W p]`` (see the module documentation).

    Parameters
    ----------
    state : GingerProductState
        The current state.
    d : array, shape (dim,)
        Curvature vector (Eq 8).
    decay : float or 0-d array
        α ∈ (0, 1).
    donate : bool, default False
        NumPy and PyTorch: the caller gives up ``state``, and the new column
        is written into its buffer instead of a copy of it. On JAX, donate the
        state to ``jax.jit`` (``donate_argnums``) instead.

    Returns
    -------
    GingerProductState
        A non-finite ``d`` (or result) leaves the represented matrix and the
        counters unchanged, except ``num_nonfinite``, which is incremented.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1) or ``d`` has the wrong shape or device.
    TypeError
        If ``d`` is not a real floating array of the state's namespace and dtype.
    """
    xp = check_product_state(state)
    _check_vector(state, d, "d")
    check_decay(decay, like=state.columns)
    check_bool(donate, "donate")
    d = reject_if(xp, traced_out_of_range(xp, state.columns, decay=decay), cast_like(xp, d, state.columns))
    return core.update(xp, state, d, decay=decay, donate=donate)


@floating_point_errors_ignored()
def ginger_product_update_precondition(
    state: GingerProductState,
    d: Array,
    g: Array,
    *,
    decay: Any,
    damping: Any,
    donate: bool = False,
) -> tuple[GingerProductState, Array]:
    r"""Update with ``d``, then precondition ``g`` with the new state: the fused step in product form.

    Equivalent to :func:`ginger_product_update` followed by
    :func:`ginger_product_precondition`, in two reads of ``W`` (the query of
    the new state, ``y = g/γ + U'z``, is expanded through ``W`` and ``d``
    in the same pass that forms the new column).

    Parameters
    ----------
    state : GingerProductState
        The current state.
    d : array, shape (dim,)
        Curvature vector (Eq 8).
    g : array, shape (dim,)
        The gradient to precondition.
    decay : float or 0-d array
        α ∈ (0, 1).
    damping : float or 0-d array
        γ > 0.
    donate : bool, default False
        See :func:`ginger_product_update`.

    Returns
    -------
    tuple
        ``(new_state, y)`` with ``y = (γI + U' diag(σ') U'ᵀ)⁻¹ g``.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1), ``damping`` is not positive and finite, or a shape or device is wrong.
    TypeError
        If ``d`` or ``g`` is not a real floating array of the state's namespace and dtype.
    """
    xp = check_product_state(state)
    _check_vector(state, d, "d")
    _check_vector(state, g, "g")
    check_decay(decay, like=state.columns)
    check_damping(damping, like=state.columns)
    check_bool(donate, "donate")
    columns = state.columns
    bad_damping = traced_out_of_range(xp, columns, damping=damping)
    d = reject_if(
        xp, bad_damping, reject_if(xp, traced_out_of_range(xp, columns, decay=decay), cast_like(xp, d, columns))
    )
    damping = nan_if(xp, bad_damping, damping, columns)
    new, y = core.update_precondition(
        xp, state, d, cast_like(xp, g, columns), decay=decay, damping=damping, donate=donate
    )
    return new, cast_like(xp, y, g)


def ginger_product_precondition(state: GingerProductState, g: Array, *, damping: Any) -> Array:
    r"""Apply ``(γI + U diag(σ) Uᵀ)⁻¹`` with ``U = W Q`` (Eq 16): two reads of ``W``.

    .. math:: y = \frac{g}{\gamma} + W Q z, \qquad
       z = -\frac{\sigma \odot c}{\gamma(\gamma + \sigma)}, \qquad c = Q^\top W^\top g .

    Parameters
    ----------
    state : GingerProductState
        The curvature ``U diag(σ) Uᵀ`` with ``U = W Q``.
    g : array, shape (dim,) or (dim, k)
        Gradient(s), one per column.
    damping : float or 0-d array
        γ > 0.

    Returns
    -------
    array, same shape as ``g``
        ``(γI + U diag(σ) Uᵀ)⁻¹ g``.
    """
    xp = check_product_state(state)
    _check_vector(state, g, "g", batch=True)
    check_damping(damping, like=state.columns)
    damping = nan_if(xp, traced_out_of_range(xp, state.columns, damping=damping), damping, state.columns)
    y = core.precondition(xp, state, cast_like(xp, g, state.columns), as_scalar(xp, damping, state.columns))
    return cast_like(xp, y, g)


def ginger_product_compress(state: GingerProductState, *, donate: bool = False) -> GingerProductState:
    """Compress ``W ← W Q`` (d×τ), ``Q ← I``: the represented matrix is unchanged.

    The updates compress automatically when the buffer is full; call this to
    free the buffer earlier (for instance before converting or saving).

    Parameters
    ----------
    state : GingerProductState
        The state to compress.
    donate : bool, default False
        See :func:`ginger_product_update`.

    Returns
    -------
    GingerProductState
        ``count = rank``; the same matrix and counters.
    """
    xp = check_product_state(state)
    check_bool(donate, "donate")
    return core.compress(xp, state, in_place=donate)
