r"""Brand's rank-one update of a truncated symmetric eigendecomposition, planned on small arrays.

The mathematics is in :mod:`lowrank_ggn._eigen_update` (the public face,
:func:`lowrank_ggn.lowrank_eigh_update`). This module holds the unchecked
pieces that every update path shares — Ginger's direct and product forms, the
Sherman–Morrison path, and their sharded variants:

* :func:`plan` — the (τ+1)×(τ+1) core, its eigendecomposition and truncation,
  from the reductions ``c = Uᵀv`` and ``vᵀv`` (one read of ``U``), with CGS2
  (:func:`cgs2`) when ``v`` is nearly in ``span U``;
* :func:`reject` — the identity rotation for a rejected update;
* :func:`rank_one_update` — the whole update (project, plan, rotate);
* :func:`unit_max`, :func:`finite_max_abs` — scaling and finiteness of ``v``
  without temporaries of its size;
* :func:`eigh_small`, :func:`diag_matrix` — small dense helpers;
* :func:`reorthonormalize_qr`, :func:`reorthonormalize_gram` — restoring an
  orthonormal basis (the second needs only ``UᵀU``, so it runs on a row-split
  basis).

Every sum over the parameter axis is completed through ``reduce``
(:class:`~lowrank_ggn._core.reduction.Reduction`). Nothing here checks its
arguments.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.kernels import Scaled, project, residual, rotate, scaled
from lowrank_ggn._core.reduction import LOCAL, Reduction
from lowrank_ggn.backends import cond, device_of, is_jax, is_numpy, is_torch, widest_float_dtype

__all__ = [
    "DGKS",
    "CorePlan",
    "Orthogonalized",
    "Plan",
    "cgs2",
    "diag_matrix",
    "eigh_small",
    "finite_max_abs",
    "orthogonalize",
    "plan",
    "plan_core",
    "rank_one_update",
    "reject",
    "reorthonormalize_gram",
    "reorthonormalize_qr",
    "unit_max",
]

# Daniel–Gragg–Kaufman–Stewart criterion: a second Gram–Schmidt pass is needed
# only when the projection removed more than 1 − 1/√2 of the norm.
DGKS = 0.7071067811865476


def cgs2(
    xp: ArrayNamespace, basis: Array, v: Array, c: Array, w: Array | None, *, reduce: Reduction, rows: bool = False
) -> tuple[Array, Array, Array, Array, Array]:
    r"""Classical Gram–Schmidt twice (CGS2) against ``U`` in one read of it, given ``c = Uᵀv``.

    The first subtraction is explicit, ``p̃₁ = v − Uc``; its projection
    ``c₂ = Uᵀp̃₁`` comes from the same pass (:func:`residual`), and the second
    subtraction is left to the pass that rotates ``U``, which forms
    ``p̃ = p̃₁ − Uc₂`` anyway (``shift = c₂``). Because ``p̃₁`` is orthogonal to
    ``U`` up to rounding, ``‖p̃‖² = ‖p̃₁‖² − ‖c₂‖²`` has no cancellation
    ("twice is enough"). Returns ``(c + c₂, p̃₁, ‖p̃‖, p̃₁ᵀw, c₂)`` (``p̃₁ᵀp̃₁``
    without ``w``); ``reduce`` completes ``c₂`` and the two products in one
    all-reduce. A non-finite ``p̃₁`` (an overflow) is replaced by zeros and its
    norm by NaN, which rejects the update without touching ``U``.
    ``rows=True``: ``basis`` is given as ``Uᵀ``.
    """
    resid, c2, dots = residual(xp, basis, v, c, w, rows=rows)
    c2, dots = reduce.sum_together(xp, c2, dots)
    fin = xp.isfinite(dots[0])  # NaN and ±inf in p̃₁ reach its sum of squares
    resid = cond(fin, lambda p: p, xp.zeros_like, resid)
    r2 = dots[0] - xp.sum(c2 * c2)
    r = xp.where(fin, xp.sqrt(xp.where(r2 > 0, r2, xp.zeros_like(r2))), xp.full_like(r2, xp.nan))
    return c + c2, resid, r, xp.where(fin, dots[1], xp.zeros_like(dots[1])), c2


class Plan(NamedTuple):
    r"""One rank-one update, planned on small arrays before ``U`` is touched a second time.

    The new basis is ``U' = U·rot + vec ⊗ vrot`` (see :func:`_rotate`).
    """

    rot: Array
    """(rank, rank): coefficients of the old basis."""
    vec: Array
    """(dim,): the vector added to the basis: ``v`` itself on the one-pass path,
    the first Gram–Schmidt residual ``p̃₁ = v − Uc`` on the CGS2 path."""
    vrot: Array
    """(rank,): coefficients of ``vec``."""
    eigvals: Array
    """(rank,): the new eigenvalues, sorted descending, ≥ 0; NaN if the core overflowed."""
    discarded: Array
    """0-d: the largest eigenvalue dropped by the truncation (plus ``ρr²`` for a dropped residual)."""
    vec_dot: Array | None
    """0-d: ``vecᵀw`` for the vector ``w`` of ``dot_with`` (None without it)."""


def plan(
    xp: ArrayNamespace,
    basis: Array,
    eigvals: Array,
    v: Array,
    *,
    c: Array,
    vv: Array,
    rho: Array,
    s: Array,
    dot_with: tuple[Array, Array] | None = None,
    reduce: Reduction = LOCAL,
    rows: bool = False,
) -> Plan:
    r"""Plan Brand's update from the reductions ``c = Uᵀv`` and ``vv = vᵀv`` (one read of ``U``).

    When ``v`` is far from ``span U`` — ``r² = ‖v‖² − ‖c‖² ≥ ‖v‖²/2``, the DGKS
    criterion for not re-orthogonalising — the residual is never formed: the
    new basis is ``U (V₁ − c bᵀ) + v bᵀ`` with ``b = V₂/r``, which is
    ``[U p] V`` with ``p = (v − Uc)/r``, evaluated in the single pass that
    rotates ``U``. Otherwise (cancellation) the residual ``p̃₁ = v − Uc`` is
    formed and projected once more in one further read of ``U`` (CGS2, see
    :func:`cgs2`); the rotation pass then subtracts the second projection
    the same way (``shift``).

    ``dot_with = (w, vᵀw)`` also returns ``vecᵀw`` (for the fused query).
    ``c`` and ``vv`` must already be complete sums over all rows; ``reduce``
    completes those of the CGS2 path (``Uᵀp̃₁``, ``p̃₁ᵀp̃₁`` and ``p̃₁ᵀw``, in
    one all-reduce).

    ``rows=True``: ``basis`` is given as ``Uᵀ``. The two phases are
    :func:`orthogonalize` (the only one that may read ``U``) and
    :func:`plan_core` (small arrays only, so that a caller holding several
    bases of the same rank can map it over all of them at once).
    """
    ortho = orthogonalize(xp, basis, v, c=c, vv=vv, dot_with=dot_with, reduce=reduce, rows=rows)
    core = plan_core(xp, eigvals, c=ortho.c, r=ortho.r, shift=ortho.shift, vv=vv, rho=rho, s=s)
    return Plan(
        core.rot, ortho.vec, core.vrot, core.eigvals, core.discarded, ortho.vec_dot if dot_with is not None else None
    )


class Orthogonalized(NamedTuple):
    """The new direction of Brand's update, orthogonalised against ``U`` (the first phase of :func:`plan`)."""

    c: Array
    """(rank,): the complete projection ``Uᵀv`` (``c + c₂`` on the CGS2 path)."""
    vec: Array
    """(dim,): ``v`` on the one-pass path, ``p̃₁ = v − Uc`` on the CGS2 path."""
    r: Array
    """0-d: the norm of the residual ``‖v − UUᵀv‖`` (NaN for an overflow on the CGS2 path)."""
    vec_dot: Array
    """0-d: ``vecᵀw`` (``vᵀv`` without ``dot_with``)."""
    shift: Array
    """(rank,): what the rotation pass subtracts from ``U``'s coefficients besides ``c``: ``c`` or ``c₂``."""


