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

from lowrank_ggn._eigen_update import _cgs2, _plan, _reject, finite_max_abs
from lowrank_ggn._ginger import GingerState, _check_donate
from lowrank_ggn._ginger import _check_state as _check_direct_state
from lowrank_ggn._operator import _scalar, damped_dense
from lowrank_ggn._reduction import LOCAL
from lowrank_ggn._typing import Array, ArrayNamespace, Device, DType
from lowrank_ggn._validation import check_damping, check_decay, check_dim_rank, check_like, has_fields
from lowrank_ggn.backends import (
    array_namespace,
    canonical_float_dtype,
    cond,
    device_of,
    is_array,
    is_traced,
    resolve_namespace,
)
from lowrank_ggn.backends._kernels import apply, can_overwrite, compress_rows, project, rotate, write_row

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
    columns, coords, count, eigvals, discarded, step, num_nonfinite : array
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
    xp = _check_direct_state(state)
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
    _check_product_state(state)
    return GingerState(
        basis=state.columns.T @ state.coords,
        eigvals=state.eigvals,
        discarded=state.discarded,
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


def _check_product_state(state: Any) -> ArrayNamespace:
    if not has_fields(state, GingerProductState._fields):
        msg = f"state must be a GingerProductState, got {type(state).__name__}"
        raise TypeError(msg)
    columns = state.columns
    if not is_array(columns) or columns.ndim != 2:
        msg = "state.columns must be a 2-d array (capacity, dim)"
        raise TypeError(msg)
    xp = array_namespace(columns)
    if not xp.isdtype(columns.dtype, "real floating"):
        msg = f"state.columns must have a real floating dtype, got {columns.dtype}"
        raise TypeError(msg)
    capacity = columns.shape[0]
    coords = state.coords
    if not is_array(coords) or coords.ndim != 2 or coords.shape[0] != capacity:
        msg = f"state.coords must be a 2-d array with {capacity} rows"
        raise ValueError(msg)
    check_like(coords, "state.coords", columns, shapes=((capacity, coords.shape[1]),))
    check_like(state.eigvals, "state.eigvals", columns, shapes=((coords.shape[1],),))
    check_like(state.discarded, "state.discarded", columns, shapes=((),))
    if not is_traced(state.count) and not coords.shape[1] <= int(state.count) < capacity:
        msg = f"state.count must satisfy rank <= count < capacity, got {int(state.count)}"
        raise ValueError(msg)
    return xp


def _check_vector(state: GingerProductState, v: Any, name: str, *, batch: bool = False) -> None:
    dim = state.columns.shape[1]
    check_like(v, name, state.columns, shapes=((dim,), (dim, -1)) if batch else ((dim,),))


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
    xp = _check_product_state(state)
    _check_vector(state, d, "d")
    check_decay(decay)
    _check_donate(donate)
    return _advance(xp, state, d, None, decay=decay, gamma=None, donate=donate)[0]


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
    xp = _check_product_state(state)
    _check_vector(state, d, "d")
    _check_vector(state, g, "g")
    check_decay(decay)
    check_damping(damping)
    _check_donate(donate)
    new, y = _advance(xp, state, d, g, decay=decay, gamma=damping, donate=donate)
    return new, y


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
    xp = _check_product_state(state)
    _check_vector(state, g, "g", batch=True)
    check_damping(damping)
    gamma = _scalar(xp, damping, state.columns)
    live, _ = _live(state)  # Wᵀ
    coords = state.coords[: live.shape[0], :]
    sigma = state.eigvals
    if g.ndim == 1:
        c_w, _ = project(xp, live, (g,), rows=True)
        c = coords.T @ c_w[:, 0]
        z = -(c / gamma) * (sigma / (gamma + sigma))
        return apply(xp, live, coords @ z, g, 1 / gamma, rows=True)
    c = coords.T @ (live @ g)
    z = -(c / gamma) * (sigma[:, None] / (gamma + sigma[:, None]))
    return ((coords @ z).T @ live).T + g / gamma


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
    xp = _check_product_state(state)
    _check_donate(donate)
    return _compress(xp, state, in_place=donate)


def _live(state: GingerProductState) -> tuple[Array, int | None]:
    """Return the rows of ``columns`` in use: all of them under tracing, the first ``count`` otherwise."""
    if is_traced(state.count):
        return state.columns, None
    m = int(state.count)
    return state.columns[:m, ...], m


def _compress(xp: ArrayNamespace, state: GingerProductState, *, in_place: bool) -> GingerProductState:
    """``W ← W Q``, ``Q ← I``, ``count ← rank``; the unused rows of the buffer are zeroed."""
    capacity, rank = state.coords.shape
    dt, dev = state.columns.dtype, device_of(state.columns)
    _, m = _live(state)
    coords = state.coords if m is None else state.coords[:m, :]
    return state._replace(
        columns=compress_rows(xp, state.columns, m, coords, in_place=in_place),
        coords=xp.eye(capacity, rank, dtype=dt, device=dev),
        count=xp.asarray(rank, dtype=state.count.dtype, device=dev),
    )


class _Split(NamedTuple):
    """``d = W w + r p`` with ``p = (vec − W·shift)/r`` (unit, orthogonal to all of W)."""

    w: Array
    vec: Array
    shift: Array
    r: Array
    vec_dot: Array
    """``vecᵀg`` for the fused query (``vecᵀvec`` without ``g``)."""
    dropped: Array
    """``ρr²`` when the residual is at the rounding level and is not appended, else 0."""


def _split(
    xp: ArrayNamespace,
    live: Array,
    d: Array,
    g: Array | None,
    *,
    coef: Array,
    dots: Array,
    in_use: Array,
    rho: Array,
) -> _Split:
    """Split ``d`` against all of ``W``: implicit residual (DGKS), or CGS2 with its second step implicit."""
    capacity, n_live = in_use.shape[0], live.shape[0]
    w, vv = coef[:, 0], dots[0]
    vg = dots[1] if g is not None else vv
    cc = xp.sum(w * w)
    one_pass = cc <= 0.5 * vv
    fin = xp.isfinite(vv)
    r2 = xp.where(fin, vv, xp.zeros_like(vv)) - xp.where(fin, cc, xp.zeros_like(cc))

    def direct(w: Array) -> tuple[Array, Array, Array, Array, Array]:
        return w, d, xp.sqrt(xp.where(r2 > 0, r2, xp.zeros_like(r2))), vg, w

    def cgs2(w: Array) -> tuple[Array, Array, Array, Array, Array]:
        # One more read of W: p̃₁ = d − Ww with its projection w₂ = Wᵀp̃₁; the pass that
        # writes the new column subtracts W·w₂ (shift) from p̃₁, as the direct path's W·w from d.
        w_live, resid, r, vec_dot, w2 = _cgs2(xp, live, d, w[:n_live], g, reduce=LOCAL, rows=True)
        w_new = xp.where(in_use, _pad(xp, w_live[:, None], capacity)[:, 0], xp.zeros_like(w))
        shift = xp.where(in_use, _pad(xp, w2[:, None], capacity)[:, 0], xp.zeros_like(w))
        return w_new, resid, r, vec_dot, shift

    w, vec, r, vec_dot, shift = cond(one_pass, direct, cgs2, w)
    eps = xp.finfo(d.dtype).eps
    tiny = xp.finfo(d.dtype).smallest_normal / eps
    in_span = (r <= eps**0.5 * xp.sqrt(vv)) | (r <= tiny)
    return _Split(
        w=w,
        vec=vec,
        shift=shift,
        r=xp.where(in_span, xp.zeros_like(r), r),
        vec_dot=vec_dot,
        dropped=xp.where(in_span, rho * r * r, xp.zeros_like(r)),
    )


def _fused_query(
    xp: ArrayNamespace,
    split: _Split,
    g_w: Array,
    coords: Array,
    sigma: Array,
    *,
    inv_r: Array,
    new_row: Array,
    in_use: Array,
    gamma: Array,
    ok: Array,
) -> tuple[Array, Array]:
    r"""Coefficients ``(a, β)`` of ``y = g/γ + W a + β·vec``, the query of the new state.

    ``y = g/γ + U'z`` with ``U' = [W p] Q'``, ``z = −σ'c'/(γ(γ+σ'))``,
    ``c' = Q'ᵀ[Wᵀg; pᵀg]``; with ``ζ = Q'z`` and ``p = (vec − W·shift)/r`` this
    is ``g/γ + W(ζ_W − ζ_p·shift/r) + (ζ_p/r)·vec``.
    """
    vec_dot = xp.where(ok, split.vec_dot, xp.zeros_like(split.vec_dot))
    p_g = (vec_dot - xp.sum(split.shift * g_w)) * inv_r
    c_new = coords.T @ (g_w + p_g * new_row)
    z = -(c_new / gamma) * (sigma / (gamma + sigma))
    zeta = coords @ z
    zeta_p = xp.sum(zeta * new_row)
    zeta_w = xp.where(in_use, zeta, xp.zeros_like(zeta))
    return zeta_w - zeta_p * inv_r * split.shift, zeta_p * inv_r


def _advance(
    xp: ArrayNamespace,
    state: GingerProductState,
    d: Array,
    g: Array | None,
    *,
    decay: Any,
    gamma: Any,
    donate: bool,
) -> tuple[GingerProductState, Array | None]:
    """One product-form update (and the query of the new state when ``g`` is given)."""
    columns, coords, count, sigma = state.columns, state.coords, state.count, state.eigvals
    capacity = coords.shape[0]
    alpha = _scalar(xp, decay, columns)
    rho = 1 - alpha
    finite = finite_max_abs(xp, d)[0]  # no boolean temporary of the size of d
    d_safe = cond(finite, lambda d: d, xp.zeros_like, d)
    live, m = _live(state)  # Wᵀ: (count, dim) eagerly, (capacity, dim) under tracing
    n_live = live.shape[0]
    rows = xp.arange(capacity, dtype=count.dtype, device=device_of(columns))
    in_use = rows < count

    # Pass 1: the reductions Wᵀd (and Wᵀg) with the Gram matrix of [d, g].
    coef, dots = project(xp, live, (d_safe,) if g is None else (d_safe, g), rows=True)
    coef = _pad(xp, coef, capacity)
    coef = xp.where(in_use[:, None], coef, xp.zeros_like(coef))
    split = _split(xp, live, d_safe, g, coef=coef, dots=dots, in_use=in_use, rho=rho)

    # Brand's update on the small coordinates x = [w; r] (row `count` stands for p).
    new_row = xp.astype(rows == count, columns.dtype)
    x = split.w + split.r * new_row
    plan = _plan(xp, coords, sigma, x, c=coords.T @ x, vv=xp.sum(x * x), rho=rho, s=alpha)
    dropped = plan.discarded + split.dropped
    ok = finite & xp.all(xp.isfinite(plan.eigvals)) & xp.isfinite(dropped)
    rot, vrot = _reject(xp, plan, ok)
    new_coords = coords @ rot + plan.vec[:, None] * vrot[None, :]
    new_sigma = xp.where(ok, plan.eigvals, sigma)
    append = ok & (split.r > 0)
    inv_r = xp.where(append, 1 / xp.where(append, split.r, xp.ones_like(split.r)), xp.zeros_like(split.r))

    # Pass 2: the new column p (exactly zero when nothing is appended: inv_r = 0 and
    # vec is finite, which keeps the rows beyond `count` zero) and the fused query.
    query = None
    if g is not None:
        gam = _scalar(xp, gamma, columns)
        g_w = xp.where(in_use, coef[:, 1], xp.zeros_like(coef[:, 1]))
        a, beta = _fused_query(
            xp, split, g_w, new_coords, new_sigma, inv_r=inv_r, new_row=new_row, in_use=in_use, gamma=gam, ok=ok
        )
        query = (a[:n_live], beta, g, 1 / gam)
    rot_p = -(inv_r * split.shift)[:n_live, None]
    vrot_p = xp.reshape(inv_r, (1,))
    # Both the buffer and the live rows must take the blocked path, which alone writes into `out`.
    if donate and m is not None and can_overwrite(xp, columns.T) and can_overwrite(xp, live.T):
        # Write p straight into its row of the donated buffer.
        _, y = rotate(xp, live, rot_p, split.vec, vrot_p, query=query, out=columns[m : m + 1, ...].T, rows=True)
    else:
        p, y = rotate(xp, live, rot_p, split.vec, vrot_p, query=query, rows=True)
        columns = write_row(xp, columns, count, p[:, 0], in_place=donate)
    new = GingerProductState(
        columns=columns,
        coords=new_coords,
        count=count + xp.astype(append, count.dtype),
        eigvals=new_sigma,
        discarded=xp.where(ok, alpha * state.discarded + dropped, state.discarded),
        step=state.step + xp.astype(ok, state.step.dtype),
        num_nonfinite=state.num_nonfinite + xp.astype(~ok, state.num_nonfinite.dtype),
    )
    # The buffer is full: compress (W ← WQ, Q ← I). Its memory is ours (a copy, or donated).
    full = new.count >= capacity
    new = cond(full, lambda s: _compress(xp, s, in_place=True), lambda s: s, new)
    return new, y


def _pad(xp: ArrayNamespace, a: Array, rows: int) -> Array:
    """Zero-pad a (n, k) array to (rows, k)."""
    n = a.shape[0]
    if n == rows:
        return a
    return xp.concat([a, xp.zeros((rows - n, a.shape[1]), dtype=a.dtype, device=device_of(a))], axis=0)
