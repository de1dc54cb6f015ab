r"""The damped diagonal-plus-low-rank operator :math:`G = \gamma I + U \operatorname{diag}(\sigma) U^\top`, unchecked.

``U`` (``basis``, dim × rank) has orthonormal columns and ``σ ≥ 0``. The public
faces are :mod:`lowrank_ggn._operator` (functions) and
:class:`lowrank_ggn.DampedLowRank` (an operator object); both validate and cast,
then call these. Every product ``Uᵀx`` is a sum over the parameter axis and is
completed through ``reduce`` (:class:`~lowrank_ggn._core.reduction.Reduction`),
so the same code runs on a basis split by rows across devices.
"""

from __future__ import annotations

from typing import Any

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.kernels import apply
from lowrank_ggn._core.reduction import LOCAL, Reduction
from lowrank_ggn.backends import device_of

__all__ = ["as_scalar", "dense", "kappa_from_sigma", "matvec", "sigma_from_kappa", "solve"]


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
        c = reduce.sum(g @ basis)
        return apply(xp, basis, xp.stack([c, c / (gamma + eigvals)], axis=1), g, 1 / gamma)
    k = g.shape[1]
    c = reduce.sum(basis.T @ g)
    coef = xp.concat([c, c / (gamma + eigvals)[:, None]], axis=1)
    both = basis @ coef
    return (g - both[:, :k]) / gamma + both[:, k:]


def matvec(
    xp: ArrayNamespace, basis: Array, eigvals: Array, v: Array, gamma: Array, *, reduce: Reduction = LOCAL
) -> Array:  # noqa: ARG001
    """``γv + U diag(σ) Uᵀ v`` for ``v`` of shape (dim,) or (dim, k). Cost O(dim · rank · k)."""
    c = reduce.sum(basis.T @ v)
    scaled = eigvals * c if v.ndim == 1 else eigvals[:, None] * c
    return gamma * v + basis @ scaled


def dense(xp: ArrayNamespace, basis: Array, eigvals: Array, gamma: Array) -> Array:
    """``γI + U diag(σ) Uᵀ`` as a dim × dim array (O(dim²) memory)."""
    eye = xp.eye(basis.shape[0], dtype=basis.dtype, device=device_of(basis))
    return gamma * eye + (basis * eigvals) @ basis.T