def orthogonalize(
    xp: ArrayNamespace,
    basis: Array,
    v: Array,
    *,
    c: Array,
    vv: Array,
    dot_with: tuple[Array, Array] | None = None,
    reduce: Reduction = LOCAL,
    rows: bool = False,
) -> Orthogonalized:
    """Run the first phase of :func:`plan`: the one-pass test and, when it fails, CGS2 (one more read of ``U``).

    ``rows=True``: ``basis`` is given as ``Uᵀ``.
    """
    cc = xp.sum(c * c)
    # r² = ‖v‖² − ‖c‖²; the one-pass test r ≥ ‖v‖/√2 is ‖c‖² ≤ ‖v‖²/2 (false for NaN).
    one_pass = cc <= (1 - DGKS * DGKS) * vv
    finite = xp.isfinite(vv)
    r2 = xp.where(finite, vv, xp.zeros_like(vv)) - xp.where(finite, cc, xp.zeros_like(cc))

    w, vw = dot_with if dot_with is not None else (v, vv)

    def direct(c: Array) -> tuple[Array, Array, Array, Array, Array]:
        return c, v, xp.sqrt(xp.where(r2 > 0, r2, xp.zeros_like(r2))), vw, c

    def twice(c: Array) -> tuple[Array, Array, Array, Array, Array]:
        return cgs2(xp, basis, v, c, None if dot_with is None else w, reduce=reduce, rows=rows)

    return Orthogonalized(*cond(one_pass, direct, twice, c))


