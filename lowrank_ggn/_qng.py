r"""QNG: the quasi-natural gradient of He et al. (2022), the paper's §2.2, corrected.

The curvature is ``Â Âᵀ`` with ``Â = K_{t−τ} ⋯ K_{t−1}``, a product of the
last τ rank-one factors

.. math::
   K_i = \sqrt{\alpha}\, I + \beta_i\, q_i q_i^\top, \qquad
   q_i = \hat A_i^{-1} d_i, \qquad
   \beta_i = \frac{\sqrt{\alpha + (1-\alpha)\|q_i\|^2} - \sqrt{\alpha}}{\|q_i\|^2}
           = \frac{1-\alpha}{\sqrt{\alpha + (1-\alpha)\|q_i\|^2} + \sqrt{\alpha}},

so that ``K_i K_iᵀ = αI + (1 − α) q_i q_iᵀ`` and, without the window,
``Â_{t+1} Â_{t+1}ᵀ = α Â_t Â_tᵀ + (1 − α) d_t d_tᵀ`` (Eq 10). The paper prints β
without the square root, which collapses it to ``1 − α``.

With ``k = min(τ, t)`` factors, ``ÂÂᵀ − α^k I`` is PSD of rank at most k
(Observation 1, sharpened): QNG is "α^k I + rank-k", the family of Ginger with
γ = α^k, on a subspace that is not the optimal one.

The window is stored oldest first in fixed-size arrays (so that shapes do not
change under ``jax.jit``); an empty slot holds the identity factor
(scale 1, β = 0, q = 0).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lowrank_ggn._core import qng as core
from lowrank_ggn._core.aliases import Array, Device, DType
from lowrank_ggn._core.checks import (
    cast_like,
    check_decay,
    check_dim_rank,
    check_like,
    check_qng_state,
    reject_if,
    traced_out_of_range,
)
from lowrank_ggn.backends import (
    canonical_float_dtype,
    device_of,
    floating_point_errors_ignored,
    resolve_namespace,
)

__all__ = [
    "QNGState",
    "qng_dense",
    "qng_factor_matvec",
    "qng_factor_solve",
    "qng_init",
    "qng_precondition",
    "qng_update",
]


class QNGState(NamedTuple):
    """State of QNG: the window of the last τ factors ``K_i = s_i I + β_i q_i q_iᵀ``.

    Slots are ordered oldest first; empty slots hold the identity.

    Parameters
    ----------
    factors, betas, scales, sqnorms, step, num_nonfinite : array
        The fields, in this order (see the attributes below).
    """

    factors: Array
    """Factor vectors q_i, shape (rank, dim), one per row."""
    betas: Array
    """Coefficients β_i, shape (rank,)."""
    scales: Array
    """Scales s_i = √α_i for filled slots, 1 for empty ones, shape (rank,)."""
    sqnorms: Array
    """Squared norms ‖q_i‖², shape (rank,)."""
    step: Array
    """0-d int32: number of accepted updates."""
    num_nonfinite: Array
    """0-d int32: number of updates rejected.

    An update is rejected when the curvature vector (or the new factor) is not
    finite, or the factor vector is out of range (see :func:`qng_update`); it
    leaves the state unchanged."""


def qng_init(
    dim: int,
    rank: int,
    *,
    xp: Any | None = None,
    dtype: DType | None = None,
    device: Device | None = None,
) -> QNGState:
    """Create a QNG state with an empty window (``Â = I``, as the paper's ``A_1 = I``).

    Parameters
    ----------
    dim : int
        Number of parameters d.
    rank : int
        Window length τ, with ``1 ≤ rank < dim``.
    xp : module, optional
        Array namespace or library module. Default: NumPy.
    dtype : dtype, optional
        ``float32`` or ``float64``. Default: the namespace's default.
    device : device, optional
        Where to allocate the state.

    Returns
    -------
    QNGState
        The state with an empty window, in the requested namespace, dtype and device.

    Raises
    ------
    TypeError
        If ``dim``/``rank`` are not integers or ``dtype`` is not float32/float64.
    ValueError
        If ``rank < 1`` or ``rank >= dim``.
    """
    dim, rank = check_dim_rank(dim, rank)
    ns = resolve_namespace(xp)
    dt = canonical_float_dtype(ns, dtype)
    factors = ns.zeros((rank, dim), dtype=dt, device=device)
    if factors.dtype != dt:
        msg = f"dtype {dt} is not available in this namespace (JAX needs jax_enable_x64 for float64)"
        raise TypeError(msg)
    return QNGState(
        factors=factors,
        betas=ns.zeros((rank,), dtype=dt, device=device),
        scales=ns.ones((rank,), dtype=dt, device=device),
        sqnorms=ns.zeros((rank,), dtype=dt, device=device),
        step=ns.zeros((), dtype=ns.int32, device=device),
        num_nonfinite=ns.zeros((), dtype=ns.int32, device=device),
    )


def _check_vectors(state: QNGState, v: Array, name: str) -> None:
    dim = state.factors.shape[1]
    check_like(v, name, state.factors, shapes=((dim,), (dim, -1)), promote=True)


def qng_factor_matvec(state: QNGState, v: Array, *, transpose: bool = False) -> Array:
    r"""Apply the factor: ``Â v`` (or ``Âᵀ v`` with ``transpose=True``).

    ``Â = K_{t−τ} ⋯ K_{t−1}``; each factor is symmetric, so ``Âᵀ`` is the
    same product in the reverse order. Cost O(dim · rank) per vector.

    Parameters
    ----------
    state : QNGState
        The window of factors.
    v : array, shape (dim,) or (dim, k)
        Vector(s), one per column.
    transpose : bool, default False
        Apply ``Âᵀ`` instead of ``Â``.

    Returns
    -------
    array, same shape as ``v``
        ``Â v`` or ``Âᵀ v``.
    """
    xp = check_qng_state(state)
    _check_vectors(state, v, "v")
    return cast_like(
        xp, core.factor_product(state, cast_like(xp, v, state.factors), inverse=False, transpose=transpose), v
    )


def qng_factor_solve(state: QNGState, v: Array, *, transpose: bool = False) -> Array:
    r"""Apply the inverse factor: ``Â⁻¹ v`` (or ``Â⁻ᵀ v`` with ``transpose=True``).

    Uses ``K⁻¹ v = (v − β (qᵀv) q / (s + β‖q‖²)) / s`` for each factor.
    Cost O(dim · rank) per vector.

    Parameters
    ----------
    state : QNGState
        The window of factors.
    v : array, shape (dim,) or (dim, k)
        Vector(s), one per column.
    transpose : bool, default False
        Apply ``Â⁻ᵀ`` instead of ``Â⁻¹``.

    Returns
    -------
    array, same shape as ``v``
        ``Â⁻¹ v`` or ``Â⁻ᵀ v``.
    """
    xp = check_qng_state(state)
    _check_vectors(state, v, "v")
    return cast_like(
        xp, core.factor_product(state, cast_like(xp, v, state.factors), inverse=True, transpose=transpose), v
    )


@floating_point_errors_ignored()
def qng_update(state: QNGState, d: Array, *, decay: Any) -> QNGState:
    r"""Append the factor of a new curvature vector and drop the oldest one.

    .. math::
       q = \hat A^{-1} d, \qquad
       \beta = \frac{1-\alpha}{\sqrt{\alpha + (1-\alpha)\|q\|^2} + \sqrt{\alpha}},
       \qquad K = \sqrt{\alpha}\, I + \beta\, q q^\top .

    Parameters
    ----------
    state : QNGState
        The current window of factors.
    d : array, shape (dim,)
        Curvature vector (Eq 8), in the state's dtype or a lower precision
        (promoted exactly).
    decay : float or 0-d array
        α ∈ (0, 1).

    Returns
    -------
    QNGState
        If ``d`` (or the new factor) is not finite, or ``‖q‖²`` exceeds the
        square root of the dtype's largest number (float32: 1.8e19), the state
        is returned unchanged except ``num_nonfinite``, which is incremented
        (also under ``jax.jit``). The bound keeps the products of a query,
        ``qᵀv`` with ``‖v‖ ≤ ‖(ÂÂᵀ)⁻¹g‖``, inside the dtype's range.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1), ``decay**rank`` is below the square root of
        the dtype's smallest normal number (the factors would overflow:
        float32 needs ``decay**rank ≥ 1.1e-19``), or ``d`` has the wrong shape
        or device.
    TypeError
        If ``d`` is not a real floating array of the state's namespace and dtype.
    """
    xp = check_qng_state(state)
    factors = state.factors
    check_like(d, "d", factors, shapes=((factors.shape[1],),), promote=True)
    d = cast_like(xp, d, factors)
    check_decay(decay, like=factors)
    core.check_decay_range(xp, decay, factors)
    d = reject_if(xp, traced_out_of_range(xp, factors, decay=decay), d)
    return core.update(xp, state, d, decay=decay)


def qng_precondition(state: QNGState, g: Array) -> Array:
    r"""Apply the inverse curvature: ``(ÂÂᵀ)⁻¹ g = Â⁻ᵀ Â⁻¹ g``.

    QNG's damping is implicit: ``ÂÂᵀ ⪰ α^k I`` with k = min(τ, t). Cost
    O(dim · rank) per vector.

    Parameters
    ----------
    state : QNGState
        The window of factors.
    g : array, shape (dim,) or (dim, k)
        Gradient(s), one per column, in the state's dtype, or a lower precision
        (promoted exactly; the result is rounded back once).

    Returns
    -------
    array, same shape and dtype as ``g``
        ``(ÂÂᵀ)⁻¹ g``.
    """
    xp = check_qng_state(state)
    _check_vectors(state, g, "g")
    return cast_like(xp, core.precondition(state, cast_like(xp, g, state.factors)), g)


def qng_dense(state: QNGState) -> Array:
    """Materialise the curvature ``ÂÂᵀ`` (dim × dim) for tests and studies.

    Parameters
    ----------
    state : QNGState
        The window of factors.

    Returns
    -------
    array, shape (dim, dim)
        ``ÂÂᵀ``.
    """
    xp = check_qng_state(state)
    dim = state.factors.shape[1]
    eye = xp.eye(dim, dtype=state.factors.dtype, device=device_of(state.factors))
    a = core.factor_product(state, eye, inverse=False, transpose=False)
    return a @ a.T
