r"""Ginger: a rank-τ eigendecomposition of the EMA of the curvature (the paper's §2.3).

The state represents the damped curvature

.. math:: G_{t,\gamma} = \gamma I + U_t \operatorname{diag}(\sigma_t) U_t^\top

(Eq 14) without γ: the damping is an argument of the query, so it can change
at every step at no cost. :func:`ginger_update` folds a curvature vector
``d_t`` (Eq 8) into the EMA ``α U Σ Uᵀ + (1 − α) d dᵀ`` (Eq 7) and truncates
to rank τ by Eckart–Young; :func:`ginger_precondition` applies ``G⁻¹``
(Eq 15–16).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from lowrank_ggn._core import ginger as core
from lowrank_ggn._core.aliases import Array, Device, DType
from lowrank_ggn._core.checks import (
    cast_like,
    check_damping,
    check_decay,
    check_dim_rank,
    check_ginger_state,
    check_like,
    nan_if,
    reject_if,
    traced_out_of_range,
)
from lowrank_ggn._core.operator import as_scalar, dense
from lowrank_ggn._core.options import check_bool, resolve_reorthonormalize_every
from lowrank_ggn.backends import canonical_float_dtype, floating_point_errors_ignored, is_array, resolve_namespace

__all__ = [
    "GingerState",
    "ginger_dense",
    "ginger_init",
    "ginger_precondition",
    "ginger_reorthonormalize",
    "ginger_update",
    "ginger_update_precondition",
]

_METHODS = ("eigen", "sherman-morrison")


class GingerState(NamedTuple):
    r"""State of Ginger: the undamped rank-τ curvature ``U diag(σ) Uᵀ``.

    A NamedTuple, hence a JAX pytree; every field is an array of the state's
    namespace, dtype and device.

    Parameters
    ----------
    basis, eigvals, discarded, escaped, step, num_nonfinite : array
        The fields, in this order (see the attributes below).
    """

    basis: Array
    """U, shape (dim, rank), orthonormal columns."""
    eigvals: Array
    """Eigenvalues σ, shape (rank,), non-negative and sorted descending."""
    discarded: Array
    """0-d: trace of the curvature dropped by truncation so far, EMA-weighted.

    ``trace(M_t) = sum(σ) + discarded`` for the exact EMA ``M_t``."""
    escaped: Array
    """0-d: ρ_t, a certified bound on the spectral norm of the curvature dropped so far.

    ``0 ⪯ M_t − U diag(σ) Uᵀ ⪯ ρ_t I`` for the exact EMA ``M_t``, with
    ``ρ_t = α ρ_{t−1} + δ_t`` and ``δ_t`` the eigenvalue dropped at step t
    (plus any rounding-level residual mass dropped). For Ginger one eigenvalue
    is dropped per step, so ``escaped`` equals ``discarded`` in exact
    arithmetic; for Frequent Directions (:func:`lowrank_ggn.frequent_directions`)
    ``discarded`` is the trace, ``escaped`` the spectral bound."""
    step: Array
    """0-d int32: number of accepted updates.

    Saturates instead of wrapping: at 2³¹ − 1 it steps back by the
    re-orthonormalisation period (1 without one), so the period keeps running."""
    num_nonfinite: Array
    """0-d int32: number of updates rejected as non-finite.

    An update is rejected when the curvature vector (or the result) is not
    finite; it leaves the state unchanged."""


def ginger_init(
    dim: int,
    rank: int,
    *,
    xp: Any | None = None,
    dtype: DType | None = None,
    device: Device | None = None,
) -> GingerState:
    """Create an empty Ginger state (σ = 0; the represented curvature is 0).

    The initial basis is the first ``rank`` columns of the identity: with
    σ = 0 any orthonormal basis represents the same matrix, and a
    deterministic one makes runs reproducible without a random key.

    Parameters
    ----------
    dim : int
        Number of parameters d.
    rank : int
        τ, with ``1 ≤ rank < dim`` (Lemma 1 needs τ < d).
    xp : module, optional
        Array namespace or library module (``numpy``, ``jax.numpy``,
        ``torch``, ``cupy``, ``array_api_strict``). Default: NumPy.
    dtype : dtype, optional
        ``float32`` or ``float64`` of that namespace. Default: the
        namespace's default real floating dtype.
    device : device, optional
        Where to allocate the state. Default: the namespace's default.

    Returns
    -------
    GingerState
        The empty state, in the requested namespace, dtype and device.

    Raises
    ------
    TypeError
        If ``dim``/``rank`` are not integers or ``dtype`` is not float32/float64.
    ValueError
        If ``rank < 1`` or ``rank >= dim``.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank_ggn as lg
    >>> state = lg.ginger_init(100, 4, xp=np)
    >>> state.basis.shape, state.eigvals.shape
    ((100, 4), (4,))
    """
    dim, rank = check_dim_rank(dim, rank)
    ns = resolve_namespace(xp)
    dt = canonical_float_dtype(ns, dtype)
    basis = ns.eye(dim, rank, dtype=dt, device=device)
    if basis.dtype != dt:
        msg = f"dtype {dt} is not available in this namespace (JAX needs jax_enable_x64 for float64)"
        raise TypeError(msg)
    return GingerState(
        basis=basis,
        eigvals=ns.zeros((rank,), dtype=dt, device=device),
        discarded=ns.zeros((), dtype=dt, device=device),
        escaped=ns.zeros((), dtype=dt, device=device),
        step=ns.zeros((), dtype=ns.int32, device=device),
        num_nonfinite=ns.zeros((), dtype=ns.int32, device=device),
    )


@floating_point_errors_ignored()
def ginger_update(
    state: GingerState,
    d: Array,
    *,
    decay: Any,
    damping: Any = None,
    method: Literal["eigen", "sherman-morrison"] = "eigen",
    reorthonormalize_every: int | Literal["auto"] | None = "auto",
    donate: bool = False,
) -> GingerState:
    r"""Fold one curvature vector into the state (Eq 7, truncated to rank τ).

    The eigen path (default) computes the best rank-τ approximation of

    .. math:: \alpha\, U \operatorname{diag}(\sigma) U^\top + (1 - \alpha)\, d d^\top

    by Brand's rank-one eigen-update (see :func:`lowrank_eigh_update`). The
    ``"sherman-morrison"`` path is the paper's Eq 17 (corrected): it updates
    the inverse of the damped EMA, truncates there and maps back with Eq 18.
    Both keep the same τ directions and agree in exact arithmetic; the
    Sherman–Morrison path loses precision when σ ≫ γ (``1 − γκ ≈ γ/σ``), so
    keep it for fidelity studies.

    Parameters
    ----------
    state : GingerState
        Current state.
    d : array, shape (dim,)
        Curvature vector ``d_t``: the sampled-label gradient of Eq 8 (the
        plain gradient gives the empirical Fisher). Same namespace, dtype and
        device as the state; a lower precision (float16, bfloat16, float32
        into float64) is also accepted and promoted exactly to the state's dtype.
    decay : float or 0-d array
        α ∈ (0, 1).
    damping : float or 0-d array, optional
        γ > 0; required by, and only accepted with, ``method="sherman-morrison"``.
    method : {"eigen", "sherman-morrison"}
        Update path.
    reorthonormalize_every : int, "auto" or None, default "auto"
        Re-orthonormalise the basis (see :func:`ginger_reorthonormalize`)
        after every k-th accepted update; ``None`` never does. ``"auto"``:
        every 100 updates for a float32 state, never for float64 (the
        measurements behind this choice are on the reliability page).
        Cost O(dim · rank²) per re-orthonormalisation, about two updates.
    donate : bool, default False
        Opt-in buffer reuse on NumPy and PyTorch (CPU): the caller gives up
        ``state`` and the new basis is written into the memory of the old
        one, block by block, instead of a new d×τ array (the old state must
        not be used afterwards). Ignored elsewhere; on JAX, donate the state
        to ``jax.jit`` instead (``donate_argnums``).

    Returns
    -------
    GingerState
        The updated state. If ``d`` (or the result) is not finite, the state
        is returned unchanged except ``num_nonfinite``, which is incremented;
        this also holds under ``jax.jit``, where a traced ``decay`` or
        ``damping`` out of its range (see Raises) is rejected the same way.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1) (or rounds to 0 or 1 in the state's dtype),
        ``damping`` is missing, not positive, not finite or has ``γ²`` outside
        the dtype's normal range for the Sherman–Morrison path (or is given
        for the eigen path),
        ``method`` is unknown, ``reorthonormalize_every < 1``, or ``d`` has the
        wrong shape or device.
    TypeError
        If ``d`` is not a real floating array of the state's namespace and dtype.
    """
    xp = check_ginger_state(state)
    basis = state.basis
    check_like(d, "d", basis, shapes=((basis.shape[0],),), promote=True)
    d = cast_like(xp, d, basis)
    check_decay(decay, like=basis)
    if method not in _METHODS:
        msg = f"method must be one of {_METHODS}, got {method!r}"
        raise ValueError(msg)
    if method == "sherman-morrison":
        if damping is None:
            msg = "method='sherman-morrison' needs damping (γ > 0)"
            raise ValueError(msg)
        check_damping(damping, like=basis, squared=True)
    elif damping is not None:
        msg = "damping is not used by method='eigen'; pass it to ginger_precondition"
        raise ValueError(msg)
    every = resolve_reorthonormalize_every(xp, basis.dtype, reorthonormalize_every)
    check_bool(donate, "donate")
    d = reject_if(xp, traced_out_of_range(xp, basis, decay=decay, damping=damping, squared=True), d)
    if method == "sherman-morrison":
        return core.update_sherman_morrison(
            xp, state, d, decay=decay, damping=damping, reorthonormalize_every=every, donate=donate
        )
    return core.update(xp, state, d, decay=decay, reorthonormalize_every=every, donate=donate)


def ginger_reorthonormalize(state: GingerState) -> GingerState:
    r"""Re-orthonormalise the basis without changing the represented matrix.

    In float32, ``‖UᵀU − I‖`` random-walks over many updates, and the query
    amplifies that error by about σ/γ. This rotates ``U`` back to exact
    orthonormality (thin QR, then an eigendecomposition of the τ×τ core, see
    :func:`reorthonormalize`) so that ``U diag(σ) Uᵀ`` is unchanged to
    working precision. Cost O(dim · rank²).

    Parameters
    ----------
    state : GingerState
        The state to re-orthonormalise.

    Returns
    -------
    GingerState
        Same ``step``, ``discarded``, ``escaped`` and ``num_nonfinite``.
    """
    xp = check_ginger_state(state)
    return core.reorthonormalize(xp, state)


def ginger_precondition(state: GingerState, g: Array, *, damping: Any) -> Array:
    r"""Apply the inverse of the damped curvature: :math:`(\gamma I + U\operatorname{diag}(\sigma)U^\top)^{-1} g`.

    Eq 15–16 in their cancellation-free form (see :func:`damped_solve`).
    Cost O(dim · rank) per vector. The eigenvalues of this inverse lie in
    ``[1/(γ + σ_1), 1/γ]`` (Lemma 1).

    Parameters
    ----------
    state : GingerState
        The curvature ``U diag(σ) Uᵀ``.
    g : array, shape (dim,) or (dim, k)
        Gradient(s), one per column: the state's dtype, or a lower precision
        (promoted to it exactly; the result is rounded back once).
    damping : float or 0-d array
        γ > 0. It can change at every call (damping schedules,
        Levenberg–Marquardt); it may be traced under ``jax.jit``.

    Returns
    -------
    array, same shape and dtype as ``g``
        ``(γI + U diag(σ) Uᵀ)⁻¹ g``.

    Raises
    ------
    ValueError
        If ``damping`` is not positive and finite or outside the normal range
        of the state's dtype (when concrete), or ``g`` has the wrong shape or
        device.
    TypeError
        If ``g`` is not a real floating array of the state's namespace and dtype.
    """
    xp = check_ginger_state(state)
    dim = state.basis.shape[0]
    check_like(g, "g", state.basis, shapes=((dim,), (dim, -1)), promote=True)
    check_damping(damping, like=state.basis)
    damping = nan_if(xp, traced_out_of_range(xp, state.basis, damping=damping), damping, state.basis)
    return cast_like(xp, core.precondition(xp, state, cast_like(xp, g, state.basis), damping=damping), g)


@floating_point_errors_ignored()
def ginger_update_precondition(
    state: GingerState,
    d: Array,
    g: Array,
    *,
    decay: Any,
    damping: Any,
    reorthonormalize_every: int | Literal["auto"] | None = "auto",
    donate: bool = False,
) -> tuple[GingerState, Array]:
    r"""Update the state with ``d`` and precondition ``g`` with the new state, in two reads of ``U``.

    Equivalent to

    .. code-block:: python

        state = ginger_update(state, d, decay=decay)
        y = ginger_precondition(state, g, damping=damping)

    but cheaper: the reductions ``Uᵀd`` and ``Uᵀg`` share one read of ``U``,
    and the query of the new state (Eq 16),

    .. math::
       y = \frac{g}{\gamma} + U' z, \qquad
       z = -\frac{\sigma' \odot c'}{\gamma(\gamma + \sigma')}, \qquad
       c' = U'^\top g = R^\top (U^\top g) + b\,(v^\top g),

    is evaluated through the old basis (``U' = U R + v bᵀ``, so
    ``U'z = U(Rz) + v (bᵀz)``) in the same pass that writes ``U'``. About three
    passes over ``U`` in all — one read for the reductions, one read and one
    write for the rotation — instead of five for the two calls.

    Parameters
    ----------
    state : GingerState
        The current state.
    d : array, shape (dim,)
        Curvature vector (Eq 8).
    g : array, shape (dim,)
        The gradient to precondition.
    decay : float or 0-d array
        α ∈ (0, 1).
    damping : float or 0-d array
        γ > 0 for the query; may be traced under ``jax.jit``.
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`ginger_update`. A step that re-orthonormalises returns
        the query of the state before re-orthonormalisation; both represent
        the same matrix.
    donate : bool, default False
        As in :func:`ginger_update`: opt-in reuse of the basis's memory on
        NumPy and PyTorch; on JAX use ``jax.jit(..., donate_argnums=0)``.

    Returns
    -------
    tuple
        ``(new_state, y)`` with ``y = (γI + U' diag(σ') U'ᵀ)⁻¹ g``. A rejected
        update (non-finite ``d``) leaves the state unchanged (except
        ``num_nonfinite``) and ``y`` is the query of that state.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1), ``damping`` is not positive and finite, or a
        shape or device is wrong.
    TypeError
        If ``d`` or ``g`` is not a real floating array of the state's namespace and dtype.
    """
    xp = check_ginger_state(state)
    basis = state.basis
    check_like(d, "d", basis, shapes=((basis.shape[0],),), promote=True)
    check_like(g, "g", basis, shapes=((basis.shape[0],),), promote=True)
    g_in = g
    d, g = cast_like(xp, d, basis), cast_like(xp, g, basis)
    check_decay(decay, like=basis)
    check_damping(damping, like=basis)
    every = resolve_reorthonormalize_every(xp, basis.dtype, reorthonormalize_every)
    check_bool(donate, "donate")
    bad_damping = traced_out_of_range(xp, basis, damping=damping)
    d = reject_if(xp, traced_out_of_range(xp, basis, decay=decay), reject_if(xp, bad_damping, d))
    damping = nan_if(xp, bad_damping, damping, basis)
    new, y = core.update_precondition(
        xp, state, d, g, decay=decay, damping=damping, reorthonormalize_every=every, donate=donate
    )
    return new, cast_like(xp, y, g_in)


def ginger_dense(state: GingerState, *, damping: Any = 0.0) -> Array:
    """Materialise ``γI + U diag(σ) Uᵀ`` (dim × dim) for tests and studies.

    Parameters
    ----------
    state : GingerState
        The curvature ``U diag(σ) Uᵀ``.
    damping : float, default 0
        γ ≥ 0; 0 gives the undamped curvature.

    Returns
    -------
    array, shape (dim, dim)
        ``γI + U diag(σ) Uᵀ``.
    """
    xp = check_ginger_state(state)
    if not (is_array(damping) or float(damping) == 0.0):
        check_damping(damping, like=state.basis)
    return dense(xp, state.basis, state.eigvals, as_scalar(xp, damping, state.basis))