class CorePlan(NamedTuple):
    """The small half of a :class:`Plan` (everything but ``vec`` and ``vec_dot``)."""

    rot: Array
    vrot: Array
    eigvals: Array
    discarded: Array


def plan_core(
    xp: ArrayNamespace, eigvals: Array, *, c: Array, r: Array, shift: Array, vv: Array, rho: Array, s: Array
) -> CorePlan:
    r"""Run the second phase of :func:`plan`: the (τ+1)×(τ+1) core, its eigendecomposition and truncation.

    ``c``, ``r`` and ``shift`` are the fields of :class:`Orthogonalized`. Reads
    only small arrays, so it maps over a stack of blocks of the same rank
    (``jax.vmap``): one batched ``eigh``.
    """
    dtype = eigvals.dtype
    rank = eigvals.shape[0]
    norm_v = xp.sqrt(vv)
    # v counts as lying in span U when its residual is at the rounding level:
    # r ≤ √eps·‖v‖ (the dropped curvature ρr² is then below eps·ρ‖v‖², the
    # rounding level of the update itself), or r is in the subnormal range.
    # A residual that small is mostly rounding error and the non-orthogonality
    # of U, divided by r; admitting it as a new direction would feed that error
    # back into the basis, step after step.
    eps = xp.finfo(dtype).eps
    tiny = xp.finfo(dtype).smallest_normal / eps
    in_span = (r <= eps**0.5 * norm_v) | (r <= tiny)
    dropped = xp.where(in_span, rho * r * r, xp.zeros_like(r))
    r = xp.where(in_span, xp.zeros_like(r), r)

    block = diag_matrix(xp, s * eigvals) + rho * (c[:, None] * c[None, :])
    side = rho * r * c
    corner = rho * r * r
    # Sentinel: a strictly smallest eigenvalue for the (zero) extra direction when r = 0.
    sentinel = -(xp.sum(xp.abs(s * eigvals)) + rho * xp.sum(c * c) + 1)
    corner = xp.where(in_span, sentinel, corner)
    core = xp.concat(
        [
            xp.concat([block, side[:, None]], axis=1),
            xp.concat([side[None, :], xp.reshape(corner, (1, 1))], axis=1),
        ],
        axis=0,
    )
    # An overflowing core (huge v) must not reach eigh, which may raise on inf/NaN:
    # decompose zeros instead and report NaN eigenvalues for the caller to reject.
    core_ok = xp.all(xp.isfinite(core))
    core = xp.where(core_ok, core, xp.zeros_like(core))
    mu, vecs = eigh_small(xp, core)
    # An eigensolver that fails on a finite core (NaN out) rejects the update like a non-finite core.
    core_ok = core_ok & xp.all(xp.isfinite(vecs)) & ~xp.any(xp.isnan(mu))
    # eigh returns the eigenvalues of a finite symmetric matrix in ascending order:
    # reversing the columns sorts them descending (no sort, no gather).
    mu = xp.flip(mu, axis=0)
    top = xp.flip(vecs[:, 1:], axis=1)
    # b = V₂/r; zero when v is in span U (then vec ⊗ b vanishes and p is never needed).
    vrot = xp.where(in_span, xp.zeros_like(top[rank, :]), top[rank, :] / xp.where(in_span, xp.ones_like(r), r))
    rot = top[:rank, :] - shift[:, None] * vrot[None, :]
    mu = xp.where(core_ok, xp.where(mu > 0, mu, xp.zeros_like(mu)), xp.full_like(mu, xp.nan))
    return CorePlan(rot, vrot, mu[:rank], mu[rank] + dropped)


def reject(xp: ArrayNamespace, plan: Plan, ok: Array) -> tuple[Array, Array]:
    """``(rot, vrot)``, or the identity rotation when ``ok`` is false.

    ``U·I + vec ⊗ 0`` is exactly ``U`` (``vec`` is finite), so a rejected
    update leaves the basis bit-for-bit unchanged without an extra pass over it.
    """
    rank = plan.rot.shape[0]
    eye = xp.eye(rank, dtype=plan.rot.dtype, device=device_of(plan.rot))
    return xp.where(ok, plan.rot, eye), xp.where(ok, plan.vrot, xp.zeros_like(plan.vrot))


