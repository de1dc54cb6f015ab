r"""Streaming randomized Nyström approximation (Tropp, Yurtsever, Udell, Cevher 2017), unchecked.

The state keeps a fixed Gaussian test matrix ``Ω`` (dim × s) and the sketch
``Y = M Ω`` of the exact EMA, updated as ``Y ← αY + (1−α) d (dᵀΩ)``: O(dim · s)
per step, no truncation, so ``Y`` is exact. The rank-τ eigenpairs come from
the shifted reconstruction (their Algorithm 3), when the operator is built:

    ν = √dim · eps · ‖Y‖_F,  Y_ν = Y + νΩ,  C = chol(Ωᵀ Y_ν),  B = Y_ν C⁻ᵀ = W S Vᵀ,
    M̂ = W diag(max(S² − ν, 0)) Wᵀ, truncated to τ.

Cost O(dim · s²) (a Cholesky QR of the d × s factor and an s × s SVD); cache the result by building the operator once
per step and reusing it. ``M̂ ⪯ M + νI`` and ``M̂ = M`` (to rounding) while
``rank M ≤ τ ≤ s``. The small s × s steps run in the backend's widest float.
"""

from __future__ import annotations

from typing import Any

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.brand import finite_max_abs
from lowrank_ggn._core.ginger import saturating_increment
from lowrank_ggn._core.operator import as_scalar
from lowrank_ggn.backends import device_of, widest_float_dtype

__all__ = ["reconstruct", "update"]


def update(xp: ArrayNamespace, state: Any, d: Array, *, decay: Any) -> Any:
    """``Y ← αY + (1−α) d (dᵀΩ)``; a non-finite ``d`` or result is rejected. Cost O(dim · s)."""
    sketch, omega = state.sketch, state.test_matrix
    alpha = as_scalar(xp, decay, sketch)
    ok = finite_max_abs(xp, d)[0]
    d_safe = xp.where(ok, d, xp.zeros_like(d))
    # (1−α)d first: the outer product d (dᵀΩ) alone may overflow where (1−α) d (dᵀΩ) does not.
    new = alpha * sketch + ((1 - alpha) * d_safe)[:, None] * (d_safe @ omega)[None, :]
    ok = ok & xp.all(xp.isfinite(new))
    return state._replace(
        sketch=xp.where(ok, new, sketch),
        step=saturating_increment(xp, state.step, ok),
        num_nonfinite=saturating_increment(xp, state.num_nonfinite, ~ok),
    )


def reconstruct(xp: ArrayNamespace, state: Any, rank: int) -> tuple[Array, Array]:
    """``(basis, eigvals)`` of the rank-τ shifted Nyström approximation. Cost O(dim · s²).

    An eigenvalue beyond the range of the state's dtype (``M`` may exceed it where ``Y = MΩ``
    does not) is returned as +inf; the damped query is then still finite.
    """
    sketch, omega = state.sketch, state.test_matrix
    dtype = sketch.dtype
    dim = sketch.shape[0]
    wide = widest_float_dtype(xp, sketch)
    y, om = xp.astype(sketch, wide), xp.astype(omega, wide)
    info = xp.finfo(dtype)
    # M̂ is homogeneous in Y: reconstruct from Y / max|Y| (the squares of a sketch near the
    # top of the range overflow), and scale the eigenvalues back.
    top = xp.max(xp.abs(y))
    top = xp.where(top > 0, top, xp.ones_like(top))
    # Two products with 1/√top: 1/top itself is subnormal near the top of the range, and XLA's
    # CPU backend (which divides through the reciprocal) flushes it to zero.
    inv_root = 1 / xp.sqrt(top)
    y = (y * inv_root) * inv_root
    norm = xp.sqrt(xp.sum(y * y))
    # The shift of Algorithm 3, floored so that an empty sketch (Y = 0) still factorises.
    nu = xp.maximum(dim**0.5 * float(info.eps) * norm, float(info.smallest_normal) ** 0.5 / top)
    y_nu = y + nu * om
    core = om.T @ y_nu
    core = (core + core.T) / 2
    chol = xp.linalg.cholesky(core)
    # B = Y_ν C⁻ᵀ is tall (dim × s) and of full column rank (the shift ν makes Y_ν so): its thin SVD
    # B = W S Vᵀ comes from a Cholesky QR of B (two passes, the first shifted, so that QᵀQ = I to
    # rounding; Fukaya et al. 2020) and an s × s SVD of R. Every O(dim · s²) step is a matrix product:
    # LAPACK's Householder QR and SVD of a tall matrix stream it once per column (dim ≥ 10⁵: ~10× slower).
    b = xp.linalg.solve(chol, y_nu.T).T
    q, r = _cholesky_qr(xp, b)
    w_r, s, _ = xp.linalg.svd(r)
    lam = s[:rank] * s[:rank] - nu
    lam = xp.where(lam > 0, lam, xp.zeros_like(lam)) * top
    return xp.astype(q @ w_r[:, :rank], dtype), xp.astype(lam, dtype)


def _cholesky_qr(xp: ArrayNamespace, b: Array) -> tuple[Array, Array]:
    """``(Q, R)`` with ``Q R = b`` (dim × s), ``QᵀQ = I``, R upper triangular.

    Shifted Cholesky QR followed by one Cholesky QR pass (Fukaya, Kannan, Nakatsukasa, Yamamoto,
    Yanagisawa 2020): ``QᵀQ = I`` to O(eps) for cond(b) up to about eps⁻¹ (the shift keeps the first
    factorisation defined; here cond(b)² ≤ ‖Y‖/ν). Cost 2·dim·s² for the two Gram matrices plus
    2·dim·s² for the two products.
    """
    dim, s = b.shape
    gram = b.T @ b
    info = xp.finfo(gram.dtype)
    eye = xp.eye(s, dtype=gram.dtype, device=device_of(gram))
    shift = 11 * (dim * s + s * (s + 1)) * float(info.eps) * xp.linalg.trace(gram)
    shift = xp.where(shift > 0, shift, xp.ones_like(shift) * float(info.smallest_normal))
    l1 = xp.linalg.cholesky((gram + gram.T) / 2 + shift * eye)
    q1 = b @ xp.linalg.inv(l1).T
    g2 = q1.T @ q1
    l2 = xp.linalg.cholesky((g2 + g2.T) / 2)
    return q1 @ xp.linalg.inv(l2).T, l2.T @ l1.T
