r"""Ginger in product form ``U = W Q``, unchecked: O(dτ) amortised updates.

The mathematics is in :mod:`lowrank_ggn._product` (the public face). The state
is any NamedTuple with the fields of :class:`lowrank_ggn.GingerProductState`.
A step reads ``W`` twice (the reductions ``Wᵀ[d, g]``; then the new column and
the query together), runs Brand's update (:func:`lowrank_ggn._core.brand.plan`)
on the small coordinates, and compresses ``W ← WQ`` when the buffer is full.
The product form runs on one device only (no ``reduce``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.brand import cgs2, finite_max_abs, plan, reject, unit_max
from lowrank_ggn._core.ginger import saturating_increment
from lowrank_ggn._core.kernels import apply, can_overwrite, compress_rows, project, rotate, write_row
from lowrank_ggn._core.operator import as_scalar
from lowrank_ggn._core.reduction import LOCAL
from lowrank_ggn.backends import cond, device_of, is_traced

__all__ = ["compress", "live_rows", "precondition", "update", "update_precondition"]


def precondition(xp: ArrayNamespace, state: Any, g: Array, gamma: Array) -> Array:
    r"""``(γI + U diag(σ) Uᵀ)⁻¹ g`` with ``U = WQ``, for ``g`` of shape (dim,) or (dim, k): two reads of ``W``."""
    live, _ = live_rows(state)  # Wᵀ
    coords = state.coords[: live.shape[0], :]
    sigma = state.eigvals
    if g.ndim == 1:
        c_w, _ = project(xp, live, (g,), rows=True)
        c = coords.T @ c_w[:, 0]
        # The split form (g − Uc)/γ + U(c/(γ+σ)) of lowrank_ggn._core.operator.solve.
        return apply(xp, live, coords @ xp.stack([c, c / (gamma + sigma)], axis=1), g, 1 / gamma, rows=True)
    k = g.shape[1]
    c = coords.T @ (live @ g)
    both = ((coords @ xp.concat([c, c / (gamma + sigma[:, None])], axis=1)).T @ live).T
    return (g - both[:, :k]) / gamma + both[:, k:]


def update(xp: ArrayNamespace, state: Any, d: Array, *, decay: Any, donate: bool = False) -> Any:
    """Fold ``d`` into a product-form state (see :func:`lowrank_ggn.ginger_product_update`)."""
    return _step(xp, state, d, None, decay=decay, gamma=None, donate=donate)[0]


def update_precondition(
    xp: ArrayNamespace, state: Any, d: Array, g: Array, *, decay: Any, damping: Any, donate: bool = False
) -> tuple[Any, Array]:
    """Fold ``d``, then precondition ``g`` (dim,) with the new state, in two reads of ``W``."""
    new, y = _step(xp, state, d, g, decay=decay, gamma=damping, donate=donate)
    return new, y


def live_rows(state: Any) -> tuple[Array, int | None]:
    """Return the rows of ``columns`` in use: all of them under tracing, the first ``count`` otherwise."""
    if is_traced(state.count):
        return state.columns, None
    m = int(state.count)
    return state.columns[:m, ...], m


def compress(xp: ArrayNamespace, state: Any, *, in_place: bool) -> Any:
    """``W ← W Q``, ``Q ← I``, ``count ← rank``; the unused rows of the buffer are zeroed."""
    capacity, rank = state.coords.shape
    dt, dev = state.columns.dtype, device_of(state.columns)
    _, m = live_rows(state)
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

    def twice(w: Array) -> tuple[Array, Array, Array, Array, Array]:
        # One more read of W: p̃₁ = d − Ww with its projection w₂ = Wᵀp̃₁; the pass that
        # writes the new column subtracts W·w₂ (shift) from p̃₁, as the direct path's W·w from d.
        w_live, resid, r, vec_dot, w2 = cgs2(xp, live, d, w[:n_live], g, reduce=LOCAL, rows=True)
        w_new = xp.where(in_use, _pad(xp, w_live[:, None], capacity)[:, 0], xp.zeros_like(w))
        shift = xp.where(in_use, _pad(xp, w2[:, None], capacity)[:, 0], xp.zeros_like(w))
        return w_new, resid, r, vec_dot, shift

    w, vec, r, vec_dot, shift = cond(one_pass, direct, twice, w)
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
    r"""Coefficients ``(a, β)`` (two columns each) of the query of the new state, as :func:`rotate` takes them.

    ``y = (g − U'c')/γ + U'w`` with ``w = c'/(γ+σ')`` (the split form of
    :func:`lowrank_ggn._core.operator.solve`), ``U' = [W p] Q'``,
    ``c' = Q'ᵀ[Wᵀg; pᵀg]``; with ``p = (vec − W·shift)/r``,
    ``U'x = W(ζ_W − ζ_p·shift/r) + (ζ_p/r)·vec`` for ``ζ = Q'x``.
    """
    vec_dot = xp.where(ok, split.vec_dot, xp.zeros_like(split.vec_dot))
    p_g = (vec_dot - xp.sum(split.shift * g_w)) * inv_r
    c_new = coords.T @ (g_w + p_g * new_row)
    a, beta = [], []
    for x in (-c_new, c_new / (gamma + sigma)):
        zeta = coords @ x
        zeta_p = xp.sum(zeta * new_row)
        zeta_w = xp.where(in_use, zeta, xp.zeros_like(zeta))
        a.append(zeta_w - zeta_p * inv_r * split.shift)
        beta.append(zeta_p * inv_r)
    return xp.stack(a, axis=1), xp.stack(beta)


def _step(
    xp: ArrayNamespace,
    state: Any,
    d: Array,
    g: Array | None,
    *,
    decay: Any,
    gamma: Any,
    donate: bool,
) -> tuple[Any, Array | None]:
    """One product-form update (and the query of the new state when ``g`` is given)."""
    columns, coords, count, sigma = state.columns, state.coords, state.count, state.eigvals
    capacity = coords.shape[0]
    alpha = as_scalar(xp, decay, columns)
    finite, d_max = finite_max_abs(xp, d)  # no boolean temporary of the size of d
    d_safe = cond(finite, lambda d: d, xp.zeros_like, d)
    # The term (1−α)ddᵀ as ρ·vvᵀ with v = d/max|d|, as the direct form: the squares of a d near
    # √(smallest normal) are not flushed to zero (JAX on CPU), nor those of a d beyond √max.
    d_safe, rho = unit_max(xp, d_safe, 1 - alpha, v_max=xp.where(finite, d_max, xp.zeros_like(d_max)))
    live, m = live_rows(state)  # Wᵀ: (count, dim) eagerly, (capacity, dim) under tracing
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
    brand = plan(xp, coords, sigma, x, c=coords.T @ x, vv=xp.sum(x * x), rho=rho, s=alpha)
    dropped = brand.discarded + split.dropped
    # The bookkeeping α·discarded + dropped may overflow where the eigenvalues do not.
    bookkeeping = alpha * xp.maximum(state.discarded, state.escaped) + dropped
    ok = finite & xp.all(xp.isfinite(brand.eigvals)) & xp.isfinite(bookkeeping)
    rot, vrot = reject(xp, brand, ok)
    new_coords = coords @ rot + brand.vec[:, None] * vrot[None, :]
    new_sigma = xp.where(ok, brand.eigvals, sigma)
    append = ok & (split.r > 0)
    inv_r = xp.where(append, 1 / xp.where(append, split.r, xp.ones_like(split.r)), xp.zeros_like(split.r))

    # Pass 2: the new column p (exactly zero when nothing is appended: inv_r = 0 and
    # vec is finite, which keeps the rows beyond `count` zero) and the fused query.
    query = None
    if g is not None:
        gam = as_scalar(xp, gamma, columns)
        g_w = xp.where(in_use, coef[:, 1], xp.zeros_like(coef[:, 1]))
        a, beta = _fused_query(
            xp, split, g_w, new_coords, new_sigma, inv_r=inv_r, new_row=new_row, in_use=in_use, gamma=gam, ok=ok
        )
        query = (a[:n_live, :], beta, g, 1 / gam)
    rot_p = -(inv_r * split.shift)[:n_live, None]
    vrot_p = xp.reshape(inv_r, (1,))
    # Both the buffer and the live rows must take the blocked path, which alone writes into `out`.
    if donate and m is not None and can_overwrite(xp, columns.T) and can_overwrite(xp, live.T):
        # Write p straight into its row of the donated buffer.
        _, y = rotate(xp, live, rot_p, split.vec, vrot_p, query=query, out=columns[m : m + 1, ...].T, rows=True)
    else:
        p, y = rotate(xp, live, rot_p, split.vec, vrot_p, query=query, rows=True)
        columns = write_row(xp, columns, count, p[:, 0], in_place=donate)
    new = state._replace(
        columns=columns,
        coords=new_coords,
        count=count + xp.astype(append, count.dtype),
        eigvals=new_sigma,
        discarded=xp.where(ok, alpha * state.discarded + dropped, state.discarded),
        escaped=xp.where(ok, alpha * state.escaped + dropped, state.escaped),
        step=saturating_increment(xp, state.step, ok),
        num_nonfinite=saturating_increment(xp, state.num_nonfinite, ~ok),
    )
    # The buffer is full: compress (W ← WQ, Q ← I). Its memory is ours (a copy, or donated).
    full = new.count >= capacity
    new = cond(full, lambda s: compress(xp, s, in_place=True), lambda s: s, new)
    return new, y


def _pad(xp: ArrayNamespace, a: Array, rows: int) -> Array:
    """Zero-pad a (n, k) array to (rows, k)."""
    n = a.shape[0]
    if n == rows:
        return a
    return xp.concat([a, xp.zeros((rows - n, a.shape[1]), dtype=a.dtype, device=device_of(a))], axis=0)