def rank_one_update(
    xp: ArrayNamespace,
    basis: Array,
    eigvals: Array,
    v: Array,
    *,
    weight: Any,
    scale: Any,
    reduce: Reduction = LOCAL,
) -> tuple[Array, Array, Array]:
    """Brand's update of ``(basis, eigvals)`` by ``weight·v vᵀ`` (scaled by ``scale``), truncated: ``(basis, eigvals, discarded)``.

    Unchecked core of :func:`lowrank_ggn.lowrank_eigh_update`; ``reduce`` completes the sums over rows.
    """
    dtype, dev = basis.dtype, device_of(basis)
    rho = xp.asarray(weight, dtype=dtype, device=dev)
    s = xp.asarray(scale, dtype=dtype, device=dev)
    v, rho = unit_max(xp, v, rho, reduce)
    c, dots = reduce.sum_together(xp, *project(xp, basis, (v,)))
    brand = plan(xp, basis, eigvals, v, c=c[:, 0], vv=dots[0], rho=rho, s=s, reduce=reduce)
    new_basis, _ = rotate(xp, basis, brand.rot, brand.vec, brand.vrot)
    return new_basis, brand.eigvals, brand.discarded


def unit_max(
    xp: ArrayNamespace,
    v: Array,
    rho: Array,
    reduce: Reduction = LOCAL,
    *,
    v_max: Array | None = None,
    basis: Array | None = None,
) -> tuple[Array | Scaled, Array]:
    """Return ``v / max|v|`` and ``ρ·max|v|²``: the same term ``ρ v vᵀ``.

    With ``basis`` (the ``dim × n`` basis the quotient will meet), the quotient
    is left unformed where the blocked kernels scale it block by block
    (:func:`lowrank_ggn._core.kernels.scaled`).

    The norms of the update are sums of squares, which lose digits (or vanish
    where subnormals are flushed to zero, as on JAX's CPU backend) for ``‖v‖``
    below √(smallest normal); a wrong ``‖p̃‖`` would make the new basis
    non-orthonormal. ``max|v|`` (complete over all rows) may be passed in when
    it is already known; otherwise it costs two reads of ``v`` and one
    all-reduce of a scalar. The division is one more O(dim) pass.
    """
    if v_max is None:
        v_max = reduce.max(finite_max_abs(xp, v)[1])
    v_scale = xp.where(v_max > 0, v_max, xp.ones_like(v_max))
    unit = v / v_scale if basis is None else scaled(xp, basis, v, v_scale)
    return unit, rho * v_scale * v_scale


def finite_max_abs(xp: ArrayNamespace, v: Array) -> tuple[Array, Array]:
    """Return ``(all(isfinite(v)), max|v|)`` for this shard's rows, from ``max v`` and ``min v`` alone.

    ``max|v| = max(max v, −min v)`` needs no temporary of the size of ``v``.
    Both extremes are finite exactly when every entry is (a NaN propagates
    through ``max`` and ``min``, an infinity is an extreme), so the finiteness
    check needs no boolean array of the size of ``v``. On JAX, whose CPU
    backend drops NaN from the max of a long vector, the finiteness is
    ``all(isfinite(v))`` (fused under ``jax.jit``).
    """
    if is_jax(xp):
        # XLA's CPU backend drops NaN from a max over a long vector (≥ 10⁵ entries: jax 0.10), so the
        # finiteness is a reduction of its own; under jit, both reductions are fused loops over v.
        return xp.all(xp.isfinite(v)), xp.max(xp.abs(v))
    hi, lo = _extremes(xp, v)
    return xp.isfinite(hi) & xp.isfinite(lo), xp.maximum(hi, -lo)


# Elements of one block of _extremes on NumPy: 256 KiB of float32, in cache for the second reduction.
_EXTREMES_BLOCK = 2**16


def _extremes(xp: ArrayNamespace, v: Array) -> tuple[Array, Array]:
    """``(max v, min v)`` in one read of ``v`` from memory (PyTorch: ``aminmax``; NumPy: block by block)."""
    if is_torch(xp) and v.ndim == 1:
        import torch

        lo, hi = torch.aminmax(v)
        return hi, lo
    if is_numpy(xp) and v.ndim == 1 and v.shape[0] > 4 * _EXTREMES_BLOCK:
        import numpy as np

        his, los = [], []
        for i in range(0, v.shape[0], _EXTREMES_BLOCK):
            block = v[i : i + _EXTREMES_BLOCK]
            his.append(block.max())
            los.append(block.min())  # the block is still in cache
        # NaN propagates through both reductions, as through max and min over all of v.
        return np.max(np.array(his)), np.min(np.array(los))
    return xp.max(v), xp.min(v)


