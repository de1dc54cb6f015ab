r"""The damped diagonal-plus-low-rank operator :math:`G = \gamma I + U \operatorname{diag}(\sigma) U^\top`, unchecked.

``U`` (``basis``, dim × rank) has orthonormal columns and ``σ ≥ 0``. The public
faces are :mod:`lowrank_ggn._operator` (functions) and
:class:`lowrank_ggn.DampedLowRank` (an operator object); both validate and cast,
then call these. Every product ``Uᵀx`` is a sum over the parameter axis and is
completed through ``reduce`` (:class:`~lowrank_ggn._core.reduction.Reduction`),
so the same code runs on a basis split by rows across devices.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.kernels import apply, preferred_view
from lowrank_ggn._core.reduction import LOCAL, Reduction
from lowrank_ggn.backends import device_of

__all__ = [
    "Whitened",
    "as_scalar",
    "dense",
    "diag_dense",
    "diag_diagonal",
    "diag_logdet",
    "diag_matvec",
    "diag_solve",
    "diag_sqrt_matvec",
    "kappa_from_sigma",
    "matvec",
    "sigma_from_kappa",
    "solve",
    "whiten",
]


def as_scalar(xp: ArrayNamespace, value: Any, like: Array) -> Array:
    """``value`` as a 0-d array with the dtype and device of ``like``."""
    return xp.asarray(value, dtype=like.dtype, device=device_of(like))


def kappa_from_sigma(eigvals: Array, gamma: Array) -> Array:
    r"""κ = σ / (γ(γ + σ)) (Eq 16); ``gamma`` a 0-d array."""
    return eigvals / (gamma * (gamma + eigvals))


def sigma_from_kappa(xp: ArrayNamespace, kappa: Array, gamma: Array) -> Array:
    r"""σ = γ²κ / (1 − γκ) (Eq 18); ``+inf`` where ``γκ ≥ 1``; ``gamma`` a 0-d array."""
    denom = 1 - gamma * kappa
    positive = denom > 0
    safe = xp.where(positive, denom, xp.ones_like(denom))
    return xp.where(positive, gamma * gamma * kappa / safe, xp.full_like(kappa, xp.inf))


def solve(
    xp: ArrayNamespace, basis: Array, eigvals: Array, g: Array, gamma: Array, *, reduce: Reduction = LOCAL
) -> Array:
    r"""``(γI + U diag(σ) Uᵀ)⁻¹ g`` for ``g`` of shape (dim,) or (dim, k), in the split form.

    ``y = (g − U c)/γ + U (c/(γ+σ))`` with ``c = Uᵀg``: the component of ``g``
    outside the span of ``U`` divided by γ plus the one inside divided by
    ``γ + σ`` (Eq 16 rearranged). Each term is finite whenever the answer
    is, however small γ is (``g/γ + U z`` with ``z = −(c/γ)·σ/(γ+σ)``
    overflows with ``g/γ`` although the answer is small). Two reads of ``U``
    (``Uᵀg``, then both products in one). Cost O(dim · rank · k).
    """
    if g.ndim == 1:
        view, rows = preferred_view(xp, basis)
        c = reduce.sum(view @ g if rows else g @ basis)
        return apply(xp, view, xp.stack([c, c / (gamma + eigvals)], axis=1), g, 1 / gamma, rows=rows)
    k = g.shape[1]
    c = reduce.sum(basis.T @ g)
    coef = xp.concat([c, c / (gamma + eigvals)[:, None]], axis=1)
    both = basis @ coef
    return (g - both[:, :k]) / gamma + both[:, k:]


def matvec(
    xp: ArrayNamespace, basis: Array, eigvals: Array, v: Array, gamma: Array, *, reduce: Reduction = LOCAL
) -> Array:
    """``γv + U diag(σ) Uᵀ v`` for ``v`` of shape (dim,) or (dim, k). Cost O(dim · rank · k)."""
    c = reduce.sum(basis.T @ v)
    scaled = eigvals * c if v.ndim == 1 else eigvals[:, None] * c
    return gamma * v + basis @ scaled


def dense(xp: ArrayNamespace, basis: Array, eigvals: Array, gamma: Array) -> Array:
    """``γI + U diag(σ) Uᵀ`` as a dim × dim array (O(dim²) memory)."""
    eye = xp.eye(basis.shape[0], dtype=basis.dtype, device=device_of(basis))
    return gamma * eye + (basis * eigvals) @ basis.T


# --------------------------------------------------------------------------- a diagonal D instead of γI
#
# G = D + U diag(σ) Uᵀ with D > 0 a 0-d array (γ) or a (dim,) vector. With W = D^{-1/2} U S, S = diag(√σ),
# G = D^{1/2} (I + W Wᵀ) D^{1/2}. The whitened eigenbasis (B, s²) of W Wᵀ = B diag(s²) Bᵀ (B orthonormal,
# dim × rank) gives every query in a cancellation-free form, with no Σ⁻¹ (σ = 0 is safe):
#   G⁻¹ g = D^{-1/2} [(x − Bc) + B c/(1+s²)],   x = D^{-1/2} g, c = Bᵀx
#   L v   = D^{1/2}  [v + B ((√(1+s²) − 1) ⊙ Bᵀv)]          (L Lᵀ = G, L = D^{1/2} A, A symmetric)
#   L⁻ᵀ v = D^{-1/2} [v + B ((1/√(1+s²) − 1) ⊙ Bᵀv)]
#   log det G = Σ log D + Σ log1p(s²).
# For a scalar D and orthonormal U, B = U and s² = σ/γ (no factorisation, O(dim·rank) per query);
# for a vector D, B = Q P from the thin QR W = QR and the SVD R = P diag(s) Hᵀ (O(dim·rank²)).


class Whitened(NamedTuple):
    """The whitened eigenbasis of ``D^{-1/2} U Σ Uᵀ D^{-1/2} = B diag(s2) Bᵀ``."""

    root: Array
    """D^{1/2}: 0-d or (dim,)."""
    basis: Array
    """B, (dim, rank), orthonormal columns."""
    s2: Array
    """s², (rank,), ≥ 0."""


def _col(x: Array, v: Array) -> Array:
    """Return a (dim,) vector as a column when ``v`` is a batch (dim, k); 0-d arrays broadcast as they are."""
    return x[:, None] if x.ndim == 1 and v.ndim == 2 else x


def whiten(xp: ArrayNamespace, diagonal: Array, basis: Array, eigvals: Array) -> Whitened:
    """Return the whitened eigenbasis (see the comment above); one device (the QR needs every row)."""
    root = xp.sqrt(diagonal)
    if diagonal.ndim == 0:
        return Whitened(root, basis, eigvals / diagonal)
    sq = xp.sqrt(xp.where(eigvals > 0, eigvals, xp.zeros_like(eigvals)))
    w = (basis / root[:, None]) * sq[None, :]
    q, r = xp.linalg.qr(w)
    p, s, _ = xp.linalg.svd(r)
    return Whitened(root, q @ p, s * s)


def _apply_whitened(xp: ArrayNamespace, wh: Whitened, v: Array, coef: Array, reduce: Reduction) -> Array:  # noqa: ARG001
    """``v + B (coef ⊙ Bᵀv)`` for v (dim,) or (dim, k)."""
    c = reduce.sum(v @ wh.basis) if v.ndim == 1 else reduce.sum(wh.basis.T @ v)
    return v + wh.basis @ (coef * c if v.ndim == 1 else coef[:, None] * c)


def diag_solve(xp: ArrayNamespace, wh: Whitened, g: Array, *, reduce: Reduction = LOCAL) -> Array:
    """``G⁻¹ g``, cancellation-free, for g (dim,) or (dim, k). Cost O(dim · rank · k) given ``wh``."""
    root = _col(wh.root, g)
    x = g / root
    coef = -wh.s2 / (1 + wh.s2)  # (x − Bc) + B c/(1+s²) = x + B(−s²/(1+s²) ⊙ c)
    return _apply_whitened(xp, wh, x, coef, reduce) / root


def diag_sqrt_matvec(
    xp: ArrayNamespace, wh: Whitened, v: Array, *, inverse_transpose: bool = False, reduce: Reduction = LOCAL
) -> Array:
    """``L v`` (or ``L⁻ᵀ v``) for the factor ``L = D^{1/2}(I + B(√(1+s²) − 1)Bᵀ)`` of G."""
    root = _col(wh.root, v)
    t = xp.sqrt(1 + wh.s2)
    if inverse_transpose:
        return _apply_whitened(xp, wh, v, -wh.s2 / (t * (1 + t)), reduce) / root
    return _apply_whitened(xp, wh, v, wh.s2 / (t + 1), reduce) * root


def diag_logdet(xp: ArrayNamespace, wh: Whitened, dim: int) -> Array:
    """``log det G = Σ log D + Σ log1p(s²)``."""
    log_d = 2 * xp.log(wh.root)
    total = log_d * dim if log_d.ndim == 0 else xp.sum(log_d)
    return total + xp.sum(xp.log1p(wh.s2))


def diag_matvec(
    xp: ArrayNamespace,  # noqa: ARG001
    diagonal: Array,
    basis: Array,
    eigvals: Array,
    v: Array,
    *,
    reduce: Reduction = LOCAL,
) -> Array:
    """``D v + U diag(σ) Uᵀ v`` for v (dim,) or (dim, k). Cost O(dim · rank · k)."""
    c = reduce.sum(basis.T @ v)
    scaled = eigvals * c if v.ndim == 1 else eigvals[:, None] * c
    return _col(diagonal, v) * v + basis @ scaled


def diag_diagonal(xp: ArrayNamespace, diagonal: Array, basis: Array, eigvals: Array) -> Array:  # noqa: ARG001
    """``diag(G) = D + Σ_i σ_i U_{:,i}²`` as a (dim,) vector. Cost O(dim · rank)."""
    low = (basis * basis) @ eigvals
    return diagonal + low


def diag_dense(xp: ArrayNamespace, diagonal: Array, basis: Array, eigvals: Array) -> Array:
    """``D + U diag(σ) Uᵀ`` as a dim × dim array (O(dim²) memory)."""
    dim = basis.shape[0]
    eye = xp.eye(dim, dtype=basis.dtype, device=device_of(basis))
    diag = eye * diagonal[None, :] if diagonal.ndim == 1 else eye * diagonal
    return diag + (basis * eigvals) @ basis.T