def eigh_small(xp: ArrayNamespace, m: Array) -> tuple[Array, Array]:
    """Eigendecomposition of a small symmetric matrix, computed in float64 when the backend has it.

    In float32, LAPACK's eigenvectors are orthonormal to about 1e-6 (NumPy
    hides this by computing its float32 linear algebra in float64); U is
    multiplied by them at every update and the errors add up coherently, so
    ``UᵀU − I`` drifted by about 1e-7 per update on JAX and PyTorch. In
    float64 (O(rank³), negligible next to the O(dim · rank²) update) the drift
    is about 10× smaller. Results are returned in ``m``'s dtype.
    """
    wide = widest_float_dtype(xp, m)
    mw = m if wide == m.dtype else xp.astype(m, wide)
    # Entries beyond √max overflow inside some eigensolvers (JAX's returns NaN for a finite
    # matrix near the top of the range): such a matrix is decomposed divided by its largest
    # entry and the eigenvalues are scaled back. Other matrices are decomposed as they are.
    top = xp.max(xp.abs(mw))
    scale = xp.where(top > float(xp.finfo(wide).max) ** 0.5, top, xp.ones_like(top))
    # Two products with 1/√scale: 1/scale itself may be subnormal, and XLA's CPU backend (which
    # divides through the reciprocal) flushes it to zero.
    inv_root = 1 / xp.sqrt(scale)
    w, v = xp.linalg.eigh((mw * inv_root) * inv_root)
    w = w * scale
    if wide == m.dtype:
        return w, v
    return xp.astype(w, m.dtype), xp.astype(v, m.dtype)


def diag_matrix(xp: ArrayNamespace, x: Array) -> Array:
    """Diagonal matrix from a vector (the standard has no ``diag``)."""
    n = x.shape[0]
    return xp.eye(n, dtype=x.dtype, device=device_of(x)) * x[None, :]


def reorthonormalize_qr(xp: ArrayNamespace, basis: Array, eigvals: Array) -> tuple[Array, Array]:
    q, r = xp.linalg.qr(basis)
    core = (r * eigvals[None, :]) @ r.T
    core = (core + core.T) / 2
    mu, w = eigh_small(xp, core)
    order = xp.argsort(mu, descending=True)
    mu = xp.take(mu, order, axis=0)
    w = xp.take(w, order, axis=1)
    return q @ w, xp.where(mu > 0, mu, xp.zeros_like(mu))


def reorthonormalize_gram(xp: ArrayNamespace, basis: Array, eigvals: Array, reduce: Reduction) -> tuple[Array, Array]:
    r""":func:`reorthonormalize` from the Gram matrix ``UᵀU``: one reduction of τ×τ numbers.

    With ``G = UᵀU = Z diag(g) Zᵀ``, ``Q = U G^{-1/2}`` has orthonormal columns
    and ``U Λ Uᵀ = Q (G^{1/2} Λ G^{1/2}) Qᵀ``; the eigendecomposition
    ``G^{1/2} Λ G^{1/2} = W diag(μ) Wᵀ`` gives ``U' = U (G^{-1/2} W)`` and
    ``λ' = μ``. Unlike a QR factorisation, this needs ``U`` only through ``UᵀU``
    and a row-local product, so it runs unchanged on a row-split ``U``. Forming
    ``UᵀU`` rounds at the level of the working precision: the result is
    orthonormal to a few ulps (a thin QR reaches a fraction of one), which is
    what the periodic re-orthonormalisation needs.
    """
    gram = reduce.sum(basis.T @ basis)
    gram = (gram + gram.T) / 2
    g, z = xp.linalg.eigh(gram)
    tiny = xp.finfo(basis.dtype).smallest_normal
    root = xp.sqrt(xp.where(g > tiny, g, xp.full_like(g, tiny)))
    half = (z * root[None, :]) @ z.T
    inv_half = (z / root[None, :]) @ z.T
    core = (half * eigvals[None, :]) @ half
    core = (core + core.T) / 2
    mu, w = xp.linalg.eigh(core)
    order = xp.argsort(mu, descending=True)
    mu = xp.take(mu, order, axis=0)
    w = xp.take(w, order, axis=1)
    return basis @ (inv_half @ w), xp.where(mu > 0, mu, xp.zeros_like(mu))
